"""The tilted single-neuron measure of a non-linear network, sampled by numba MALA (THEORY §4, §6).

    p_t̄(w) ∝ N(w; 0, (g_w/d) I) · exp((c/2) (t̄·φ(Xw))²),   c = g_a χ/N

Coordinates.  The tilt depends on ``w`` only through ``h = Xw``.  We sample a whitened
``z ∈ R^m`` with prior ``N(0, I)`` and ``h = A z``:

- ``P >= d`` (or ``X`` rank-deficient): ``m = d``, ``w = σ z``, ``A = σ X`` (``σ² = g_w/d``);
- ``P <  d``: ``m = P``, ``A = L`` with ``L Lᵀ = C = σ² X Xᵀ``; the rest of ``w`` is
  Gaussian given ``h``: ``w | z ~ N(B z, σ² I − B Bᵀ)`` with ``B = σ² Xᵀ L⁻ᵀ``, and a test
  pre-activation is ``h* | z ~ N(X* B z, v*)``.  Test outputs use ``E[φ(h*) | z]``
  (Rao-Blackwellised) and ``Σ_W = B E[z zᵀ] Bᵀ + σ² I − B Bᵀ``.

Sampler.  Persistent chains, advanced by ``@njit(cache=True, nogil=True)`` calls (no
``parallel``): a preconditioned MALA move (``z' = z + (h/2) M ∇log π + √h L ξ``,
``M = L_M L_Mᵀ`` fixed during a call, from the population covariance of earlier samples)
followed, optionally, by an independence move from the prior (accepted with
``exp(T' − T)``, ``T = (c/2) s²``; this keeps chains moving between modes when the tilt is
weak, and costs nothing to correctness when it is strong).  Where the tilt is strong the
prior's proposals are all but never accepted (d = 50 mean field: acceptance 2e-4 to 1e-3)
while each costs a second evaluation of the activations, half of a step's time; there,
at the solver's target χ (``thin_independence``), the move is made only every
:data:`IND_PROBE_EVERY`-th step, which keeps measuring its acceptance, and again at every
step once that rises to :data:`IND_MIN_ACCEPT`.  The
chains are advanced in slices (:data:`SLICE_CHAINS`) split between the cores.  Random
numbers are drawn by the caller (normals from a seeded lane stream of
:mod:`..sampling.rng_numba`, uniforms from a seeded numpy generator) and passed in, so :func:`reference_chunk` replays the very
same steps in plain numpy (tested step for step).  The chains advance together, a step
at a time, so that the products are BLAS matrix products; a call too long for one block
of random numbers runs in blocks (:data:`BLOCK_NUMBERS`).

ReLU is positively homogeneous: along a ray ``z = r u`` the log density is
``−r²(1 − c (t̄·relu(A u))²)/2``, so the measure exists only while
``c max_{|u|=1} (t̄·relu(A u))² < 1`` (THEORY §6).  :func:`relu_tilt_bound` brackets that
maximum; :class:`TiltedSampler` refuses (``MSAError``) to sample a measure that does not
exist.
"""

from __future__ import annotations

import math

import numpy as np
from ..jit import njit
from scipy.special import erf as _erf, ndtr

from ..errors import MSAError, NotNormalisable
from ..problem import Problem
from ..sampling.rng_numba import fill_normal, seed_states, words_needed
from ..special import erf_gauss_row
from ..threads import run_split, split_rows, usable_cores

ACT_CODES = {"linear": 0, "erf": 1, "relu": 2}
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
TARGET_ACCEPTANCE = 0.574
# a tilt whose ReLU bound is within this factor of 1 is refused: the measure exists but
# its radial tail is so heavy that no chain would resolve it
RELU_MARGIN = 0.98
# normals per block of a sampling call (two arrays of them: 32 MB in all)
BLOCK_NUMBERS = 1 << 21
# the chains are advanced in slices of about this many (split between the cores).  The
# split depends on the number of chains only, never on the cores: BLAS rounds a product
# of 21 rows differently from one of 64 (measured: 4e-16 after a few steps, 1e-14 later),
# so a split by cores would make the states depend on the machine
SLICE_CHAINS = 128
# states (at most about) from which the MALA preconditioner is estimated
PRECONDITIONER_STATES = 1 << 15
# where allowed (TiltedSampler.thin_independence: the solver's target χ), the independence
# move is made at every step while its acceptance (measured on the moves made) is at
# least IND_MIN_ACCEPT, else every IND_PROBE_EVERY-th step.  Not while annealing: there
# a rare move is not a useless one (measured, d = 50, N = 1000, χ = N: thinned below 1%
# or 0.1% acceptance, the anneal failed at χ ≈ 200–460, c = g_aχ/N ≈ 0.2–0.4, for seeds
# 0 and 1; with the move at every step it solved).  At the d = 50 target its acceptance
# is 2·10⁻⁴–10⁻³
IND_MIN_ACCEPT = 0.01
IND_PROBE_EVERY = 16


