"""The workbench's view of the engine: form values, validation, sessions, table rows.

Nothing here imports textual, so the logic is testable on its own.  All
validation of data and network fields is the engine's own (``make_data`` and
``Network.make`` inside ``try/except MSAError``); the message goes to the
field it names.  Engine modules that other engineers are still writing
(``msa_engine.sampling``, ``.sessions``, ``.sweep``) are imported inside the
functions that need them.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from msa_engine import MSAError, Network, Problem, make_data, solve
from msa_engine.problem import resolve_chi
from msa_engine.results import convergence_message, convergence_problems
from msa_engine.tasks import TASKS, task_defaults
from msa_engine.theory import THEORIES, available_theories
from msa_engine.figures import is_chunk, record_dict, record_value  # noqa: F401  (re-exported)

FILE_TASKS = ("npz", "csv")
FILE_KEYS = {"npz": ("path",), "csv": ("path", "test_path", "target", "test_fraction", "seed")}
NETWORK_FIELDS = ("activation", "N", "g_w", "g_a", "kappa", "chi")
SIM_DEFAULTS = {"sampler": "marginal", "method": "mala", "chains": "4", "steps": "2000",
                "burn_in": "500", "thin": "1", "step_size": "", "seed": "0", "chunk": "200"}
SWEEP_DEFAULTS = {"chi_min": "standard", "chi_max": "mean-field", "points": "5", "widths": ""}
SAMPLERS = ("marginal", "full")
METHODS = ("mala", "ula")
LABELS = {"d": "d (input dim)", "P": "P (train)", "P_test": "P* (test)", "seed": "seed",
          "N": "N (width)", "g_w": "g_w (read-in)", "g_a": "g_a (read-out)", "kappa": "κ (noise)",
          "chi": "χ (scaling)", "chains": "chains", "steps": "steps", "burn_in": "burn-in",
          "thin": "thin", "step_size": "step size", "chunk": "chunk", "chi_min": "χ from",
          "chi_max": "χ to", "points": "points", "widths": "widths N",
          "path": "file", "test_path": "test file", "target": "target column",
          "test_fraction": "test fraction", "options": "Monte Carlo"}


def coerce(text: Any) -> Any:
    """``"30"`` → 30, ``"0.1"`` → 0.1, ``""`` → None; anything else stays a string
    so that the engine's own validation names the problem."""
    if not isinstance(text, str):
        return text
    t = text.strip()
    if not t:
        return None
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def data_keys(task: str) -> list[str]:
    if task in FILE_TASKS:
        return list(FILE_KEYS[task])
    return list(task_defaults(task)) + ["seed"]


def data_default(task: str, key: str) -> str:
    if task in FILE_TASKS:
        return {"test_fraction": "0.5", "seed": "0"}.get(key, "")
    if key == "seed":
        return "0"
    return _fmt_value(task_defaults(task).get(key, ""))


def _fmt_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v)) if not isinstance(v, bool) else str(v)
    return str(v)


def chi_text(chi: float, N: int) -> str:
    if math.isclose(chi, 1.0):
        return "standard"
    if math.isclose(chi, float(N)):
        return "mean-field"
    return f"{chi:.6g}"


def parse_chi(text: str, N: Any) -> float:
    """χ from "standard", "mean-field", a number, or "γ=1.5" / "gamma=1.5"."""
    t = (text or "").strip()
    n = N if isinstance(N, int) and N >= 1 else 1
    m = re.fullmatch(r"(?:γ|gamma)\s*=?\s*(.*)", t, flags=re.I)
    if m:
        if not m.group(1).strip():
            # half-typed: not silently the standard scaling
            raise MSAError("γ needs a value in [1, 2] (e.g. γ=1.5)")
        return resolve_chi(None, coerce(m.group(1)), n)
    if t.lower() == "n":          # as `msa sweep --chi` writes mean field
        return float(n)
    return resolve_chi(coerce(t) if t else None, None, n)


def _means_width(text: str) -> bool:
    """Whether a χ field reads "χ = N" at every width (mean-field, N, γ=2)."""
    try:
        return all(parse_chi(text, n) == float(n) for n in (3, 7))
    except MSAError:
        return False


