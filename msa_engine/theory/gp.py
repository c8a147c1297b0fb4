"""Gaussian-process algebra in the eigenbasis of a base kernel.

Every linear theory's mean predictor is a GP with kernel ``Q k`` for some
scalar ``Q`` (THEORY §5: ``k = C`` for linear networks; THEORY §6: the NNGP
kernel without ``g_a`` for non-linear rescaling).  Diagonalising ``k`` once
makes every ``Q`` cost O(P²) instead of O(P³).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import MSAError
from ..kernels import nngp_kernel, nngp_kernel_diag
from ..problem import Problem


@dataclass(frozen=True, eq=False)
class Spectral:
    """Base kernel ``k`` on train/test points, diagonalised: ``k = U diag(lam) Uᵀ``."""

    k: np.ndarray          # P×P
    k_star: np.ndarray     # P*×P
    k_star_diag: np.ndarray  # P*  (k(x*, x*))
    lam: np.ndarray        # P, ascending, clipped at 0
    U: np.ndarray          # P×P
    y_rot: np.ndarray      # Uᵀy
    M: np.ndarray          # k_star @ U

    @classmethod
    def of(cls, problem: Problem, low_rank: bool | None = None) -> "Spectral":
        """Kernels and eigendecomposition; ``low_rank`` forces (True) or forbids (False)
        the QR route for linear kernels (default: by size, see :data:`LOW_RANK_MIN_P`)."""
        data, net = problem.data, problem.network
        with np.errstate(over="ignore", invalid="ignore"):   # checked just below
            k = nngp_kernel(net.activation, data.X_train, None, net.g_w)
            ks = nngp_kernel(net.activation, data.X_test, data.X_train, net.g_w)
            kss = nngp_kernel_diag(net.activation, data.X_test, net.g_w)
        if not (np.all(np.isfinite(k)) and np.all(np.isfinite(ks)) and np.all(np.isfinite(kss))):
            raise MSAError("the NNGP kernel overflowed to inf or NaN: the inputs are too large "
                           f"(max |x| = {float(np.max(np.abs(data.X_train))):.3g}); rescale them")
        if low_rank is None:
            low_rank = data.P >= LOW_RANK_MIN_P and 2 * data.d <= data.P
        if net.activation == "linear" and low_rank and data.d < data.P:
            lam, U = linear_kernel_eigh(data.X_train, net.g_w)
        else:
            lam, U = np.linalg.eigh(0.5 * (k + k.T))
        y_rot = U.T @ data.y_train
        check_roundoff(lam, y_rot, net)
        lam = np.maximum(lam, 0.0)  # a PSD kernel; eigh can return -1e-16
        return cls(k, ks, kss, lam, U, y_rot, ks @ U)


# The linear kernel C = (g_w/d) X Xᵀ has rank at most d.  For d ≤ P/2 a complete QR of X
# (P²d work) and an eigendecomposition of the d×d factor replace the P×P eigh (about 9P³/3
# work): 0.41 s against 1.1 s at P = 2000, d = 200 on one core (issue 7; the QR now
# 0.18 s on a slower core, see _complete_qr).  Below
# LOW_RANK_MIN_P the eigh is cheap and kept, so small problems (every shipped session,
# every reliability message) are computed exactly as before.
LOW_RANK_MIN_P = 400


def linear_kernel_eigh(X: np.ndarray, g_w: float) -> tuple[np.ndarray, np.ndarray]:
    """Eigendecomposition of ``C = (g_w/d) X Xᵀ`` through ``X = Q R``, ascending.

    ``C = Q₁ (g_w/d) R Rᵀ Q₁ᵀ``: the eigenvectors are ``Q₁ V`` with ``(g_w/d) R Rᵀ = V Λ Vᵀ``,
    and the ``P − d`` columns of ``Q₂`` span the null space (eigenvalue exactly 0).
    """
    P, d = X.shape
    Q1, Q2, R1 = _complete_qr(X)
    lam_r, V = np.linalg.eigh((g_w / d) * (R1 @ R1.T))
    lam = np.concatenate([np.zeros(P - d), lam_r])
    U = np.empty((P, P))
    U[:, :P - d] = Q2
    U[:, P - d:] = Q1 @ V
    order = np.argsort(lam, kind="stable")   # lam_r can hold round-off negatives
    if np.any(order != np.arange(P)):
        lam, U = lam[order], U[:, order]
    return lam, U


def _complete_qr(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``X = Q₁R`` (``X`` of shape ``(P, d)``, ``d < P``) and ``Q₂`` completing ``Q₁`` to
    an orthogonal ``[Q₁ Q₂]``: ``(Q₁, Q₂, R)``.

    Householder QR (LAPACK ``geqrf``, numpy's ``mode="raw"``), then ``Q = I − Y T Yᵀ``,
    the compact WY form of its ``d`` reflectors (``Y`` unit lower trapezoidal, ``T`` upper
    triangular by LAPACK ``larft``'s recurrence), in two matrix products.  numpy's
    ``mode="complete"`` forms ``Q`` by ``orgqr``, which ran at ≈ 4 GFLOP/s: 0.82 against
    0.18 s at P = 2000, d = 200 on one slow core, the same ``Q`` to 1e-15 (issue 7)."""
    P, d = X.shape
    h, tau = np.linalg.qr(X, mode="raw")
    A = h.T                                    # R above the diagonal, reflectors below
    diag = np.arange(d)
    Y = np.tril(A, -1)
    Y[diag, diag] = 1.0
    R = np.triu(A[:d])
    G = Y.T @ Y
    T = np.zeros((d, d))
    for i in range(d):
        T[i, i] = tau[i]
        T[:i, i] = -tau[i] * (T[:i, :i] @ G[:i, i])
    Q1 = -(Y @ (T @ Y[:d].T))
    Q1[diag, diag] += 1.0
    Q2 = -(Y @ (T @ Y[d:].T))
    Q2[np.arange(d, P), np.arange(P - d)] += 1.0
    return Q1, Q2, R


