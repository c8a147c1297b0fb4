"""Sessions: the unit of a researcher's work, saved as one JSON file.

A session records what was asked (the resolved config, which regenerates
the data bit for bit, or the data itself for user files), what was computed
(theory results and simulation summaries with error bars and diagnostics),
how it converged (solver iterations and sampler chunks, with timestamps),
on which software, and free-text notes.  See the README's "Session format".

Writes are atomic (a temp file in the same folder, fsync, ``os.replace``),
so a crash or a concurrent writer never leaves a half-written session.
Unknown fields are kept through a load–save round trip, and older schema
versions are migrated on load.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from . import __version__
from .errors import MSAError
from .problem import Data, Problem
from .results import convergence_problems
from .session_schema import check_document

SCHEMA = "msa-workbench-session"
SCHEMA_VERSION = 2
SUFFIX = ".json"
DEFAULT_SESSION = "ising-linear-sweep.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def software_versions() -> dict:
    import numba
    import scipy
    return {"msa_workbench": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "numba": numba.__version__,
            "platform": platform.platform()}


def data_digest(data: Data) -> str:
    """SHA-256 of the data arrays: proves that a regenerated data set is the same."""
    h = hashlib.sha256()
    for arr in (data.X_train, data.y_train, data.X_test, data.y_test):
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    return h.hexdigest()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    return obj


class Session:
    """A mutable session document.  Build with :meth:`new` or :func:`load_session`."""

    def __init__(self, doc: dict, path: str | Path | None = None):
        self.doc = doc
        self.path = Path(path) if path is not None else None
        self._problem_cache: dict = {}

    # -- construction ----------------------------------------------------
    @classmethod
    def new(cls, config: dict, name: str | None = None, notes: str = "",
            data: Data | None = None) -> "Session":
        """A new session for a resolved config (``Config.resolved``).

        Generator tasks are stored as their seeded spec; user data (npz/csv)
        is stored inline so that the session stays self-contained.
        """
        from .config import config_from_dict
        config = copy.deepcopy(_jsonable(config))
        if data is None:
            data = config_from_dict(config).problem.data
        doc = {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "name": name or _default_name(config), "created": _now(), "modified": _now(),
            "versions": software_versions(), "config": config,
            "data": None if config.get("data", {}).get("task") in _GENERATED else _data_inline(data),
            "data_sha256": data_digest(data), "entries": [], "notes": notes,
        }
        s = cls(doc)
        s._problem_cache[None] = data
        return s

    def payload(self) -> dict:
        """What a worker needs to rebuild the problem: config, data (or spec), checksum."""
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
                "config": copy.deepcopy(self.config), "data": self.doc.get("data"),
                "data_sha256": self.doc.get("data_sha256"), "entries": [], "name": self.name}

    @classmethod
    def from_payload(cls, payload: dict) -> "Session":
        return cls(copy.deepcopy(payload))

    # -- accessors ---------------------------------------------------------
    @property
    def name(self) -> str:
        return self.doc.get("name", "")

    @property
    def config(self) -> dict:
        return self.doc["config"]

    @property
    def entries(self) -> list[dict]:
        return self.doc["entries"]

    @property
    def notes(self) -> str:
        return self.doc.get("notes", "")

    @notes.setter
    def notes(self, text: str) -> None:
        self.doc["notes"] = str(text)

    @property
    def sweep(self) -> dict | None:
        return self.doc.get("sweep")

    def data(self) -> Data:
        """The session's data, regenerated from its spec (verified by checksum) or inline."""
        if None not in self._problem_cache:
            from .tasks import make_data
            if self.doc.get("data"):
                data = _data_from_inline(self.doc["data"], self.config.get("data", {}))
            else:
                data = make_data(self.config.get("data", {}))
            want = self.doc.get("data_sha256")
            if want and data_digest(data) != want:
                raise MSAError(f"session {self.name!r}: the regenerated data differ from the "
                               "recorded ones (checksum mismatch)")
            self._problem_cache[None] = data
        return self._problem_cache[None]

    def problem(self, chi: float | None = None, N: int | None = None) -> Problem:
        """The session's problem, optionally at another χ and width ``N``."""
        from .config import network_from_dict
        net = network_from_dict(self.config["network"])
        changes = {}
        if N is not None:
            changes["N"] = int(N)
        if chi is not None:
            changes["chi"] = float(chi)
        from dataclasses import replace
        return Problem(self.data(), replace(net, **changes) if changes else net)

    # -- results -----------------------------------------------------------
    def add_result(self, result, log: Iterable | None = None, options: dict | None = None,
                   extra: dict | None = None) -> dict:
        """Record a TheoryResult or SimulationResult as an entry and return it.  A result
        of other data than the session's is refused: its vectors would not fit the
        session's data, and the file would not load again."""
        problem = getattr(result, "problem", None)
        if problem is None or not hasattr(result, "to_json_dict"):
            raise MSAError(f"add_result needs a TheoryResult or SimulationResult "
                           f"(got {type(result).__name__})")
        want = self.doc.get("data_sha256")
        if want and problem.data is not self._problem_cache.get(None) \
                and data_digest(problem.data) != want:
            raise MSAError(f"session {self.name!r}: the result is of other data than the "
                           "session's (another task, seed or size); start a session for it")
        return self.add_entry(entry_from_result(result, log, options, extra))

    def add_entry(self, entry: dict) -> dict:
        """Record a ready entry (as made by :func:`entry_from_result`), replacing any
        earlier entry for the same (kind, name, χ, N)."""
        self._replace_entry(entry)
        return entry

    def add_failure(self, kind: str, name: str, chi: float, N: int, error: str,
                    options: dict | None = None) -> dict:
        entry = {"kind": kind, "name": name, "chi": float(chi), "N": int(N), "seed": None,
                 "status": "failed", "error": str(error), "created": _now(),
                 "wall_time": 0.0, "summary": None, "log": []}
        if options:
            entry["options"] = _jsonable(options)
        self._replace_entry(entry)
        return entry

    def _replace_entry(self, entry: dict) -> None:
        key = (entry["kind"], entry["name"], _chi_key(entry["chi"]), entry["N"])
        self.doc["entries"] = [e for e in self.entries
                               if (e["kind"], e["name"], _chi_key(e["chi"]), e["N"]) != key]
        self.entries.append(entry)
        self.doc["modified"] = _now()

    def find(self, kind: str | None = None, name: str | None = None,
             chi: float | None = None, N: int | None = None, ok_only: bool = True) -> list[dict]:
        out = []
        for e in self.entries:
            if kind is not None and e["kind"] != kind:
                continue
            if name is not None and e["name"] != name:
                continue
            if chi is not None and _chi_key(e["chi"]) != _chi_key(chi):
                continue
            if N is not None and e["N"] != N:
                continue
            if ok_only and e.get("status") != "ok":
                continue
            out.append(e)
        return out

    def theories(self) -> list[dict]:
        return self.find(kind="theory")

    def simulations(self) -> list[dict]:
        return self.find(kind="simulation")

    def sweep_rows(self) -> list[dict]:
        """Flat rows (name, kind, chi, N, discrepancies ± se) sorted by N, name, χ."""
        rows = []
        data = self.data()
        for e in self.find():
            try:
                s = e["summary"]
                rows.append({
                    "name": e["name"], "kind": e["kind"], "chi": e["chi"], "N": e["N"],
                    "train_discrepancy": s.get("train_discrepancy"),
                    "test_discrepancy": s.get("test_discrepancy"),
                    # a simulation's own error of its discrepancy (from the draws, with
                    # the correlation between points that share W) where it has one; the
                    # delta method from per-point errors, which ignores that correlation,
                    # only for Monte Carlo theories that report no such figure (the TUI,
                    # replay and the CSV showed two different errors for one simulation)
                    "train_discrepancy_se": _stored_or(s, "train_discrepancy_se", lambda: (
                        discrepancy_se(data.y_train, s["train_mean"], s.get("train_mean_se")))),
                    "test_discrepancy_se": _stored_or(s, "test_discrepancy_se", lambda: (
                        discrepancy_se(data.y_test, s["test_mean"], s.get("test_mean_se")))),
                    "Q": s.get("Q"),
                    "weight_cov_top_eigenvalue": s.get("weight_cov_top_eigenvalue"),
                    # False for a simulation whose chains had not mixed (theories that do
                    # not converge are stored as failed points)
                    "converged": not convergence_problems(s)})
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise MSAError(f"session {self.name!r}: entry {e['name']} at chi = {e['chi']:g} "
                               f"has a malformed summary ({type(exc).__name__}: {exc})") from None
        rows.sort(key=lambda r: (r["N"], r["kind"], r["name"], r["chi"]))
        return rows

    def to_dict(self) -> dict:
        self.doc["modified"] = self.doc.get("modified") or _now()
        return self.doc


