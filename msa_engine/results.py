"""Result types shared by theories and samplers, and the observables of THEORY §2."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .problem import Problem


@dataclass(frozen=True)
class IterationRecord:
    """One line of a convergence log: a solver iteration or a sampler chunk."""

    stage: str            # e.g. "tree", "one-loop", "rescaling", "anneal"
    chi: float
    iteration: int
    residual: float
    step: float = float("nan")
    damping: float = 1.0
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {"stage": self.stage, "chi": self.chi, "iteration": self.iteration,
                "residual": self.residual, "step": self.step, "damping": self.damping,
                "time": self.time}


Callback = Optional[Callable[[IterationRecord], Any]]

# A simulation counts as converged when every traced output has a rank-normalised split
# R̂ below RHAT_OK and a bulk/tail ESS of at least ESS_OK (msa_engine.sampling.run).
RHAT_OK = 1.05              # max over all outputs (Vehtari et al. ask 1.01 per quantity)
ESS_OK = 100.0
ACCEPTANCE_LOW = 0.01       # MALA acceptance below this: the chains hardly move
_ABSENT = object()


def convergence_problems(result) -> list[str]:
    """Why a simulation's numbers and error bars are not to be trusted, as short phrases
    (``[]`` when it converged).  Theories that do not converge raise, or are stored as
    failed points; a stored theory marked unconverged gets one phrase with its residual.

    ``result`` is a :class:`~msa_engine.sampling.SimulationResult` or the summary a
    session stores for one.  A run that never mixed (a step size of 5, no proposal
    accepted) returned a train discrepancy of 0.0096 ± 0.0006 that read as any other
    row of a table; its R̂ of 6e15 was printed once, further down."""
    field = result.get if isinstance(result, dict) else \
        (lambda key, default=None: getattr(result, key, default))

    def get(key):
        v = field(key)
        try:
            return None if v is None or isinstance(v, bool) else float(v)
        except (TypeError, ValueError):
            return None

    if field("converged", True) is not False:
        return []
    if field("rhat_max", _ABSENT) is _ABSENT:       # a theory's summary

        res = get("residual")
        return ["the solver's" + (f" residual {res:.3g}" if res is not None else "")]
    out = []
    rhat, ess, acc, chains = get("rhat_max"), get("ess_min"), get("acceptance"), get("chains")
    if chains == 1:
        # split R̂ compares chains (diagnostics.rhat_ess): one chain cannot show that
        # it is stuck in one mode, whatever its length (as PyMC warns)
        out.append("one chain: R̂ needs two or more")
    elif rhat is None or not math.isfinite(rhat) or rhat >= RHAT_OK:
        out.append("R̂_max " + ("undefined" if rhat is None or not math.isfinite(rhat)
                                else f"{rhat:.4f} ≥ {RHAT_OK:g}" if rhat < 100 else
                                f"{rhat:.3g} ≥ {RHAT_OK:g}"))
    if ess is None or not math.isfinite(ess) or ess < ESS_OK:
        out.append("ESS_min " + ("undefined" if ess is None or not math.isfinite(ess)
                                  else f"{ess:.0f} < {ESS_OK:.0f}"))
    if acc is not None and acc < ACCEPTANCE_LOW:      # (for ULA, its Metropolis ratio)
        out.append(f"acceptance {acc:.2g}: the step size is too large")
    return out or ["marked so when it ran"]


def convergence_message(result) -> str | None:
    """One sentence on a simulation that has not converged (:func:`convergence_problems`)
    with what to do about it, or ``None``: a step size so large that no proposal is
    accepted is not helped by more steps, nor a single chain's missing R̂."""
    problems = convergence_problems(result)
    if not problems:
        return None
    if problems[0].startswith("the solver"):
        return f"not converged ({problems[0]}): recompute it (msa replay --rerun)"
    advice = []
    if any(p.startswith("acceptance") for p in problems):
        # (its R̂ and ESS follow from the chains standing still: more steps do not help)
        advice.append("use a smaller step size (or none, so that burn-in adapts it)")
    else:
        if any(p.startswith("one chain") for p in problems):
            advice.append("run two or more chains")
        if any(p.startswith(("R̂", "ESS")) for p in problems) or not advice:
            advice.append("run more steps (or more burn-in)")
    return (f"not converged ({', '.join(problems)}): its error bars are not reliable; "
            f"{'; '.join(advice)}")


