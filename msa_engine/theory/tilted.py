"""The tilted single-neuron measure of a non-linear network, sampled by numba MALA (THEORY §4, §6).

    p_t̄(w) ∝ N(w; 0, (g_w/d) I) · exp((c/2) (t̄·φ(Xw))²),   c = g_a χ/N

Coordinates.  The tilt depends on ``w`` only through ``h = Xw``.  We sample a whitened
``z ∈ R^m`` with prior ``N(0, I)`` and ``h = A z``:

- ``P >= d`` (or ``X`` rank-deficient): ``m = d``, ``w = σ z``, ``A = σ X`` (``σ² = g_w/d``);
- ``P <  d``: ``m = P``, ``A = L`` with ``L Lᵀ = C = σ² X Xᵀ``; the rest of ``w`` is
  Gaussian given ``h``: ``w | z ~ N(B z, σ² I − B Bᵀ)`` with ``B = σ² Xᵀ L⁻ᵀ``, and a test
  pre-activation is ``h* | z ~ N(X* B z, v*)``.  Test outputs use ``E[φ(h*) | z]``
  (Rao-Blackwellised) and ``Σ_W = B E[z zᵀ] Bᵀ + σ² I − B Bᵀ``.

Sampler.  Persistent chains, all advanced by one ``@njit(cache=True, nogil=True)`` call
(no ``parallel``): a preconditioned MALA move (``z' = z + (h/2) M ∇log π + √h L ξ``,
``M = L_M L_Mᵀ`` fixed during a call, from the population covariance of earlier samples)
followed, optionally, by an independence move from the prior (accepted with
``exp(T' − T)``, ``T = (c/2) s²``; this keeps chains moving between modes when the tilt is
weak, and costs nothing to correctness when it is strong).  Random numbers are drawn by
the caller from a seeded numpy generator and passed in, so :func:`reference_chunk`
replays the very same steps in plain numpy (tested step for step).

ReLU is positively homogeneous: along a ray ``z = r u`` the log density is
``−r²(1 − c (t̄·relu(A u))²)/2``, so the measure exists only while
``c max_{|u|=1} (t̄·relu(A u))² < 1`` (THEORY §6).  :func:`relu_tilt_bound` brackets that
maximum; :class:`TiltedSampler` refuses (``MSAError``) to sample a measure that does not
exist.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.special import erf as _erf, ndtr

from ..errors import MSAError
from ..problem import Problem

ACT_CODES = {"linear": 0, "erf": 1, "relu": 2}
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
TARGET_ACCEPTANCE = 0.574
# a tilt whose ReLU bound is within this factor of 1 is refused: the measure exists but
# its radial tail is so heavy that no chain would resolve it
RELU_MARGIN = 0.98


# --------------------------------------------------------------------------- numba kernels
@njit(cache=True, nogil=True)
def _logp_grad(code, A, tbar, c, z, grad, hbuf):  # pragma: no cover - numba
    """log π(z) = −|z|²/2 + (c/2)s², s = t̄·φ(Az); fills ``grad``; returns (log π, s)."""
    P, m = A.shape
    s = 0.0
    for a in range(P):
        h = 0.0
        for k in range(m):
            h += A[a, k] * z[k]
        if code == 0:
            phi = h
            dphi = 1.0
        elif code == 1:
            phi = math.erf(h)
            dphi = _TWO_OVER_SQRT_PI * math.exp(-h * h)
        else:
            if h > 0.0:
                phi = h
                dphi = 1.0
            else:
                phi = 0.0
                dphi = 0.0
        s += tbar[a] * phi
        hbuf[a] = tbar[a] * dphi
    zz = 0.0
    for k in range(m):
        zz += z[k] * z[k]
        g = 0.0
        for a in range(P):
            g += A[a, k] * hbuf[a]
        grad[k] = -z[k] + c * s * g
    return -0.5 * zz + 0.5 * c * s * s, s


@njit(cache=True, nogil=True)
def _metropolis(la, logu, z, g, zp, gp):  # pragma: no cover - numba
    """Metropolis test on the log acceptance ratio ``la`` (a non-finite ratio rejects);
    on acceptance the proposal ``(zp, gp)`` is copied into ``(z, g)``.  Returns the
    acceptance probability, whether it was accepted, and 1 if ``la`` was not finite."""
    nonfinite = 0
    if not math.isfinite(la):
        nonfinite = 1
        la = -math.inf
    ok = logu < la
    if ok:
        for k in range(z.shape[0]):
            z[k] = zp[k]
            g[k] = gp[k]
    return math.exp(min(0.0, la)), ok, nonfinite


@njit(cache=True, nogil=True)
def tilted_chunk(Z, LP, S, GR, A, tbar, c, code, L, h, xi, logu, zeta, logu_ind,
                 independence, thin, out, acc):  # pragma: no cover - numba
    """Advance every chain ``xi.shape[0]`` steps; store every ``thin``-th state in ``out``.

    Z (nc, m) states, LP (nc,) log π, S (nc,) s = t̄·φ(Az), GR (nc, m) ∇log π, all updated
    in place.  L (m, m) is the lower Cholesky factor of the MALA preconditioner.  xi
    (steps, nc, m) and logu (steps, nc) drive the MALA move; zeta (steps, nc, m) and
    logu_ind (steps, nc) the independence move (used when ``independence``).  out is
    (nc, steps // thin, m).  acc (2, nc) accumulates the acceptance probabilities of
    the two moves.  Returns the number of non-finite proposals rejected.
    """
    steps, nc, m = xi.shape
    P = A.shape[0]
    hbuf = np.empty(P)
    zp = np.empty(m)
    gp = np.empty(m)
    ltg = np.empty(m)
    ltgp = np.empty(m)
    v = np.empty(m)
    sqh = math.sqrt(h)
    bad = 0
    for j in range(nc):
        z = Z[j]
        g = GR[j]
        lp = LP[j]
        s = S[j]
        for t in range(steps):
            # --- preconditioned MALA: z' = z + L((h/2) Lᵀg + √h ξ)
            for k in range(m):
                a = 0.0
                for i in range(k, m):
                    a += L[i, k] * g[i]
                ltg[k] = a
            for k in range(m):
                v[k] = 0.5 * h * ltg[k] + sqh * xi[t, j, k]
            for k in range(m):
                a = 0.0
                for i in range(k + 1):
                    a += L[k, i] * v[i]
                zp[k] = z[k] + a
            lpp, sp = _logp_grad(code, A, tbar, c, zp, gp, hbuf)
            for k in range(m):
                a = 0.0
                for i in range(k, m):
                    a += L[i, k] * gp[i]
                ltgp[k] = a
            # reverse residual: −√h ξ − (h/2) Lᵀ(g + g')
            rev = 0.0
            fwd = 0.0
            for k in range(m):
                r = -sqh * xi[t, j, k] - 0.5 * h * (ltg[k] + ltgp[k])
                rev += r * r
                fwd += xi[t, j, k] * xi[t, j, k]
            la = lpp - lp - rev / (2.0 * h) + 0.5 * fwd
            p_acc, ok, nonfinite = _metropolis(la, logu[t, j], z, g, zp, gp)
            bad += nonfinite
            acc[0, j] += p_acc
            if ok:
                lp = lpp
                s = sp
            # --- independence move from the prior: accept with exp(T' − T)
            if independence:
                for k in range(m):
                    zp[k] = zeta[t, j, k]
                lpp, sp = _logp_grad(code, A, tbar, c, zp, gp, hbuf)
                la = 0.5 * c * (sp * sp - s * s)
                p_acc, ok, nonfinite = _metropolis(la, logu_ind[t, j], z, g, zp, gp)
                bad += nonfinite
                acc[1, j] += p_acc
                if ok:
                    lp = lpp
                    s = sp
            if (t + 1) % thin == 0:
                q = (t + 1) // thin - 1
                if q < out.shape[1]:
                    for k in range(m):
                        out[j, q, k] = z[k]
        LP[j] = lp
        S[j] = s
    return bad


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
                    independence, thin, out, acc):
    """Plain-numpy replay of :func:`tilted_chunk` (vectorised over chains), for tests."""
    steps = xi.shape[0]
    sqh = math.sqrt(h)
    bad = 0
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
        if independence:
            zp = zeta[t].copy()
            lpp, sp, gp = _np_logp_grad(code, A, tbar, c, zp)
            la = 0.5 * c * (sp * sp - S * S)
            fin = np.isfinite(la)
            bad += int(np.sum(~fin))
            la = np.where(fin, la, -np.inf)
            acc[1] += np.exp(np.minimum(0.0, la))
            ok = logu_ind[t] < la
            Z[ok], GR[ok], LP[ok], S[ok] = zp[ok], gp[ok], lpp[ok], sp[ok]
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


def _act(name: str, H: np.ndarray) -> np.ndarray:
    if name == "linear":
        return H
    if name == "erf":
        return _erf(H)
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


# --------------------------------------------------------------------------- the sampler
class TiltedSampler:
    """Persistent MALA chains on ``p_t̄`` for one problem (all χ, all t̄).

    ``sample(tbar, c, draws)`` advances the chains (burn-in with step-size adaptation,
    then ``draws`` kept states per chain, every ``thin``-th step) and returns the kept
    ``z`` as an ``(chains, draws, m)`` array.  Chains are independent, so contiguous
    blocks of chains are independent replicas for standard errors.
    """

    def __init__(self, problem: Problem, chains: int = 256, seed: int | None = 0,
                 independence: bool = True):
        if problem.network.activation not in ACT_CODES:
            raise MSAError(f"no tilted measure for activation {problem.network.activation!r}")
        self.geom = g = TiltedGeometry(problem)
        self.problem = problem
        self.chains = int(chains)
        self.rng = np.random.default_rng(np.random.SeedSequence(0 if seed is None else seed))
        self.Z = self.rng.standard_normal((self.chains, g.m))
        self.L = np.eye(g.m)
        self.log_h = math.log(min(1.0, 1.5 / g.m ** (1.0 / 3.0)))
        self.independence = independence
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
                raise MSAError(f"the linear tilted measure is not normalisable (c s = {val:.4g})")
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
            raise MSAError(
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
        g = self.geom
        nc, m = self.Z.shape
        xi = self.rng.standard_normal((steps, nc, m))
        logu = np.log(self.rng.random((steps, nc)))
        if self.independence:
            zeta = self.rng.standard_normal((steps, nc, m))
            logu_ind = np.log(self.rng.random((steps, nc)))
        else:
            zeta = np.zeros((1, 1, 1))
            logu_ind = np.zeros((1, 1))
        acc = np.zeros((2, nc))
        bad = tilted_chunk(self.Z, LP, S, GR, g.A, tbar, c, g.code, self.L, h, xi, logu,
                           zeta, logu_ind, self.independence, thin, out, acc)
        self.rejected_nonfinite += int(bad)
        return acc / steps

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

    def snapshot(self) -> tuple:
        """The chains' state (positions, preconditioner, step size), for :meth:`restore`."""
        return (self.Z.copy(), self.L.copy(), self.log_h)

    def restore(self, snap: tuple) -> None:
        """Put the chains back where :meth:`snapshot` found them (the random stream goes
        on: a retried stage draws new numbers)."""
        Z, L, log_h = snap
        self.Z, self.L, self.log_h = Z.copy(), L.copy(), log_h

    def _update_preconditioner(self, out: np.ndarray) -> None:
        """A new MALA preconditioner from the kept states (odd φ: folded by z ↦ −z)."""
        m = self.geom.m
        Z = out.reshape(-1, m)
        if Z.shape[0] < 4 * m:
            return
        if self.geom.code != 2:      # p(z) = p(−z): fold the two mirror modes together
            M2 = Z.T @ Z / Z.shape[0]
            v = np.linalg.eigh(M2)[1][:, -1]
            Z = Z * np.where(Z @ v >= 0, 1.0, -1.0)[:, None]
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