_GENERATED = ("linear", "ising", "hermite", "xor")


def entry_from_result(result, log: Iterable | None = None, options: dict | None = None,
                      extra: dict | None = None) -> dict:
    """A JSON-ready session entry for a TheoryResult or SimulationResult."""
    net = result.problem.network
    kind = "simulation" if result.theory.startswith("sim") else "theory"
    records = list(result.log if log is None else log)
    entry = {
        "kind": kind, "name": result.theory, "chi": net.chi, "N": net.N,
        "seed": getattr(result, "seed", None), "status": "ok", "error": None,
        "created": _now(), "wall_time": float(getattr(result, "wall_time", 0.0)),
        "summary": _jsonable(result.to_json_dict()),
        "log": [_jsonable(r) for r in records],
    }
    if kind == "theory":
        entry["tbar"] = _jsonable(result.tbar)
    if options:
        entry["options"] = _jsonable(options)
    if extra:
        entry.update(_jsonable(extra))
    return entry


def _chi_key(chi) -> float:
    return float(f"{float(chi):.12g}")


def _stored_or(summary: dict, key: str, compute) -> float:
    v = summary.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else compute()


def discrepancy_se(y: np.ndarray, mean, se) -> float:
    """Standard error of ``mean((y − f̂)²)`` by the delta method from per-point SEs.

    Zero for deterministic theories (all SEs zero).
    """
    if se is None:
        return 0.0
    r, se = np.asarray(y) - np.asarray(mean, float), np.asarray(se, float)
    with np.errstate(over="ignore", invalid="ignore"):   # absurd numbers in a hand-edited file
        return float(2.0 / r.size * np.sqrt(np.sum(r ** 2 * se ** 2)))


