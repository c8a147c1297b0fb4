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

__version__ = "0.1.0"

from .errors import Cancelled, MSAError, MSAWarning
from .problem import ACTIVATIONS, Data, Network, Problem, resolve_chi
from .results import IterationRecord, TheoryResult
from .tasks import TASKS, make_data
from .theory import THEORIES, anneal, chi_grid, solve

__all__ = [
    "__version__", "ACTIVATIONS", "Cancelled", "Data", "IterationRecord", "MSAError",
    "MSAWarning", "Network", "Problem", "TASKS", "THEORIES", "TheoryResult", "anneal",
    "chi_grid", "make_data", "resolve_chi", "solve",
]
