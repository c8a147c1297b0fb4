"""Numba kernels of the Langevin samplers (THEORY §7).

Every kernel is ``@njit(cache=True, nogil=True)``: no ``parallel``/``prange``, so two
Python threads (the TUI runs a theory solve next to a simulation) can call them at
the same time without sharing a threading layer; the GIL is released for the whole
chunk.  All chains of a run are advanced by one call for a whole chunk of steps, so
there is no Python in the inner loop; the driver may split the chains between
Python threads (chains are independent once the step size is frozen).

Speed (issue 7): every matrix product is a BLAS call (``np.dot`` with an ``out``
buffer on contiguous float64 arrays; the symmetric ones, ``ΦΦᵀ`` and ``WᵀW``, by
``syrk``, and SPD inverses by ``potrf``/``potri``,
from :mod:`..blas_numba`, whose changes reach these cached kernels only with a change
to this file), the elementwise work is fused into single loops, and all per-step
arrays live in per-chain workspaces allocated once by the sampler, so a step
allocates nothing of size ``P×N`` or ``N×d``.  The linear full
sampler never forms ``XWᵀ``: with ``φ(h) = h``, ``f = X(Wᵀa)`` and
``∂E/∂W = (χ/κ) a (Xᵀr)ᵀ + (d/g_w)W`` cost ``O((P+N)d)`` instead of ``O(PNd)``.
The marginal sampler keeps ``Φ, K, (K+κI)⁻¹, t`` of each chain's current state
(double-buffered: the proposal is built in the other buffer and an acceptance
flips the index), so measuring the observables needs no second ``P³`` solve.

Randomness: every chain owns a random stream (:mod:`rng_numba`, a ``(4,)`` uint64
state per chain, seeded by the driver and checkpointed with the run) from which the
kernel draws, per step, the ``N·d`` normals of ``W`` (then the ``N`` of ``a`` for the
full sampler) and one uniform for the Metropolis test, inside the kernel: each
block of normals is drawn into a per-call scratch buffer by
:func:`rng_numba.draw_normals` (the same numbers as one-at-a-time draws, ~2× faster)
and consumed by the proposal in the same pass.  That makes runs reproducible whatever the split of chains
between threads, and lets the tests regenerate the very same numbers
(:func:`rng_numba.replay`) for ``reference.py`` to replay the steps in plain numpy.

Coordinates: every parameter block is preconditioned by its prior variance
``s²`` (``g_w/d`` for ``W``, ``g_a/(χN)`` for ``a``).  With whitened ``u = θ/s``
the proposal is ``u' = u − (h/2)∇_u E + √h ξ``, i.e. ``θ' = θ − (h/2)s²∇_θE + √h s ξ``.
Without it ``a`` (prior variance ``g_a/(χN)``) makes the system stiff (THEORY §7).
"""

from __future__ import annotations

import math

import numpy as np
from ..jit import njit

from ..blas_numba import gram_cols, gram_rows, spd_inverse
from ..special import erf_gauss_row
from .rng_numba import (BLOCK_ROWS, LANES, STATE_WORDS, complete_rejected, draw_normals,
                         fast_normal, fast_normal_at, lane_words, LOOKUP_APART, normals_needed,
                         row_tables, uniform, words_needed)

ACT_CODES = {"linear": 0, "erf": 1, "relu": 2}


def act_code(activation: str):
    """The kernels' ``code`` argument for ``activation``: ``None`` for a linear φ (its
    own paths, and only those compiled: see BY_TYPE), else its :data:`ACT_CODES` int."""
    code = ACT_CODES[activation]
    return None if code == 0 else code


def scalar_streams(rng: np.ndarray):
    """The chunk kernels' ``scalar`` argument for the streams ``rng (C, ·)``: ``None``
    for lane streams (``STATE_WORDS`` words a chain), ``True`` for the single xoshiro
    states of version-2 checkpoints."""
    return None if rng.shape[-1] == STATE_WORDS else True
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

# WOODBURY_BY_TYPE: the kernels that take either path (the marginal sampler's chunk and
# refresh, the full sampler's observables) are given ``wpar = None`` off the Woodbury
# path and branch on ``wpar is not None``: numba prunes such a branch by the argument's
# type before compiling, so a run compiles one path only (the other took 9-12 s of a
# first simulation's 46 s of compilation on a slow host, issue 7)
# BY_TYPE (activation, random streams): likewise a linear φ is ``code = None`` (see
# :func:`act_code`; erf and ReLU are the ints 1 and 2, and 0 still means the identity
# through the general paths), and the chunk kernels' ``scalar`` is ``None`` for the lane
# streams (:func:`scalar_streams`): branches on ``code is None`` and ``scalar is None``
# are pruned by type, so a linear run compiles no erf or ReLU code and no run with lane
# streams compiles the scalar generator of version-2 checkpoints (about 8 s of a first
# linear simulation's 40 s of compilation on a slow host, issue 7: cold start)
# status codes returned by the chunk kernels
OK, NONFINITE, EXPLODED = 0, 1, 2


@njit(cache=True, nogil=True, inline="always")
def _scale_add_one(gf, xf, cf, i, cg, px, inv_s, hs):  # pragma: no cover - numba
    """Element ``i`` of :func:`_scale_add_sq`: writes ``g``, returns ``(x², z²)``."""
    x0 = xf[i]
    g0 = cg * gf[i] + px * x0
    gf[i] = g0
    z0 = (cf[i] - x0) * inv_s + hs * g0
    return x0 * x0, z0 * z0


@njit(cache=True, nogil=True)
def _scale_add_sq(g, cg, x, px, xc, s, h):  # pragma: no cover - numba
    """``g ← cg·g + px·x`` elementwise; returns ``(|x|², rev)`` with ``rev`` the
    reverse-move MALA term ``|(xc − x)/s + (h/2) s g|²`` of a proposal ``x`` from
    ``xc`` (prior scale ``s``; ``h = 0``: not wanted, 0), summed in the same pass.
    Both sums run in :data:`~rng_numba.LANES` partial sums, element ``i`` into lane
    ``i mod LANES``: lanes carry no dependence on one another, so the loop is SIMD
    without reassociating anything, and the order is fixed, so results do not depend
    on the compiler (four scalar partial sums measured 3.7× slower, 7.0 against
    1.9 µs at N·d = 3000)."""
    L = LANES
    gf, xf, cf = g.ravel(), x.ravel(), xc.ravel()
    n = xf.size
    inv_s, hs = (1.0 / s, 0.5 * h * s) if h > 0.0 else (0.0, 0.0)
    sq = np.zeros(L)
    rq = np.zeros(L)
    full = n // L
    for b in range(full):
        for j in range(L):
            x2, z2 = _scale_add_one(gf, xf, cf, b * L + j, cg, px, inv_s, hs)
            sq[j] += x2
            rq[j] += z2
    for i in range(full * L, n):
        x2, z2 = _scale_add_one(gf, xf, cf, i, cg, px, inv_s, hs)
        sq[i - full * L] += x2
        rq[i - full * L] += z2
    sx = 0.0
    sr = 0.0
    for j in range(L):
        sx += sq[j]
        sr += rq[j]
    return sx, (sr if h > 0.0 else 0.0)


@njit(cache=True, nogil=True)
def _linear_and(code, cond):  # pragma: no cover - numba
    """``cond`` for a linear φ (``code`` None), else False: the linear-only branches
    (see BY_TYPE; a runtime test, so those branches still compile for erf and ReLU)."""
    if code is None:
        return cond
    return False