# --------------------------------------------------------------------------- numba kernels
# The chains are advanced together, one step at a time: the products with A and with the
# preconditioner are (chains × m) matrix products in BLAS and the activations one fused
# elementwise pass.  One chain at a time (as before) ran the same products as scalar
# reductions: 24 µs a chain-step at m = 50, P = 100 against 7–10 µs for the vectorised
# numpy reference; batched, 5–8 µs, 1.2–1.9× faster than that reference for erf (the
# activations dominate) and 1.2–4× for ReLU (benchmarks/bench_tilted.py).
@njit(cache=True, nogil=True)
def _logp_grad_batch(code, A, AT, tbar, c, Zb, Dm, LPb, Sb):  # pragma: no cover - numba
    """For every row z of ``Zb``: log π(z) = −|z|²/2 + (c/2)s², s = t̄·φ(Az) into ``LPb``,
    ``Sb``; returns ∇log π as a new (rows, m) array.  ``Dm`` (rows, P) is workspace."""
    nc, m = Zb.shape
    P = A.shape[0]
    H = Zb @ AT
    if code == 1:
        PH, GA, KB = np.empty(P), np.empty(P), np.empty(P, dtype=np.int64)
    for j in range(nc):
        s = 0.0
        if code == 1:
            erf_gauss_row(H[j], PH, GA, KB)
            for a in range(P):
                s += tbar[a] * PH[a]
                Dm[j, a] = tbar[a] * (_TWO_OVER_SQRT_PI * GA[a])
            Sb[j] = s
            continue
        for a in range(P):
            h = H[j, a]
            if code == 0:
                phi = h
                dphi = 1.0
            else:
                if h > 0.0:
                    phi = h
                    dphi = 1.0
                else:
                    phi = 0.0
                    dphi = 0.0
            s += tbar[a] * phi
            Dm[j, a] = tbar[a] * dphi
        Sb[j] = s
    G = Dm @ A
    for j in range(nc):
        zz = 0.0
        cs = c * Sb[j]
        for k in range(m):
            z = Zb[j, k]
            zz += z * z
            G[j, k] = -z + cs * G[j, k]
        LPb[j] = -0.5 * zz + 0.5 * c * Sb[j] * Sb[j]
    return G


@njit(cache=True, nogil=True)
def _accept(la, logu):  # pragma: no cover - numba
    """Metropolis test on the log acceptance ratio ``la`` (a non-finite ratio rejects).
    Returns the acceptance probability, whether it was accepted, and 1 if ``la`` was not
    finite."""
    nonfinite = 0
    if not math.isfinite(la):
        nonfinite = 1
        la = -math.inf
    return math.exp(min(0.0, la)), logu < la, nonfinite


