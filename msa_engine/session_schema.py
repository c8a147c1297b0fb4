"""The shape of a session document, checked once when it is read (README "Sessions").

Sessions are JSON and users edit them by hand (a note, a renamed entry, a deleted
result).  A field of the wrong type used to travel until some command tripped over it:
``msa replay`` on a ``log`` of ``5`` ended in "unexpected TypeError: object of type 'int'
has no len()", ``msa compare`` on a deleted ``test_mean`` in a ``KeyError``.  Here every
field a command or the workbench reads is checked when the file is loaded, and the first
one that is wrong is named by its path (``entries[3].summary.test_mean: expected a list
of 40 numbers, got a string``), one line, before anything is computed or written.

Only types, lengths and the few values the readers rely on (a positive finite χ, a
width ``N ≥ 1``) are checked here; the data spec and network parameters are checked by
the functions that build them (:func:`~msa_engine.config.network_from_dict`,
:func:`~msa_engine.tasks.make_data`) with their own messages.  Unknown keys are left
alone, so that a file written by a newer version with more fields still opens.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import MSAError

KINDS = ("theory", "simulation")
STATUSES = ("ok", "failed")

# summary fields (results.TheoryResult.to_json_dict, SimulationResult.to_json_dict)
_TRAIN_VECTORS = ("train_mean", "train_mean_se")
_TEST_VECTORS = ("test_mean", "test_mean_se", "test_variance_per_point")
# compare, export and the TUI plot them (a theory's errors are zeros, never null)
_REQUIRED = ("train_mean", "test_mean", "train_mean_se", "test_mean_se")
_NUMBER_LISTS = ("weight_cov_eigenvalues",)
_INTEGERS = ("iterations", "chains", "steps", "burn_in", "thin", "seed")
_STRINGS = ("theory", "sampler", "method")
_BOOLEANS = ("converged",)
_TABLES = ("diagnostics", "autocorr_times")
_NUMBERS = ("train_discrepancy", "test_discrepancy", "test_variance", "test_loss",
            "log_evidence", "Q", "Q_se", "kernel_alignment", "weight_cov_top_eigenvalue",
            "weight_cov_top_eigenvalue_se", "weight_cov_excess", "weight_cov_teacher_overlap",
            "weight_cov_tbar_overlap", "residual", "wall_time", "rhat_max", "ess_min",
            "steps_per_second", "train_discrepancy_se", "test_discrepancy_se",
            "train_discrepancy_corrected", "test_discrepancy_corrected", "acceptance",
            "step_size")
# convergence-log records (theory: annealing steps; simulation: chunk records)
_LOG_NUMBERS = ("chi", "residual", "step", "damping", "time", "acceptance", "energy",
                "eta_seconds", "ess_min", "rhat_max", "step_size", "steps_per_second",
                "test_discrepancy", "test_discrepancy_se", "train_discrepancy",
                "train_discrepancy_se")
_LOG_INTEGERS = ("iteration", "steps_done", "steps_total")
# the recorded sweep (sweep.run_sweep)
_SWEEP_LISTS = ("chis", "widths", "theories")
_SWEEP_TABLES = ("sim_options", "theory_options", "executor")


def _what(v: Any) -> str:
    """How a JSON value reads in a message."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return f"a list of {len(v)}"
    if isinstance(v, dict):
        return "a table"
    return type(v).__name__


def _fail(where: str, expected: str, v: Any) -> None:
    raise MSAError(f"{where}: expected {expected}, got {_what(v)}")


_NUMBER_TYPES = {int, float}       # what json.loads gives for numbers (bool is not int here)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number_or_null(where: str, v: Any) -> None:
    if v is not None and not _is_number(v):
        _fail(where, "a number or null", v)


