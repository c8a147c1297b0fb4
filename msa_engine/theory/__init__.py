"""Theories of the posterior mean predictor, and annealing across χ (THEORY §4).

Use :func:`solve` for one theory at one point and :func:`anneal` for the
paper's Algorithm 1: a geometric χ grid from the NNGP (χ = 1) to the target,
each saddle warm-started from the previous one.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable, Sequence

import numpy as np

from ..errors import MSAError
from ..problem import Problem, check_problem
from ..resources import check_solve
from ..threads import blas_limit
from ..results import Callback, IterationRecord, TheoryResult  # noqa: F401 (re-exported)
from .exact import exact
from .gp import Spectral
from . import linear as _linear
from .linear import nngp, rescaling
from .options import DEFAULTS as _OPTION_DEFAULTS, check_integer, check_options


def tree(problem: Problem, **kw) -> TheoryResult:
    """MSA tree level: closed form for linear networks, tilted-measure MCMC otherwise."""
    if problem.network.activation == "linear":
        return _linear.tree(problem, **kw)
    kw.pop("tol", None)
    from . import nonlinear as _nonlinear   # numba: imported on first use (issue 7)
    return _nonlinear.tree(problem, **kw)


def one_loop(problem: Problem, **kw) -> TheoryResult:
    """MSA one loop: closed form for linear networks, tilted-measure MCMC otherwise."""
    if problem.network.activation == "linear":
        return _linear.one_loop(problem, **kw)
    kw.pop("tol", None)
    from . import nonlinear as _nonlinear
    return _nonlinear.one_loop(problem, **kw)


THEORIES: dict[str, Callable[..., TheoryResult]] = {
    "nngp": nngp,
    "rescaling": rescaling,
    "tree": tree,
    "one-loop": one_loop,
    "exact": exact,
}
# theories whose saddle is warm-started along the χ grid
ANNEALED = ("tree", "one-loop")
ANNEAL_FACTOR = _OPTION_DEFAULTS["anneal_factor"]   # one default for every annealed theory


def available_theories(activation: str) -> tuple[str, ...]:
    """The theories implemented for an activation (the rest raise MSAError)."""
    if activation == "linear":
        return tuple(THEORIES)
    return ("nngp", "rescaling", "tree", "one-loop")


def check_theory(name: str) -> str:
    if not isinstance(name, str):
        raise MSAError(f"theory must be one of {', '.join(THEORIES)} (got {name!r})")
    key = name.strip().lower().replace("_", "-")
    if key in ("oneloop", "one-loop", "loop"):
        key = "one-loop"
    if key not in THEORIES:
        raise MSAError(f"theory must be one of {', '.join(THEORIES)} (got {name!r})")
    return key


MAX_GRID = 10_000      # χ points of an annealing grid (each a saddle solve)


def chi_grid(chi_target: float, factor: float = ANNEAL_FACTOR, start: float = 1.0) -> np.ndarray:
    """A geometric grid from ``start`` to ``chi_target`` with ratio at most ``factor``."""
    chi_target, start, factor = (_real(n, v, least) for n, v, least in (
        ("chi", chi_target, 0.0), ("start", start, 0.0), ("factor", factor, 1.0)))
    if chi_target == start:
        return np.array([start])
    n = max(1, math.ceil(abs(math.log(chi_target / start)) / math.log(factor)))
    if n > MAX_GRID:    # (a factor of 1 + 1e-12 asked for 24.7 TiB of χ values)
        span = max(chi_target / start, start / chi_target)
        raise MSAError(f"chi_grid: a factor of {factor!r} needs {n} χ points from {start:g} "
                       f"to {chi_target:g}, at most {MAX_GRID} are taken (a factor of at "
                       f"least {span ** (1 / MAX_GRID):.6g})")
    return start * (chi_target / start) ** (np.arange(n + 1) / n)


def _real(name: str, v, above: float) -> float:
    """``v`` as a float if it is a finite number ``> above`` (numpy scalars and 0-d arrays,
    fractions and decimals included; not booleans or text), else a one-line error."""
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    try:
        f = float(v) if not isinstance(v, (bool, np.bool_, str, bytes)) else math.nan
    except (TypeError, ValueError):
        f = math.nan
    if not above < f < math.inf:
        raise MSAError(f"chi_grid: {name} must be a finite number > {above:g} (got {v!r})")
    return f


def _monte_carlo_failure(theory: str, chi: float, res: TheoryResult) -> str:
    """Why a Monte Carlo saddle (non-linear tree / one loop) was not accepted, in one line."""
    ex = res.extras
    head = f"{theory} did not converge at chi = {float(chi):.6g}: "
    if ex.get("residual_noise", 0.0) > ex.get("precision", math.inf):
        return (head + f"its Monte Carlo noise ({ex['residual_noise']:.3g} of |y| in the "
                f"self-consistency residual) exceeds the precision {ex['precision']:.3g} even "
                f"with {ex.get('samples', '?')} samples; the tilted measure is too strong for "
                "its chains to resolve: increase kappa or use more chains")
    return (head + f"the self-consistency residual on fresh samples is {res.residual:.3g} "
            f"(mean z² {ex.get('residual_z2', float('nan')):.3g}); use a finer annealing "
            "grid or more chains")


def _monte_carlo_options(problem: Problem, theory: str, options: dict) -> dict:
    """The options a theory function takes: the Monte Carlo knobs reach only the
    non-linear saddles (the linear ones are closed forms, the NNGP and rescaling have no
    Monte Carlo); ``anneal_factor`` is the caller's χ grid for every other theory."""
    if theory in ANNEALED and problem.network.activation != "linear":
        return options
    return {}


