"""Marginal sampler: Langevin on ``W`` alone, with ``a`` integrated out exactly (THEORY §7).

Given ``W`` the read-out ``a`` is Gaussian, so ``y | W ~ N(0, (K + κI)/χ)`` and the
marginal energy is ``E(W) = (d/2g_w)‖W‖² + ½ log det(K+κI) + (χ/2) yᵀ(K+κI)⁻¹y``.
The observables are then Rao-Blackwellised (``E[f|W] = K t``), which removes the
read-out noise from every estimate: far lower variance and faster mixing than the
full sampler (THEORY §7), which is why it is the default.  The cost per step is
``O(P²N + P³)`` for the Gram matrix and its inverse, against ``O(PNd)`` for the
full sampler.
"""

from __future__ import annotations

import numpy as np

from . import kernels_numba as kn


class MarginalSampler:
    """State ``{"W" (C,N,d), "E" (C,), "gW" (C,N,d)}``; advanced by :func:`kn.marginal_chunk`."""

    name = "marginal"
    theory = "sim-marginal"
    noise_blocks = ("W",)

    def __init__(self, problem):
        self.problem = problem
        net, data = problem.network, problem.data
        self.N, self.d = net.N, data.d
        self.ndim = self.N * self.d

    def init_state(self, rng: np.random.Generator, chains: int) -> dict:
        """Start every chain from an independent prior draw ``w ~ N(0, g_w/d)``."""
        net = self.problem.network
        W = np.sqrt(net.g_w / self.d) * rng.standard_normal((chains, self.N, self.d))
        E = np.empty(chains)
        gW = np.empty_like(W)
        for c in range(chains):
            E[c], gW[c] = self.energy_grad(W[c])[:2]
        return {"W": W, "E": E, "gW": gW}

    def energy_grad(self, W):
        net, data = self.problem.network, self.problem.data
        return kn.marginal_energy_grad(W, data.X_train, data.y_train,
                                       kn.ACT_CODES[net.activation], net.g_w, net.g_a,
                                       net.kappa, net.chi)

    def noise_shape(self, block: str, steps: int, chains: int) -> tuple:
        return (steps, chains, self.N, self.d)

    def advance(self, state: dict, noise: dict, logu, common: tuple, tail: tuple) -> None:
        kn.marginal_chunk(state["W"], state["E"], state["gW"], *common[:3], noise["W"], logu,
                          *common[3:], *tail)