def _numbers(where: str, v: Any, length: int | None = None, null_ok: bool = True) -> None:
    """A list of numbers (JSON ``null`` for a value that was not finite), of ``length``
    where one is known."""
    want = "a list of numbers" if length is None else f"a list of {length} numbers"
    if not isinstance(v, list) or (length is not None and len(v) != length):
        _fail(where, want, v)
    ok = _NUMBER_TYPES | ({type(None)} if null_ok else set())
    if all(type(x) in ok for x in v):     # the common case, without a call per number
        return
    for i, x in enumerate(v):
        if not (_is_number(x) or (null_ok and x is None)):
            _fail(f"{where}[{i}]", "a number", x)


def _table(where: str, v: Any, null_ok: bool = False) -> None:
    if not (isinstance(v, dict) or (null_ok and v is None)):
        _fail(where, "a table" + (" or null" if null_ok else ""), v)


def _typed(where: str, table: dict, keys, check) -> None:
    for k in keys:
        if k in table:
            check(f"{where}.{k}", table[k])


def _integer_or_null(where: str, v: Any) -> None:
    if v is not None and not _is_int(v):
        _fail(where, "an integer or null", v)


def _string(where: str, v: Any) -> None:
    if not isinstance(v, str):
        _fail(where, "a string", v)


def _boolean(where: str, v: Any) -> None:
    if not isinstance(v, bool):
        _fail(where, "true or false", v)


def _table_or_null(where: str, v: Any) -> None:
    _table(where, v, null_ok=True)


def check_summary(where: str, s: Any, sizes: tuple[int | None, int | None]) -> None:
    """One entry's ``summary`` (``sizes``: the train and test set sizes, where known)."""
    _table(where, s)
    for k in _REQUIRED:
        if k not in s:
            raise MSAError(f"{where}.{k} is missing")
    for keys, n in ((_TRAIN_VECTORS, sizes[0]), (_TEST_VECTORS, sizes[1])):
        for k in keys:
            if k in s:
                _numbers(f"{where}.{k}", s[k], n)
    _typed(where, s, _NUMBER_LISTS, _numbers)
    _typed(where, s, _NUMBERS, _number_or_null)
    _typed(where, s, _INTEGERS, _integer_or_null)
    _typed(where, s, _STRINGS, _string)
    _typed(where, s, _BOOLEANS, _boolean)
    _typed(where, s, _TABLES, _table_or_null)


def check_log(where: str, log: Any) -> None:
    if not isinstance(log, list):
        _fail(where, "a list of records", log)
    for i, r in enumerate(log):
        w = f"{where}[{i}]"
        _table(w, r)
        _typed(w, r, _LOG_NUMBERS, _number_or_null)
        _typed(w, r, _LOG_INTEGERS, _integer_or_null)
        if "stage" in r:
            _string(f"{w}.stage", r["stage"])


def check_entry(where: str, e: Any, sizes: tuple[int | None, int | None]) -> None:
    _table(where, e)
    for k in ("kind", "name", "chi", "N"):
        if k not in e:
            raise MSAError(f"{where}.{k} is missing")
    if e["kind"] not in KINDS:
        _fail(f"{where}.kind", "'theory' or 'simulation'", e["kind"])
    _string(f"{where}.name", e["name"])
    chi = e["chi"]
    if not (_is_number(chi) and math.isfinite(chi) and chi > 0):
        _fail(f"{where}.chi", "a positive number", chi)
    if not (_is_int(e["N"]) and e["N"] >= 1):
        _fail(f"{where}.N", "an integer >= 1", e["N"])
    status = e.get("status", "ok")
    if status not in STATUSES:
        _fail(f"{where}.status", "'ok' or 'failed'", status)
    if e.get("error") is not None:
        _string(f"{where}.error", e["error"])
    _integer_or_null(f"{where}.seed", e.get("seed"))
    _number_or_null(f"{where}.wall_time", e.get("wall_time"))
    for k in ("created", "via"):
        if k in e:
            _string(f"{where}.{k}", e[k])
    if "options" in e:
        _table_or_null(f"{where}.options", e["options"])
    for k in ("tbar", "warm_tbar"):
        if e.get(k) is not None:
            _numbers(f"{where}.{k}", e[k], sizes[0])
    if "log" in e and e["log"] is not None:
        check_log(f"{where}.log", e["log"])
    if status == "ok":
        if "summary" not in e:
            raise MSAError(f"{where}.summary is missing")
        check_summary(f"{where}.summary", e["summary"], sizes)
    elif e.get("summary") is not None:
        _table(f"{where}.summary", e["summary"])