@njit(cache=True, nogil=True)
def tilted_chunk(Z, LP, S, GR, A, tbar, c, code, L, h, xi, logu, zeta, logu_ind,
                 ind_every, ind_phase, thin, out, acc):  # pragma: no cover - numba
    """Advance every chain ``xi.shape[0]`` steps; store every ``thin``-th state in ``out``.

    Z (nc, m) states, LP (nc,) log π, S (nc,) s = t̄·φ(Az), GR (nc, m) ∇log π, all updated
    in place.  L (m, m) is the lower Cholesky factor of the MALA preconditioner.  xi
    (steps, nc, m) and logu (steps, nc) drive the MALA move; the independence move is made
    after step ``t`` when ``(ind_phase + t) % ind_every == 0`` (never if ``ind_every`` is
    0), its ``i``-th time with zeta[i] (nc, m) and logu_ind[i] (nc,)
    (:func:`independence_moves` of them).  out is
    (nc, steps // thin, m).  acc (2, nc) accumulates the acceptance probabilities of
    the two moves.  Returns the number of non-finite proposals rejected.
    """
    steps, nc, m = xi.shape
    P = A.shape[0]
    AT = np.ascontiguousarray(A.T)
    LT = np.ascontiguousarray(L.T)
    Lc = np.ascontiguousarray(L)
    Dm = np.empty((nc, P))
    LPp = np.empty(nc)
    Sp = np.empty(nc)
    V = np.empty((nc, m))
    sqh = math.sqrt(h)
    bad = 0
    n_ind = 0
    LTG = GR @ Lc                      # Lᵀ∇log π of the current states, kept up to date
    for t in range(steps):
        # --- preconditioned MALA: z' = z + L((h/2) Lᵀg + √h ξ)
        for j in range(nc):
            for k in range(m):
                V[j, k] = 0.5 * h * LTG[j, k] + sqh * xi[t, j, k]
        Zp = Z + V @ LT
        Gp = _logp_grad_batch(code, A, AT, tbar, c, Zp, Dm, LPp, Sp)
        LTGp = Gp @ Lc
        for j in range(nc):
            # reverse residual: −√h ξ − (h/2) Lᵀ(g + g')
            rev = 0.0
            fwd = 0.0
            for k in range(m):
                x = xi[t, j, k]
                r = -sqh * x - 0.5 * h * (LTG[j, k] + LTGp[j, k])
                rev += r * r
                fwd += x * x
            la = LPp[j] - LP[j] - rev / (2.0 * h) + 0.5 * fwd
            p_acc, ok, nonfinite = _accept(la, logu[t, j])
            bad += nonfinite
            acc[0, j] += p_acc
            if ok:
                for k in range(m):
                    Z[j, k] = Zp[j, k]
                    GR[j, k] = Gp[j, k]
                    LTG[j, k] = LTGp[j, k]
                LP[j] = LPp[j]
                S[j] = Sp[j]
        # --- independence move from the prior: accept with exp(T' − T)
        if ind_every > 0 and (ind_phase + t) % ind_every == 0:
            Zp = np.ascontiguousarray(zeta[n_ind])
            Gp = _logp_grad_batch(code, A, AT, tbar, c, Zp, Dm, LPp, Sp)
            moved = False
            for j in range(nc):
                la = 0.5 * c * (Sp[j] * Sp[j] - S[j] * S[j])
                p_acc, ok, nonfinite = _accept(la, logu_ind[n_ind, j])
                bad += nonfinite
                acc[1, j] += p_acc
                if ok:
                    moved = True
                    for k in range(m):
                        Z[j, k] = Zp[j, k]
                        GR[j, k] = Gp[j, k]
                    LP[j] = LPp[j]
                    S[j] = Sp[j]
            if moved:
                LTG = GR @ Lc
            n_ind += 1
        if (t + 1) % thin == 0:
            q = (t + 1) // thin - 1
            if q < out.shape[1]:
                for j in range(nc):
                    for k in range(m):
                        out[j, q, k] = Z[j, k]
    return bad


def independence_moves(steps: int, every: int, phase: int) -> int:
    """How many independence moves :func:`tilted_chunk` makes in ``steps`` steps: those
    ``t`` with ``(phase + t) % every == 0`` (none when ``every`` is 0)."""
    if every <= 0 or steps <= 0:
        return 0
    first = (-phase) % every
    return 0 if first >= steps else 1 + (steps - 1 - first) // every


# --------------------------------------------------------------------------- numpy reference
def _np_logp_grad(code, A, tbar, c, Z):
    H = Z @ A.T
    if code == 0:
        phi, dphi = H, np.ones_like(H)
    elif code == 1:
        phi, dphi = _erf(H), _TWO_OVER_SQRT_PI * np.exp(-H * H)
    else:
        phi, dphi = np.maximum(H, 0.0), (H > 0).astype(float)
    s = phi @ tbar
    grad = -Z + c * s[:, None] * ((dphi * tbar) @ A)
    return -0.5 * np.sum(Z * Z, axis=1) + 0.5 * c * s * s, s, grad


