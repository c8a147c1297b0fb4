"""Plain-NumPy reference of every sampler kernel (THEORY §7), for testing only.

The numba kernels in :mod:`kernels_numba` loop over chains and elements; this
module writes the same mathematics batched over chains with ``einsum`` and
``numpy.linalg``, from the formulas of THEORY §1 and §7 rather than from the
numba code.  ``tests/test_sampling_kernels.py`` feeds both the same Gaussian
increments and log-uniforms and checks that they produce the same chains and the
same measurements step for step.  Slow, and meant to be.
"""

from __future__ import annotations

import numpy as np

from ..kernels import activation, activation_derivative


def marginal_energy_grad(W, X, y, act, g_w, g_a, kappa, chi):
    """Batched marginal energy and gradient: ``W`` has shape ``(C, N, d)``."""
    C, N, d = W.shape
    H = np.einsum("pd,cnd->cpn", X, W)
    Phi, dPhi = activation(act, H), activation_derivative(act, H)
    K = (g_a / N) * np.einsum("cpn,cqn->cpq", Phi, Phi)
    A = K + kappa * np.eye(X.shape[0])
    _, logdet = np.linalg.slogdet(A)
    Ainv = np.linalg.inv(A)
    t = np.einsum("cpq,q->cp", Ainv, y)
    E = 0.5 * d / g_w * np.sum(W ** 2, axis=(1, 2)) + 0.5 * logdet + 0.5 * chi * t @ y
    G = 0.5 * Ainv - 0.5 * chi * np.einsum("cp,cq->cpq", t, t)
    M = (2 * g_a / N) * np.einsum("cpq,cqn->cpn", G, Phi) * dPhi
    return E, np.einsum("cpn,pd->cnd", M, X) + (d / g_w) * W


def full_energy_grad(W, a, X, y, act, g_w, g_a, kappa, chi):
    """Batched full energy and gradients: ``W (C, N, d)``, ``a (C, N)``."""
    C, N, d = W.shape
    H = np.einsum("pd,cnd->cpn", X, W)
    Phi, dPhi = activation(act, H), activation_derivative(act, H)
    r = np.einsum("cpn,cn->cp", Phi, a) - y
    E = (0.5 * chi / kappa * np.sum(r ** 2, axis=1) + 0.5 * d / g_w * np.sum(W ** 2, axis=(1, 2))
         + 0.5 * chi * N / g_a * np.sum(a ** 2, axis=1))
    ga = (chi / kappa) * np.einsum("cpn,cp->cn", Phi, r) + (chi * N / g_a) * a
    gW = (chi / kappa) * np.einsum("cp,cn,cpn,pd->cnd", r, a, dPhi, X) + (d / g_w) * W
    return E, gW, ga


def observe(W, X, Xs, y, u_slow, act, g_a, kappa, chi):
    """Batched Rao-Blackwellised observables: returns ``ftr, fte, var_te, K, SW, Q, slow``."""
    C, N, d = W.shape
    Phi = activation(act, np.einsum("pd,cnd->cpn", X, W))
    Phs = activation(act, np.einsum("pd,cnd->cpn", Xs, W))
    K = (g_a / N) * np.einsum("cpn,cqn->cpq", Phi, Phi)
    Ainv = np.linalg.inv(K + kappa * np.eye(X.shape[0]))
    t = np.einsum("cpq,q->cp", Ainv, y)
    Ks = (g_a / N) * np.einsum("csn,cqn->csq", Phs, Phi)
    ftr = np.einsum("cpq,cq->cp", K, t)
    fte = np.einsum("csq,cq->cs", Ks, t)
    kss = (g_a / N) * np.sum(Phs ** 2, axis=2)
    var = (kss - np.einsum("csp,cpq,csq->cs", Ks, Ainv, Ks)) / chi
    SW = np.einsum("cni,cnj->cij", W, W) / N
    trAK = np.einsum("cpq,cqp->c", Ainv, K)
    Q = g_a + (g_a / N) * (chi * np.einsum("cp,cp->c", t, ftr) - trAK)
    slow = np.sum(np.einsum("cnd,d->cn", W, u_slow) ** 2, axis=1) / N
    return ftr, fte, var, K, SW, Q, slow


def run_steps(state: dict, noise, logu, problem, *, sampler, mala, h, u_slow, noise_a=None,
              takes: list | None = None):
    """Advance a batched state ``{"W", "a"?, "E", "gW", "ga"?}`` by ``len(noise)`` steps at
    fixed step size ``h``; returns the list of per-step observation tuples and the
    per-step mean acceptance probabilities (and appends each step's per-chain acceptance
    mask to ``takes`` if given).  Mirrors the kernels' MALA/ULA update."""
    net, data = problem.network, problem.data
    X, Xs, y = data.X_train, data.X_test, data.y_train
    args = (net.activation, net.g_w, net.g_a, net.kappa, net.chi)
    d, N = X.shape[1], net.N
    sw = np.sqrt(net.g_w / d)
    sa = np.sqrt(net.g_a / (net.chi * N))
    obs, alphas = [], []
    for k in range(noise.shape[0]):
        W, E, gW = state["W"], state["E"], state["gW"]
        Wp = W - 0.5 * h * sw ** 2 * gW + np.sqrt(h) * sw * noise[k]
        if sampler == "full":
            a, ga = state["a"], state["ga"]
            ap = a - 0.5 * h * sa ** 2 * ga + np.sqrt(h) * sa * noise_a[k]
            Ep, gWp, gap = full_energy_grad(Wp, ap, X, y, *args)
            rev = (np.sum(((W - Wp) / sw + 0.5 * h * sw * gWp) ** 2, axis=(1, 2))
                   + np.sum(((a - ap) / sa + 0.5 * h * sa * gap) ** 2, axis=1))
            xi2 = np.sum(noise[k] ** 2, axis=(1, 2)) + np.sum(noise_a[k] ** 2, axis=1)
        else:
            Ep, gWp = marginal_energy_grad(Wp, X, y, *args)
            rev = np.sum(((W - Wp) / sw + 0.5 * h * sw * gWp) ** 2, axis=(1, 2))
            xi2 = np.sum(noise[k] ** 2, axis=(1, 2))
        la = -(Ep - E) - rev / (2 * h) + 0.5 * xi2
        alphas.append(float(np.mean(np.minimum(1.0, np.exp(np.minimum(la, 0.0))))))
        take = (logu[k] < la) if mala else np.ones(len(E), bool)
        if takes is not None:
            takes.append(take)
        state["W"] = np.where(take[:, None, None], Wp, W)
        state["E"] = np.where(take, Ep, E)
        state["gW"] = np.where(take[:, None, None], gWp, gW)
        if sampler == "full":
            state["a"] = np.where(take[:, None], ap, a)
            state["ga"] = np.where(take[:, None], gap, ga)
        obs.append(observe(state["W"], X, Xs, y, u_slow, net.activation, net.g_a,
                           net.kappa, net.chi))
    return obs, alphas