def check_sweep(where: str, sw: Any) -> None:
    if sw is None:
        return
    _table(where, sw)
    for k in _SWEEP_LISTS:
        if sw.get(k) is not None and not isinstance(sw[k], list):
            _fail(f"{where}.{k}", "a list or null", sw[k])
    _typed(where, sw, _SWEEP_TABLES, _table_or_null)
    for k in ("simulate", "completed"):
        if k in sw:
            _boolean(f"{where}.{k}", sw[k])
    if "seed" in sw:
        _integer_or_null(f"{where}.seed", sw["seed"])


def data_sizes(doc: dict) -> tuple[int | None, int | None]:
    """The train and test set sizes the entries' vectors must have: from the inline data,
    else the generator spec (its defaults where a size is not given); ``None`` where the
    spec itself is wrong (building the data then says what)."""
    inline = doc.get("data")
    if isinstance(inline, dict):
        sizes = []
        for k in ("y_train", "y_test"):
            v = inline.get(k)
            sizes.append(len(v) if isinstance(v, list) else None)
        return sizes[0], sizes[1]
    spec = doc["config"]["data"]
    from .tasks import TASKS, task_defaults      # noqa: PLC0415 - numpy only when read
    task = spec.get("task", "linear")
    if task not in TASKS or spec.get("path"):
        return None, None
    try:
        defaults = task_defaults(task)
    except MSAError:
        return None, None
    sizes = []
    for k in ("P", "P_test"):
        v = spec.get(k, defaults.get(k))
        sizes.append(v if _is_int(v) and v >= 1 else None)
    return sizes[0], sizes[1]


def check_document(doc: dict, source: str) -> None:
    """Raise one :class:`MSAError` line naming the first malformed field of a session
    document (schema :data:`~msa_engine.sessions.SCHEMA_VERSION`, migrated)."""
    try:
        _check_document(doc)
    except MSAError as exc:
        raise MSAError(f"{source}: malformed session: {exc}") from None


def _check_document(doc: dict) -> None:
    for k in ("name", "notes", "created", "modified"):
        if k in doc:
            _string(k, doc[k])
    if doc.get("data_sha256") is not None:
        _string("data_sha256", doc["data_sha256"])
    config = doc.get("config")
    _table("config", config)
    for k in ("network", "data"):
        if k not in config:
            raise MSAError(f"config.{k} is missing")
        _table(f"config.{k}", config[k])
    net = config["network"]
    for k in ("activation", "N", "chi"):          # a session records the resolved network
        if k not in net:
            raise MSAError(f"config.network.{k} is missing")
    if not (_is_number(net["chi"]) and math.isfinite(net["chi"]) and net["chi"] > 0):
        _fail("config.network.chi", "a positive number", net["chi"])
    from .config import network_from_dict        # noqa: PLC0415
    try:
        network_from_dict(config["network"])
    except MSAError as exc:
        raise MSAError(f"config.network: {exc}") from None
    task = config["data"].get("task", "linear")
    if not isinstance(task, str):
        _fail("config.data.task", "a string", task)
    for k in ("simulation", "theory", "sweep"):
        if k in config:
            _table_or_null(f"config.{k}", config[k])
    _table_or_null("data", doc.get("data"))
    check_sweep("sweep", doc.get("sweep"))
    entries = doc.get("entries")
    if not isinstance(entries, list):
        _fail("entries", "a list", entries)
    sizes = data_sizes(doc)
    for i, e in enumerate(entries):
        check_entry(f"entries[{i}]", e, sizes)