@dataclass
class FormState:
    """Raw text of every field, by section; what the widgets show."""

    data: dict[str, str] = field(default_factory=dict)
    network: dict[str, str] = field(default_factory=dict)
    theories: list[str] = field(default_factory=lambda: list(THEORIES))
    simulation: dict[str, str] = field(default_factory=lambda: dict(SIM_DEFAULTS))
    sweep: dict[str, str] = field(default_factory=lambda: dict(SWEEP_DEFAULTS))
    sweep_simulate: bool = False
    data_extra: dict = field(default_factory=dict)   # spec keys without a field (standardize)
    theory_options: str = ""   # the [theory] table as "key=value" pairs (one field)
    sweep_record: list | None = None   # the opened session's recorded χ grid (1, 3, 10, N)

    @classmethod
    def from_config(cls, config: dict, sweep: dict | None = None) -> "FormState":
        """The form of a session's ``config``, its Sweep panel and ticked theories from
        the session's ``sweep`` record (``Session.sweep``) where it has one: the panel
        kept the previous session's grid, and `w` then overwrote the record."""
        spec = dict(config.get("data", {}))
        task = spec.get("task", "linear")
        data = {"task": task}
        keys = data_keys(task)
        for key in keys:
            data[key] = _fmt_value(spec[key]) if key in spec else data_default(task, key)
        # (sessions written before npz refused the csv's split keys carry them: dropped,
        # as they never did anything there)
        extra = {k: v for k, v in spec.items() if k not in keys and k != "task"
                 and not (task in FILE_TASKS and k in FILE_KEYS["csv"])}
        net = dict(config.get("network", {}))
        N = net.get("N", 100)
        network = {"activation": net.get("activation", "linear"), "N": _fmt_value(N)}
        for key in ("g_w", "g_a", "kappa"):
            network[key] = _fmt_value(net.get(key, 1.0 if key != "kappa" else 0.1))
        chi = net.get("chi", 1.0)
        network["chi"] = chi_text(float(chi), int(N)) if isinstance(chi, (int, float)) else str(chi)
        sim = dict(SIM_DEFAULTS)
        for key, value in dict(config.get("simulation", {}) or {}).items():
            if key in sim:
                sim[key] = _fmt_value(value)
        available = available_theories(network["activation"])
        theories = [t for t in (sweep or {}).get("theories") or available if t in available]
        return cls(data=data, network=network, simulation=sim, data_extra=extra,
                   theory_options=options_text(config.get("theory") or {}),
                   theories=theories, sweep=sweep_fields(sweep, int(N)),
                   sweep_simulate=bool((sweep or {}).get("simulate", False)),
                   sweep_record=list((sweep or {}).get("chis") or []) or None)


def sweep_fields(sweep: dict | None, N: int) -> dict[str, str]:
    """The Sweep panel's fields for a recorded sweep: its χ range (``N`` is mean field),
    number of points and widths; the defaults without one.  The panel's grid is
    geometric, so a recorded list such as 1, 3, 10, 30, N shows as its ends and count."""
    out = dict(SWEEP_DEFAULTS)
    chis = (sweep or {}).get("chis") or []
    values = [float(N) if c == "N" else float(c) for c in chis
              if c == "N" or isinstance(c, (int, float))]
    if values:
        lo, hi = min(values), max(values)
        out["chi_min"] = chi_text(lo, N)
        out["chi_max"] = "mean-field" if "N" in chis and hi == float(N) else chi_text(hi, N)
        out["points"] = str(len(set(values)))
    widths = (sweep or {}).get("widths")
    if widths:
        out["widths"] = ",".join(str(w) for w in widths)
    return out


def error_text(section: str, key: str, msg: str) -> str:
    """``section.label: msg``, or ``msg`` alone where the engine's message names the
    field itself ("data.p must be <= 1.0": the toast said "data.p: data.p must be …")."""
    label = LABELS.get(key, key)
    if msg.startswith((f"{section}.{key}", f"{section}.{label}", label)):
        return msg
    return f"{section}.{label}: {msg}"


