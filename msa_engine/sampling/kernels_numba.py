"""Numba kernels of the Langevin samplers (THEORY §7).

Every kernel is ``@njit(cache=True, nogil=True)``: no ``parallel``/``prange``, so two
Python threads (the TUI runs a theory solve next to a simulation) can call them at
the same time without sharing a threading layer; the GIL is released for the whole
chunk.  All chains of a run are advanced by one call for a whole chunk of steps, so
there is no Python in the inner loop.

Randomness is *not* drawn here: the driver passes the Gaussian increments and the
log-uniforms of the Metropolis test in, drawn from seeded numpy generators.  That
makes runs reproducible, checkpoints trivial (the generator state is the only RNG
state) and lets ``reference.py`` replay the very same steps in plain numpy.

Coordinates: every parameter block is preconditioned by its prior variance
``s²`` (``g_w/d`` for ``W``, ``g_a/(χN)`` for ``a``).  With whitened ``u = θ/s``
the proposal is ``u' = u − (h/2)∇_u E + √h ξ``, i.e. ``θ' = θ − (h/2)s²∇_θE + √h s ξ``.
Without it ``a`` (prior variance ``g_a/(χN)``) makes the system stiff (THEORY §7).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

ACT_CODES = {"linear": 0, "erf": 1, "relu": 2}
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

# status codes returned by the chunk kernels
OK, NONFINITE, EXPLODED = 0, 1, 2


@njit(cache=True, nogil=True)
def act(code, H):  # pragma: no cover - numba
    """φ(H) and φ'(H), elementwise, for activation ``code`` (0 linear, 1 erf, 2 relu)."""
    n0, n1 = H.shape
    phi = np.empty((n0, n1))
    dphi = np.empty((n0, n1))
    for i in range(n0):
        for j in range(n1):
            h = H[i, j]
            if code == 0:
                phi[i, j] = h
                dphi[i, j] = 1.0
            elif code == 1:
                phi[i, j] = math.erf(h)
                dphi[i, j] = _TWO_OVER_SQRT_PI * math.exp(-h * h)
            else:
                if h > 0.0:
                    phi[i, j] = h
                    dphi[i, j] = 1.0
                else:
                    phi[i, j] = 0.0
                    dphi[i, j] = 0.0
    return phi, dphi


@njit(cache=True, nogil=True)
def _sq(A):  # pragma: no cover - numba
    s = 0.0
    for v in A.ravel():
        s += v * v
    return s


@njit(cache=True, nogil=True)
def _gram(Phi, g_a, kappa):  # pragma: no cover - numba
    """``A = K + κI`` with ``K = (g_a/N) Φ Φᵀ``; returns K, A⁻¹, log det A."""
    P, N = Phi.shape
    K = (g_a / N) * np.dot(Phi, Phi.T)
    A = K.copy()
    for i in range(P):
        A[i, i] += kappa
    L = np.linalg.cholesky(A)
    logdet = 0.0
    for i in range(P):
        logdet += 2.0 * math.log(L[i, i])
    Ainv = np.linalg.inv(A)
    Ainv = 0.5 * (Ainv + Ainv.T)
    return K, Ainv, logdet


@njit(cache=True, nogil=True)
def marginal_energy_grad(W, X, y, code, g_w, g_a, kappa, chi):  # pragma: no cover - numba
    """Energy of the marginal posterior of ``W`` (``a`` integrated out, THEORY §7) and
    its gradient::

        E(W) = (d/2g_w)‖W‖² + ½ log det(K+κI) + (χ/2) yᵀ(K+κI)⁻¹y
        ∂E/∂W = [(2g_a/N)(GΦ) ⊙ φ'(XWᵀ)]ᵀ X + (d/g_w) W,  G = ½A⁻¹ − (χ/2) t tᵀ
    """
    N, d = W.shape
    P = X.shape[0]
    H = np.dot(X, W.T)
    Phi, dPhi = act(code, H)
    K, Ainv, logdet = _gram(Phi, g_a, kappa)
    t = np.dot(Ainv, y)
    E = 0.5 * d / g_w * _sq(W) + 0.5 * logdet + 0.5 * chi * np.dot(y, t)
    G = 0.5 * Ainv
    for i in range(P):
        for j in range(P):
            G[i, j] -= 0.5 * chi * t[i] * t[j]
    M = np.dot(G, Phi)
    c = 2.0 * g_a / N
    for i in range(P):
        for j in range(N):
            M[i, j] *= c * dPhi[i, j]
    grad = np.dot(M.T, X) + (d / g_w) * W
    return E, grad