def _one_blas_thread(fn):
    """Run ``fn`` with one BLAS thread, whatever numpy was given.  Speed (README,
    Performance: a 2-thread ``eigh`` at P = 2000 took 6.3 s against 1.1 s on one thread
    while another job held the second core) and reproducibility: OpenBLAS rounds a
    product differently on one thread and on two, and a Monte Carlo saddle's path follows
    the rounding (measured, d = 50 mean-field erf tree, same seed: test mean −1.7637 ±
    0.023 after 98 iterations on one thread, −1.7325 ± 0.026 after 78 on two), so a
    session's tree level would not reproduce on a machine with another core count.  The
    CLI and the TUI import msa_engine before numpy and get one thread anyway; a script
    that imported numpy first had one per core.  The limit is process-wide; beside a
    simulation in another thread that asked for more (a single chain on two cores, in
    the TUI) the lower count holds (:func:`..threads.blas_limit`) until the solve ends.
    An ``OverflowError`` of Python float arithmetic at extreme scales becomes the one-line
    ``MSAError`` that a non-finite result gives."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with blas_limit(1):
            try:
                return fn(*args, **kwargs)
            except OverflowError as exc:
                # Python float arithmetic on extreme scales (g_w = 1e300) raises where
                # numpy would give inf: the same answer as a non-finite result
                why = exc.args[-1] if exc.args else exc
                raise MSAError(f"numerical overflow ({why}); the scales (g_w, g_a, kappa) "
                               "or the data are too extreme: rescale them") from None
    return wrapper


@_one_blas_thread
def anneal(problem: Problem, theory: str, chis: Sequence[float], callback: Callback = None,
           sp: Spectral | None = None, tbar0: np.ndarray | None = None,
           seed: int | None = None, options: dict | None = None,
           _warm: int = 0) -> list[TheoryResult]:
    """Solve ``theory`` at each χ of ``chis`` in order, warm-starting each saddle.

    Every solver iteration is reported through ``callback`` (an
    :class:`IterationRecord` carrying χ).  A callback may raise
    :class:`msa_engine.Cancelled` to stop.  If a point fails to converge the
    error names the χ reached and suggests a finer grid.  ``options`` (the
    ``[theory]`` table, :mod:`.options`) reach the non-linear Monte Carlo saddles.
    ``_warm`` (for :func:`solve`): the first ``_warm`` points of a linear tree path only
    warm-start the next, and their results come without ``mean_kernel`` (``None``).
    """
    check_problem(problem)
    theory = check_theory(theory)
    seed = _check_seed(seed)
    if isinstance(chis, (str, int, float)) and not isinstance(chis, bool):
        chis = [chis]                 # one χ (a TypeError: 'float' object is not iterable)
    if chis is None or not hasattr(chis, "__iter__"):
        raise MSAError(f"anneal needs a sequence of χ values (got {chis!r})")
    if seed is None and theory in ANNEALED and problem.network.activation != "linear":
        seed = 0                      # as in solve: unseeded Monte Carlo is seed 0
    opts = _monte_carlo_options(problem, theory, check_options(options))
    sp = sp or Spectral.of(problem)
    fn = THEORIES[theory]
    light = theory == "tree" and problem.network.activation == "linear"
    out, tbar = [], tbar0
    if tbar is not None:
        tbar = np.asarray(tbar, dtype=float)
        if tbar.shape != (problem.data.P,):
            raise MSAError(f"tbar0 must have the P = {problem.data.P} training points' "
                           f"entries (got shape {tbar.shape})")
    for i, chi in enumerate(chis):
        p = problem.with_chi(chi)
        chi = p.network.chi
        extra = {"kernel": False} if light and i < _warm else {}
        try:
            try:
                res = fn(p, sp=sp, callback=callback, tbar0=tbar, seed=seed, **opts, **extra)
            except MSAError:
                if not (theory == "one-loop" and i > 0 and problem.network.activation == "linear"):
                    raise
                # warm-started from the previous χ's one loop, the iteration can leave the
                # region where the tilted precision is positive (the README problem at
                # χ = 51.8 on the way to N = 100: c·s = 1.14), where msa.solve, which
                # anneals the tree and switches the loop on at the end, succeeds; so
                # does this point from the tree annealed to it (cheap for a linear net)
                grid = chi_grid(float(chi), ANNEAL_FACTOR)
                start = anneal(p, "tree", grid, callback, sp, _warm=len(grid))[-1].tbar
                res = fn(p, sp=sp, callback=callback, tbar0=start, seed=seed, **opts)
        except MSAError as exc:
            raise MSAError(f"{theory} failed at chi = {float(chi):.6g}: {exc}") from None
        except np.linalg.LinAlgError as exc:
            raise MSAError(f"{theory} failed at chi = {float(chi):.6g}: singular linear system "
                           f"({exc}); increase kappa") from None
        if not res.converged and "residual_noise" in res.extras:
            raise MSAError(_monte_carlo_failure(theory, chi, res))
        if not res.converged:
            if theory == "one-loop":
                hint = (f"the one loop is an expansion in 1/N at fixed P and needs N well above "
                        f"P (here N = {p.network.N}, P = {p.data.P}); use rescaling (the scalar "
                        f"one loop, which resums) or exact")
            else:
                hint = "use a finer annealing grid"
            raise MSAError(
                f"{theory} did not converge at chi = {float(chi):.6g} "
                f"(residual {res.residual:.3g}); {hint}")
        # the seed a point ran with, as solve records it (it came back None for linear
        # theories, which have no Monte Carlo but record what they were given)
        out.append(_replace(_require_finite(res), seed=seed))
        if theory in ANNEALED:
            tbar = res.tbar
    return out


@_one_blas_thread
def solve(problem: Problem, theory: str, *, seed: int | None = None,
          callback: Callback = None, anneal_factor: float | None = None,
          options: dict | None = None) -> TheoryResult:
    """Compute one theory for one problem.

    Saddle-point theories (``tree``, ``one-loop``) are annealed from χ = 1
    along a geometric grid of ratio ``anneal_factor`` (THEORY §4: iterating
    straight from the NNGP at large χ can land on an unphysical branch).
    ``seed`` seeds Monte Carlo only (the tilted-measure chains of non-linear ``tree`` and
    ``one-loop``, which anneal internally with persistent chains); deterministic
    theories record it.  ``options`` are a config's ``[theory]`` table (:mod:`.options`:
    the non-linear Monte Carlo knobs, and ``anneal_factor`` unless given here).
    """
    check_problem(problem)
    theory = check_theory(theory)
    seed = _check_seed(seed)
    opts = check_options(options)
    if anneal_factor is not None:
        opts = check_options({**opts, "anneal_factor": anneal_factor})
    factor = opts.get("anneal_factor", ANNEAL_FACTOR)
    check_solve(problem, theory, opts)  # refuse before allocating (issue 8)
    t0 = time.perf_counter()
    sp = Spectral.of(problem)
    if theory in ANNEALED and problem.network.activation != "linear":
        # unseeded Monte Carlo is seed 0 (the tilted chains always took 0), and the result
        # says so: it said None, and repeated "unseeded" solves gave identical numbers
        seed = 0 if seed is None else seed
        res = THEORIES[theory](problem, sp=sp, callback=callback, seed=seed, **opts)
        if not res.converged:
            raise MSAError(_monte_carlo_failure(theory, problem.network.chi, res))
        return _replace(_require_finite(res), seed=seed, wall_time=time.perf_counter() - t0)
    if theory in ANNEALED:
        grid = chi_grid(problem.network.chi, factor)
        if theory == "one-loop":
            # anneal the tree saddle, then switch on the loop at the target χ
            tree_path = anneal(problem, "tree", grid, callback, sp, _warm=len(grid))
            res = anneal(problem, "one-loop", [problem.network.chi], callback, sp,
                         tree_path[-1].tbar)[-1]
            log = sum((r.log for r in tree_path), ()) + res.log
        else:
            path = anneal(problem, theory, grid, callback, sp, _warm=len(grid) - 1)
            res = path[-1]
            log = sum((r.log for r in path), ())
    else:
        try:
            res = _require_finite(THEORIES[theory](problem, sp=sp, callback=callback))
        except np.linalg.LinAlgError as exc:
            raise MSAError(f"{theory}: singular linear system ({exc}); increase kappa") from None
        log = res.log
    return _replace(res, seed=seed, log=log, wall_time=time.perf_counter() - t0)


def _check_seed(seed) -> int | None:
    """A Monte Carlo seed is ``None`` or an integer ≥ 0 (numpy's ``SeedSequence`` takes
    no other), refused in one line for every theory alike, as ``msa simulate`` does."""
    return None if seed is None else check_integer("seed", seed, 0)


def _require_finite(res: TheoryResult) -> TheoryResult:
    """Never return a number that looks valid but is not (issue 8)."""
    bad = [name for name in ("train_mean", "test_mean", "test_predictive_variance",
                             "weight_cov", "Q")
           if getattr(res, name) is not None and not np.all(np.isfinite(getattr(res, name)))]
    if bad:
        raise MSAError(f"{res.theory} produced NaN or inf ({', '.join(bad)}) at chi = "
                       f"{res.problem.network.chi:.6g} (residual {res.residual:.3g}); the problem "
                       "is numerically ill-conditioned: increase kappa or rescale the data")
    return res


def _replace(res: TheoryResult, **changes) -> TheoryResult:
    from dataclasses import replace
    return replace(res, **changes)


__all__ = ["THEORIES", "available_theories", "anneal", "chi_grid", "solve", "check_theory",
           "nngp", "rescaling", "tree", "one_loop", "exact"]