@dataclass
class Validated:
    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problem: Problem | None = None
    sim_options: dict | None = None
    sweep: dict | None = None
    theory_table: dict = field(default_factory=dict)   # the [theory] table as written
    theory_seed: int | None = None
    theory_options: dict = field(default_factory=dict)  # validated (theory.options)

    @property
    def ok(self) -> bool:
        return not self.errors

    def first_error(self) -> str:
        if not self.errors:
            return ""
        (section, key), msg = next(iter(self.errors.items()))
        return error_text(section, key, msg)

    def config(self, form: FormState) -> dict:
        """The session config: resolved data spec and network, plus simulation options."""
        assert self.problem is not None
        cfg = {"data": dict(self.problem.data.spec), "network": self.problem.network.to_dict()}
        if self.sim_options is not None:
            cfg["simulation"] = {k: v for k, v in self.sim_options.items() if v is not None}
        if self.theory_table:
            cfg["theory"] = dict(self.theory_table)
        return cfg


def _field_of(msg: str, keys: Iterable[str], default: str) -> str:
    keys = list(keys)
    m = re.search(r"data\.(\w+)", msg)
    if m and m.group(1) in keys:
        return m.group(1)
    first = msg.split(" ", 1)[0]
    if first in keys:
        return first
    if first in ("gamma", "give"):
        return "chi"
    if "path" in keys and ("file" in msg or ":" in msg):
        return "path"
    return default


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MSAError(f"{name} must be an integer >= {minimum} (got {value!r})")
    return value


def validate(form: FormState) -> Validated:
    """Validate every field with the engine; errors are keyed by (section, field)."""
    out = Validated()
    task = form.data.get("task", "linear")
    keys = data_keys(task) if task in TASKS else []
    spec: dict[str, Any] = {"task": task, **{k: v for k, v in form.data_extra.items()
                                            if k == "standardize" or task in FILE_TASKS}}
    for key in keys:
        v = coerce(form.data.get(key, ""))
        if v is not None:
            spec[key] = str(v) if key in ("path", "test_path", "target") else v
    data = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = make_data(spec)
        out.warnings += [str(w.message) for w in caught]
    except MSAError as exc:
        out.errors[("data", _field_of(str(exc), list(spec) + ["path"], "task"))] = str(exc)
    net_vals = {k: coerce(form.network.get(k, "")) for k in ("N", "g_w", "g_a", "kappa")}
    act = form.network.get("activation", "linear")
    for key, value in net_vals.items():   # each field on its own, so every bad one is named
        try:
            Network.make(act, **{key: value})
        except MSAError as exc:
            out.errors[("network", key)] = str(exc)
    network = None
    try:
        chi = parse_chi(form.network.get("chi", ""), net_vals["N"])
        if not any(s == "network" for s, _ in out.errors):
            network = Network.make(act, chi=chi, **net_vals)
    except MSAError as exc:
        out.errors[("network", _field_of(str(exc), NETWORK_FIELDS, "chi"))] = str(exc)
    if data is not None and network is not None:
        out.problem = Problem(data, network)
    out.sim_options = _sim_options(form.simulation, out.errors)
    _theory_options(form.theory_options, act, out)
    out.sweep = _sweep_options(form, network, out.errors)
    return out


def _sim_options(raw: dict, errors: dict) -> dict | None:
    opts: dict[str, Any] = {"sampler": raw.get("sampler", "marginal"),
                            "method": raw.get("method", "mala")}
    for key, minimum in (("chains", 1), ("steps", 1), ("burn_in", 0), ("thin", 1),
                         ("seed", 0), ("chunk", 1)):
        try:
            opts[key] = _int(key.replace("_", "-"), coerce(raw.get(key, SIM_DEFAULTS[key])), minimum)
        except MSAError as exc:
            errors[("simulation", key)] = str(exc)
    step = coerce(raw.get("step_size", ""))
    if step is None or (isinstance(step, str) and step.lower() == "auto"):
        opts["step_size"] = None
    elif isinstance(step, (int, float)) and math.isfinite(step) and step > 0:
        opts["step_size"] = float(step)
    else:
        errors[("simulation", "step_size")] = f"step size must be > 0 or blank for auto (got {step!r})"
    # steps count after the burn-in (msa_engine.simulate), which may be as long as one
    # likes; what a run needs is four measured draws
    if "steps" in opts and "thin" in opts and opts["steps"] < 4 * opts["thin"]:
        errors[("simulation", "steps")] = (
            f"steps after burn-in must be >= 4 × thin = {4 * opts['thin']} "
            f"(got {opts['steps']}): too few draws to estimate anything")
    if opts["sampler"] not in SAMPLERS:
        errors[("simulation", "sampler")] = f"sampler must be one of {', '.join(SAMPLERS)}"
    return None if any(s == "simulation" for s, _ in errors) else opts