def _default_name(config: dict) -> str:
    net, data = config.get("network", {}), config.get("data", {})
    return f"{data.get('task', 'data')}-{net.get('activation', 'net')}-N{net.get('N', '')}"


def _data_inline(data: Data) -> dict:
    return {"X_train": data.X_train.tolist(), "y_train": data.y_train.tolist(),
            "X_test": data.X_test.tolist(), "y_test": data.y_test.tolist(),
            "teacher": None if data.teacher is None else data.teacher.tolist()}


def _data_from_inline(d: dict, spec: dict) -> Data:
    try:
        return Data(np.array(d["X_train"], float), np.array(d["y_train"], float),
                    np.array(d["X_test"], float), np.array(d["y_test"], float),
                    teacher=None if d.get("teacher") is None else np.array(d["teacher"], float),
                    spec=spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise MSAError(f"session data are malformed ({exc})") from None


# ---------------------------------------------------------------------------
# migration
# ---------------------------------------------------------------------------

def _migrate_1_to_2(doc: dict) -> dict:
    """Schema 1 (pre-release) kept the config under "problem" and entries under
    "results", with the kind implied by a "simulation" flag."""
    doc = dict(doc)
    doc["config"] = doc.pop("problem")
    entries = []
    for r in doc.pop("results", []):
        r = dict(r)
        r["kind"] = "simulation" if r.pop("simulation", False) else "theory"
        r.setdefault("status", "ok")
        r.setdefault("error", None)
        r.setdefault("log", [])
        entries.append(r)
    doc["entries"] = entries
    doc.setdefault("notes", "")
    doc["schema_version"] = 2
    return doc


MIGRATIONS = {1: _migrate_1_to_2}


def session_from_dict(doc: Any, source: str = "<session>") -> Session:
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise MSAError(f"{source} is not an msa-workbench session")
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MSAError(f"{source}: invalid schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise MSAError(f"{source} has schema version {version}, newer than this msa-workbench "
                       f"supports ({SCHEMA_VERSION}); upgrade msa-workbench to open it")
    try:
        while doc["schema_version"] < SCHEMA_VERSION:
            doc = MIGRATIONS[doc["schema_version"]](doc)
    except (KeyError, TypeError, AttributeError) as exc:
        raise MSAError(f"{source}: cannot migrate schema version {version} ({exc})") from None
    check_document(doc, source)
    return Session(doc)


def load_session(path: str | Path) -> Session:
    """Read a session file; any problem is one :class:`MSAError` line."""
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise MSAError(f"no such session file {str(p)!r}") from None
    except OSError as exc:
        raise MSAError(f"cannot read session {str(p)!r}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise MSAError(f"{p} is not a session file (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise MSAError(f"{p} is truncated or corrupted (invalid JSON at line {exc.lineno}, "
                       f"column {exc.colno})") from None
    except RecursionError:
        raise MSAError(f"{p} is corrupted (nesting too deep)") from None
    s = session_from_dict(doc, str(p))
    s.path = p
    return s


def save_session(session: Session, path: str | Path | None = None) -> Path:
    """Write ``session`` atomically (temp file + fsync + rename) and return the path.

    ``path`` defaults to the session's own path, else ``session_dir()/NAME.json``.
    """
    if path is None:
        path = session.path or session_file(session.name)
    p = Path(path).expanduser()
    if p.is_symlink():
        # the file it points to: the rename put a regular file in the link's place and
        # left the target stale
        p = p.resolve()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MSAError(f"cannot create folder {str(p.parent)!r}: {exc.strerror or exc}") from None
    session.doc["modified"] = _now()
    text = json.dumps(_jsonable(session.doc), indent=1, allow_nan=False)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    except OSError as exc:
        raise MSAError(f"cannot write session to {str(p.parent)!r}: {exc.strerror or exc}") from None
    try:
        # mkstemp creates 0600; keep an existing file's mode, else the usual 0644
        mode = p.stat().st_mode & 0o777 if p.exists() else 0o644
        os.chmod(tmp, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException as exc:      # an OSError, or Ctrl-C in the middle of the write
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise MSAError(f"cannot write session {str(p)!r}: {exc.strerror or exc}") from None
        raise
    session.path = p
    return p


def session_file(name: str) -> Path:
    """Where a session called ``name`` is saved by default: in :func:`session_dir`, under
    a file name made safe (a name is not a path: ``sub/dir`` or ``/tmp/x`` must not
    write elsewhere)."""
    return session_dir() / f"{safe_stem(name)}{SUFFIX}"


def safe_stem(name: str) -> str:
    """``name`` as a file name without suffix: letters, digits, ``_``, ``.`` and ``-``
    kept, every other run of characters one ``-`` (the CLI and the workbench had a rule
    each, so one name could be saved under two file names)."""
    return re.sub(r"[^\w.-]+", "-", name.strip()).strip("-.") or "session"


def session_dir() -> Path:
    """``./sessions`` when that folder exists, else the per-user data folder."""
    local = Path.cwd() / "sessions"
    if local.is_dir():
        return local
    from platformdirs import user_data_dir
    return Path(user_data_dir("msa-workbench", appauthor=False)) / "sessions"


def list_sessions(directory: str | Path | None = None) -> list[Path]:
    d = Path(directory) if directory is not None else session_dir()
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob(f"*{SUFFIX}") if not p.name.startswith("."))


def bundled_sessions() -> list[Path]:
    """The example sessions shipped as package data."""
    root = resources.files("msa_engine.data").joinpath("sessions")
    try:
        return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(SUFFIX))
    except (FileNotFoundError, NotADirectoryError):
        return []


def default_session_path() -> Path:
    """The bundled session that ``msa tui`` opens by default."""
    return Path(str(resources.files("msa_engine.data").joinpath("sessions", DEFAULT_SESSION)))