@njit(cache=True, nogil=True)
def full_energy_grad(W, a, X, y, code, g_w, g_a, kappa, chi):  # pragma: no cover - numba
    """Energy of the full posterior on ``(W, a)`` (THEORY §1) and both gradients::

        E = (χ/2κ)|Φa − y|² + (d/2g_w)‖W‖² + (χN/2g_a)|a|²
    """
    N, d = W.shape
    P = X.shape[0]
    H = np.dot(X, W.T)
    Phi, dPhi = act(code, H)
    r = np.dot(Phi, a) - y
    E = 0.5 * chi / kappa * np.dot(r, r) + 0.5 * d / g_w * _sq(W) + 0.5 * chi * N / g_a * np.dot(a, a)
    ga = (chi / kappa) * np.dot(Phi.T, r) + (chi * N / g_a) * a
    M = np.empty((P, N))
    for i in range(P):
        for j in range(N):
            M[i, j] = (chi / kappa) * r[i] * a[j] * dPhi[i, j]
    gW = np.dot(M.T, X) + (d / g_w) * W
    return E, gW, ga


@njit(cache=True, nogil=True)
def observe(W, X, Xs, y, u_slow, code, g_a, kappa, chi, ftr, fte, vte, Kacc, SWacc):  # pragma: no cover
    """Rao-Blackwellised observables given ``W`` (THEORY §7): with ``A = K + κI`` and
    ``t = A⁻¹y``, ``E[f(X)|W] = K t``, ``E[f(X*)|W] = K* t``,
    ``Var[f(X*)|W] = (K** − K* A⁻¹ K*ᵀ)/χ`` (diagonal), and
    ``E[χ|a|² | W] = g_a + (g_a/N)(χ tᵀKt − tr(A⁻¹K))``.

    Writes ``ftr``/``fte`` (this draw), adds to ``vte``, ``Kacc`` (``K``) and ``SWacc``
    (``WᵀW/N``); returns ``(Q, |W u_slow|²/N)``, the slow mode traced for R̂/ESS.
    """
    N, d = W.shape
    P = X.shape[0]
    Ps = Xs.shape[0]
    Phi, _ = act(code, np.dot(X, W.T))
    Phs, _ = act(code, np.dot(Xs, W.T))
    K, Ainv, _ = _gram(Phi, g_a, kappa)
    t = np.dot(Ainv, y)
    Ks = (g_a / N) * np.dot(Phs, Phi.T)
    f = np.dot(K, t)
    ftr[:] = f
    fte[:] = np.dot(Ks, t)
    KA = np.dot(Ks, Ainv)
    for i in range(Ps):
        kss = 0.0
        for j in range(N):
            kss += Phs[i, j] * Phs[i, j]
        q = 0.0
        for j in range(P):
            q += KA[i, j] * Ks[i, j]
        vte[i] += ((g_a / N) * kss - q) / chi
    Kacc += K
    SWacc += np.dot(W.T, W) / N
    trAK = 0.0
    for i in range(P):
        trAK += 1.0 - kappa * Ainv[i, i]
    Q = g_a + (g_a / N) * (chi * np.dot(t, f) - trAK)
    Wu = np.dot(W, u_slow)
    return Q, np.dot(Wu, Wu) / N