def options_text(table: dict) -> str:
    """A ``[theory]`` table as the form shows it: ``seed=1 chains=512``."""
    return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                    for k, v in table.items())


def parse_options(text: str) -> dict:
    """``"seed=1, chains=512 is_qmc=false"`` → ``{"seed": 1, "chains": 512, "is_qmc": False}``."""
    table: dict[str, Any] = {}
    for tok in re.split(r"[,\s]+", (text or "").strip()):
        if not tok:
            continue
        key, eq, value = tok.partition("=")
        if not eq or not key or not value:
            raise MSAError(f"write the options as key=value pairs (got {tok!r})")
        low = value.lower()
        table[key.strip()] = (True if low == "true" else False if low == "false"
                              else coerce(value))
    return table


def _theory_options(text: str, activation: str, out: Validated) -> None:
    """The Monte Carlo options field, validated by the engine as a config's ``[theory]``."""
    from msa_engine.config import theory_table
    try:
        table = parse_options(text)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out.theory_seed, out.theory_options = theory_table(table, activation)
        out.warnings += [str(w.message) for w in caught]
        out.theory_table = table
    except MSAError as exc:
        out.errors[("theory", "options")] = str(exc)


def _sweep_options(form: FormState, network: Network | None, errors: dict) -> dict | None:
    if network is None:
        return None
    raw, N = form.sweep, network.N
    out: dict[str, Any] = {"simulate": form.sweep_simulate}
    widths = []
    for tok in re.split(r"[,\s]+", raw.get("widths", "").strip()):
        if not tok:
            continue
        try:
            widths.append(Network.make("linear", N=coerce(tok)).N)
        except MSAError as exc:
            errors[("sweep", "widths")] = str(exc)
    # with widths, the grid is the smallest width's, and an end that means "χ = N"
    # (mean-field) stays symbolic, resolved at each width: it was the form's N, so a
    # sweep at N = 50 ran up to χ = 100 = 2N
    n_grid = min(widths) if widths else N
    for key in ("chi_min", "chi_max"):
        try:
            out[key] = parse_chi(raw.get(key, ""), n_grid)
        except MSAError as exc:
            errors[("sweep", key)] = str(exc)
    try:
        out["points"] = _int("points", coerce(raw.get("points", "5")), 1)
        if out["points"] > 60:
            raise MSAError(f"points must be <= 60 (got {out['points']})")
    except MSAError as exc:
        errors[("sweep", "points")] = str(exc)
    out["widths"] = widths or None
    if any(s == "sweep" for s, _ in errors):
        return None
    n, lo, hi = out["points"], out["chi_min"], out["chi_max"]
    out["chis"] = [lo] if n == 1 else [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
    if widths:
        for key, i in (("chi_min", 0), ("chi_max", -1)):
            if _means_width(raw.get(key, "")):
                out["chis"][i] = "N"
    shown = {k: raw.get(k, "") for k in ("chi_min", "chi_max", "points")}
    recorded = sweep_fields({"chis": form.sweep_record}, N)
    if form.sweep_record and shown == {k: recorded[k] for k in shown}:
        # the opened session's own grid, as recorded (1, 3, 10, 30, N), while its ends
        # and count stand unchanged in the panel: `w` continues that sweep instead of
        # adding the geometric grid's points beside it
        out["chis"] = list(form.sweep_record)
    return out


# -- engine calls (module attributes, so tests can substitute them) ----------

def run_theory(problem: Problem, theory: str, seed=None, callback=None, options=None):
    return solve(problem, theory, seed=seed, callback=callback, options=options)


def run_simulation(problem: Problem, options: dict, callback=None, cancel=None):
    from msa_engine.sampling import simulate
    # the workbench says so itself (log, notification, status column); a warning from
    # this worker thread could land in validate()'s catch_warnings on the UI thread
    return simulate(problem, callback=callback, cancel=cancel, **options,
                    warn_unconverged=False)


def run_sweep(session, sweep: dict, theories, sim_options, callback=None, cancel=None,
              theory_options=None, seed=None):
    """``seed`` (the Monte Carlo field's) is the sweep's base seed, as ``msa sweep --seed``."""
    from msa_engine.sweep import run_sweep as engine_sweep
    return engine_sweep(session, sweep["chis"], widths=sweep["widths"], theories=tuple(theories),
                        simulate=sweep["simulate"], sim_options=sim_options,
                        callback=callback, cancel=cancel, autosave=False,
                        theory_options=theory_options, seed=0 if seed is None else seed)


# -- sessions ----------------------------------------------------------------

def new_session(config: dict, notes: str = ""):
    from msa_engine.sessions import Session
    return Session.new(config, notes=notes)


def session_config(session) -> dict:
    return session.config


def open_session(path: str | Path | None):
    """``path`` or the bundled default session, or a new one from the default config."""
    from msa_engine import sessions
    from msa_engine.config import load_config
    if path is not None:
        return sessions.load_session(path)
    try:
        default = sessions.default_session_path()
        if default is not None and Path(default).is_file():
            return sessions.load_session(default)
    except MSAError:
        pass
    return new_session(load_config(None).resolved)


def is_bundled(path) -> bool:
    if path is None:
        return False
    from msa_engine.sessions import bundled_sessions
    try:
        return Path(path).resolve() in {Path(p).resolve() for p in bundled_sessions()}
    except MSAError:
        return False


def session_name(session) -> str:
    return Path(session.path).stem if session.path else f"{session.name} (unsaved)"


def named_target(directory: Path, name: str) -> Path:
    """The file that saving under ``name`` in ``directory`` writes."""
    from msa_engine.sessions import safe_stem
    return Path(directory) / f"{safe_stem(name.removesuffix('.json'))}.json"


def _free_target(directory: Path, stem: str) -> Path:
    """``directory/stem.json``, or ``stem-2.json``, ``stem-3.json``, … where that exists."""
    target, i = directory / f"{stem}.json", 1
    while target.exists():
        i += 1
        target = directory / f"{stem}-{i}.json"
    return target


def save(session, directory: Path | None, name: str | None = None) -> Path:
    """Save ``session``: to ``name`` in ``directory`` if given, else where it came from
    (a bundled session is copied into ``directory``, under a name no file there has),
    else a fresh name."""
    from msa_engine.sessions import safe_stem, save_session, session_dir
    directory = Path(directory) if directory is not None else Path(session_dir())
    path = session.path
    if name:
        target = named_target(directory, name)
    elif path is None:
        target = _free_target(directory, safe_stem(session.name))
    elif is_bundled(path):
        # a copy, under a name no file has: the folder may hold the user's own copy of
        # this example from an earlier run, which autosave replaced with the example
        target = _free_target(directory, Path(path).stem)
    else:
        target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(save_session(session, target))


def same_problem(a: dict, b: dict) -> bool:
    """Whether two configs describe the same data and network up to χ and N."""
    def key(cfg):
        net = {k: v for k, v in cfg.get("network", {}).items() if k not in ("chi", "N")}
        return cfg.get("data", {}), net
    return key(a) == key(b)


# -- rows and records -----------------------------------------------------------

# status right after the point (ok / unconverged / failed, the reason in the detail line)
# and the kind, which the names already tell (sim-…), last: at 80 columns the table shows
# up to the test error bar; whether to trust a row's numbers was the last column, reached
# only by scrolling
COLUMNS = ("name", "χ", "N", "status", "train disc.", "±", "test disc.", "±", "Q", "λ_top",
           "teacher ∠", "kind")
# the same columns by unique names (two of the headers read "±"): row_cells(entry)[key]
COLUMN_KEYS = ("name", "chi", "N", "status", "train", "train_se", "test", "test_se", "Q",
               "lambda_top", "teacher_angle", "kind")


def _num(v, spec: str = ".4g") -> str:
    if v is None:
        return "–"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return format(f, spec) if math.isfinite(f) else "–"


def entry_status(entry: dict) -> str:
    """``ok``, ``unconverged`` (a simulation whose chains had not mixed) or ``failed``."""
    status = str(entry.get("status", "ok"))
    if status == "ok" and convergence_problems(entry.get("summary") or {}):
        return "unconverged"
    return status


def entry_problem(entry: dict) -> str | None:
    """Why an entry failed or cannot be trusted, in a sentence, or ``None``."""
    if entry.get("status", "ok") != "ok":
        return f"failed: {entry.get('error') or 'no reason recorded'}"
    return convergence_message(entry.get("summary") or {})


def display_order(entries: Sequence[dict]) -> list[int]:
    """The results table's order of ``entries`` (indices): grouped by name in the order
    the names first appear (the theories as a sweep runs them, then the simulations),
    and within a name by N and χ — a session whose χ = 10 point was run after its
    χ = 30 one listed 1, 3, 30, 10, 100."""
    first: dict = {}
    for e in entries:
        first.setdefault((e.get("kind"), e.get("name")), len(first))

    def key(i):
        e = entries[i]
        try:
            where = (float(e.get("N") or 0), float(e.get("chi") or 0))
        except (TypeError, ValueError):
            where = (0.0, 0.0)
        return first[(e.get("kind"), e.get("name"))], where, i

    return sorted(range(len(entries)), key=key)


def entry_row(entry: dict) -> tuple[str, ...]:
    """The results table's cells for ``entry``, in :data:`COLUMNS` order."""
    s = entry.get("summary") or {}
    return (str(entry.get("name", "?")), _num(entry.get("chi")), _num(entry.get("N"), ".0f"),
            entry_status(entry),
            _num(s.get("train_discrepancy")), _num(s.get("train_discrepancy_se"), ".2g"),
            _num(s.get("test_discrepancy")), _num(s.get("test_discrepancy_se"), ".2g"),
            _num(s.get("Q")), _num(s.get("weight_cov_top_eigenvalue")),
            _num(s.get("weight_cov_teacher_overlap"), ".3f"),
            "sim" if entry.get("kind") == "simulation" else "theory")


def row_cells(entry: dict) -> dict[str, str]:
    """:func:`entry_row` by :data:`COLUMN_KEYS`."""
    return dict(zip(COLUMN_KEYS, entry_row(entry)))


def write_csv(path: str | Path, rows: Iterable[tuple], columns: Sequence[str], prefix=()) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(prefix) + list(columns))
        for r in rows:
            w.writerow(list(r))
    return path


def format_record(rec: Any) -> str:
    r = record_dict(rec)
    chi = _num(r.get("chi"), ".4g")
    if is_chunk(r):
        eta = r.get("eta_seconds")
        return (f"{r.get('stage', 'sample'):<8} χ={chi:<7} {r.get('steps_done')}/{r.get('steps_total')}"
                f"  train {_num(r.get('train_discrepancy'))}±{_num(r.get('train_discrepancy_se'), '.2g')}"
                f"  test {_num(r.get('test_discrepancy'))}±{_num(r.get('test_discrepancy_se'), '.2g')}"
                f"  R̂ {_num(r.get('rhat_max'), '.3f')}  ESS {_num(r.get('ess_min'), '.0f')}"
                f"  acc {_num(r.get('acceptance'), '.2f')}  {_num(r.get('steps_per_second'), '.0f')} st/s"
                f"  ETA {_num(eta, '.0f')}s")
    return (f"{r.get('stage', '?'):<9} χ={chi:<7} it {r.get('iteration', 0):>4}"
            f"  residual {_num(r.get('residual'), '.3e')}  step {_num(r.get('step'), '.2e')}"
            f"  damping {_num(r.get('damping'), '.2f')}")