@njit(cache=True, nogil=True)
def _act_inplace(code, H, D, want_d):  # pragma: no cover - numba
    """``H ← φ(H)`` and, if ``want_d``, ``D ← φ'(H)`` (D may be H when not ``want_d``)."""
    n0, n1 = H.shape
    if code == 0:
        if want_d:
            D[:, :] = 1.0
        return
    if code == 1:
        # one vectorised pass a row (msa_engine.special): libm's erf and exp, element by
        # element, were most of an erf step at every size
        buf, g, kb = np.empty(n1), np.empty(n1), np.empty(n1, dtype=np.int64)
        for i in range(n0):
            erf_gauss_row(H[i], buf, g, kb)
            for j in range(n1):
                H[i, j] = buf[j]
            if want_d:
                for j in range(n1):
                    D[i, j] = _TWO_OVER_SQRT_PI * g[j]
        return
    for i in range(n0):          # ReLU
        for j in range(n1):
            if H[i, j] > 0.0:
                if want_d:
                    D[i, j] = 1.0
            else:
                H[i, j] = 0.0
                if want_d:
                    D[i, j] = 0.0


@njit(cache=True, nogil=True)
def _gram(Phi, g_a, kappa):  # pragma: no cover - numba
    """``A = K + κI`` with ``K = (g_a/N) Φ Φᵀ``; returns K, A⁻¹, log det A."""
    P, N = Phi.shape
    K = np.empty((P, P))
    Ainv = np.empty((P, P))
    logdet = _factor(Phi, g_a, kappa, K, Ainv)
    return K, Ainv, logdet


SMALL_SPD = 48     # below this size the SPD inverse is written out (LAPACK's call overhead
                  # was 7.5 µs of a 20×20 inverse, most of the small marginal step)


