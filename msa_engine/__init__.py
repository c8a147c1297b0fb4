"""msa-workbench engine: theories and simulations of feature learning in
Bayesian two-layer networks (see THEORY.md for the mathematics).

Quick use::

    import msa_engine as msa
    data = msa.make_data({"task": "linear", "d": 30, "P": 20, "seed": 1})
    net = msa.Network.make("linear", N=100, g_w=1.5, g_a=0.8, kappa=0.1, chi="mean-field")
    res = msa.solve(msa.Problem(data, net), "one-loop")
    print(res.test_discrepancy, res.Q)
"""

from __future__ import annotations

import os as _os

# Multi-threaded OpenBLAS made our typical solves (P, d of a few hundred) 14x
# slower on a 2-core machine (0.83 s against 0.06 s for a tree + one-loop
# solve at P = 100; worse when a TUI worker and a sampler share the cores).
# This takes effect only when numpy is imported after us (the CLI, the TUI,
# sweep workers) and never overrides a user's own setting.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# whether that holds for every BLAS this process loads (numpy not loaded before us, the
# variable "1"): threads.blas_limit(1) is then a no-op that imports nothing
import sys as _sys  # noqa: E402

_BLAS_ONE_THREAD_AT_LOAD = ("numpy" not in _sys.modules
                            and _os.environ.get("OPENBLAS_NUM_THREADS") == "1")

__version__ = "0.1.0"

from .errors import Cancelled, MSAError, MSAWarning
from .problem import ACTIVATIONS, Data, Network, Problem, resolve_chi
from .results import IterationRecord, TheoryResult
from .tasks import TASKS, make_data
from .theory import THEORIES, anneal, chi_grid, solve

# the simulations import numba (and compile on first use); they load when first asked
# for, so that `import msa_engine` and a linear solve stay free of it
_LAZY = ("simulate", "SimulationResult", "ChunkRecord", "SAMPLERS")


def __getattr__(name: str):
    if name in _LAZY:
        from .sampling import run
        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__", "ACTIVATIONS", "Cancelled", "ChunkRecord", "Data", "IterationRecord",
    "MSAError", "MSAWarning", "Network", "Problem", "SAMPLERS", "SimulationResult",
    "TASKS", "THEORIES", "TheoryResult", "anneal", "chi_grid", "make_data", "resolve_chi",
    "simulate", "solve",
]
