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
from scipy.linalg import cho_solve

from . import kernels_numba as kn


def woodbury_applies(X: np.ndarray, activation: str) -> bool:
    """Whether the marginal sampler takes the Woodbury path (see
    :func:`woodbury_constants`): linear φ, ``P > d`` and ``XᵀX`` well conditioned."""
    P, d = X.shape
    if activation != "linear" or P <= d:
        return False
    ev = np.linalg.eigvalsh(X.T @ X)
    return bool(ev[0] > 1e-8 * ev[-1])


def woodbury_constants(X: np.ndarray, y: np.ndarray, activation: str) -> tuple:
    """``(C⁻¹, β, (flag, |y − Πy|², log det C))`` with ``C = XᵀX`` and ``β = C⁻¹Xᵀy``
    for the Woodbury form of the linear marginal energy (:func:`kn._wood_core`): used
    when φ is linear, ``P > d`` (then ``K = (g_a/N) X WᵀW Xᵀ`` has rank ``≤ d`` and
    every ``P×P`` object reduces to a ``d×d`` one, ``O(Nd² + d³)`` a step instead of
    ``O(PNd + P²N + P³)``) and ``XᵀX`` is well conditioned.  Otherwise ``flag = 0``
    and placeholders."""
    off = (np.zeros((1, 1)), np.zeros(1), np.zeros(3))
    if not woodbury_applies(X, activation):
        return off
    L = np.linalg.cholesky(X.T @ X)
    Ci = cho_solve((L, True), np.eye(X.shape[1]))
    Ci = 0.5 * (Ci + Ci.T)               # exactly symmetric, as M = C⁻¹ + (c/κ)S must be
    beta = np.linalg.lstsq(X, y, rcond=None)[0]     # C⁻¹Xᵀy (SVD), and y − Πy from it
    r = y - X @ beta
    logdet_c = 2.0 * float(np.sum(np.log(np.diag(L))))
    return (np.ascontiguousarray(Ci), np.ascontiguousarray(beta),
            np.array([1.0, float(r @ r), logdet_c]))


class MarginalSampler:
    """State ``{"W" (C,N,d), "E" (C,), "gW" (C,N,d)}``; advanced by :func:`kn.marginal_chunk`."""

    name = "marginal"
    theory = "sim-marginal"

    def __init__(self, problem):
        self.problem = problem
        net, data = problem.network, problem.data
        self.N, self.d = net.N, data.d
        self.ndim = self.N * self.d
        # writable copies, like the driver's: a read-only array is another numba type,
        # and refresh() would compile every kernel it calls a second time (issue 7: cold
        # start)
        self.X = np.array(data.X_train, dtype=float)
        self.y = np.array(data.y_train, dtype=float)
        self.wood = woodbury_constants(self.X, self.y, net.activation)

    @property
    def uses_woodbury(self) -> bool:
        return self.wood[2][0] != 0.0

    @property
    def wood_args(self) -> tuple:
        """``(C⁻¹, β, wpar)`` for the kernels, ``wpar = None`` off the Woodbury path
        (kn.WOODBURY_BY_TYPE)."""
        return self.wood if self.uses_woodbury else (self.wood[0], self.wood[1], None)

    def init_state(self, rng: np.random.Generator, chains: int) -> dict:
        """Start every chain from an independent prior draw ``w ~ N(0, g_w/d)``."""
        net = self.problem.network
        W = np.sqrt(net.g_w / self.d) * rng.standard_normal((chains, self.N, self.d))
        state = {"W": W, "E": np.empty(chains), "gW": np.empty_like(W)}
        self.refresh(state)
        return state

    def workspace(self, chains: int) -> dict:
        """Per-chain scratch and the double-buffered ``Φ, K, A⁻¹, t`` (or, on the
        Woodbury path, ``S, M⁻¹, v``) of the current state (see
        :func:`kn.marginal_chunk`); not checkpointed, rebuilt by :meth:`refresh`.
        Buffers of the path not taken are 1×1 placeholders."""
        N, d, P = self.N, self.d, self.problem.data.P
        C = chains
        if self.uses_woodbury:
            P_, N_, d_ = 1, 1, d
        else:
            P_, N_, d_ = P, N, 1
        # φ' is needed only for a non-linear φ
        big = (C, P_, N_) if self.problem.network.activation != "linear" else (C, 1, 1)
        return {"Wp": np.empty((C, N, d)), "gWp": np.empty((C, N, d)),
                "Phi2": np.empty((C, 2, P_, N_)), "K2": np.empty((C, 2, P_, P_)),
                "Ai2": np.empty((C, 2, P_, P_)), "t2": np.empty((C, 2, P_)),
                "cur": np.zeros(C, dtype=np.int64), "D": np.empty(big),
                "M": np.empty((C, P_, N_)), "S2": np.empty((C, 2, d_, d_)),
                "Mi2": np.empty((C, 2, d_, d_)), "v2": np.empty((C, 2, d_))}

    def refresh(self, state: dict) -> None:
        """Recompute ``E``, ``gW`` and the cached factorisation from ``state["W"]``."""
        net = self.problem.network
        self.ws = self.workspace(state["W"].shape[0])
        kn.marginal_refresh(state["W"], state["E"], state["gW"], *self.ws.values(),
                            *self.wood_args,
                            self.X, self.y, kn.act_code(net.activation),
                            float(net.g_w), float(net.g_a), float(net.kappa), float(net.chi))

    def advance(self, state: dict, rng, nsteps: int, common: tuple, tail: tuple,
                chains: slice = slice(None)) -> None:
        """Run :func:`kn.marginal_chunk` for ``nsteps`` steps on the chains ``chains``
        (``state``, ``rng``, ``common`` and ``tail`` are already restricted to them)."""
        ws = [v[chains] for v in self.ws.values()]
        kn.marginal_chunk(state["W"], state["E"], state["gW"], *ws, *self.wood_args, rng,
                          kn.scalar_streams(rng), *common[:3], nsteps, *common[3:], *tail)