@njit(cache=True, nogil=True)
def _measure(c, W, X, Xs, y, u_slow, code, g_a, kappa, chi, m, E, tr_ftr, tr_fte,
             tr_Q, tr_E, tr_slow, vte, Kacc, SWb, m_total, nbatch):  # pragma: no cover
    b = (m * nbatch) // m_total
    Q, sl = observe(W, X, Xs, y, u_slow, code, g_a, kappa, chi, tr_ftr[c, m], tr_fte[c, m],
                    vte[c], Kacc[c], SWb[c, b])
    tr_Q[c, m] = Q
    tr_slow[c, m] = sl
    tr_E[c, m] = E


@njit(cache=True, nogil=True)
def _flag(status, code, chain, step):  # pragma: no cover - numba
    status[0] = code
    status[1] = chain
    status[2] = step


@njit(cache=True, nogil=True)
def _mh_terms(x, xp, gp, xi, s, h):  # pragma: no cover - numba
    """Squared norms for the MALA ratio of one block in whitened coordinates: the
    reverse move ``|(x − x')/s + (h/2) s ∇E(x')|²`` and the forward one ``|ξ|²``."""
    xf, xpf, gf, nf = x.ravel(), xp.ravel(), gp.ravel(), xi.ravel()
    rev = 0.0
    xi2 = 0.0
    for i in range(xf.size):
        z = (xf[i] - xpf[i]) / s + 0.5 * h * s * gf[i]
        rev += z * z
        xi2 += nf[i] * nf[i]
    return rev, xi2


@njit(cache=True, nogil=True)
def _end_of_step(k, C, alpha_sum, W, X, Xs, y, u_slow, code, g_a, kappa, chi, E, log_h,
                 lh_stats, adapt, adapt_avg, target, rate, step0, burn_in, thin, m_total,
                 nbatch, tr_ftr, tr_fte, tr_Q, tr_E, tr_slow, vte, Kacc, SWb):  # pragma: no cover
    """Shared by both samplers after all chains moved: step-size adaptation during
    burn-in, then a measurement of every ``thin``-th post-burn-in state."""
    if adapt:
        log_h[0] += rate * (alpha_sum / C - target)
    if adapt_avg:
        lh_stats[0] += log_h[0]
        lh_stats[1] += 1.0
    done = step0 + k + 1 - burn_in
    if done > 0 and done % thin == 0:
        m = done // thin - 1
        for c in range(C):
            _measure(c, W[c], X, Xs, y, u_slow, code, g_a, kappa, chi, m, E[c], tr_ftr,
                     tr_fte, tr_Q, tr_E, tr_slow, vte, Kacc, SWb, m_total, nbatch)


@njit(cache=True, nogil=True)
def marginal_chunk(W, E, gW, log_h, lh_stats, acc, noise, logu, X, Xs, y, u_slow, code,
                   g_w, g_a, kappa, chi, mala, adapt, adapt_avg, target, rate, e_max,
                   step0, burn_in, thin, m_total, nbatch,
                   tr_ftr, tr_fte, tr_Q, tr_E, tr_slow, vte, Kacc, SWb, status):  # pragma: no cover
    """Advance all chains of the marginal sampler by ``noise.shape[0]`` steps.

    State ``W (C,N,d)``, cached energies ``E (C,)`` and gradients ``gW`` are updated
    in place.  ``log_h[0]`` is the shared log step size (Robbins-Monro adapted to
    the acceptance ``target`` while ``adapt``; ``lh_stats`` sums it for averaging
    while ``adapt_avg``); ``acc[c]`` sums the Metropolis acceptance probability (also for ULA,
    where it measures the discretisation error of the step).
    After step ``s`` (0-based global index) past ``burn_in``, every ``thin``-th
    state is measured.  On a non-finite or exploding energy, ``status`` receives
    ``(code, chain, step)`` and the kernel returns early.
    """
    S = noise.shape[0]
    C, N, d = W.shape
    s2 = g_w / d
    s = math.sqrt(s2)
    for k in range(S):
        h = math.exp(log_h[0])
        sh = math.sqrt(h)
        alpha_sum = 0.0
        for c in range(C):
            Wp = W[c] - (0.5 * h * s2) * gW[c] + (sh * s) * noise[k, c]
            Ep, gp = marginal_energy_grad(Wp, X, y, code, g_w, g_a, kappa, chi)
            if not math.isfinite(Ep):
                _flag(status, NONFINITE, c, step0 + k)
                return
            # Metropolis-Hastings ratio in whitened coordinates
            rev, xi2 = _mh_terms(W[c], Wp, gp, noise[k, c], s, h)
            la = -(Ep - E[c]) - rev / (2.0 * h) + 0.5 * xi2
            alpha = 1.0 if la >= 0.0 else math.exp(la)
            alpha_sum += alpha
            if (not mala) or logu[k, c] < la:
                W[c] = Wp
                E[c] = Ep
                gW[c] = gp
            if E[c] > e_max[c]:
                _flag(status, EXPLODED, c, step0 + k)
                return
            acc[c] += alpha
        _end_of_step(k, C, alpha_sum, W, X, Xs, y, u_slow, code, g_a, kappa, chi, E, log_h,
                     lh_stats, adapt, adapt_avg, target, rate, step0, burn_in, thin, m_total,
                     nbatch, tr_ftr, tr_fte, tr_Q, tr_E, tr_slow, vte, Kacc, SWb)