def centered_alignment(K: np.ndarray, y: np.ndarray) -> float:
    """Centred kernel–target alignment (CKA) of ``K`` with ``y yᵀ``."""
    P = K.shape[0]
    H = np.eye(P) - 1.0 / P
    Kc = H @ K @ H
    yc = y - y.mean()
    num = float(yc @ Kc @ yc)
    den = float(np.linalg.norm(Kc) * (yc @ yc))
    return num / den if den > 0 else float("nan")


def _overlap(v: np.ndarray, direction: np.ndarray | None) -> float | None:
    if direction is None:
        return None
    n = np.linalg.norm(direction)
    if n == 0:
        return None
    return float(abs(v @ direction) / n)


@dataclass(frozen=True, eq=False)
class WeightCovSummary:
    """Spectrum of ``Σ_W = ⟨WᵀW⟩/N`` and overlaps of its top eigenvector."""

    eigenvalues: np.ndarray           # descending
    top_eigenvector: np.ndarray
    teacher_overlap: float | None
    tbar_overlap: float | None

    @property
    def top_eigenvalue(self) -> float:
        return float(self.eigenvalues[0])


def summarize_weight_cov(Sigma_W: np.ndarray, teacher: np.ndarray | None,
                         X: np.ndarray, tbar: np.ndarray | None) -> WeightCovSummary:
    evals, evecs = np.linalg.eigh(0.5 * (Sigma_W + Sigma_W.T))
    order = np.argsort(evals)[::-1]
    evals, top = evals[order], evecs[:, order[0]]
    xt = None if tbar is None else X.T @ tbar
    return WeightCovSummary(evals, top, _overlap(top, teacher), _overlap(top, xt))