# Relative round-off tolerated in the directions where the kernel is singular.
ROUNDOFF_TOL = 1e-3


def check_roundoff(lam: np.ndarray, y_rot: np.ndarray, net) -> None:
    """Refuse a singular kernel with a κ too small to resolve its null space (issue 8).

    Duplicate or collinear inputs make the kernel singular; its null eigenvalues
    come out of ``eigh`` (``lam``, before clipping) as round-off ``δλ`` (the
    largest of them, at least ``ε·λ_max``).  Targets in those directions are then
    resolved by κ alone: round-off enters the GP mean as ``g_a δλ/κ`` and the
    self-consistency of Q as ``(g_a χ/N) δλ |y_null|²/κ²``.  If either exceeds
    ``ROUNDOFF_TOL`` the result would be round-off, not physics, so a clear
    :class:`MSAError` names the smallest κ that is safe (no jitter is added
    silently).  Measured: the estimate exceeds the actual spread of Q under a
    permutation of the training points by 10–100×.
    """
    P = lam.size
    eps = np.finfo(float).eps
    top = max(float(lam[-1]), 0.0)
    null = lam <= P * eps * top
    y2 = float(y_rot @ y_rot)
    yn2 = float(y_rot[null] @ y_rot[null])
    if not np.any(null) or yn2 == 0.0 or y2 == 0.0 or not math.isfinite(yn2 / y2):
        return
    floor = max(float(np.max(np.abs(lam[null]))), eps * top)
    # the smallest κ that keeps both terms below the tolerance
    c = net.g_a * net.chi / net.N
    safe = max(net.g_a * floor * math.sqrt(yn2 / y2), math.sqrt(c * floor * yn2 * ROUNDOFF_TOL)) \
        / ROUNDOFF_TOL
    if net.kappa < safe:
        with np.errstate(over="ignore"):
            size = max(np.float64(net.g_a * floor * math.sqrt(yn2 / y2)) / net.kappa,
                       np.float64(c * floor * yn2) / net.kappa / net.kappa)
        raise MSAError(
            f"the kernel is singular ({int(np.sum(null))} of {P} eigenvalues at round-off "
            f"level: duplicate or collinear inputs) and kappa = {net.kappa:.3g} is too small to "
            f"resolve the targets there (round-off would enter at relative size "
            f"{float(size):.2g}); use kappa >= {safe:.2g} or remove the duplicate inputs")


def gp_mean(sp: Spectral, Q: float, kappa: float):
    """Train mean, test mean and ``t = (Qk + κ)⁻¹ y`` of the GP with kernel ``Q k``."""
    g = sp.y_rot / (Q * sp.lam + kappa)
    return sp.U @ (Q * sp.lam * g), Q * (sp.M @ g), sp.U @ g


def gp_variance(sp: Spectral, Q: float, kappa: float, chi: float) -> np.ndarray:
    """Predictive variance of f* of the GP ``(Q k** − Q² k* B k*ᵀ)/χ`` (THEORY §5)."""
    quad = np.square(sp.M) @ (1.0 / (Q * sp.lam + kappa))
    return np.maximum(Q * sp.k_star_diag - Q * Q * quad, 0.0) / chi


def gp_log_evidence(sp: Spectral, Q: float, kappa: float, chi: float) -> float:
    """``log N(y; 0, (Q k + κ I)/χ)``."""
    ev = (Q * sp.lam + kappa) / chi
    return float(-0.5 * np.sum(np.log(2 * math.pi * ev)) - 0.5 * np.sum(sp.y_rot ** 2 / ev))


