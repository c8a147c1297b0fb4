"""Task generators and data loaders (THEORY §8).

Every generator is seeded by its own ``seed`` (the ``[data].seed`` of a
config), separate from any Monte Carlo seed, and records its teacher
direction where one exists.  :func:`make_data` builds a :class:`Data` from a
plain spec dictionary, which is also what sessions store to regenerate data
bit for bit.
"""

from __future__ import annotations

import csv
import math
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import MSAError, MSAWarning
from .problem import Data
from .resources import check_data
from .theory.options import MAX_EXACT_INTEGER, integral

TASKS = ("linear", "ising", "hermite", "xor", "npz", "csv")

# rms(y) outside this window triggers a warning: the theory's error estimates
# (THEORY §9) were measured for O(1) targets.
_TARGET_SCALE_WINDOW = (0.1, 10.0)


def _int(spec: dict, key: str, default: int, minimum: int = 1) -> int:
    raw = spec.get(key, default)
    v = integral(raw)
    if v is None:
        raise MSAError(f"data.{key} must be an integer (got {raw!r})")
    if v < minimum:
        raise MSAError(f"data.{key} must be >= {minimum} (got {v})")
    if v > MAX_EXACT_INTEGER:     # an int of 400 digits overflowed the memory estimate's floats
        raise MSAError(f"data.{key} is too large ({len(str(v))} digits)")
    return v


def _float(spec: dict, key: str, default: float, lo: float | None = None,
           hi: float | None = None, strict_lo: bool = False) -> float:
    v = spec.get(key, default)
    if isinstance(v, bool):
        raise MSAError(f"data.{key} must be a number (got {v!r})")
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise MSAError(f"data.{key} must be a number (got {v!r})") from None
    if not math.isfinite(v):
        raise MSAError(f"data.{key} must be finite (got {v!r})")
    if lo is not None and (v < lo or (strict_lo and v == lo)):
        raise MSAError(f"data.{key} must be {'>' if strict_lo else '>='} {lo} (got {v})")
    if hi is not None and v > hi:
        raise MSAError(f"data.{key} must be <= {hi} (got {v})")
    return v


def linear_teacher(d: int = 30, P: int = 20, P_test: int = 40, seed: int = 0,
                   sigma: float = 0.0):
    """``x ~ N(0, I_d)``, ``β ~ N(0, I_d)``, ``y = β·x/√d + σ ε``; teacher ``β``."""
    rng = np.random.default_rng(seed)
    beta = rng.standard_normal(d)
    X = rng.standard_normal((P + P_test, d))
    y = X @ beta / math.sqrt(d) + sigma * rng.standard_normal(P + P_test)
    return X, y, beta


def ising_task(d: int = 30, P: int = 20, P_test: int = 40, seed: int = 0,
               p: float = 0.75, J: float = 0.0, sweeps: int = 5):
    """Our Ising task (THEORY §8): class ``c = ±1``; spins align with ``c`` w.p. ``p``.

    With ``J ≠ 0`` nearest-neighbour chain correlations are added by
    ``sweeps`` Metropolis sweeps of ``-J Σ x_j x_{j+1} - h c Σ x_j`` with the
    class bias ``h = atanh(2p - 1)`` held fixed.  Teacher direction ``1/√d``.
    """
    rng = np.random.default_rng(seed)
    n = P + P_test
    c = rng.choice([-1.0, 1.0], size=n)
    agree = rng.random((n, d)) < p
    X = np.where(agree, c[:, None], -c[:, None])
    if J != 0.0 and d > 1:
        if not 0.0 < p < 1.0:
            raise MSAError("data.p must lie strictly between 0 and 1 when J != 0")
        h = math.atanh(2.0 * p - 1.0)
        for _ in range(sweeps):
            for j in range(d):
                left = X[:, j - 1] if j > 0 else 0.0
                right = X[:, j + 1] if j < d - 1 else 0.0
                # energy change of flipping spin j
                with np.errstate(over="ignore"):   # |J| ~ 1e308: dE = ±inf, exp 0 or 1
                    dE = 2.0 * X[:, j] * (J * (left + right) + h * c)
                accept = rng.random(n) < np.exp(-np.maximum(dE, 0.0))
                X[:, j] = np.where(accept, -X[:, j], X[:, j])
    return X, c.copy(), np.ones(d) / math.sqrt(d)


