"""What a researcher would otherwise write: the same Langevin step as the engine's
(THEORY §7), in vectorised NumPy and as a PyTorch CPU loop.  Used by
``benchmarks/bench_samplers.py`` for side-by-side throughput; checked against the
engine's reference energies in ``tests/test_sampling_perf_paths.py`` so that the
comparison is of the same computation.

The step (identical to ``msa_engine.sampling.kernels_numba``): every block is
preconditioned by its prior variance ``s²`` (``g_w/d`` for ``W``, ``g_a/(χN)`` for
``a``); in whitened units the MALA proposal is ``θ' = θ − (h/2)s²∇E + √h s ξ``,
accepted with the Metropolis-Hastings ratio of the two Langevin moves.  The
gradient of the proposal is kept, so one energy+gradient evaluation per step.

* :class:`NumpyMALA` — all chains batched in ``(C, N, d)`` arrays, ``np.matmul`` on
  stacked matrices, ``np.linalg.cholesky``/``inv`` batched, manual gradient, float64.
  By default (``structured=True``) it uses the same algebra as the engine where the
  engine has a shortcut — linear full sampler without any ``P×N`` matrix
  (``f = X(Wᵀa)``), linear marginal sampler with ``P > d`` in the ``d×d`` Woodbury
  form — so that the comparison isolates the implementation; ``structured=False``
  is the general form everybody writes first (``H = XWᵀ`` …).
* :class:`TorchMALA` — chains batched in one ``(C, N, d)`` tensor, energy written as
  a function, gradient by **autograd** (``torch.autograd.grad``), noise by
  ``torch.randn``, manual MALA update under ``torch.no_grad()``, float64, torch's
  default intra-op threads (all cores).  This is how the kernel-renormalisation codes
  run "training with noise"; they typically skip the Metropolis test (ULA), which
  would save only the few elementwise reductions of the ratio.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf as _erf

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _np_act(act: str, H: np.ndarray):
    if act == "linear":
        return H, None
    if act == "erf":
        return _erf(H), _TWO_OVER_SQRT_PI * np.exp(-H * H)
    if act == "relu":
        return np.maximum(H, 0.0), (H > 0).astype(float)
    raise ValueError(f"unknown activation {act!r}")


class NumpyMALA:
    """Vectorised NumPy MALA for the full (``sampler="full"``) or marginal sampler.

    ``X (P,d)``, ``y (P,)``; state ``W (C,N,d)`` (and ``a (C,N)``) starts from the
    prior drawn with ``seed``.  :meth:`run` advances ``steps`` steps at whitened step
    size ``h``.
    """

    def __init__(self, sampler, act, X, y, N, g_w, g_a, kappa, chi, chains, seed=0,
                 structured=True):
        self.sampler, self.act = sampler, act
        self.linear_full = structured and sampler == "full" and act == "linear"
        self.wood = None
        if structured and sampler == "marginal":
            from msa_engine.sampling.marginal import woodbury_constants  # noqa: PLC0415
            Ci, beta, wpar = woodbury_constants(np.ascontiguousarray(X, float),
                                                np.ascontiguousarray(y, float), act)
            if wpar[0]:
                self.wood = (Ci, beta, float(wpar[1]), float(wpar[2]))
        self.X, self.y = np.ascontiguousarray(X, float), np.ascontiguousarray(y, float)
        self.P, self.d = self.X.shape
        self.N, self.g_w, self.g_a, self.kappa, self.chi = N, g_w, g_a, kappa, chi
        self.rng = np.random.default_rng(seed)
        self.sw = math.sqrt(g_w / self.d)
        self.sa = math.sqrt(g_a / (chi * N))
        self.W = self.sw * self.rng.standard_normal((chains, N, self.d))
        self.a = self.sa * self.rng.standard_normal((chains, N))
        self.eye = np.eye(self.P)
        self.E, self.gW, self.ga = self.energy_grad(self.W, self.a)
        self.accepted = np.zeros(chains)

    def energy_grad(self, W, a):
        """Batched energy and gradients (``ga`` is None for the marginal sampler)."""
        X, y, N, d = self.X, self.y, self.N, self.d
        chi, kappa, g_w, g_a = self.chi, self.kappa, self.g_w, self.g_a
        if self.linear_full:
            return self._linear_full(W, a)
        if self.wood is not None:
            return self._woodbury(W)
        H = np.matmul(X, W.transpose(0, 2, 1))                       # (C,P,N)
        Phi, dPhi = _np_act(self.act, H)
        prior = 0.5 * d / g_w * np.sum(W * W, axis=(1, 2))
        if self.sampler == "full":
            r = np.matmul(Phi, a[:, :, None])[:, :, 0] - y           # (C,P)
            E = (0.5 * chi / kappa * np.sum(r * r, axis=1) + prior
                 + 0.5 * chi * N / g_a * np.sum(a * a, axis=1))
            ga = (chi / kappa) * np.matmul(Phi.transpose(0, 2, 1), r[:, :, None])[:, :, 0] \
                + (chi * N / g_a) * a
            M = (chi / kappa) * r[:, :, None] * a[:, None, :]
            if dPhi is not None:
                M = M * dPhi
            gW = np.matmul(M.transpose(0, 2, 1), X) + (d / g_w) * W
            return E, gW, ga
        K = (g_a / N) * np.matmul(Phi, Phi.transpose(0, 2, 1))       # (C,P,P)
        A = K + kappa * self.eye
        L = np.linalg.cholesky(A)
        logdet = 2.0 * np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)), axis=1)
        Ainv = np.linalg.inv(A)
        t = np.matmul(Ainv, y)                                       # (C,P)
        E = prior + 0.5 * logdet + 0.5 * chi * (t @ y)
        G = 0.5 * Ainv - 0.5 * chi * t[:, :, None] * t[:, None, :]
        M = (2.0 * g_a / N) * np.matmul(G, Phi)
        if dPhi is not None:
            M = M * dPhi
        gW = np.matmul(M.transpose(0, 2, 1), X) + (d / g_w) * W
        return E, gW, None

    def _linear_full(self, W, a):
        """Linear φ, full sampler: ``f = X(Wᵀa)``, no ``P×N`` matrix."""
        X, y, N, d = self.X, self.y, self.N, self.d
        cpk, pw, pa = self.chi / self.kappa, d / self.g_w, self.chi * N / self.g_a
        v = np.matmul(W.transpose(0, 2, 1), a[:, :, None])[:, :, 0]  # (C,d)
        r = v @ X.T - y                                              # (C,P)
        u = r @ X                                                    # (C,d)
        E = (0.5 * cpk * np.sum(r * r, axis=1) + 0.5 * pw * np.sum(W * W, axis=(1, 2))
             + 0.5 * pa * np.sum(a * a, axis=1))
        ga = cpk * np.matmul(W, u[:, :, None])[:, :, 0] + pa * a
        gW = cpk * a[:, :, None] * u[:, None, :] + pw * W
        return E, gW, ga

    def _woodbury(self, W):
        """Linear φ, marginal sampler, ``P > d``: the ``d×d`` Woodbury form, with
        ``M = C⁻¹ + (c/κ) WᵀW`` (``C = XᵀX``; see ``kernels_numba._wood_core``)."""
        Ci, beta, rres, logdet_c = self.wood
        N, d, P = self.N, self.d, self.P
        c, kappa, chi = self.g_a / N, self.kappa, self.chi
        S = np.matmul(W.transpose(0, 2, 1), W)                       # (C,d,d)
        M = Ci + (c / kappa) * S
        L = np.linalg.cholesky(M)
        logdet = (P * np.log(kappa) + logdet_c
                  + 2.0 * np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)), axis=1))
        Minv = np.linalg.inv(M)
        v = Minv @ beta                                              # (C,d)
        yAy = (rres + v @ beta) / kappa
        pw = d / self.g_w
        A = (c / kappa) * Minv - (c * chi / kappa ** 2) * v[:, :, None] * v[:, None, :]
        A = A + pw * np.eye(d)
        E = 0.5 * pw * np.trace(S, axis1=1, axis2=2) + 0.5 * logdet + 0.5 * chi * yAy
        return E, np.matmul(W, A), None

    def step(self, h: float) -> None:
        C = self.W.shape[0]
        sh = math.sqrt(h)
        xi = self.rng.standard_normal(self.W.shape)
        Wp = self.W - (0.5 * h * self.sw ** 2) * self.gW + (sh * self.sw) * xi
        if self.sampler == "full":
            xa = self.rng.standard_normal(self.a.shape)
            ap = self.a - (0.5 * h * self.sa ** 2) * self.ga + (sh * self.sa) * xa
        else:
            ap = self.a
        Ep, gWp, gap = self.energy_grad(Wp, ap)
        rev = np.sum(((self.W - Wp) / self.sw + 0.5 * h * self.sw * gWp) ** 2, axis=(1, 2))
        xi2 = np.sum(xi * xi, axis=(1, 2))
        if self.sampler == "full":
            rev += np.sum(((self.a - ap) / self.sa + 0.5 * h * self.sa * gap) ** 2, axis=1)
            xi2 += np.sum(xa * xa, axis=1)
        la = -(Ep - self.E) - rev / (2.0 * h) + 0.5 * xi2
        take = np.log(self.rng.random(C)) < la
        self.W = np.where(take[:, None, None], Wp, self.W)
        self.gW = np.where(take[:, None, None], gWp, self.gW)
        self.E = np.where(take, Ep, self.E)
        if self.sampler == "full":
            self.a = np.where(take[:, None], ap, self.a)
            self.ga = np.where(take[:, None], gap, self.ga)
        self.accepted += take

    def run(self, steps: int, h: float) -> None:
        for _ in range(steps):
            self.step(h)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401, PLC0415 - optional
    except ImportError:
        return False
    return True


class TorchMALA:
    """PyTorch CPU MALA (autograd gradient, ``torch.randn`` noise), float64, chains
    batched in one tensor.  Raises ``ImportError`` when torch is missing."""

    def __init__(self, sampler, act, X, y, N, g_w, g_a, kappa, chi, chains, seed=0):
        import torch  # noqa: PLC0415 - optional
        self.torch = torch
        self.gen = torch.Generator().manual_seed(seed)
        dt = torch.float64
        self.sampler, self.act = sampler, act
        self.X = torch.tensor(np.array(X, dtype=float), dtype=dt)
        self.y = torch.tensor(np.array(y, dtype=float), dtype=dt)
        self.P, self.d = self.X.shape
        self.N, self.g_w, self.g_a, self.kappa, self.chi = N, g_w, g_a, kappa, chi
        self.sw = math.sqrt(g_w / self.d)
        self.sa = math.sqrt(g_a / (chi * N))
        self.W = self.sw * torch.randn(chains, N, self.d, generator=self.gen, dtype=dt)
        self.a = self.sa * torch.randn(chains, N, generator=self.gen, dtype=dt)
        self.eye = torch.eye(self.P, dtype=dt)
        self.E, self.gW, self.ga = self.energy_grad(self.W, self.a)

    def _phi(self, H):
        t = self.torch
        if self.act == "linear":
            return H
        if self.act == "erf":
            return t.erf(H)
        return t.relu(H)

    def energy(self, W, a):
        t = self.torch
        X, y, N, d = self.X, self.y, self.N, self.d
        Phi = self._phi(t.matmul(X, W.transpose(1, 2)))              # (C,P,N)
        prior = 0.5 * d / self.g_w * (W * W).sum(dim=(1, 2))
        if self.sampler == "full":
            r = t.matmul(Phi, a.unsqueeze(2)).squeeze(2) - y
            return (0.5 * self.chi / self.kappa * (r * r).sum(1) + prior
                    + 0.5 * self.chi * N / self.g_a * (a * a).sum(1))
        A = (self.g_a / N) * t.matmul(Phi, Phi.transpose(1, 2)) + self.kappa * self.eye
        L = t.linalg.cholesky(A)
        logdet = 2.0 * t.log(t.diagonal(L, dim1=1, dim2=2)).sum(1)
        tt = t.cholesky_solve(y.expand(A.shape[0], -1).unsqueeze(2), L).squeeze(2)
        return prior + 0.5 * logdet + 0.5 * self.chi * (tt * y).sum(1)

    def energy_grad(self, W, a):
        t = self.torch
        W = W.detach().requires_grad_(True)
        if self.sampler == "full":
            a = a.detach().requires_grad_(True)
            E = self.energy(W, a)
            gW, ga = t.autograd.grad(E.sum(), (W, a))
            return E.detach(), gW, ga
        E = self.energy(W, a)
        (gW,) = t.autograd.grad(E.sum(), (W,))
        return E.detach(), gW, None

    def step(self, h: float) -> None:
        t = self.torch
        sh = math.sqrt(h)
        xi = t.randn(self.W.shape, generator=self.gen, dtype=self.W.dtype)
        with t.no_grad():
            Wp = self.W - (0.5 * h * self.sw ** 2) * self.gW + (sh * self.sw) * xi
            ap = self.a
            if self.sampler == "full":
                xa = t.randn(self.a.shape, generator=self.gen, dtype=self.a.dtype)
                ap = self.a - (0.5 * h * self.sa ** 2) * self.ga + (sh * self.sa) * xa
        Ep, gWp, gap = self.energy_grad(Wp, ap)
        with t.no_grad():
            rev = (((self.W - Wp) / self.sw + 0.5 * h * self.sw * gWp) ** 2).sum(dim=(1, 2))
            xi2 = (xi * xi).sum(dim=(1, 2))
            if self.sampler == "full":
                rev = rev + (((self.a - ap) / self.sa + 0.5 * h * self.sa * gap) ** 2).sum(1)
                xi2 = xi2 + (xa * xa).sum(1)
            la = -(Ep - self.E) - rev / (2.0 * h) + 0.5 * xi2
            u = t.rand(la.shape, generator=self.gen, dtype=la.dtype)
            take = t.log(u) < la
            self.W = t.where(take[:, None, None], Wp, self.W)
            self.gW = t.where(take[:, None, None], gWp, self.gW)
            self.E = t.where(take, Ep, self.E)
            if self.sampler == "full":
                self.a = t.where(take[:, None], ap, self.a)
                self.ga = t.where(take[:, None], gap, self.ga)

    def run(self, steps: int, h: float) -> None:
        for _ in range(steps):
            self.step(h)
