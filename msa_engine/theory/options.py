"""Options of the theories: the ``[theory]`` table of a config (README, "Config").

The knobs are those of the non-linear tree level and one loop (tilted-measure Monte
Carlo, THEORY §6; their defaults are :data:`DEFAULTS`), with ``anneal_factor`` (the χ
grid's ratio, THEORY §4), which every annealed theory uses.  This module holds no
numerics and imports neither numba nor scipy, so a config (and the memory check of
``resources``) is validated before anything heavy loads.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

from ..errors import MSAError

DEFAULTS = {
    "chains": 256,         # persistent MALA chains
    "max_chains": 2048,    # ... doubled (clones within groups) while noise stops a stage
    "max_samples": 2 ** 20,  # chains × final draws at most (memory: P doubles a sample)
    "groups": 16,          # independent replicas (blocks of chains) for standard errors
    "draws": 48,           # run length per iteration while annealing: draws × thin steps
    "final_draws": 192,    # ... at the target (states kept every ≈ τ/32 steps at least)
    "thin": 2,
    "burn_in": 30,         # steps after each t̄ update while iterating (at least 2τ of s²)
    "max_burn_in": 1000,   # ... but not more
    "final_burn_in": 200,  # ... at full sample size (≈10 autocorrelation times of s²)
    "damping": 0.8,
    "anneal_factor": 2.0,
    "anneal_maxiter": 8,   # iterations per annealing stage before its χ step is halved
    "maxiter": 25,
    "average": 4,          # iterates averaged at the target
    "stop_z2": 2.0,        # stop when mean (step/se)² is below this
    # Gaussian-proposal importance sampling (weak tilt, THEORY §6; see nonlinear._GaussianIS)
    "estimator": "auto",   # "auto": IS where its ESS fraction allows, else MCMC; "mcmc"; "is"
    "is_samples": 2 ** 18, # samples per set (rounded to groups × a power of two)
    "is_min_ess": 0.5,     # minimum ESS fraction of the importance weights
    "is_inflate": 1.1,     # proposal covariance = this × the tilted second moment
    "is_maxiter": 60,
    "is_qmc": True,        # scrambled Sobol groups (else plain pseudo-random draws)
    # precision: the Monte Carlo noise of the fresh-sample residual, √(Σ se_α²)/|y|,
    # must not exceed this; the MCMC final sample grows (up to `refine`×) to meet it
    "precision": 0.05,
    "refine": 4,
    "stage_precision": 0.1,  # the same for an iteration's (smaller) sample to count as done
}

# integer options and their smallest allowed value (the jackknife needs two groups)
_INT_MIN = {"chains": 1, "max_chains": 1, "max_samples": 1, "groups": 2, "draws": 1,
            "final_draws": 1, "thin": 1, "burn_in": 0, "max_burn_in": 0, "final_burn_in": 0,
            "anneal_maxiter": 1, "maxiter": 1, "average": 1, "is_samples": 2, "is_maxiter": 1,
            "refine": 1}
# real options: (lowest, highest, whether the lowest is allowed)
_REAL_RANGE = {"damping": (0.0, 1.0, False), "anneal_factor": (1.0, math.inf, False),
               "stop_z2": (0.0, math.inf, False), "is_min_ess": (0.0, 1.0, True),
               "is_inflate": (0.0, math.inf, False), "precision": (0.0, math.inf, False),
               "stage_precision": (0.0, math.inf, False)}
_CHOICES = {"estimator": ("auto", "mcmc", "is")}
_BOOL = ("is_qmc",)
# options that only the Monte Carlo theories (non-linear tree and one loop) read
MONTE_CARLO = tuple(k for k in DEFAULTS if k != "anneal_factor")


MAX_EXACT_INTEGER = 2 ** 53      # floats above this are not all integers; nobody means them as counts


def integral(v: Any) -> int | None:
    """``v`` as an ``int`` when it is an integer: an ``int`` or numpy integer (not a bool),
    or a float with an integer value up to 2⁵³ (TOML reads ``steps = 1e5`` and
    ``N = 100.0`` as floats; ``data.P = 2e1`` was accepted while ``N = 100.0`` was
    refused); else ``None``."""
    if isinstance(v, bool):
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, float) and v.is_integer() and abs(v) <= MAX_EXACT_INTEGER:
        return int(v)
    return None


def check_integer(name: str, v: Any, minimum: int) -> int:
    """``v`` as an ``int`` if it is an integer (:func:`integral`) ``>= minimum``; else
    the one-line error every integer setting of a config gives."""
    n = integral(v)
    if n is None or n < minimum:
        raise MSAError(f"{name} must be an integer >= {minimum} (got {v!r})")
    return n


def check_options(options: Mapping[str, Any] | None, where: str = "theory") -> dict:
    """A validated copy of ``options``: known keys, right types, in range.

    ``None`` values are dropped (they mean "the default").  Errors are one line,
    naming ``where.key`` (``theory.chains`` for a config's table).
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise MSAError(f"[{where}] must be a table")
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise MSAError(f"{where}: unknown option(s) {', '.join(unknown)} (known: "
                       f"{', '.join(DEFAULTS)})")
    out: dict[str, Any] = {}
    for key, v in options.items():
        if v is None:
            continue
        name = f"{where}.{key}"
        if key in _INT_MIN:
            v = check_integer(name, v, _INT_MIN[key])
        elif key in _REAL_RANGE:
            lo, hi, closed = _REAL_RANGE[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (
                    math.isfinite(v) and (lo <= v if closed else lo < v) and v <= hi):
                span = f"{'[' if closed else '('}{lo:g}, {hi:g}]" if hi < math.inf else \
                    f"{'>=' if closed else '>'} {lo:g}"
                raise MSAError(f"{name} must be a number {'in ' if hi < math.inf else ''}"
                               f"{span} (got {v!r})")
            v = float(v)
        elif key in _CHOICES:
            if v not in _CHOICES[key]:
                raise MSAError(f"{name} must be one of {', '.join(_CHOICES[key])} (got {v!r})")
        elif key in _BOOL:
            if not isinstance(v, bool):
                raise MSAError(f"{name} must be true or false (got {v!r})")
        out[key] = v
    merged = {**DEFAULTS, **out}
    if merged["chains"] % merged["groups"]:
        raise MSAError(f"{where}: chains ({merged['chains']}) must be a multiple of groups "
                       f"({merged['groups']})")
    return out


def merged_options(options: Mapping[str, Any] | None) -> dict:
    """:data:`DEFAULTS` overridden by the validated ``options``."""
    return {**DEFAULTS, **check_options(options)}