@dataclass(frozen=True, eq=False)
class TheoryResult:
    """What every theory returns (and, with ``*_se`` from Monte Carlo, every simulation).

    Arrays are numpy; ``weight_cov`` is ``Σ_W = ⟨WᵀW⟩/N`` (d×d) and
    ``mean_kernel`` is the posterior mean output kernel ``⟨K⟩`` on the
    training points (P×P).  ``Q`` and ``log_evidence`` are ``None`` where the
    theory does not define them.
    """

    theory: str
    problem: Problem
    train_mean: np.ndarray
    test_mean: np.ndarray
    test_predictive_variance: np.ndarray
    weight_cov: np.ndarray
    mean_kernel: np.ndarray | None      # None: a warm-start point of msa.solve's annealing
    tbar: np.ndarray
    Q: float | None = None
    log_evidence: float | None = None
    train_mean_se: np.ndarray | None = None
    test_mean_se: np.ndarray | None = None
    converged: bool = True
    residual: float = 0.0
    log: tuple = ()
    wall_time: float = 0.0
    seed: int | None = None
    extras: dict = field(default_factory=dict)

    _ARRAYS = ("train_mean", "test_mean", "test_predictive_variance", "weight_cov",
               "mean_kernel", "tbar", "train_mean_se", "test_mean_se")

    def __post_init__(self) -> None:
        if self.train_mean_se is None:
            object.__setattr__(self, "train_mean_se", np.zeros_like(self.train_mean))
        if self.test_mean_se is None:
            object.__setattr__(self, "test_mean_se", np.zeros_like(self.test_mean))
        self._lock_arrays()

    def _lock_arrays(self) -> None:
        # read-only views: a result is frozen, and Σ_W's summary is computed once and kept,
        # so `res.weight_cov[0, 0] = 1` went unnoticed by it.  Views, so that an array the
        # result was built from (a caller's tbar0, say) stays writable for its owner.
        for name in self._ARRAYS:
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and value.flags.writeable:
                view = value.view()
                view.setflags(write=False)
                object.__setattr__(self, name, view)

    def __setstate__(self, state: dict) -> None:
        # pickle and copy.deepcopy rebuild a result without __post_init__, and numpy
        # unpickles its arrays writable
        self.__dict__.update(state)
        self._lock_arrays()

    def __repr__(self) -> str:
        # a summary: the arrays (and the problem's) made a result's repr 40 kB
        net, data = self.problem.network, self.problem.data
        parts = [f"theory={self.theory!r}", f"chi={net.chi:g}", f"N={net.N}", f"P={data.P}",
                 f"d={data.d}", f"train_discrepancy={self.train_discrepancy:.6g}",
                 f"test_discrepancy={self.test_discrepancy:.6g}"]
        if self.Q is not None:
            parts.append(f"Q={self.Q:.6g}")
        parts += self._repr_extra()
        parts += [f"converged={self.converged}", f"wall_time={self.wall_time:.3g}"]
        return f"{type(self).__name__}({', '.join(parts)})"

    def _repr_extra(self) -> list:
        return []

    # -- derived observables (THEORY §2) ---------------------------------
    @property
    def train_discrepancy(self) -> float:
        return float(np.mean(np.square(self.problem.data.y_train - self.train_mean)))

    @property
    def test_discrepancy(self) -> float:
        return float(np.mean(np.square(self.problem.data.y_test - self.test_mean)))

    @property
    def test_variance(self) -> float:
        """Mean predictive variance of ``f*`` over the test points."""
        return float(np.mean(self.test_predictive_variance))

    @property
    def test_loss(self) -> float:
        """``⟨(y* − f*)²⟩`` averaged over test points: discrepancy + predictive variance."""
        return self.test_discrepancy + self.test_variance

    @property
    def kernel_alignment(self) -> float:
        if self.mean_kernel is None:
            return math.nan
        return centered_alignment(self.mean_kernel, self.problem.data.y_train)

    @property
    def weight_cov_summary(self) -> WeightCovSummary:
        cached = self.extras.get("_wsum")
        if cached is None:
            cached = summarize_weight_cov(self.weight_cov, self.problem.data.teacher,
                                          self.problem.data.X_train, self.tbar)
            self.extras["_wsum"] = cached
        return cached

    @property
    def weight_cov_top_eigenvalue(self) -> float:
        return self.weight_cov_summary.top_eigenvalue

    @property
    def weight_cov_excess(self) -> float:
        """``λ_top / (g_w/d) − 1``: the outlier's excess over the prior bulk."""
        net, d = self.problem.network, self.problem.data.d
        return self.weight_cov_top_eigenvalue / (net.g_w / d) - 1.0

    def to_json_dict(self) -> dict:
        """The machine-readable summary printed by ``msa solve --json``."""
        ws = self.weight_cov_summary
        return {
            "theory": self.theory,
            "seed": self.seed,
            "train_mean": self.train_mean.tolist(),
            "test_mean": self.test_mean.tolist(),
            "train_mean_se": self.train_mean_se.tolist(),
            "test_mean_se": self.test_mean_se.tolist(),
            "train_discrepancy": self.train_discrepancy,
            "test_discrepancy": self.test_discrepancy,
            "test_variance": self.test_variance,
            "test_variance_per_point": self.test_predictive_variance.tolist(),
            "test_loss": self.test_loss,
            "log_evidence": _opt(self.log_evidence),
            "Q": _opt(self.Q),
            "kernel_alignment": self.kernel_alignment,
            "weight_cov_top_eigenvalue": ws.top_eigenvalue,
            "weight_cov_excess": self.weight_cov_excess,
            "weight_cov_eigenvalues": ws.eigenvalues.tolist(),
            "weight_cov_teacher_overlap": ws.teacher_overlap,
            "weight_cov_tbar_overlap": ws.tbar_overlap,
            "converged": self.converged,
            "residual": self.residual,
            "iterations": len(self.log),
            "wall_time": self.wall_time,
            "diagnostics": _diagnostics(self.extras),
        }


def _diagnostics(extras: dict) -> dict:
    """The scalar entries of a theory's ``extras`` (the non-linear saddle's fresh-sample
    residual error and mean z², its estimator, sample counts, acceptance, …), so that
    ``--json`` output and saved sessions carry what a reader needs to judge a Monte
    Carlo theory; arrays and private (``_``) entries are left out, non-finite numbers
    become null."""
    out = {}
    for k, v in extras.items():
        if k.startswith("_"):
            continue
        if isinstance(v, (bool, np.bool_)):
            out[k] = bool(v)
        elif isinstance(v, (int, np.integer)):
            out[k] = int(v)
        elif isinstance(v, (float, np.floating)):
            out[k] = float(v) if math.isfinite(float(v)) else None
        elif isinstance(v, str):
            out[k] = v
    return out


def _opt(v):
    return None if v is None else float(v)