def reference_chunk(Z, LP, S, GR, A, tbar, c, code, L, h, xi, logu, zeta, logu_ind,
                    ind_every, ind_phase, thin, out, acc):
    """Plain-numpy replay of :func:`tilted_chunk` (vectorised over chains), for tests."""
    steps = xi.shape[0]
    sqh = math.sqrt(h)
    bad = 0
    n_ind = 0
    for t in range(steps):
        ltg = GR @ L
        zp = Z + (0.5 * h * ltg + sqh * xi[t]) @ L.T
        lpp, sp, gp = _np_logp_grad(code, A, tbar, c, zp)
        rev = -sqh * xi[t] - 0.5 * h * (ltg + gp @ L)
        with np.errstate(invalid="ignore", over="ignore"):
            la = lpp - LP - np.sum(rev ** 2, axis=1) / (2 * h) + 0.5 * np.sum(xi[t] ** 2, axis=1)
        fin = np.isfinite(la)
        bad += int(np.sum(~fin))
        la = np.where(fin, la, -np.inf)
        acc[0] += np.exp(np.minimum(0.0, la))
        ok = logu[t] < la
        Z[ok], GR[ok], LP[ok], S[ok] = zp[ok], gp[ok], lpp[ok], sp[ok]
        if ind_every > 0 and (ind_phase + t) % ind_every == 0:
            zp = zeta[n_ind].copy()
            lpp, sp, gp = _np_logp_grad(code, A, tbar, c, zp)
            la = 0.5 * c * (sp * sp - S * S)
            fin = np.isfinite(la)
            bad += int(np.sum(~fin))
            la = np.where(fin, la, -np.inf)
            acc[1] += np.exp(np.minimum(0.0, la))
            ok = logu_ind[n_ind] < la
            Z[ok], GR[ok], LP[ok], S[ok] = zp[ok], gp[ok], lpp[ok], sp[ok]
            n_ind += 1
        if (t + 1) % thin == 0:
            q = (t + 1) // thin - 1
            if q < out.shape[1]:
                out[:, q] = Z
    return bad


# --------------------------------------------------------------------------- geometry
class TiltedGeometry:
    """The linear maps between the whitened sampling coordinate ``z`` and ``w``, ``h``, ``h*``."""

    def __init__(self, problem: Problem):
        data, net = problem.data, problem.network
        X, Xs = np.asarray(data.X_train, float), np.asarray(data.X_test, float)
        P, d = X.shape
        self.activation = net.activation
        self.code = ACT_CODES[net.activation]
        self.sigma2 = s2 = net.g_w / d
        self.d, self.P = d, P
        rank = np.linalg.matrix_rank(X)
        if P < d and rank == P:
            C = s2 * X @ X.T
            Lc = np.linalg.cholesky(0.5 * (C + C.T))
            self.m = P
            self.A = Lc
            self.B = s2 * np.linalg.solve(Lc, X).T          # d×P, = σ² Xᵀ L⁻ᵀ
            self.As = Xs @ self.B
            v = s2 * np.einsum("ij,ij->i", Xs, Xs) - np.einsum("ij,ij->i", self.As, self.As)
            self.v_star = np.maximum(v, 0.0)
            self.R = s2 * np.eye(d) - self.B @ self.B.T
            self.reduced = True
        else:
            self.m = d
            sig = math.sqrt(s2)
            self.A = sig * X
            self.B = sig * np.eye(d)
            self.As = sig * Xs
            self.v_star = np.zeros(Xs.shape[0])
            self.R = np.zeros((d, d))
            self.reduced = False
        # test points with a non-negligible conditional variance need the Gaussian average
        self.v_star[self.v_star < 1e-14 * (1.0 + s2 * d)] = 0.0

    def phi(self, Z: np.ndarray) -> np.ndarray:
        """φ(h) on the training points, (n, P)."""
        return _act(self.activation, Z @ self.A.T)

    def phi_star(self, Z: np.ndarray) -> np.ndarray:
        """E[φ(h*) | z] on the test points, (n, P*)."""
        mu = Z @ self.As.T
        v = self.v_star[None, :]
        if not np.any(self.v_star):
            return _act(self.activation, mu)
        if self.activation == "linear":
            return mu
        if self.activation == "erf":
            return _erf(mu / np.sqrt(1.0 + 2.0 * v))
        sd = np.sqrt(v)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(sd > 0, mu / np.where(sd > 0, sd, 1.0), 0.0)
        out = mu * ndtr(r) + sd * np.exp(-0.5 * r * r) / math.sqrt(2 * math.pi)
        return np.where(sd > 0, out, np.maximum(mu, 0.0))

    def phi_star_sq(self, Z: np.ndarray, nodes: int = 24) -> np.ndarray:
        """E[φ(h*)² | z], (n, P*), by Gauss–Hermite quadrature where v* > 0."""
        mu = Z @ self.As.T
        if not np.any(self.v_star):
            return _act(self.activation, mu) ** 2
        x, w = np.polynomial.hermite_e.hermegauss(nodes)
        w = w / w.sum()
        sd = np.sqrt(self.v_star)[None, :]
        out = np.zeros_like(mu)
        for xk, wk in zip(x, w):
            out += wk * _act(self.activation, mu + sd * xk) ** 2
        return out

    def weight_cov(self, ZZ: np.ndarray) -> np.ndarray:
        """Σ_W = E[w wᵀ] from the second moment ``E[z zᵀ]``."""
        S = self.B @ ZZ @ self.B.T + self.R
        return 0.5 * (S + S.T)