@njit(cache=True, nogil=True)
def _small_spd_inverse(A, out):  # pragma: no cover - numba
    """:func:`_logdet_and_inverse` for small ``A`` without LAPACK: Cholesky ``A = LLᵀ``,
    ``L⁻¹`` by forward substitution, ``A⁻¹ = L⁻ᵀL⁻¹`` (exactly symmetric).
    Raises ``LinAlgError`` when ``A`` is not positive definite, as LAPACK's path does."""
    n = A.shape[0]
    L = np.zeros((n, n))
    logdet = 0.0
    for j in range(n):
        s = A[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not s > 0.0:
            raise np.linalg.LinAlgError("Matrix is not positive definite.")
        ljj = math.sqrt(s)
        L[j, j] = ljj
        logdet += 2.0 * math.log(ljj)
        inv = 1.0 / ljj
        for i in range(j + 1, n):
            s = A[i, j]
            for k in range(j):
                s -= L[i, k] * L[j, k]
            L[i, j] = s * inv
    # Li = L⁻¹ (lower triangular) by rows, Li[i] = (e_i − Σ_{k<i} L[i,k] Li[k]) / L[i,i]:
    # contiguous axpys that vectorise (column by column, the inner loop was a strided
    # dot product: the whole inverse took 4.0 against 2.7 µs at n = 20, 37 against 13
    # at n = 40)
    Li = np.zeros((n, n))
    for i in range(n):
        for k in range(i):
            lik = L[i, k]
            for j in range(k + 1):
                Li[i, j] -= lik * Li[k, j]
        Li[i, i] = 1.0
        inv = 1.0 / L[i, i]
        for j in range(i + 1):
            Li[i, j] *= inv
    # out = Liᵀ Li, a symmetric product (syrk)
    gram_cols(Li, out, 1.0)
    return logdet


@njit(cache=True, nogil=True)
def _logdet_and_inverse(A, out):  # pragma: no cover - numba
    """log det of the SPD matrix ``A`` (by Cholesky, which also refuses a non-SPD one) and
    its inverse, exactly symmetric, into ``out``: written out below :data:`SMALL_SPD`,
    else LAPACK's Cholesky inverse (``potrf`` + ``potri``, :mod:`msa_engine.blas_numba`;
    numba's ``cholesky`` then ``inv`` factored twice and inverted by LU: 2.2 against
    1.1 ms at 200×200, 133 against 64 µs at 60×60)."""
    if A.shape[0] < SMALL_SPD:
        return _small_spd_inverse(A, out)
    return spd_inverse(A, out)


@njit(cache=True, nogil=True)
def _factor(Phi, g_a, kappa, K, Ainv):  # pragma: no cover - numba
    """Write ``K = (g_a/N)ΦΦᵀ`` and the symmetrised ``(K+κI)⁻¹`` into the given
    buffers; return ``log det(K+κI)`` (Cholesky, which also checks positivity).
    ``K`` is a symmetric product (``syrk``): half the multiply-adds of ``gemm``, which
    numba's ``np.dot`` calls (this kernel computed 10 of 16 blocks of it with ``gemm``
    before :mod:`msa_engine.blas_numba`)."""
    P, N = Phi.shape
    gram_rows(Phi, K, g_a / N)
    return _shifted_inverse(K, kappa, Ainv)


@njit(cache=True, nogil=True)
def _shifted_inverse(K, kappa, Ainv):  # pragma: no cover - numba
    """``(K+κI)⁻¹`` into ``Ainv``; returns ``log det(K+κI)``."""
    P = K.shape[0]
    A = np.empty((P, P))
    for i in range(P):
        for j in range(P):
            A[i, j] = K[i, j]
        A[i, i] += kappa
    return _logdet_and_inverse(A, Ainv)


@njit(cache=True, nogil=True)
def _marginal_core(W, X, y, code, g_w, g_a, kappa, chi, Phi, D, M, K, Ainv, t, gW, Wc, s,
                   h):  # pragma: no cover
    """Marginal energy and gradient (into ``gW``) of THEORY §7, leaving ``Φ``, ``K``,
    ``A⁻¹`` and ``t = A⁻¹y`` of this ``W`` in the buffers for the observables;
    returns ``(E, rev)`` (``rev``: see :func:`_scale_add_sq`, for a proposal ``W``
    from ``Wc``).  ``D``, ``M`` are ``P×N`` scratch."""
    N, d = W.shape
    P = X.shape[0]
    np.dot(X, W.T, Phi)
    if code is not None:               # `is None` on an argument: see BY_TYPE
        _act_inplace(code, Phi, D, True)
    logdet = _factor(Phi, g_a, kappa, K, Ainv)
    np.dot(Ainv, y, t)
    yt = 0.0
    for i in range(P):
        yt += y[i] * t[i]
    # G = ½A⁻¹ − (χ/2) t tᵀ, built in a P×P scratch, then ∂E/∂W ∝ MᵀX, M = (GΦ) ⊙ φ'
    G = np.empty((P, P))
    for i in range(P):
        ti = 0.5 * chi * t[i]
        for j in range(P):
            G[i, j] = 0.5 * Ainv[i, j] - ti * t[j]
    if _linear_and(code, d < N):
        # φ' = 1: MᵀX = Φᵀ(GX), P²d + NPd multiply-adds against P²N + NPd, fewer when
        # d < N (the small marginal step, P = 20, d = 30, N = 100: 12 against 16 µs of
        # one slow core; at N = 10, d = 100 it would take 3× longer).  GX (P×d) lives
        # in M's first P·d entries, which this path does not otherwise use.
        GX = M.ravel()[:P * d].reshape((P, d))
        np.dot(G, X, GX)
        np.dot(Phi.T, GX, gW)
    else:
        np.dot(G, Phi, M)
        if code is not None:
            for i in range(P):
                for j in range(N):
                    M[i, j] *= D[i, j]
        np.dot(M.T, X, gW)
    pw = d / g_w
    sw, rev = _scale_add_sq(gW, 2.0 * g_a / N, W, pw, Wc, s, h)
    return 0.5 * pw * sw + 0.5 * logdet + 0.5 * chi * yt, rev


@njit(cache=True, nogil=True)
def marginal_energy_grad(W, X, y, code, g_w, g_a, kappa, chi):  # pragma: no cover - numba
    """Energy of the marginal posterior of ``W`` (``a`` integrated out, THEORY §7) and
    its gradient::

        E(W) = (d/2g_w)‖W‖² + ½ log det(K+κI) + (χ/2) yᵀ(K+κI)⁻¹y
        ∂E/∂W = [(2g_a/N)(GΦ) ⊙ φ'(XWᵀ)]ᵀ X + (d/g_w) W,  G = ½A⁻¹ − (χ/2) t tᵀ
    """
    N, d = W.shape
    P = X.shape[0]
    Phi, D, M = np.empty((P, N)), np.empty((P, N)), np.empty((P, N))
    K, Ainv, t = np.empty((P, P)), np.empty((P, P)), np.empty(P)
    gW = np.empty((N, d))
    Wc = np.ascontiguousarray(W)
    E = _marginal_core(Wc, X, y, code, g_w, g_a, kappa, chi, Phi, D, M, K, Ainv, t, gW,
                       Wc, 1.0, 0.0)[0]
    return E, gW


@njit(cache=True, nogil=True)
def _wood_factor(W, Ci, beta, ck, S, Minv, v):  # pragma: no cover - numba
    """``S = WᵀW``, ``M⁻¹`` of ``M = C⁻¹ + ck·S`` and ``v = M⁻¹β`` into the buffers (see
    :func:`_wood_core`, ``ck = c/κ``); returns ``log det M``."""
    d = S.shape[0]
    gram_cols(W, S, 1.0)               # syrk: half of gemm's multiply-adds
    A = np.empty((d, d))
    for i in range(d):                 # M (exactly symmetric: S, C⁻¹ are)
        for j in range(d):
            A[i, j] = Ci[i, j] + ck * S[i, j]
    logdet = _logdet_and_inverse(A, Minv)
    np.dot(Minv, beta, v)
    return logdet


@njit(cache=True, nogil=True)
def _wood_core(W, Ci, beta, wpar, P, g_w, g_a, kappa, chi, S, Minv, v, gW, Wc, s,
               h):  # pragma: no cover
    """Marginal energy and gradient for a **linear** φ with ``P > d``, by Woodbury.

    With ``K = c X S Xᵀ`` (``c = g_a/N``, ``S = WᵀW``), ``C = XᵀX`` (constant),
    ``β = C⁻¹Xᵀy`` and ``M = C⁻¹ + (c/κ) S`` (all ``d×d``)::

        log det(K+κI) = P log κ + log det C + log det M
        yᵀ(K+κI)⁻¹y   = (|y − Πy|² + βᵀM⁻¹β)/κ        (Π: projection on X's columns)
        Xᵀ(K+κI)⁻¹X   = M⁻¹/κ,   Xᵀt = M⁻¹β/κ = v/κ
        ∂E/∂W = W [2c(½XᵀA⁻¹X − (χ/2)(Xᵀt)(Xᵀt)ᵀ) + (d/g_w) I]

    (the gradient of THEORY §7 with ``Φ = XWᵀ``, ``φ' = 1``; with ``XᵀX = L Lᵀ``,
    ``M = L⁻ᵀ T L⁻¹`` for the ``T = I + (c/κ) LᵀSL`` of the push-through identity, so
    no triangular products are needed: four ``trmm`` at ``d = 200`` were 2.0–2.9 ms of
    a 25 ms step on a slow host).  The prior term rides in the ``d×d`` matrix, so the
    one ``N×d`` product gives the whole gradient and ``‖W‖² = tr S``; what is left of
    the elementwise pass is the reverse MALA term (:func:`_reverse_sq`), which reads
    three arrays and writes none.  Cost ``O(Nd² + d³)`` against
    ``O(PNd + P²N + P³)``.  ``wpar = (1, |y − Πy|², log det C)``.  Accuracy: ``M`` is
    about as ill-conditioned as ``C``, so the energy and gradient carry relative errors
    of order ``ε·cond(C)`` more than the ``T`` form did (measured against the ``P×P``
    form at ``cond(C)`` = 10⁶ / 10⁷ / 10⁷·⁹: energy 1e-12 / 6e-12 / 5e-11, gradient
    1e-11 / 1e-10 / 6e-10 of its largest element; the ``T`` form 1e-13 / 3e-13 / 7e-12
    and 5e-13 / 3e-13 / 2e-13), far below anything a Langevin run resolves.  Leaves ``S``,
    ``M⁻¹`` and ``v = M⁻¹β`` in the buffers for :func:`observe_wood`; returns
    ``(E, rev)`` as :func:`_marginal_core`.
    """
    N, d = W.shape
    c = g_a / N
    logdet = P * math.log(kappa) + wpar[2] + _wood_factor(W, Ci, beta, c / kappa, S, Minv, v)
    A = np.empty((d, d))
    bv = 0.0
    sw = 0.0
    for i in range(d):
        bv += beta[i] * v[i]
        sw += S[i, i]
    yAy = (wpar[1] + bv) / kappa
    a1 = c / kappa                     # 2c·½/κ
    a2 = c * chi / (kappa * kappa)     # 2c·(χ/2)/κ²
    pw = d / g_w
    for i in range(d):
        for j in range(d):
            A[i, j] = a1 * Minv[i, j] - a2 * v[i] * v[j]
        A[i, i] += pw
    np.dot(W, A, gW)
    rev = _reverse_sq(W, Wc, gW, s, h)
    return 0.5 * pw * sw + 0.5 * logdet + 0.5 * chi * yAy, rev


@njit(cache=True, nogil=True)
def _reverse_sq(x, xc, g, s, h):  # pragma: no cover - numba
    """The reverse-move MALA term ``|(xc − x)/s + (h/2) s g|²`` of :func:`_scale_add_sq`
    alone (``h = 0``: 0, not computed), in the same :data:`~rng_numba.LANES` partial
    sums, element ``i`` into lane ``i mod LANES``."""
    if h <= 0.0:
        return 0.0
    L = LANES
    xf, cf, gf = x.ravel(), xc.ravel(), g.ravel()
    n = xf.size
    inv_s, hs = 1.0 / s, 0.5 * h * s
    rq = np.zeros(L)
    full = n // L
    for b in range(full):
        for j in range(L):
            i = b * L + j
            z = (cf[i] - xf[i]) * inv_s + hs * gf[i]
            rq[j] += z * z
    for i in range(full * L, n):
        z = (cf[i] - xf[i]) * inv_s + hs * gf[i]
        rq[i - full * L] += z * z
    sr = 0.0
    for j in range(L):
        sr += rq[j]
    return sr


@njit(cache=True, nogil=True)
def marginal_energy_grad_wood(W, X, Ci, beta, wpar, g_w, g_a, kappa, chi):  # pragma: no cover
    """:func:`_wood_core` with its own buffers (for tests): ``(E, ∂E/∂W)``."""
    N, d = W.shape
    S, Minv, v, gW = np.empty((d, d)), np.empty((d, d)), np.empty(d), np.empty((N, d))
    Wc = np.ascontiguousarray(W)
    E = _wood_core(Wc, Ci, beta, wpar, X.shape[0], g_w, g_a, kappa, chi, S, Minv, v, gW,
                   Wc, 1.0, 0.0)[0]
    return E, gW


@njit(cache=True, nogil=True)
def observe_wood(W, S, Minv, v, X, Xs, u_slow, g_a, kappa, chi, ftr, fte, vte, Kacc,
                 SWacc):  # pragma: no cover - numba
    """:func:`observe_cached` for the Woodbury path (linear φ, ``P > d``), from
    ``S = WᵀW``, ``M⁻¹`` and ``v = M⁻¹β`` of :func:`_wood_core`: with ``c = g_a/N``
    and ``Xᵀt = v/κ``, ``f = c X S Xᵀt``, ``f* = c X* S Xᵀt``,
    ``K* A⁻¹ K*ᵀ = (c²/κ) U M⁻¹ Uᵀ`` (``U = X* S``) and
    ``tr(A⁻¹K) = c tr(S XᵀA⁻¹X) = (c/κ) Σ S∘M⁻¹`` (no difference of two nearly equal
    numbers when ``K`` is small, as ``d − tr T⁻¹`` was).  ``Kacc`` is left alone (see the
    comment below)."""
    N, d = W.shape
    Ps = Xs.shape[0]
    c = g_a / N
    xt = v / kappa
    Sxt = np.dot(S, xt)
    _copy(ftr, c * np.dot(X, Sxt))     # _copy, not ftr[:] = …: see rng_numba.lane_words
    _copy(fte, c * np.dot(Xs, Sxt))
    U = np.dot(Xs, S)
    UM = np.dot(U, Minv)
    for i in range(Ps):
        kss = 0.0
        qv = 0.0
        for j in range(d):
            kss += U[i, j] * Xs[i, j]
            qv += UM[i, j] * U[i, j]
        vte[i] += (c * kss - c * c / kappa * qv) / chi
    # K is not accumulated here (P²d a draw): Σ K = g_a X (Σ WᵀW/N) Xᵀ follows from
    # SWacc, and the driver forms ⟨K⟩ from it at the end (Kacc stays zero)
    for i in range(d):
        for j in range(d):
            SWacc[i, j] += S[i, j] / N
    sm = 0.0
    for i in range(d):
        for j in range(d):
            sm += S[i, j] * Minv[i, j]
    tf = 0.0
    for i in range(d):
        tf += xt[i] * Sxt[i]
    Q = g_a + c * (chi * c * tf - c / kappa * sm)
    return Q, np.dot(u_slow, np.dot(S, u_slow)) / N


@njit(cache=True, nogil=True)
def _matvec4(A, x, out):  # pragma: no cover - numba
    """``out = A x`` with each row's sum in four partial sums (one running sum is bound
    by the add's latency; the order is fixed, so results do not depend on the
    compiler).  Whole matrices, not row views: a per-row helper measured 50% slower."""
    n, m = A.shape
    m4 = m - m % 4
    for i in range(n):
        s0 = s1 = s2 = s3 = 0.0
        for j in range(0, m4, 4):
            s0 += A[i, j] * x[j]
            s1 += A[i, j + 1] * x[j + 1]
            s2 += A[i, j + 2] * x[j + 2]
            s3 += A[i, j + 3] * x[j + 3]
        for j in range(m4, m):
            s0 += A[i, j] * x[j]
        out[i] = (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def _full_core(W, a, X, y, code, g_w, g_a, kappa, chi, H, D, r, v, u, gW, ga,
               Wc, ac, sw, sa, h):  # pragma: no cover
    """Full energy and gradients (into ``gW``, ``ga``) at ``(W, a)``, THEORY §1; returns
    ``(E, rev)``.

    Linear φ: ``f = X(Wᵀa)``, ``∂E/∂W = (χ/κ) a uᵀ + (d/g_w)W`` and
    ``∂E/∂a = (χ/κ) W u + (χN/g_a) a`` with ``u = Xᵀr`` — ``O((P+N)d)`` and the
    ``P×N`` buffers ``H``, ``D`` are not touched.  Otherwise ``H = φ(XWᵀ)``,
    ``D = φ'`` overwritten by ``(χ/κ) r aᵀ ⊙ φ'`` and ``∂E/∂W = DᵀX + (d/g_w)W``.

    With ``h > 0``, ``(W, a)`` is a proposal from ``(Wc, ac)`` and ``rev`` the reverse
    move's MALA term of both blocks (see :func:`_scale_add_sq`; prior scales ``sw``, ``sa``),
    accumulated in the loops that write the gradients (one pass fewer over ``W``);
    ``h = 0``: ``rev = 0``.
    """
    N, d = W.shape
    P = X.shape[0]
    cpk = chi / kappa
    pw = d / g_w
    pa = chi * N / g_a
    rev = 0.0
    if code is None:
        # plain loops: these matrix-vector products are far too small for a BLAS call
        # to pay off, and W is read twice in all (v = Wᵀa, then ga and ∂E/∂W)
        vw = v[:d]
        vw[:] = 0.0
        for n in range(N):
            an = a[n]
            for j in range(d):
                vw[j] += W[n, j] * an
        _matvec4(X, vw, r)
        for i in range(P):
            r[i] -= y[i]
        u[:] = 0.0
        for i in range(P):
            ri = r[i]
            for j in range(d):
                u[j] += X[i, j] * ri
        # ‖W‖² and the reverse MALA term are summed per column (v[:d], v[d:]), so the
        # inner loop carries no scalar reduction and vectorises
        sq, rq = v[:d], v[d:2 * d]
        sq[:] = 0.0
        rq[:] = 0.0
        inv_s, hs = (1.0 / sw, 0.5 * h * sw) if h > 0.0 else (0.0, 0.0)
        for n in range(N):
            an = cpk * a[n]
            for j in range(d):
                w = W[n, j]
                g = an * u[j] + pw * w
                gW[n, j] = g
                z = (Wc[n, j] - w) * inv_s + hs * g
                sq[j] += w * w
                rq[j] += z * z
        _matvec4(W, u, ga)
        sw2 = 0.0
        for j in range(d):
            sw2 += sq[j]
            rev += rq[j]
    else:
        np.dot(X, W.T, H)
        _act_inplace(code, H, D, True)
        np.dot(H, a, r)
        for i in range(P):
            r[i] -= y[i]
        np.dot(H.T, r, ga)
        for i in range(P):
            ri = cpk * r[i]
            for j in range(N):
                D[i, j] *= ri * a[j]
        np.dot(D.T, X, gW)
        sw2, rev = _scale_add_sq(gW, 1.0, W, pw, Wc, sw, h)
    sa2 = 0.0
    inv_s, hs = (1.0 / sa, 0.5 * h * sa) if h > 0.0 else (0.0, 0.0)
    for n in range(N):
        sa2 += a[n] * a[n]
        g = cpk * ga[n] + pa * a[n]
        ga[n] = g
        z = (ac[n] - a[n]) * inv_s + hs * g
        rev += z * z
    rr = 0.0
    for i in range(P):
        rr += r[i] * r[i]
    return 0.5 * cpk * rr + 0.5 * pw * sw2 + 0.5 * pa * sa2, (rev if h > 0.0 else 0.0)


@njit(cache=True, nogil=True)
def full_energy_grad(W, a, X, y, code, g_w, g_a, kappa, chi):  # pragma: no cover - numba
    """Energy of the full posterior on ``(W, a)`` (THEORY §1) and both gradients::

        E = (χ/2κ)|Φa − y|² + (d/2g_w)‖W‖² + (χN/2g_a)|a|²
    """
    N, d = W.shape
    P = X.shape[0]
    H, D = np.empty((P, N)), np.empty((P, N))
    r, v, u = np.empty(P), np.empty(d), np.empty(d)
    gW, ga = np.empty((N, d)), np.empty(N)
    Wc, ac = np.ascontiguousarray(W), np.ascontiguousarray(a)
    E = _full_core(Wc, ac, X, y, code, g_w, g_a, kappa, chi, H, D, r, v, u, gW, ga,
                   Wc, ac, 1.0, 1.0, 0.0)[0]
    return E, gW, ga


@njit(cache=True, nogil=True)
def observe_cached(W, Phi, K, Ainv, t, X, Xs, u_slow, code, g_a, kappa, chi, ftr, fte, vte,
                   Kacc, SWacc):  # pragma: no cover - numba
    """Rao-Blackwellised observables given ``W`` and its ``Φ = φ(XWᵀ)``, ``K``,
    ``A⁻¹ = (K + κI)⁻¹`` and ``t = A⁻¹y`` (THEORY §7): ``E[f(X)|W] = K t``,
    ``E[f(X*)|W] = K* t``, ``Var[f(X*)|W] = (K** − K* A⁻¹ K*ᵀ)/χ`` (diagonal), and
    ``E[χ|a|² | W] = g_a + (g_a/N)(χ tᵀKt − tr(A⁻¹K))``.

    Writes ``ftr``/``fte`` (this draw), adds to ``vte``, ``Kacc`` (``K``) and ``SWacc``
    (``WᵀW/N``); returns ``(Q, |W u_slow|²/N)``, the slow mode traced for R̂/ESS.
    """
    d = W.shape[1]
    S = np.empty((d, d))
    gram_cols(W, S, 1.0)
    return _observe_core(W, S, Phi, K, Ainv, t, X, Xs, u_slow, code, g_a, kappa, chi, ftr,
                         fte, vte, Kacc, SWacc)


@njit(cache=True, nogil=True)
def _row_dots(A, B, out):  # pragma: no cover - numba
    """``out[i] = Σ_j A[i, j] B[i, j]``."""
    for i in range(A.shape[0]):
        q = 0.0
        for j in range(A.shape[1]):
            q += A[i, j] * B[i, j]
        out[i] = q


@njit(cache=True, nogil=True)
def _observe_core(W, S, Phi, K, Ainv, t, X, Xs, u_slow, code, g_a, kappa, chi, ftr, fte,
                  vte, Kacc, SWacc):  # pragma: no cover - numba
    """:func:`observe_cached` given also ``S = WᵀW``, which ``Σ_W`` needs at every draw.

    For a linear φ with ``d < N`` the test kernels come from it, ``K* = c X* S Xᵀ`` and
    ``K** = c X* S X*ᵀ`` (``c = g_a/N``): ``P*·d(d + P)`` multiply-adds against
    ``P*·N(d + P)`` through ``X*Wᵀ`` (``Φ`` is then not read); so does the slow mode,
    ``uᵀSu/N`` (``d²`` against ``Nd``)."""
    N, d = W.shape
    P = K.shape[0]
    Ps = Xs.shape[0]
    c = g_a / N
    kss = np.empty(Ps)
    if _linear_and(code, d < N):
        XsS = np.dot(Xs, S)
        Ks = c * np.dot(XsS, X.T)
        _row_dots(XsS, Xs, kss)
    else:
        Phs = np.dot(Xs, W.T)
        if code is not None:
            _act_inplace(code, Phs, Phs, False)
        Ks = c * np.dot(Phs, Phi.T)
        _row_dots(Phs, Phs, kss)
    f = np.dot(K, t)
    _copy(ftr, f)
    _copy(fte, np.dot(Ks, t))
    KA = np.dot(Ks, Ainv)
    for i in range(Ps):
        q = 0.0
        for j in range(P):
            q += KA[i, j] * Ks[i, j]
        vte[i] += (c * kss[i] - q) / chi
    Kacc += K
    inv_n = 1.0 / N
    for i in range(d):
        for j in range(d):
            SWacc[i, j] += S[i, j] * inv_n
    trAK = 0.0
    for i in range(P):
        trAK += 1.0 - kappa * Ainv[i, i]
    Q = g_a + c * (chi * np.dot(t, f) - trAK)
    return Q, np.dot(u_slow, np.dot(S, u_slow)) / N


@njit(cache=True, nogil=True)
def gram_form(P, N, d):  # pragma: no cover - numba
    """Whether a linear φ's ``K = c XSXᵀ`` (``S = WᵀW``, which ``Σ_W`` needs anyway;
    ``Pd² + P²d`` multiply-adds) is cheaper than ``c ΦΦᵀ`` through ``Φ = XWᵀ``
    (``PNd + P²N/2``).  It implies ``d < N``, so :func:`_observe_core` takes ``K*``
    from ``S`` too and ``Φ`` is never formed."""
    return d * (d + P) < N * (d + 0.5 * P)


@njit(cache=True, nogil=True)
def observe(W, X, Xs, y, u_slow, code, g_a, kappa, chi, ftr, fte, vte, Kacc, SWacc):  # pragma: no cover
    """:func:`observe_cached` computing ``Φ, K, A⁻¹, t`` itself: through ``S = WᵀW``
    where :func:`gram_form` says so (``K`` symmetrised, as ``syrk`` makes it through
    ``Φ``), else through ``Φ = φ(XWᵀ)``."""
    N, d = W.shape
    P = X.shape[0]
    if _linear_and(code, gram_form(P, N, d)):
        S = np.empty((d, d))
        gram_cols(W, S, 1.0)
        K = np.dot(np.dot(X, S), X.T)
        c = g_a / N
        for i in range(P):
            for j in range(i + 1):
                kij = 0.5 * c * (K[i, j] + K[j, i])
                K[i, j] = kij
                K[j, i] = kij
        Ainv = np.empty((P, P))
        _shifted_inverse(K, kappa, Ainv)
        t = np.dot(Ainv, y)
        return _observe_core(W, S, np.empty((1, 1)), K, Ainv, t, X, Xs, u_slow, code, g_a,
                             kappa, chi, ftr, fte, vte, Kacc, SWacc)   # Φ not read: d < N
    Phi = np.dot(X, W.T)
    if code is not None:
        _act_inplace(code, Phi, Phi, False)
    return _observe_phi(W, Phi, X, Xs, y, u_slow, code, g_a, kappa, chi, ftr, fte, vte, Kacc,
                        SWacc)


@njit(cache=True, nogil=True)
def _observe_phi(W, Phi, X, Xs, y, u_slow, code, g_a, kappa, chi, ftr, fte, vte, Kacc,
                 SWacc):  # pragma: no cover - numba
    """:func:`observe_cached` given ``Φ = φ(XWᵀ)`` of ``W`` only."""
    K, Ainv, _ = _gram(Phi, g_a, kappa)
    return observe_cached(W, Phi, K, Ainv, np.dot(Ainv, y), X, Xs, u_slow, code, g_a, kappa,
                          chi, ftr, fte, vte, Kacc, SWacc)


@njit(cache=True, nogil=True)
def observe_full(W, Phi, X, Xs, y, u_slow, code, g_a, kappa, chi, Ci, beta, wpar, ftr, fte,
                 vte, Kacc, SWacc):  # pragma: no cover - numba
    """The full sampler's observables of ``W``: on the Woodbury path (``wpar`` not
    ``None``: linear φ, ``P > d``, see :func:`_wood_core`) from ``S``, ``M⁻¹`` and ``v``,
    ``O(Nd² + d³)`` (``Kacc`` left alone); for a non-linear φ from ``Φ = φ(XWᵀ)``, which
    the step that proposed ``W`` left in ``Phi`` (:func:`full_chunk`); else
    :func:`observe` (the linear step never forms ``Φ``)."""
    if wpar is not None:
        N, d = W.shape
        S, Minv, v = np.empty((d, d)), np.empty((d, d)), np.empty(d)
        _wood_factor(W, Ci, beta, g_a / N / kappa, S, Minv, v)
        return observe_wood(W, S, Minv, v, X, Xs, u_slow, g_a, kappa, chi, ftr, fte, vte,
                            Kacc, SWacc)
    if code is not None:
        if code != 0:              # (0: φ = identity through observe's general path)
            return _observe_phi(W, Phi, X, Xs, y, u_slow, code, g_a, kappa, chi, ftr, fte,
                                vte, Kacc, SWacc)
    return observe(W, X, Xs, y, u_slow, code, g_a, kappa, chi, ftr, fte, vte, Kacc, SWacc)


@njit(cache=True, nogil=True)
def _check_code(code):  # pragma: no cover - numba
    """Refuse the int 0 in the samplers' kernels: a linear φ is ``None`` there
    (:func:`act_code`), and its workspaces hold no ``P×N`` buffers for the general paths
    that 0 would take (numba checks no bounds)."""
    if code is not None:
        if code == 0:
            raise ValueError("a linear activation is code None in the sampler kernels")


@njit(cache=True, nogil=True)
def _flag(status, code, chain, step):  # pragma: no cover - numba
    status[0] = code
    status[1] = chain
    status[2] = step


@njit(cache=True, nogil=True)
def _propose_rng(x, g, p, drift, scale, rs, zb, wb, scalar=None):  # pragma: no cover
    """``p = x − drift·g + scale·ξ`` with ``ξ`` drawn from stream ``rs`` in blocks
    (``zb``, ``wb``: float64 / uint64 scratch of :func:`rng_numba.normals_needed`
    ``(x.size)`` + ``LANES`` / :func:`rng_numba.words_needed` ``(x.size)``); returns
    ``|ξ|²`` (forward MH term).  ``scalar``: ``None`` for a lane stream, anything else
    for a single xoshiro state (:func:`scalar_streams`)."""
    xf, gf, pf = x.ravel(), g.ravel(), p.ravel()
    n = xf.size
    if scalar is None:             # see BY_TYPE
        if rs.shape[0] != STATE_WORDS:   # not a lane stream: refuse rather than overrun
            raise ValueError("not a lane stream: pass scalar for single xoshiro states")
        return _propose_lanes(xf, gf, pf, drift, scale, rs, zb, wb)
    draw_normals(rs, zb, n, wb)
    xi2 = 0.0
    for i in range(n):
        zi = zb[i]
        xi2 += zi * zi
        pf[i] = xf[i] - drift * gf[i] + scale * zi
    return xi2


@njit(cache=True, nogil=True)
def _propose_lanes(xf, gf, pf, drift, scale, rs, acc, wb):  # pragma: no cover - numba
    """:func:`_propose_rng` on a lane stream, fused with the draw: the same numbers as
    :func:`rng_numba.draw_normals` (tested), without writing them.

    The rows of :data:`~rng_numba.LANES` words are drawn, used and completed in
    blocks of :data:`BLOCK_ROWS` (:func:`_propose_block`), so that the words
    and the rejected positions are still in cache when read again (at ``N·d = 800 000``
    the words alone are 6.4 MB).  The lanes and the auxiliary stream are consumed in
    the same order whatever the blocks, and ``|ξ|²`` is summed as it always was: per
    lane over the rows, the lanes in order, then the completed words' ``ξ²`` in order
    (kept in ``acc[LANES:]`` meanwhile).  ``acc`` is float scratch of at least
    ``LANES`` + ``xf.size``, ``wb`` of :func:`rng_numba.words_needed`
    ``(min(xf.size, BLOCK_ROWS·LANES))``."""
    L = LANES
    n = xf.size
    if acc.size < L + n:        # numba checks no bounds: refuse rather than overwrite
        raise ValueError("proposal scratch too small: LANES + n floats needed")
    for j in range(L):
        acc[j] = 0.0
    nrej = np.int64(0)     # not 0: a literal 0 types _propose_block a second time
    for i0 in range(0, n, BLOCK_ROWS * L):
        i1 = min(n, i0 + BLOCK_ROWS * L)
        nrej = _propose_block(xf[i0:i1], gf[i0:i1], pf[i0:i1], drift, scale, rs, acc, wb,
                              nrej)
    xi2 = 0.0
    for j in range(L):
        xi2 += acc[j]
    for k in range(nrej):
        xi2 += acc[L + k]
    return xi2


@njit(cache=True, nogil=True)
def _propose_block(xf, gf, pf, drift, scale, rs, acc, wb, nrej):  # pragma: no cover - numba
    """One block of :func:`_propose_lanes`: draw its rows of words, build ``p`` with
    the fast-path normals in one SIMD loop per row (0 where the ziggurat's fast test
    rejects; ``ξ²`` summed per lane, without reassociation, so that the sum does not
    depend on the compiler; each row's rejections as a bit mask), then complete the
    rejected words in order, adding ``scale·ξ`` to ``p`` and storing ``ξ²`` at
    ``acc[LANES + nrej]``, ``nrej + 1``, …; returns the new ``nrej``."""
    L = LANES
    n = xf.size
    nb = (n + L - 1) // L
    lane_words(rs, wb, nb)
    # the full rows with a constant trip count (LLVM unrolls and vectorises them; a
    # shared helper or a variable count measured 25-40% slower), then the last one
    full = n // L
    if LOOKUP_APART:            # a constant: numba prunes the other branches
        t = np.empty((2, L))
    for b in range(full):
        if LOOKUP_APART:         # see rng_numba._lookup_apart
            row_tables(wb, b * L, t)
        mask = np.uint64(0)
        for j in range(L):
            i = b * L + j
            if LOOKUP_APART:
                z, ok = fast_normal_at(wb[i], t[0, j], t[1, j])
            else:
                z, ok = fast_normal(wb[i])
            z = z if ok else 0.0
            acc[j] += z * z
            pf[i] = xf[i] - drift * gf[i] + scale * z
            mask |= np.uint64(not ok) << np.uint64(j)
        wb[nb * L + b] = mask
    if full < nb:
        mask = np.uint64(0)
        for j in range(n - full * L):
            i = full * L + j
            z, ok = fast_normal(wb[i])
            z = z if ok else 0.0
            acc[j] += z * z
            pf[i] = xf[i] - drift * gf[i] + scale * z
            mask |= np.uint64(not ok) << np.uint64(j)
        wb[nb * L + full] = mask
    return complete_rejected(rs, wb, nb, pf, scale, acc[L:], nrej)


@njit(cache=True, nogil=True)
def _log_uniform(rs):  # pragma: no cover - numba
    u = uniform(rs)
    return math.log(u) if u > 0.0 else -math.inf


@njit(cache=True, nogil=True)
def _copy(dst, src):  # pragma: no cover - numba
    df, sf = dst.ravel(), src.ravel()
    for i in range(df.size):
        df[i] = sf[i]


@njit(cache=True, nogil=True)
def _adapt(log_h, lh_stats, alpha_sum, C, adapt, adapt_avg, target, rate):  # pragma: no cover
    """Burn-in step-size adaptation (Robbins-Monro on the mean acceptance of all
    chains, which is why chains are never split between threads while it runs)."""
    if adapt:
        log_h[0] += rate * (alpha_sum / C - target)
    if adapt_avg:
        lh_stats[0] += log_h[0]
        lh_stats[1] += 1.0


@njit(cache=True, nogil=True)
def _draw_index(step, burn_in, thin):  # pragma: no cover - numba
    """Index of the kept draw after global step ``step`` (0-based), or −1."""
    done = step + 1 - burn_in
    if done > 0 and done % thin == 0:
        return done // thin - 1
    return -1


@njit(cache=True, nogil=True)
def marginal_chunk(W, E, gW, Wp, gWp, Phi2, K2, Ai2, t2, cur, D, M, S2, Mi2, v2, Ci, beta, wpar,
                   rng, scalar, log_h, lh_stats, acc, nsteps, X, Xs, y, u_slow, code,
                   g_w, g_a, kappa, chi, mala, adapt, adapt_avg, target, rate, e_max,
                   step0, burn_in, thin, m_total, nbatch,
                   tr_ftr, tr_fte, tr_Q, tr_E, tr_slow, vte, Kacc, SWb, status):  # pragma: no cover
    """Advance all chains of the marginal sampler by ``nsteps`` steps, drawing from
    the per-chain streams ``rng`` (lane streams, ``(C, STATE_WORDS)``, with ``scalar``
    ``None``; else ``(C, 4)`` single xoshiro states, see :func:`scalar_streams`).

    State ``W (C,N,d)``, cached energies ``E (C,)`` and gradients ``gW`` are updated
    in place.  ``Wp``, ``gWp`` (``C,N,d``) and ``D``, ``M`` (``C,P,N``) are scratch;
    ``Phi2 (C,2,P,N)``, ``K2``, ``Ai2 (C,2,P,P)``, ``t2 (C,2,P)`` hold ``Φ, K, A⁻¹, t``
    of the current state in buffer ``cur[c]`` (the proposal is built in the other one).
    With ``wpar`` not ``None`` (linear φ, ``P > d``) the Woodbury form :func:`_wood_core`
    is used instead, caching ``S``, ``M⁻¹``, ``v`` in ``S2``, ``Mi2``, ``v2``.
    ``log_h[0]`` is the shared log step size (Robbins-Monro adapted to
    the acceptance ``target`` while ``adapt``; ``lh_stats`` sums it for averaging
    while ``adapt_avg``); ``acc[c]`` sums the Metropolis acceptance probability (also for ULA,
    where it measures the discretisation error of the step).
    After step ``s`` (0-based global index) past ``burn_in``, every ``thin``-th
    state is measured.  On a non-finite or exploding energy, ``status`` receives
    ``(code, chain, step)`` and the kernel returns early.
    """
    _check_code(code)
    S = nsteps
    C, N, d = W.shape
    P = X.shape[0]
    s2 = g_w / d
    s = math.sqrt(s2)
    zb = np.empty(normals_needed(N * d) + LANES)  # one step's normals (or lane sums + ξ²)
    wb = np.empty(words_needed(N * d), dtype=np.uint64)
    # double buffering of (W, gW) as in full_chunk: chain c's state is in W[c] while
    # side[c] = 0, in Wp[c] while 1 (the caches have their own index, cur[c])
    side = np.zeros(C, dtype=np.int64)
    for k in range(S):
        h = math.exp(log_h[0])
        sh = math.sqrt(h)
        alpha_sum = 0.0
        for c in range(C):
            b = 1 - cur[c]
            Wc, Wn = (W[c], Wp[c]) if side[c] == 0 else (Wp[c], W[c])
            gWc, gWn = (gW[c], gWp[c]) if side[c] == 0 else (gWp[c], gW[c])
            xi2 = _propose_rng(Wc, gWc, Wn, 0.5 * h * s2, sh * s, rng[c], zb, wb, scalar)
            if wpar is not None:       # `is None` on an argument: see WOODBURY_BY_TYPE
                Ep, rev = _wood_core(Wn, Ci, beta, wpar, P, g_w, g_a, kappa, chi, S2[c, b],
                                     Mi2[c, b], v2[c, b], gWn, Wc, s, h)
            else:
                Ep, rev = _marginal_core(Wn, X, y, code, g_w, g_a, kappa, chi, Phi2[c, b],
                                         D[c], M[c], K2[c, b], Ai2[c, b], t2[c, b], gWn, Wc,
                                         s, h)
            if not math.isfinite(Ep):
                _flag(status, NONFINITE, c, step0 + k)
                _settle(side, W, gW, Wp, gWp)
                return
            # Metropolis-Hastings ratio in whitened coordinates
            la = -(Ep - E[c]) - rev / (2.0 * h) + 0.5 * xi2
            alpha = 1.0 if la >= 0.0 else math.exp(la)
            alpha_sum += alpha
            lu = _log_uniform(rng[c])          # drawn for ULA too: one stream layout
            if (not mala) or lu < la:
                side[c] = 1 - side[c]
                E[c] = Ep
                cur[c] = b
            if E[c] > e_max[c]:
                _flag(status, EXPLODED, c, step0 + k)
                _settle(side, W, gW, Wp, gWp)
                return
            acc[c] += alpha
        _adapt(log_h, lh_stats, alpha_sum, C, adapt, adapt_avg, target, rate)
        m = _draw_index(step0 + k, burn_in, thin)
        if m >= 0:
            bb = (m * nbatch) // m_total
            for c in range(C):
                i = cur[c]
                Wc = W[c] if side[c] == 0 else Wp[c]
                if wpar is not None:
                    Q, sl = observe_wood(Wc, S2[c, i], Mi2[c, i], v2[c, i], X, Xs, u_slow,
                                         g_a, kappa, chi, tr_ftr[c, m], tr_fte[c, m], vte[c],
                                         Kacc[c], SWb[c, bb])
                else:
                    Q, sl = observe_cached(Wc, Phi2[c, i], K2[c, i], Ai2[c, i], t2[c, i], X,
                                           Xs, u_slow, code, g_a, kappa, chi, tr_ftr[c, m],
                                           tr_fte[c, m], vte[c], Kacc[c], SWb[c, bb])
                tr_Q[c, m] = Q
                tr_slow[c, m] = sl
                tr_E[c, m] = E[c]
    _settle(side, W, gW, Wp, gWp)


@njit(cache=True, nogil=True)
def _settle(side, W, gW, Wp, gWp):  # pragma: no cover - numba
    """Move ``(W, gW)`` of every chain whose current buffers are the scratch ones
    (``side[c] = 1``) back home."""
    for c in range(side.shape[0]):
        if side[c] == 1:
            _copy(W[c], Wp[c])
            _copy(gW[c], gWp[c])
            side[c] = 0


@njit(cache=True, nogil=True)
def marginal_refresh(W, E, gW, Wp, gWp, Phi2, K2, Ai2, t2, cur, D, M, S2, Mi2, v2, Ci, beta,
                     wpar, X, y, code, g_w, g_a, kappa, chi):  # pragma: no cover - numba
    """(Re)compute ``E``, ``gW`` and the cached ``Φ, K, A⁻¹, t`` of every chain's
    current ``W`` into buffer 0 — at the start and after loading a checkpoint.  The
    state is first copied into the proposal buffer so that the arithmetic is the
    very one of a step (a resumed run replays an uninterrupted one bit for bit)."""
    _check_code(code)
    C = W.shape[0]
    for c in range(C):
        _copy(Wp[c], W[c])
        if wpar is not None:
            E[c] = _wood_core(Wp[c], Ci, beta, wpar, X.shape[0], g_w, g_a, kappa, chi, S2[c, 0],
                              Mi2[c, 0], v2[c, 0], gWp[c], W[c], 1.0, 0.0)[0]
        else:
            E[c] = _marginal_core(Wp[c], X, y, code, g_w, g_a, kappa, chi, Phi2[c, 0], D[c],
                                  M[c], K2[c, 0], Ai2[c, 0], t2[c, 0], gWp[c], W[c], 1.0,
                                  0.0)[0]
        _copy(gW[c], gWp[c])
        cur[c] = 0


@njit(cache=True, nogil=True)
def full_refresh(W, a, E, gW, ga, Wp, ap, gWp, gap, H2, D, r, v, u, cur, X, y, code, g_w,
                 g_a, kappa, chi):  # pragma: no cover - numba
    """``E``, ``gW``, ``ga`` (and, for a non-linear φ, ``Φ`` in ``H2[c, 0]``) of every
    chain's current state, computed as in a step."""
    _check_code(code)
    C = W.shape[0]
    for c in range(C):
        _copy(Wp[c], W[c])
        _copy(ap[c], a[c])
        E[c] = _full_core(Wp[c], ap[c], X, y, code, g_w, g_a, kappa, chi, H2[c, 0], D[c],
                          r[c], v[c], u[c], gWp[c], gap[c], W[c], a[c], 1.0, 1.0, 0.0)[0]
        _copy(gW[c], gWp[c])
        _copy(ga[c], gap[c])
        cur[c] = 0


@njit(cache=True, nogil=True)
def full_chunk(W, a, E, gW, ga, Wp, ap, gWp, gap, H2, D, r, v, u, cur, Ci, beta, wpar,
               rng, scalar, log_h, lh_stats, acc, nsteps, X, Xs, y, u_slow,
               code, g_w, g_a, kappa, chi, mala, adapt, adapt_avg, target, rate, e_max,
               step0, burn_in, thin, m_total, nbatch,
               tr_ftr, tr_fte, tr_Q, tr_E, tr_slow, vte, Kacc, SWb, status):  # pragma: no cover
    """As :func:`marginal_chunk`, for the full sampler on ``(W, a)`` (THEORY §1, §7).
    ``Wp, ap, gWp, gap, D, r, v, u`` are per-chain scratch; ``H2 (C,2,P,N)`` holds
    ``Φ = φ(XWᵀ)`` of a non-linear φ's current state in buffer ``cur[c]`` (the proposal
    is built in the other one), so that measuring it needs no second ``XWᵀ`` and ``φ``.

    Observables are Rao-Blackwellised over ``a`` given the current ``W`` (exactly
    as in the marginal sampler), which is unbiased under the full posterior and
    removes the fast, large read-out noise from the estimates; the dynamics still
    move ``a`` and ``W`` jointly, so agreement with the marginal sampler tests the
    marginal energy and its gradient independently.  ``Ci, beta, wpar``: the Woodbury
    constants of :func:`marginal.woodbury_constants`, used by :func:`observe_full`
    (the step does not need them).
    """
    _check_code(code)
    S = nsteps
    C, N, d = W.shape
    s2w = g_w / d
    sw = math.sqrt(s2w)
    s2a = g_a / (chi * N)
    sa = math.sqrt(s2a)
    zb = np.empty(normals_needed(N * d) + LANES)  # one step's normals (or lane sums + ξ²)
    wb = np.empty(words_needed(N * d), dtype=np.uint64)
    # double buffering: chain c's state is in (W, a, gW, ga)[c] while side[c] = 0, in
    # the scratch (Wp, ap, gWp, gap)[c] while 1; an acceptance flips side[c] instead of
    # copying four arrays, and _settle moves every state home before returning
    side = np.zeros(C, dtype=np.int64)
    for k in range(S):
        h = math.exp(log_h[0])
        sh = math.sqrt(h)
        alpha_sum = 0.0
        for c in range(C):
            Wc, Wn = (W[c], Wp[c]) if side[c] == 0 else (Wp[c], W[c])
            ac, an = (a[c], ap[c]) if side[c] == 0 else (ap[c], a[c])
            gWc, gWn = (gW[c], gWp[c]) if side[c] == 0 else (gWp[c], gW[c])
            gac, gan = (ga[c], gap[c]) if side[c] == 0 else (gap[c], ga[c])
            xi2 = _propose_rng(Wc, gWc, Wn, 0.5 * h * s2w, sh * sw, rng[c], zb, wb, scalar)
            xi2 += _propose_rng(ac, gac, an, 0.5 * h * s2a, sh * sa, rng[c], zb, wb, scalar)
            b = 1 - cur[c]
            Ep, rev = _full_core(Wn, an, X, y, code, g_w, g_a, kappa, chi, H2[c, b], D[c],
                                 r[c], v[c], u[c], gWn, gan, Wc, ac, sw, sa, h)
            if not math.isfinite(Ep):
                _flag(status, NONFINITE, c, step0 + k)
                _settle_full(side, W, a, gW, ga, Wp, ap, gWp, gap)
                return
            la = -(Ep - E[c]) - rev / (2.0 * h) + 0.5 * xi2
            alpha = 1.0 if la >= 0.0 else math.exp(la)
            alpha_sum += alpha
            lu = _log_uniform(rng[c])          # drawn for ULA too: one stream layout
            if (not mala) or lu < la:
                side[c] = 1 - side[c]
                E[c] = Ep
                cur[c] = b
            if E[c] > e_max[c]:
                _flag(status, EXPLODED, c, step0 + k)
                _settle_full(side, W, a, gW, ga, Wp, ap, gWp, gap)
                return
            acc[c] += alpha
        _adapt(log_h, lh_stats, alpha_sum, C, adapt, adapt_avg, target, rate)
        m = _draw_index(step0 + k, burn_in, thin)
        if m >= 0:
            bb = (m * nbatch) // m_total
            for c in range(C):
                Q, sl = observe_full(W[c] if side[c] == 0 else Wp[c], H2[c, cur[c]], X, Xs, y,
                                     u_slow, code, g_a, kappa, chi, Ci, beta, wpar,
                                     tr_ftr[c, m], tr_fte[c, m], vte[c], Kacc[c], SWb[c, bb])
                tr_Q[c, m] = Q
                tr_slow[c, m] = sl
                tr_E[c, m] = E[c]
    _settle_full(side, W, a, gW, ga, Wp, ap, gWp, gap)


@njit(cache=True, nogil=True)
def _settle_full(side, W, a, gW, ga, Wp, ap, gWp, gap):  # pragma: no cover - numba
    """:func:`_settle` for the full sampler's four arrays."""
    for c in range(side.shape[0]):
        if side[c] == 1:
            _copy(a[c], ap[c])
            _copy(ga[c], gap[c])
    _settle(side, W, gW, Wp, gWp)