def hermite_task(d: int = 10, P: int = 16, P_test: int = 40, seed: int = 0,
                 a1: float = 3.2, a3: float = -0.8):
    """Single index ``z = x₁``, ``y = a1 z + a3 z³`` (default ``0.8(He₁ − He₃)``); teacher ``e₁``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P + P_test, d))
    z = X[:, 0]
    y = a1 * z + a3 * z ** 3
    e1 = np.zeros(d)
    e1[0] = 1.0
    return X, y, e1


def xor_task(d: int = 10, P: int = 40, P_test: int = 40, seed: int = 0,
             mu: float = 1.0, sigma: float = 0.3):
    """XOR clusters ``x = μ(s₁e₁ + s₂e₂) + σε``, ``y = s₁s₂`` (even: use ReLU, THEORY §6)."""
    if d < 2:
        raise MSAError(f"data.d must be >= 2 for the xor task (got {d})")
    rng = np.random.default_rng(seed)
    n = P + P_test
    s = rng.choice([-1.0, 1.0], size=(n, 2))
    X = sigma * rng.standard_normal((n, d))
    X[:, :2] += mu * s
    return X, s[:, 0] * s[:, 1], None


_GENERATORS: dict[str, tuple[Callable, dict]] = {
    "linear": (linear_teacher, {"d": 30, "P": 20, "P_test": 40, "sigma": 0.0}),
    "ising": (ising_task, {"d": 30, "P": 20, "P_test": 40, "p": 0.75, "J": 0.0, "sweeps": 5}),
    "hermite": (hermite_task, {"d": 10, "P": 16, "P_test": 40, "a1": 3.2, "a3": -0.8}),
    "xor": (xor_task, {"d": 10, "P": 40, "P_test": 40, "mu": 1.0, "sigma": 0.3}),
}

_INT_KEYS = {"d", "P", "P_test", "sweeps"}
# an .npz archive holds its own train/test split: the csv task's split keys would be
# ignored there, so they are refused (they were accepted and silently did nothing)
_FILE_KEYS = {"npz": {"task", "standardize", "path"},
              "csv": {"task", "seed", "standardize", "path", "test_path", "target",
                      "test_fraction"}}


def _load_npz(spec: dict, base_dir: Path | None):
    path = _resolve_path(spec, "path", base_dir)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):   # a bare .npy array
            raise MSAError(f"{path}: not an .npz archive (np.savez) of X_train, y_train, "
                           "X_test, y_test")
        with z:
            missing = [k for k in ("X_train", "y_train", "X_test", "y_test") if k not in z]
            if missing:
                raise MSAError(f"{path}: missing array(s) {', '.join(missing)}")
            arrays = {k: np.array(z[k]) for k in z.files}
    except MSAError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise MSAError(f"cannot read {path}: {exc}") from None
    return (arrays["X_train"], arrays["y_train"], arrays["X_test"], arrays["y_test"],
            arrays.get("teacher"))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, target: str | None):
    try:
        with open(path, newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise MSAError(f"cannot read {path}: {exc}") from None
    if not rows:
        raise MSAError(f"{path}: no data rows")
    header = None
    try:
        [float(c) for c in rows[0]]
    except ValueError:
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise MSAError(f"{path}: no data rows")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:     # (blank lines are skipped, so this counts data lines)
            raise MSAError(f"{path}: data row {i + 1} has {len(r)} columns, the first "
                           f"{width} (rows have different numbers of columns)")
    if header is not None and len(header) != width:
        raise MSAError(f"{path}: the header has {len(header)} columns but the rows have {width}")
    if width < 2:
        sep = next((c for c in ";\t| " if c in rows[0][0].strip()), None)
        hint = (f"; the rows hold {sep!r}: msa reads comma-separated values"
                if sep else "")
        raise MSAError(f"{path}: need at least one feature column and a target column{hint}")
    try:
        table = np.array([[float(c) for c in r] for r in rows])
    except ValueError:
        i, j, cell = next((i, j, c) for i, r in enumerate(rows) for j, c in enumerate(r)
                          if not _is_float(c))
        raise MSAError(f"{path}: data row {i + 1}, column {j + 1}: {cell.strip()[:40]!r} is "
                       "not a number") from None
    col = width - 1
    if target is not None:
        if header is None or target not in header:
            raise MSAError(f"{path}: no column named {target!r}")
        col = header.index(target)
    X = np.delete(table, col, axis=1)
    return X, table[:, col]


def _resolve_path(spec: dict, key: str, base_dir: Path | None) -> Path:
    raw = spec.get(key)
    if not raw or not isinstance(raw, str):
        raise MSAError(f"data.{key} must name a file for task {spec.get('task')!r}")
    path = Path(raw).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise MSAError(f"data.{key}: no such file {str(path)!r}")
    return path


def _load_csv(spec: dict, base_dir: Path | None):
    path = _resolve_path(spec, "path", base_dir)
    X, y = _read_csv(path, spec.get("target"))
    if spec.get("test_path"):
        Xs, ys = _read_csv(_resolve_path(spec, "test_path", base_dir), spec.get("target"))
    else:
        frac = _float(spec, "test_fraction", 0.5, lo=0.0, hi=1.0, strict_lo=True)
        rng = np.random.default_rng(_int(spec, "seed", 0, minimum=0))
        perm = rng.permutation(X.shape[0])
        n_test = int(round(frac * X.shape[0]))
        if n_test < 1 or n_test >= X.shape[0]:
            raise MSAError(f"{path}: test_fraction {frac} leaves no train or no test rows")
        X, y, Xs, ys = X[perm[n_test:]], y[perm[n_test:]], X[perm[:n_test]], y[perm[:n_test]]
    return X, y, Xs, ys, None


def task_defaults(task: str) -> dict:
    """The default parameters of a generator task (THEORY §8)."""
    if task not in _GENERATORS:
        raise MSAError(f"data.task must be one of {', '.join(TASKS)} (got {task!r})")
    return dict(_GENERATORS[task][1])


def make_data(spec: dict | None = None, base_dir: str | Path | None = None,
              **keys: Any) -> Data:
    """Build :class:`Data` from a spec such as ``{"task": "linear", "d": 30, "seed": 1}``
    (or the same as keywords: ``make_data(task="linear", d=30, seed=1)``; keywords
    override the spec's keys).

    Unknown keys raise :class:`MSAError`.  ``standardize = true`` rescales the
    targets to zero mean and unit variance using training statistics; a
    warning (:class:`MSAWarning`) is issued when the targets are far from O(1).
    """
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise MSAError("[data] must be a table")
    if keys:
        spec = {**spec, **keys}
    task = spec.get("task", "linear")
    if task not in TASKS:
        raise MSAError(f"data.task must be one of {', '.join(TASKS)} (got {task!r})")
    base = Path(base_dir) if base_dir is not None else None
    resolved: dict[str, Any] = {"task": task}
    if task in _GENERATORS:
        fn, defaults = _GENERATORS[task]
        unknown = set(spec) - set(defaults) - {"task", "seed", "standardize"}
        if unknown:
            raise MSAError(f"data: unknown key(s) for task {task!r}: {', '.join(sorted(unknown))}")
        kwargs = {}
        for key, default in defaults.items():
            if key in _INT_KEYS:
                kwargs[key] = _int(spec, key, default, minimum=1)
            elif key in ("sigma",):
                kwargs[key] = _float(spec, key, default, lo=0.0)
            elif key == "p":
                kwargs[key] = _float(spec, key, default, lo=0.0, hi=1.0)
            else:
                kwargs[key] = _float(spec, key, default)
        kwargs["seed"] = _int(spec, "seed", 0, minimum=0)
        check_data(kwargs["P"] + kwargs["P_test"], kwargs["d"])   # before allocating
        X, y, teacher = fn(**kwargs)
        P = kwargs["P"]
        Xtr, ytr, Xte, yte = X[:P], y[:P], X[P:], y[P:]
        resolved.update(kwargs)
    else:
        unknown = set(spec) - _FILE_KEYS[task]
        if unknown:
            why = (" (an .npz archive holds its own train/test split)"
                   if task == "npz" and unknown <= _FILE_KEYS["csv"] else "")
            raise MSAError(f"data: unknown key(s) for task {task!r}: "
                           f"{', '.join(sorted(unknown))}{why}")
        loader = _load_npz if task == "npz" else _load_csv
        Xtr, ytr, Xte, yte, teacher = loader(spec, base)
        resolved.update({k: spec[k] for k in spec if k != "task"})
        if base is not None:
            for key in ("path", "test_path"):
                if key in resolved:
                    resolved[key] = str(_resolve_path(spec, key, base))
    standardize = spec.get("standardize", False)
    if not isinstance(standardize, bool):
        raise MSAError(f"data.standardize must be true or false (got {standardize!r})")
    resolved["standardize"] = standardize
    data = Data(Xtr, ytr, Xte, yte, teacher=teacher, spec=resolved)
    if standardize:
        mu, sd = float(np.mean(data.y_train)), float(np.std(data.y_train))
        if sd == 0:
            raise MSAError("data.standardize: the training targets are constant")
        data = Data(data.X_train, (data.y_train - mu) / sd, data.X_test,
                    (data.y_test - mu) / sd, teacher=data.teacher, spec=resolved)
    check_target_scale(data.y_train)
    return data


def check_target_scale(y: np.ndarray) -> None:
    """Warn when the targets are far from O(1) (THEORY §8)."""
    with np.errstate(over="ignore"):       # |y| ~ 1e154 and above: rms = inf, still warned
        rms = float(np.sqrt(np.mean(np.square(y))))
    lo, hi = _TARGET_SCALE_WINDOW
    if rms > 0 and not lo <= rms <= hi:
        warnings.warn(
            f"targets have rms {rms:.3g}, far from O(1): rescale them (data.standardize "
            "= true also centres them, an offset a network without bias cannot fit)",
            MSAWarning, stacklevel=3)
