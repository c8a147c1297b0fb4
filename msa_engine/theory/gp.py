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
from scipy.special import gammaln

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
    def of(cls, problem: Problem) -> "Spectral":
        data, net = problem.data, problem.network
        k = nngp_kernel(net.activation, data.X_train, None, net.g_w)
        ks = nngp_kernel(net.activation, data.X_test, data.X_train, net.g_w)
        kss = nngp_kernel_diag(net.activation, data.X_test, net.g_w)
        lam, U = np.linalg.eigh(0.5 * (k + k.T))
        lam = np.maximum(lam, 0.0)  # a PSD kernel; eigh can return -1e-16
        return cls(k, ks, kss, lam, U, U.T @ data.y_train, ks @ U)


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
        self.sp, self.N, self.g_a, self.kappa, self.chi = sp, N, g_a, kappa, chi
        P = sp.lam.size
        self._const = (-(N / 2) * math.log(2 * g_a / N) - gammaln(N / 2)
                       - (P / 2) * math.log(2 * math.pi) + (P / 2) * math.log(chi))

    def log_density(self, u: np.ndarray) -> np.ndarray:
        u = np.atleast_1d(np.asarray(u, dtype=float))
        q = np.exp(u)[:, None]
        den = q * self.sp.lam[None, :] + self.kappa
        return ((self.N / 2) * u - np.exp(u) * self.N / (2 * self.g_a) + self._const
                - 0.5 * np.sum(np.log(den), axis=1)
                - 0.5 * self.chi * np.sum(self.sp.y_rot[None, :] ** 2 / den, axis=1))

    def scalar_equation(self, Q: np.ndarray) -> np.ndarray:
        """``Q (1 + (g_a/N)[tr(Bk) − χ s(Q)]) − g_a``, vectorised; roots are stationary points."""
        Q = np.atleast_1d(np.asarray(Q, dtype=float))[:, None]
        den = Q * self.sp.lam[None, :] + self.kappa
        tr = np.sum(self.sp.lam / den, axis=1)
        s = np.sum(self.sp.lam * self.sp.y_rot ** 2 / den ** 2, axis=1)
        return Q[:, 0] * (1 + (self.g_a / self.N) * (tr - self.chi * s)) - self.g_a

    def curvature(self, u: float) -> float:
        """d²/du² of the log density (negative at a maximum)."""
        q, lam, k = math.exp(u), self.sp.lam, self.kappa
        den = q * lam + k
        return float(-q * self.N / (2 * self.g_a) - 0.5 * np.sum(q * lam * k / den ** 2)
                     + 0.5 * self.chi * np.sum(self.sp.y_rot ** 2 * q * lam * (k - q * lam) / den ** 3))

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
