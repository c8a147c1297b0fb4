"""Full Langevin sampler on ``(W, a)`` for the posterior of THEORY §1, ULA or MALA.

``E = (χ/2κ)|f(X) − y|² + (d/2g_w)‖W‖² + (χN/2g_a)|a|²`` is sampled by Langevin
dynamics at unit temperature ("training with noise").  Each block is
preconditioned by its prior covariance (THEORY §7): ``a`` has prior variance
``g_a/(χN)``, and without the preconditioner its stiffness would force a step size
``O(1/(χN))``.  In whitened coordinates the data curvature of the read-out is
``λ_max(K)/κ`` for every χ, so one step size serves both scalings.

Two methods (issue 3): ``"ula"`` (unadjusted Euler-Maruyama: O(h) bias) and
``"mala"`` (Metropolis-adjusted: exact for any ``h``).  The step size adapts during
burn-in to an acceptance target and is frozen afterwards (so the sampled chain is
a homogeneous Markov chain); ULA uses the would-be MALA acceptance of its step as
a measure of its discretisation error and targets a higher value.
"""

from __future__ import annotations

import numpy as np

from . import kernels_numba as kn
from .marginal import MarginalSampler, woodbury_constants

METHODS = ("mala", "ula")
# acceptance targets of the burn-in step-size adaptation (MALA's optimum is 0.574,
# Roberts & Rosenthal 1998; ULA gets a smaller, less biased step)
TARGET_ACCEPTANCE = {"mala": 0.6, "ula": 0.9}


class FullSampler:
    """State ``{"W", "a", "E", "gW", "ga"}``; advanced by :func:`kn.full_chunk`."""

    name = "full"
    theory = "sim-full"

    def __init__(self, problem):
        self.problem = problem
        net, data = problem.network, problem.data
        self.N, self.d = net.N, data.d
        self.ndim = self.N * (self.d + 1)
        # the observables of a linear φ with P > d come from d×d matrices, as on the
        # marginal sampler's Woodbury path (kn.observe_full): O(Nd² + d³) a draw instead
        # of O(PNd + P²N + P³), which at P = 200, N = 1000, d = 100 was 20× the step
        self.wood = woodbury_constants(np.ascontiguousarray(data.X_train, dtype=float),
                                       np.ascontiguousarray(data.y_train, dtype=float),
                                       net.activation)

    # whether the observables take the Woodbury path (then ⟨K⟩ comes from Σ_W), and the
    # kernels' arguments for it: as the marginal sampler's
    uses_woodbury = MarginalSampler.uses_woodbury
    wood_args = MarginalSampler.wood_args

    def init_state(self, rng: np.random.Generator, chains: int) -> dict:
        """Start every chain from an independent prior draw of ``(W, a)``."""
        net = self.problem.network
        W = np.sqrt(net.g_w / self.d) * rng.standard_normal((chains, self.N, self.d))
        a = np.sqrt(net.g_a / (net.chi * self.N)) * rng.standard_normal((chains, self.N))
        state = {"W": W, "a": a, "E": np.empty(chains), "gW": np.empty_like(W),
                 "ga": np.empty_like(a)}
        self.refresh(state)
        return state

    def workspace(self, chains: int) -> dict:
        """Per-chain scratch of :func:`kn.full_chunk` (the ``P×N`` buffers only for a
        non-linear φ: the linear step never forms ``XWᵀ``; ``H2`` double-buffers ``Φ``
        with ``cur`` saying which buffer is the current state's; ``v`` holds ``Wᵀa``
        and then the linear step's per-column partial sums).  Not checkpointed: rebuilt
        by :meth:`refresh`."""
        N, d, P = self.N, self.d, self.problem.data.P
        big = (P, N) if self.problem.network.activation != "linear" else (1, 1)
        return {"Wp": np.empty((chains, N, d)), "ap": np.empty((chains, N)),
                "gWp": np.empty((chains, N, d)), "gap": np.empty((chains, N)),
                "H2": np.empty((chains, 2) + big), "D": np.empty((chains,) + big),
                "r": np.empty((chains, P)), "v": np.empty((chains, 2 * d)),
                "u": np.empty((chains, d)), "cur": np.zeros(chains, dtype=np.int64)}

    def refresh(self, state: dict) -> None:
        """Recompute ``E``, ``gW``, ``ga`` from ``state["W"]``, ``state["a"]``."""
        net, data = self.problem.network, self.problem.data
        self.ws = self.workspace(state["W"].shape[0])
        kn.full_refresh(state["W"], state["a"], state["E"], state["gW"], state["ga"],
                        *self.ws.values(),
                        np.array(data.X_train, dtype=float),   # writable, as in the
                        np.array(data.y_train, dtype=float),   # chunks (one numba type)
                        kn.act_code(net.activation), float(net.g_w), float(net.g_a),
                        float(net.kappa), float(net.chi))

    def advance(self, state: dict, rng, nsteps: int, common: tuple, tail: tuple,
                chains: slice = slice(None)) -> None:
        """Run :func:`kn.full_chunk` for ``nsteps`` steps on the chains ``chains``
        (``state``, ``rng``, ``common`` and ``tail`` are already restricted to them)."""
        ws = [v[chains] for v in self.ws.values()]
        kn.full_chunk(state["W"], state["a"], state["E"], state["gW"], state["ga"], *ws,
                      *self.wood_args, rng, kn.scalar_streams(rng), *common[:3], nsteps,
                      *common[3:], *tail)