class ScaleMixture:
    """The exact linear posterior over ``q = χ|a|²`` in ``u = log q`` (THEORY §5).

    ``log_density(u)`` is the log of ``p(q) N(y; 0, (qk + κ)/χ) q`` with all
    constants, so that its integral over ``u`` is the evidence.  Its
    stationary points are the roots of the scalar one-loop equation.
    """

    def __init__(self, sp: Spectral, N: int, g_a: float, kappa: float, chi: float):
        from scipy.special import gammaln   # on use: scipy costs 0.5 s of startup (issue 7)
        self.sp, self.N, self.g_a, self.kappa, self.chi = sp, N, g_a, kappa, chi
        P = sp.lam.size
        self._const = (-(N / 2) * math.log(2 * g_a / N) - gammaln(N / 2)
                       - (P / 2) * math.log(2 * math.pi) + (P / 2) * math.log(chi))
        # Null eigenvalues (exactly 0: rank-deficient kernels, e.g. the linear kernel at
        # d < P) contribute log κ and y²/κ to the density and nothing to the scalar
        # equation; summing them once makes every evaluation O(rank) instead of O(P)
        # (issue 7).  With no exact zeros the arrays, and so the results, are unchanged.
        zero = sp.lam == 0.0
        self._lam, self._y2 = sp.lam[~zero], sp.y_rot[~zero] ** 2
        self._n0 = int(np.count_nonzero(zero))
        self._y2_0 = float(np.sum(sp.y_rot[zero] ** 2))

    def _null_terms(self) -> tuple[float, float]:
        """``Σ_null log κ`` and ``Σ_null y²/κ`` (both 0.0 when the kernel has no null space)."""
        if not self._n0:
            return 0.0, 0.0
        return self._n0 * math.log(self.kappa), self._y2_0 / self.kappa

    def log_density(self, u: np.ndarray) -> np.ndarray:
        u = np.atleast_1d(np.asarray(u, dtype=float))
        q = np.exp(u)[:, None]
        den = q * self._lam[None, :] + self.kappa
        log0, quad0 = self._null_terms()
        return ((self.N / 2) * u - np.exp(u) * self.N / (2 * self.g_a) + self._const
                - 0.5 * (np.sum(np.log(den), axis=1) + log0)
                - 0.5 * self.chi * (np.sum(self._y2[None, :] / den, axis=1) + quad0))

    def scalar_equation(self, Q: np.ndarray) -> np.ndarray:
        """``Q (1 + (g_a/N)[tr(Bk) − χ s(Q)]) − g_a``, vectorised; roots are stationary points."""
        Q = np.atleast_1d(np.asarray(Q, dtype=float))[:, None]
        den = Q * self._lam[None, :] + self.kappa
        tr = np.sum(self._lam / den, axis=1)
        with np.errstate(over="ignore"):    # den² = inf at κ ~ 1e300: the term is 0
            s = np.sum(self._lam * self._y2 / den ** 2, axis=1)
        return Q[:, 0] * (1 + (self.g_a / self.N) * (tr - self.chi * s)) - self.g_a

    def curvature(self, u: float) -> float:
        """d²/du² of the log density (negative at a maximum)."""
        q, lam, k = math.exp(u), self._lam, self.kappa
        den = q * lam + k
        with np.errstate(over="ignore"):    # den², den³ = inf at κ ~ 1e300: the terms are 0
            return float(-q * self.N / (2 * self.g_a) - 0.5 * np.sum(q * lam * k / den ** 2)
                         + 0.5 * self.chi * np.sum(self._y2 * q * lam * (k - q * lam)
                                                   / den ** 3))

    def modes(self) -> list[float]:
        """All local maxima ``Q`` of the density in ``log q``, best first.

        Found by bracketing sign changes of the scalar equation on a wide
        logarithmic grid, then refining each with Brent's method: the equation
        has a pole-free but possibly multi-rooted form, so a fixed-point
        iteration is not used (THEORY §5).
        """
        from scipy.optimize import brentq

        grid = self.g_a * np.logspace(-14, 14, 2801)
        h = self.scalar_equation(grid)
        roots = []
        for i in np.nonzero((h[:-1] < 0) & (h[1:] >= 0))[0]:
            f = lambda x: float(self.scalar_equation(x)[0])
            roots.append(brentq(f, grid[i], grid[i + 1], xtol=1e-300, rtol=1e-15, maxiter=500))
        if not roots:
            from ..errors import MSAError
            raise MSAError("the scalar one-loop equation has no root in [1e-14, 1e14]·g_a")
        roots.sort(key=lambda r: -float(self.log_density(math.log(r))[0]))
        return roots
