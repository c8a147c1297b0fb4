"""Activations and infinite-width (NNGP) kernels (THEORY §3).

The kernels here exclude ``g_a``: ``k(X, X')`` is ``E_w[φ(w·x) φ(w·x')]`` with
``w ~ N(0, (g_w/d) I)``.  The NNGP output kernel is ``g_a k``; the kernel
rescaling theory uses ``Q k`` (THEORY §6: using ``g_a k`` there would count
``g_a`` twice).  :func:`monte_carlo_kernel` is the independent check.
"""

from __future__ import annotations

import numpy as np

from .errors import MSAError
from .problem import ACTIVATIONS

_SQRT_PI = np.sqrt(np.pi)


def activation(name: str, h: np.ndarray) -> np.ndarray:
    """φ(h) for ``name`` in linear / erf / relu."""
    if name == "linear":
        return np.asarray(h, dtype=float)
    if name == "erf":
        from scipy.special import erf   # scipy costs 0.5 s of startup; import on use (issue 7)
        return erf(h)
    if name == "relu":
        return np.maximum(h, 0.0)
    raise MSAError(f"activation must be one of {', '.join(ACTIVATIONS)} (got {name!r})")


def activation_derivative(name: str, h: np.ndarray) -> np.ndarray:
    """φ'(h) (ReLU: the step function, with φ'(0) = 0)."""
    if name == "linear":
        return np.ones_like(h, dtype=float)
    if name == "erf":
        return (2.0 / _SQRT_PI) * np.exp(-np.square(h))
    if name == "relu":
        return (h > 0).astype(float)
    raise MSAError(f"activation must be one of {', '.join(ACTIVATIONS)} (got {name!r})")


def _pre_cov(X1, X2, g_w):
    d = X1.shape[1]
    c12 = (g_w / d) * (X1 @ X2.T)
    c11 = (g_w / d) * np.einsum("ij,ij->i", X1, X1)
    c22 = (g_w / d) * np.einsum("ij,ij->i", X2, X2)
    return c12, c11, c22


def _kernel_from_cov(name, c12, c11, c22):
    if name == "linear":
        return c12
    if name == "erf":
        den = np.sqrt(np.outer(1.0 + 2.0 * c11, 1.0 + 2.0 * c22))
        return (2.0 / np.pi) * np.arcsin(np.clip(2.0 * c12 / den, -1.0, 1.0))
    if name == "relu":
        norm = np.sqrt(np.outer(c11, c22))
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(norm > 0, c12 / np.where(norm > 0, norm, 1.0), 0.0)
        theta = np.arccos(np.clip(cos, -1.0, 1.0))
        return norm * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2.0 * np.pi)
    raise MSAError(f"activation must be one of {', '.join(ACTIVATIONS)} (got {name!r})")


def nngp_kernel(name: str, X1: np.ndarray, X2: np.ndarray | None = None,
                g_w: float = 1.0) -> np.ndarray:
    """The NNGP kernel ``k(X1, X2)`` without ``g_a`` (THEORY §3), shape (n1, n2)."""
    X1 = np.asarray(X1, dtype=float)
    X2 = X1 if X2 is None else np.asarray(X2, dtype=float)
    if X1.shape[1] != X2.shape[1]:
        raise MSAError(f"kernel inputs have {X1.shape[1]} and {X2.shape[1]} features")
    return _kernel_from_cov(name, *_pre_cov(X1, X2, g_w))


def nngp_kernel_diag(name: str, X: np.ndarray, g_w: float = 1.0) -> np.ndarray:
    """``k(x, x)`` for each row of X, without forming the full matrix."""
    X = np.asarray(X, dtype=float)
    c = (g_w / X.shape[1]) * np.einsum("ij,ij->i", X, X)
    if name == "linear":
        return c
    if name == "erf":
        return (2.0 / np.pi) * np.arcsin(2.0 * c / (1.0 + 2.0 * c))
    if name == "relu":
        return c / 2.0
    raise MSAError(f"activation must be one of {', '.join(ACTIVATIONS)} (got {name!r})")


def monte_carlo_kernel(name: str, X1: np.ndarray, X2: np.ndarray | None = None,
                       g_w: float = 1.0, n_samples: int = 100_000,
                       rng: np.random.Generator | int | None = None,
                       batch: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo estimate of ``k(X1, X2)`` over ``w ~ N(0, g_w/d I)``, with standard errors."""
    rng = np.random.default_rng(rng)
    X1 = np.asarray(X1, dtype=float)
    X2 = X1 if X2 is None else np.asarray(X2, dtype=float)
    d = X1.shape[1]
    s1 = np.zeros((X1.shape[0], X2.shape[0]))
    s2 = np.zeros_like(s1)
    done = 0
    while done < n_samples:
        m = min(batch, n_samples - done)
        W = rng.standard_normal((m, d)) * np.sqrt(g_w / d)
        A, B = activation(name, X1 @ W.T), activation(name, X2 @ W.T)
        s1 += A @ B.T
        s2 += np.square(A) @ np.square(B).T
        done += m
    mean = s1 / n_samples
    var = np.maximum(s2 / n_samples - mean ** 2, 0.0)
    return mean, np.sqrt(var / n_samples)