@njit(cache=True, nogil=True)
def _erf_into(H, out):  # pragma: no cover - numba
    f = H.ravel()
    g = out.ravel()
    n = f.size
    block = 512
    ga, kb = np.empty(block), np.empty(block, dtype=np.int64)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        erf_gauss_row(f[lo:hi], g[lo:hi], ga[:hi - lo], kb[:hi - lo])


# erf of more elements than this is split between threads (by rows)
ERF_THREAD_ELEMENTS = 1 << 20


def erf_array(H):
    """erf of every element (the kernel's :func:`erf_gauss_row`; scipy's erf cost 45 ns
    an element, a tenth of a mean-field solve at d = 50); a large 2-d array is split by
    rows between the cores (the estimates' φ of 10⁵–10⁶ samples took 14% of a d = 50
    solve on one)."""
    H = np.ascontiguousarray(H, dtype=float)
    out = np.empty_like(H)
    slices = []
    if H.ndim == 2 and H.size >= ERF_THREAD_ELEMENTS:
        rows = max(1, ERF_THREAD_ELEMENTS // (2 * H.shape[1]))    # ≥ half the threshold each
        slices = split_rows(H.shape[0], usable_cores(), rows)
    if len(slices) > 1:
        run_split(lambda _, sl: _erf_into(H[sl], out[sl]), slices, blas=None)
    else:
        _erf_into(H, out)
    return out


def _act(name: str, H: np.ndarray) -> np.ndarray:
    if name == "linear":
        return H
    if name == "erf":
        return erf_array(H)
    return np.maximum(H, 0.0)


# --------------------------------------------------------------------------- ReLU existence
def relu_tilt_bound(A: np.ndarray, tbar: np.ndarray, starts: int = 1024,
                    rng: np.random.Generator | int | None = 0,
                    extra: np.ndarray | None = None,
                    best_out: list | None = None) -> tuple[float, float]:
    """Bracket ``M = max_{|u|=1} (t̄·relu(A u))²``: returns ``(lower, upper)``.

    ``best_out`` (a list) receives the best directions found, to warm-start the next call.

    The lower bound is the best value seen (every unit vector gives one) by a multi-start
    ascent: on each activation pattern the function is linear, so ``u ← ±∇/|∇|`` climbs to
    that pattern's maximum; the pattern may change on the way, so the iteration is not
    monotone and the best of ALL iterates is kept; then random perturbations of the best
    points are accepted while they improve (a pattern boundary can hide a better
    neighbour).  The upper bound is ``max(|t̄₊|·‖A₊‖₂, |t̄₋|·‖A₋‖₂)²`` over the rows with
    positive and negative ``t̄`` (certified, but loose).
    """
    rng = np.random.default_rng(rng)
    tbar = np.asarray(tbar, float)
    pos, neg = tbar > 0, tbar < 0
    up = 0.0
    for mask in (pos, neg):
        if np.any(mask):
            up = max(up, float(np.linalg.norm(tbar[mask]) * np.linalg.norm(A[mask], 2)))
    m = A.shape[1]
    U = rng.standard_normal((starts, m))
    cands = [U]
    for sgn in (1.0, -1.0):
        for mask in (pos, neg):
            g = sgn * (tbar * mask) @ A
            if np.any(g):
                cands.append(g[None, :])
    # rows of A themselves (a pattern with one unit on) and ±Aᵀt̄ (the linear tilt)
    cands.append(A)
    cands.append((A.T @ tbar)[None, :])
    if extra is not None and len(extra):
        cands.append(np.asarray(extra, float).reshape(-1, m))
    U = np.concatenate(cands)
    U /= np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-300)

    def value(V, sgn):
        return sgn * (np.maximum(V @ A.T, 0.0) @ tbar)

    best = 0.0
    for sgn in (1.0, -1.0):
        V = U.copy()
        bestV = V.copy()
        bestf = value(V, sgn)
        for _ in range(100):
            act = (V @ A.T) > 0
            G = sgn * (act * tbar) @ A
            nrm = np.linalg.norm(G, axis=1, keepdims=True)
            Vn = np.where(nrm > 0, G / np.maximum(nrm, 1e-300), V)
            f = value(Vn, sgn)
            better = f > bestf
            bestV[better], bestf[better] = Vn[better], f[better]
            if np.allclose(Vn, V, atol=1e-13):
                break
            V = Vn
        # perturbation hill-climb from the best 64 points
        k = min(64, bestf.size)
        idx = np.argsort(bestf)[-k:]
        V, fv = bestV[idx].copy(), bestf[idx].copy()
        for scale in (0.3, 0.1, 0.03, 0.01, 0.003):
            for _ in range(20):
                T = V + scale * rng.standard_normal(V.shape)
                T /= np.maximum(np.linalg.norm(T, axis=1, keepdims=True), 1e-300)
                ft = value(T, sgn)
                ok = ft > fv
                V[ok], fv[ok] = T[ok], ft[ok]
        best = max(best, float(np.max(np.maximum(bestf, 0.0)) ** 2),
                   float(np.max(np.maximum(fv, 0.0)) ** 2))
        if best_out is not None:
            best_out.append(V[np.argsort(fv)[-8:]])
    return best, up ** 2