@njit(cache=True, nogil=True)
def full_chunk(W, a, E, gW, ga, log_h, lh_stats, acc, noise, noise_a, logu, X, Xs, y, u_slow,
               code, g_w, g_a, kappa, chi, mala, adapt, adapt_avg, target, rate, e_max,
               step0, burn_in, thin, m_total, nbatch,
               tr_ftr, tr_fte, tr_Q, tr_E, tr_slow, vte, Kacc, SWb, status):  # pragma: no cover
    """As :func:`marginal_chunk`, for the full sampler on ``(W, a)`` (THEORY §1, §7).

    Observables are Rao-Blackwellised over ``a`` given the current ``W`` (exactly
    as in the marginal sampler), which is unbiased under the full posterior and
    removes the fast, large read-out noise from the estimates; the dynamics still
    move ``a`` and ``W`` jointly, so agreement with the marginal sampler tests the
    marginal energy and its gradient independently.
    """
    S = noise.shape[0]
    C, N, d = W.shape
    s2w = g_w / d
    sw = math.sqrt(s2w)
    s2a = g_a / (chi * N)
    sa = math.sqrt(s2a)
    for k in range(S):
        h = math.exp(log_h[0])
        sh = math.sqrt(h)
        alpha_sum = 0.0
        for c in range(C):
            Wp = W[c] - (0.5 * h * s2w) * gW[c] + (sh * sw) * noise[k, c]
            ap = a[c] - (0.5 * h * s2a) * ga[c] + (sh * sa) * noise_a[k, c]
            Ep, gWp, gap = full_energy_grad(Wp, ap, X, y, code, g_w, g_a, kappa, chi)
            if not math.isfinite(Ep):
                _flag(status, NONFINITE, c, step0 + k)
                return
            rev, xi2 = _mh_terms(W[c], Wp, gWp, noise[k, c], sw, h)
            rev_a, xi2_a = _mh_terms(a[c], ap, gap, noise_a[k, c], sa, h)
            rev += rev_a
            xi2 += xi2_a
            la = -(Ep - E[c]) - rev / (2.0 * h) + 0.5 * xi2
            alpha = 1.0 if la >= 0.0 else math.exp(la)
            alpha_sum += alpha
            if (not mala) or logu[k, c] < la:
                W[c] = Wp
                a[c] = ap
                E[c] = Ep
                gW[c] = gWp
                ga[c] = gap
            if E[c] > e_max[c]:
                _flag(status, EXPLODED, c, step0 + k)
                return
            acc[c] += alpha
        _end_of_step(k, C, alpha_sum, W, X, Xs, y, u_slow, code, g_a, kappa, chi, E, log_h,
                     lh_stats, adapt, adapt_avg, target, rate, step0, burn_in, thin, m_total,
                     nbatch, tr_ftr, tr_fte, tr_Q, tr_E, tr_slow, vte, Kacc, SWb)
