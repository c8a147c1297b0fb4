"""Problems: a data set plus a network (THEORY §1).

``Network`` holds the architecture and the scaling of THEORY §1; ``Data``
holds train/test arrays and the teacher direction; ``Problem`` pairs them.
All three are frozen: a theory or a sampler never mutates its input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import MSAError

ACTIVATIONS = ("linear", "erf", "relu")


def _positive(name: str, value: Any) -> float:
    # a number, not text that parses as one nor a boolean (a config's `kappa = true`)
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise MSAError(f"{name} must be a number (got {value!r})")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise MSAError(f"{name} must be a number (got {value!r})") from None
    if not math.isfinite(v) or v <= 0:
        raise MSAError(f"{name} must be > 0 (got {value!r})")
    return v


def resolve_chi(chi: Any = None, gamma: Any = None, N: int = 1) -> float:
    """Turn a χ specification into a number.

    ``chi`` may be a positive number, ``"standard"`` (χ = 1) or ``"mean-field"``
    (χ = N).  Alternatively ``gamma`` in [1, 2] gives χ = N^(γ-1) (THEORY §1).
    """
    if chi is not None and gamma is not None:
        raise MSAError("give either chi or gamma, not both")
    if gamma is not None:
        if isinstance(gamma, bool):    # (True was read as γ = 1)
            raise MSAError(f"gamma must be a number in [1, 2] (got {gamma!r})")
        g = _finite("gamma", gamma)
        if not 1.0 <= g <= 2.0:
            raise MSAError(f"gamma must lie in [1, 2] (got {gamma!r})")
        return float(N) ** (g - 1.0)
    if chi is None:
        return 1.0
    if isinstance(chi, str):
        key = chi.strip().lower().replace("_", "-")
        if key == "standard":
            return 1.0
        if key in ("mean-field", "meanfield"):
            return float(N)
        try:
            chi = float(key)
        except ValueError:
            raise MSAError(
                f"chi must be a positive number, 'standard' or 'mean-field' (got {chi!r})"
            ) from None
    if isinstance(chi, bool):
        raise MSAError(f"chi must be a positive number (got {chi!r})")
    return _positive("chi", chi)


def _finite(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise MSAError(f"{name} must be a number (got {value!r})") from None
    if not math.isfinite(v):
        raise MSAError(f"{name} must be finite (got {value!r})")
    return v


@dataclass(frozen=True)
class Network:
    """A two-layer network ``f(x) = Σ_i a_i φ(w_i·x)`` with its priors and scaling.

    Parameters
    ----------
    activation : {"linear", "erf", "relu"}
    N : int
        Number of hidden units.
    g_w, g_a : float
        Read-in and read-out prior scales: ``w ~ N(0, g_w/d)``, ``a ~ N(0, g_a/(χN))``.
    kappa : float
        Likelihood temperature κ; the noise variance is κ/χ.
    chi : float
        Scaling parameter, 1 (standard) … N (mean field).  Use :func:`resolve_chi`
        or :meth:`Network.make` to accept "standard"/"mean-field"/γ.
    """

    activation: str = "linear"
    N: int = 100
    g_w: float = 1.0
    g_a: float = 1.0
    kappa: float = 0.1
    chi: float = 1.0

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise MSAError(
                f"activation must be one of {', '.join(ACTIVATIONS)} (got {self.activation!r})"
            )
        if isinstance(self.N, bool) or not isinstance(self.N, (int, np.integer)):
            if isinstance(self.N, float) and self.N.is_integer():
                object.__setattr__(self, "N", int(self.N))
            else:
                raise MSAError(f"N must be an integer >= 1 (got {self.N!r})")
        if self.N < 1:
            raise MSAError(f"N must be an integer >= 1 (got {self.N!r})")
        object.__setattr__(self, "N", int(self.N))
        for name in ("g_w", "g_a", "kappa", "chi"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))

    @classmethod
    def make(cls, activation="linear", N=100, g_w=1.0, g_a=1.0, kappa=0.1,
             chi=None, gamma=None) -> "Network":
        """Build a network, resolving ``chi`` ("standard", "mean-field", number) or ``gamma``."""
        if (isinstance(N, bool) or not isinstance(N, (int, np.integer, float))
                or not math.isfinite(N)):
            raise MSAError(f"N must be an integer >= 1 (got {N!r})")
        return cls(activation=activation, N=N, g_w=g_w, g_a=g_a, kappa=kappa,
                   chi=resolve_chi(chi, gamma, int(N) if float(N) >= 1 else 1))

    def with_chi(self, chi: float | str) -> "Network":
        """This network at another χ: a number, or ``"standard"``/``"mean-field"`` as
        :meth:`make` takes them."""
        if chi is None:
            raise MSAError("with_chi needs a χ: a positive number, 'standard' or 'mean-field'")
        return replace(self, chi=resolve_chi(chi, None, self.N))

    @property
    def gamma(self) -> float:
        """The γ with χ = N^(γ-1) (undefined for N = 1, reported as 1)."""
        return 1.0 + (math.log(self.chi) / math.log(self.N) if self.N > 1 else 0.0)

    def to_dict(self) -> dict:
        return {"activation": self.activation, "N": self.N, "g_w": self.g_w,
                "g_a": self.g_a, "kappa": self.kappa, "chi": self.chi}


def _as_array(name: str, a: Any, ndim: int) -> np.ndarray:
    """A finite, non-empty float array of ``ndim`` dimensions (1-D input becomes a
    column for matrices; a single row or column becomes a vector)."""
    if isinstance(a, np.ndarray) and np.iscomplexobj(a):
        raise MSAError(f"{name} must be real (got complex values)")
    try:
        arr = np.array(a, dtype=float)
    except (TypeError, ValueError, OverflowError):   # (an int of 400 digits overflows)
        raise MSAError(f"{name} must be numeric (finite floats)") from None
    if isinstance(a, np.ndarray) and a.dtype == object and any(v is None for v in a.flat):
        raise MSAError(f"{name} holds None (a missing value)")
    if ndim == 2 and arr.ndim == 1:
        arr = arr[:, None]
    elif ndim == 1 and arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != ndim:
        raise MSAError(f"{name} must be a {ndim}-D array (got shape {arr.shape})")
    if arr.size == 0:
        raise MSAError(f"{name} is empty" + (f" (shape {arr.shape})" if ndim == 2 else ""))
    if not np.all(np.isfinite(arr)):
        raise MSAError(f"{name} contains NaN or inf")
    return arr


def _as_matrix(name: str, a: Any) -> np.ndarray:
    return _as_array(name, a, 2)


def _as_vector(name: str, a: Any) -> np.ndarray:
    return _as_array(name, a, 1)


@dataclass(frozen=True, eq=False)
class Data:
    """Training and test data, with an optional teacher direction (THEORY §8).

    ``spec`` records how the data were made (a seeded generator spec, or the
    file they came from) so that a session can regenerate them bit for bit.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    teacher: np.ndarray | None = None
    spec: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        X = _as_matrix("X_train", self.X_train)
        y = _as_vector("y_train", self.y_train)
        Xs = _as_matrix("X_test", self.X_test)
        ys = _as_vector("y_test", self.y_test)
        if X.shape[0] != y.shape[0]:
            raise MSAError(f"X_train has {X.shape[0]} rows but y_train has {y.shape[0]} entries")
        if Xs.shape[0] != ys.shape[0]:
            raise MSAError(f"X_test has {Xs.shape[0]} rows but y_test has {ys.shape[0]} entries")
        if Xs.shape[1] != X.shape[1]:
            raise MSAError(
                f"X_test has {Xs.shape[1]} features but X_train has {X.shape[1]}")
        teacher = self.teacher
        if teacher is not None:
            teacher = _as_vector("teacher", teacher)
            if teacher.shape[0] != X.shape[1]:
                raise MSAError(
                    f"teacher has length {teacher.shape[0]} but the inputs have d = {X.shape[1]}")
            if not np.any(teacher):
                raise MSAError("teacher must not be the zero vector")
        for name, arr in (("X_train", X), ("y_train", y), ("X_test", Xs), ("y_test", ys)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if teacher is not None:
            teacher.setflags(write=False)
        object.__setattr__(self, "teacher", teacher)
        if self.spec is not None and not isinstance(self.spec, dict):
            raise MSAError(f"Data spec must be a dict (got {type(self.spec).__name__})")
        object.__setattr__(self, "spec", dict(self.spec or {}))

    def __repr__(self) -> str:
        # the arrays' repr made a Problem's 14 kB (a result's 40 kB) in a notebook
        return (f"Data(P={self.P}, P_test={self.P_test}, d={self.d}, "
                f"teacher={'yes' if self.teacher is not None else 'no'}, spec={self.spec!r})")

    @property
    def P(self) -> int:
        return self.X_train.shape[0]

    @property
    def P_test(self) -> int:
        return self.X_test.shape[0]

    @property
    def d(self) -> int:
        return self.X_train.shape[1]


@dataclass(frozen=True, eq=False)
class Problem:
    """A data set and a network: everything a theory or a sampler needs."""

    data: Data
    network: Network

    def __post_init__(self):
        # (a Network where the Data belongs, or a string for the network, failed later
        # in the theories as an AttributeError)
        if not isinstance(self.data, Data):
            raise MSAError(f"Problem(data, network): data must be a Data (msa.make_data), "
                           f"got {type(self.data).__name__}")
        if not isinstance(self.network, Network):
            raise MSAError(f"Problem(data, network): network must be a Network "
                           f"(msa.Network.make), got {type(self.network).__name__}")

    def __repr__(self) -> str:
        return f"Problem(data={self.data!r}, network={self.network!r})"

    def with_network(self, **changes) -> "Problem":
        try:
            return Problem(self.data, replace(self.network, **changes))
        except TypeError as exc:      # an unknown field
            raise MSAError(f"with_network: {exc}") from None

    def with_chi(self, chi: float | str) -> "Problem":
        return Problem(self.data, self.network.with_chi(chi))


def check_problem(problem: Any) -> Problem:
    """``problem`` if it is a :class:`Problem`; else the one-line error of the functions
    that take one (``msa.solve(data, …)`` failed as an AttributeError)."""
    if not isinstance(problem, Problem):
        raise MSAError(f"expected a Problem (msa.Problem(data, network)), got "
                       f"{type(problem).__name__}")
    return problem