def fold_mirror_modes(Z: np.ndarray) -> np.ndarray:
    """States of a measure with p(z) = p(−z) (odd φ), each flipped to the side of the top
    eigenvector of their second moment, so that the two mirror modes fold into one."""
    M2 = Z.T @ Z / Z.shape[0]
    v = np.linalg.eigh(M2)[1][:, -1]
    return Z * np.where(Z @ v >= 0, 1.0, -1.0)[:, None]


# --------------------------------------------------------------------------- the sampler
class TiltedSampler:
    """Persistent MALA chains on ``p_t̄`` for one problem (all χ, all t̄).

    ``sample(tbar, c, draws)`` advances the chains (burn-in with step-size adaptation,
    then ``draws`` kept states per chain, every ``thin``-th step) and returns the kept
    ``z`` as an ``(chains, draws, m)`` array.  Chains are independent, so contiguous
    blocks of chains are independent replicas for standard errors.
    """

    def __init__(self, problem: Problem, chains: int = 256, seed: int | None = 0,
                 independence: bool = True, threads: int | None = None):
        if problem.network.activation not in ACT_CODES:
            raise MSAError(f"no tilted measure for activation {problem.network.activation!r}")
        self.geom = g = TiltedGeometry(problem)
        self.problem = problem
        ss = np.random.SeedSequence(0 if seed is None else seed)
        self.rng = np.random.default_rng(ss)
        # the proposals' normals: a lane stream (sampling/rng_numba, ≈ 3 ns a normal
        # against 15 for numpy's; they were a fifth of a solve's time)
        self._stream = seed_states(ss.spawn(1)[0], 1)[0]
        self.Z = self.rng.standard_normal((int(chains), g.m))
        self.L = np.eye(g.m)
        self.log_h = math.log(min(1.0, 1.5 / g.m ** (1.0 / 3.0)))
        self.independence = independence
        # slices of chains are split between this many threads (the kernel releases the
        # GIL; the chains are independent within a call, and the slices do not depend
        # on it, so neither do the states)
        self.threads = usable_cores() if threads is None else max(1, int(threads))
        # the independence move's schedule: every step, or every IND_PROBE_EVERY-th one
        # while its measured acceptance is below IND_MIN_ACCEPT; the phase runs on
        # across calls so that short calls (the burn-in's) still probe
        self._ind_every = 1 if independence else 0
        self._ind_phase = 0
        # whether that thinning is allowed: the solver allows it at its target χ only,
        # where the measure stays put (see IND_MIN_ACCEPT for what it broke in the anneal)
        self.thin_independence = False
        self.tbar = None
        self.c = None
        self.acceptance = (float("nan"), float("nan"))
        self.rejected_nonfinite = 0
        self.relu_bound = None
        self._relu_dirs = None

    # -- existence --------------------------------------------------------------
    def check(self, tbar: np.ndarray, c: float) -> None:
        """Raise MSAError if ReLU's tilted measure at (t̄, c) is not normalisable (THEORY §6)."""
        if self.geom.activation == "linear":   # Gaussian: exists while c|Aᵀt̄|² < 1
            val = c * float(np.sum((self.geom.A.T @ tbar) ** 2))
            if val >= RELU_MARGIN:
                raise NotNormalisable(
                    f"the linear tilted measure is not normalisable (c s = {val:.4g})")
            return
        if self.geom.activation != "relu":
            return
        # the first search is wide; later ones (t̄ moves little between calls) start from
        # the previous maximisers and a subsample of the chains' states
        warm = self._relu_dirs
        extra = self.Z[:: max(1, self.Z.shape[0] // 64)]
        if warm is not None:
            extra = np.concatenate([warm, extra])
        found: list = []
        lo, up = relu_tilt_bound(self.geom.A, tbar, starts=1024 if warm is None else 128,
                                 extra=extra, best_out=found)
        self._relu_dirs = np.concatenate(found)
        self.relu_bound = (c * lo, c * up)
        if c * lo >= RELU_MARGIN:
            raise NotNormalisable(
                "the ReLU tilted measure is not normalisable: (g_a chi/N)(g_w/d) "
                f"max_|u|=1 (tbar.relu(X u))^2 >= {c * lo:.4g} (must be < 1); "
                "anneal with a finer chi grid or increase kappa")

    # -- sampling ---------------------------------------------------------------
    def _state(self, tbar, c):
        g = self.geom
        n, m = self.Z.shape
        LP, S, GR = np.empty(n), np.empty(n), np.empty((n, m))
        LP[:], S[:], GR[:] = _np_logp_grad(g.code, g.A, tbar, c, self.Z)
        return LP, S, GR

    def _run(self, tbar, c, steps, thin, out, LP, S, GR, h):
        """``steps`` steps of every chain, in blocks (a multiple of ``thin`` steps) so
        that the random numbers of a block stay ≲ 16 MB whatever the number of chains.
        Returns the mean acceptance probabilities per chain, ``(2, chains)``: of the MALA
        moves, and of the independence moves made (0 when none was)."""
        g = self.geom
        nc, m = self.Z.shape
        acc = np.zeros((2, nc))
        block = max(thin, (max(1, BLOCK_NUMBERS // (nc * m)) // thin) * thin)
        done = 0
        moves = 0
        while done < steps:
            k = min(block, steps - done)
            every = self._ind_every
            n_ind = independence_moves(k, every, self._ind_phase)
            xi = np.empty((k, nc, m))
            words = np.empty(words_needed(xi.size), dtype=np.uint64)
            fill_normal(self._stream, xi, words)
            logu = np.log(self.rng.random((k, nc)))
            zeta = np.empty((n_ind, nc, m))
            if n_ind:
                fill_normal(self._stream, zeta, words)
            logu_ind = np.log(self.rng.random((n_ind, nc)))
            q0, q1 = done // thin, min((done + k) // thin, out.shape[1])
            part = np.empty((nc, max(0, q1 - q0), m))
            phase = self._ind_phase

            def job(_, sl, xi=xi, logu=logu, zeta=zeta, logu_ind=logu_ind, part=part,
                    every=every, phase=phase):
                # rows of Z, LP, S, GR, part are contiguous views; the random numbers
                # and acceptances of a slice are copied (one compiled layout)
                a = np.zeros((2, sl.stop - sl.start))
                bad = tilted_chunk(
                    self.Z[sl], LP[sl], S[sl], GR[sl], g.A, tbar, c, g.code, self.L, h,
                    np.ascontiguousarray(xi[:, sl]), np.ascontiguousarray(logu[:, sl]),
                    np.ascontiguousarray(zeta[:, sl]), np.ascontiguousarray(logu_ind[:, sl]),
                    every, phase, thin, part[sl], a)
                acc[:, sl] += a
                return bad

            slices = split_rows(nc, nc // SLICE_CHAINS, SLICE_CHAINS)
            if len(slices) == 1:
                self.rejected_nonfinite += int(tilted_chunk(
                    self.Z, LP, S, GR, g.A, tbar, c, g.code, self.L, h, xi, logu, zeta,
                    logu_ind, every, phase, thin, part, acc))
            else:
                self.rejected_nonfinite += sum(
                    int(b) for b in run_split(job, slices, threads=self.threads))
            out[:, q0:q1] = part
            if every:
                self._ind_phase = (self._ind_phase + k) % every
            moves += n_ind
            done += k
        acc[0] /= steps
        if moves:
            acc[1] /= moves
            rate = float(np.mean(acc[1]))
            if rate >= IND_MIN_ACCEPT or not self.thin_independence:
                self._ind_every, self._ind_phase = 1, 0
            elif self._ind_every == 1:
                self._ind_every, self._ind_phase = IND_PROBE_EVERY, 1
        return acc

    def sample(self, tbar: np.ndarray, c: float, draws: int, thin: int = 2,
               burn_in: int = 20, adapt: bool = True) -> np.ndarray:
        tbar = np.ascontiguousarray(tbar, dtype=float)
        self.check(tbar, c)
        LP, S, GR = self._state(tbar, c)
        if not np.all(np.isfinite(LP)):
            raise MSAError("the tilted measure is not finite at the chains' states")
        dummy = np.zeros((self.chains, 0, self.geom.m))
        chunk = 10
        done = 0
        while done < burn_in:
            k = min(chunk, burn_in - done)
            acc = self._run(tbar, c, k, 1, dummy, LP, S, GR, math.exp(self.log_h))
            if adapt:
                a = float(np.mean(acc[0]))
                self.log_h += 2.0 * (a - TARGET_ACCEPTANCE)
                self.log_h = min(self.log_h, math.log(4.0))
            done += k
        out = np.empty((self.chains, draws, self.geom.m))
        acc = self._run(tbar, c, draws * thin, thin, out, LP, S, GR, math.exp(self.log_h))
        self.acceptance = (float(np.mean(acc[0])), float(np.mean(acc[1])))
        self.tbar, self.c = tbar.copy(), c
        self._update_preconditioner(out)
        return out

    @property
    def chains(self) -> int:
        """The number of chains (it changes with :meth:`grow` and :meth:`restore`)."""
        return self.Z.shape[0]

    def snapshot(self) -> tuple:
        """The chains' state (positions, preconditioner, step size), for :meth:`restore`."""
        return (self.Z.copy(), self.L.copy(), self.log_h)

    def restore(self, snap: tuple) -> None:
        """Put the chains back where :meth:`snapshot` found them (the random stream goes
        on: a retried stage draws new numbers)."""
        Z, L, log_h = snap
        self.Z, self.L, self.log_h = Z.copy(), L.copy(), log_h

    def grow(self, groups: int, factor: int = 2) -> None:
        """``factor`` times as many chains: every chain is cloned *within its group*.

        Contiguous blocks of chains are the independent replicas of the standard errors
        (``groups`` of them).  A clone starts where its parent is and moves on with its
        own random numbers, so the groups stay independent of each other and the
        jackknife errors stay honest while the clones decorrelate (until then they add
        little).  Used when a stage's Monte Carlo noise, not its χ step, stops the
        anneal: with slowly mixing chains (autocorrelation time of s² ≈ 140 steps at
        d = 50) more chains shrink the noise where longer runs barely do.
        """
        n = self.chains // groups
        if n * groups != self.chains:
            raise MSAError(f"chains ({self.chains}) must be a multiple of groups ({groups})")
        Z = self.Z.reshape(groups, n, self.geom.m)
        self.Z = np.ascontiguousarray(np.repeat(Z, factor, axis=1).reshape(-1, self.geom.m))

    def _update_preconditioner(self, out: np.ndarray) -> None:
        """A new MALA preconditioner from the kept states (odd φ: folded by z ↦ −z)."""
        m = self.geom.m
        Z = out.reshape(-1, m)
        if Z.shape[0] < 4 * m:
            return
        # a covariance of m² entries needs far fewer than the 10⁵–10⁶ kept states of a
        # final run (they cost 6% of a d = 50 solve): every k-th, with every chain
        Z = Z[::max(1, Z.shape[0] // PRECONDITIONER_STATES)]
        if self.geom.code != 2:      # p(z) = p(−z): fold the two mirror modes together
            Z = fold_mirror_modes(Z)
        cov = np.cov(Z.T).reshape(m, m)
        cov = 0.5 * (cov + cov.T) + 1e-3 * np.trace(cov) / m * np.eye(m)
        try:
            L = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            return
        # rescale the step so that h·M keeps its size (the adaptation then fine-tunes)
        scale = float(np.trace(cov) / m)
        old = float(np.trace(self.L @ self.L.T) / m)
        self.L = L
        self.log_h += math.log(old / scale) if scale > 0 and old > 0 else 0.0
