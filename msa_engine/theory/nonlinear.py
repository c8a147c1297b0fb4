"""MSA tree level and one loop for non-linear (erf, ReLU) networks, by stochastic
self-consistency on MCMC samples of the tilted single-neuron measure (THEORY §4, §6).

Tree level.  ``t̄ = (K(t̄) + κI)⁻¹ y`` with ``K(t̄) = g_a E_t̄[φφᵀ]``.  Each iteration draws
FRESH samples from persistent MALA chains (:mod:`.tilted`) at the current ``t̄`` and takes
a damped Newton step ``t̄ ← t̄ + α H⁻¹ r``, ``r = y − (K + κ)t̄``,
``H = κ + K + (g_a²χ/N) Cov((t̄·φ)φ, (t̄·φ)φ)`` (the Jacobian of ``(K(t̄)+κ)t̄``).  The
saddle is annealed along a geometric χ grid from the NNGP (χ = 1, t̄ = NNGP t̄), the
chains following it.  At the target, iterations stop when the Newton step is consistent
with its Monte Carlo error; the last iterates are averaged, and the outputs are measured
on a fresh sample set at that point, with the fixed point linearised:

    train = y − κ(t̄ + δ),   test = K* t̄ + J* δ,   δ = H⁻¹ r,
    J* = K* + (g_a²χ/N) Cov((t̄·φ)φ*, (t̄·φ)φ),

so the reported mean predictor does not inherit the noise of the iterates to first
order.  Every ``*_se`` is a delete-one-group jackknife over independent groups of chains
(the theory's own Monte Carlo error).  ``residual`` is ``|r|/|y|`` on that fresh set,
``extras["residual_z2"]`` the mean of ``(r_α/se_α)²``: ≈ 1 when the saddle is consistent
with zero residual.

Slow mixing (large d, strong tilt).  The slowest mode of the chains is the tilt itself,
s² (autocorrelation time ≈ 140 MALA steps at d = 50, P = 100).  So the burn-in after each
t̄ update is at least twice the autocorrelation time of s² measured on the previous
iteration's samples (a K that lags behind t̄ makes Newton stall), and where a stage's
Monte Carlo noise, rather than its χ step, stops the anneal — or the final saddle stays
imprecise — the chains double (each cloned within its jackknife group, so the groups stay
independent) up to ``max_chains``: more chains shrink the noise where longer runs of slow
chains barely do.

Control variate.  With ``v = exp(−(c/2)s²)`` the tilted samples reweighted by ``v``
estimate prior averages, whose value for ``E[φφᵀ]`` is the analytic NNGP kernel.  So
``E_t̄[G] ≈ Ê_t̄[G] − β(Ê_0[G] − k)`` is unbiased (up to the self-normalisation), and
for a weak tilt (standard scaling) its error is far below ``Var(G)/n``.  ``β ∈ {0, 1}``
is chosen per kernel by the smaller jackknife variance.

One loop.  ``Γ = F + ½ log det H``.  Its gradient needs ``∂H/∂t̄``, i.e. tilted covariances
with up to six powers of φ, estimated on the same samples:

    ∂_γ ½log det H = ½[g_a c Cov(q, sφ_γ) + b(2E[s q φ_γ] + c Cov(s²q, sφ_γ)
                      − 2E[φ_γ ρ] − 2c Cov(s ρ, s φ_γ))]

with ``s = t̄·φ``, ``c = g_aχ/N``, ``b = g_a c``, ``M = H⁻¹``, ``q = φᵀMφ``, ``m = E[sφ]``,
``ρ = φᵀMm`` (our derivation).  The saddle ``t̄₁`` of Γ is found by quasi-Newton steps
``t̄ ← t̄ + α H⁻¹ ∇Γ/χ`` with fresh samples each iteration.  The test mean averages
``G(t) = (−i/χ) g_a E_t[φ*(t·φ)]`` over the fluctuations of t (covariance ``χH⁻¹``):

    f̄* = g_a E[φ*s] − (3/2) g_a a E[φ* s q] − (g_a a c/2) E[φ* s³ q]
         + g_a E[φ*s]((a/2)E[q] + (ac/2)E[s²q] − ac mᵀMm)
         + a g_a E[φ*φᵀ]Mm + a c g_a E[φ* s² φᵀ]Mm,       a = g_a/N

(our derivation: the second-order term of ``G(iχt̄ + δ)`` in real ``δ``, averaged over
``δ ~ N(0, χH⁻¹)``; for φ(h) = h it reproduces the closed-form linear one loop, which the
tests check).
Weak tilt (standard scaling, χ ≲ √N).  The chains' Monte Carlo error would hide the
one-loop correction there (THEORY §9).  After the MCMC tree saddle, the saddle (tree or
one loop) is re-solved on ONE large, fixed set from a Gaussian proposal fitted to the
chains (:class:`_GaussianIS`: randomised QMC groups as independent replicas, the proposal's
analytic kernels as control variates), but only while the importance weights' ESS
fraction stays above ``is_min_ess``; otherwise (mean field, or a strong ReLU tilt) the
MCMC result stands (``extras["estimator"]`` says which).  The set is fixed, so the map is
deterministic and Newton converges to round-off; its own error is the jackknife over the
groups, with each replica's saddle shift propagated through the measured (finite
difference) Jacobians; the residual is measured on a fresh, independent set.
Reweighting the samples of ``t̄`` to a nearby ``t̄'`` (:func:`reweight`) estimates the
same quantities without resampling; its effective sample size is monitored and is
used to check the gradient against finite differences.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..diagnostics import pooled_autocorr_time
from ..errors import MSAError, NotNormalisable
from ..problem import Problem
from ..results import Callback, IterationRecord, TheoryResult
from ..threads import run_split, usable_cores
from .gp import Spectral, gp_mean
from .options import merged_options
from .tilted import RELU_MARGIN, TiltedSampler

# fresh-sample residual (mean z²) above this: not converged.  With 16 jackknife groups,
# mean z² of fully correlated t-distributed components has mean 1.15, sd 1.84: 9 is the
# conservative 4σ bound.  It tests consistency only; `precision` tests size.
RESIDUAL_Z2_MAX = 9.0


# --------------------------------------------------------------------------- estimates
# samples from which the estimates' group sums are split between the cores
THREAD_SAMPLES = 1 << 15


class _Samples:
    """Per-sample arrays for samples ``Z`` (chains × draws × m) at (t̄, c), grouped."""

    def __init__(self, sampler, Z: np.ndarray, tbar: np.ndarray, c: float,
                 groups: int, weights: np.ndarray | None = None, test: bool = True,
                 ref_v: np.ndarray | None = None, ref_kernels: tuple | None = None):
        """``weights`` take the samples to ``p_t̄`` (importance sampling; default: they are
        samples of ``p_t̄``); ``ref_v`` take ``p_t̄`` to a reference measure whose kernels
        ``ref_kernels = (k, k*)`` are known analytically (default: the prior, ``v = e^{−T}``,
        with the NNGP kernels)."""
        g = sampler.geom
        nc, D, m = Z.shape
        if nc % groups:
            raise MSAError(f"chains ({nc}) must be a multiple of groups ({groups})")
        self.Z = Z.reshape(-1, m)
        self.Phi = g.phi(self.Z)
        self.Phis = g.phi_star(self.Z) if test else None
        self.s = self.Phi @ tbar
        T = 0.5 * c * self.s ** 2
        self.v = np.exp(-(T - T.min())) if ref_v is None else ref_v
        self.w = np.ones(self.Z.shape[0]) if weights is None else weights
        self.ref_kernels = ref_kernels
        self.G = groups
        self.bounds = [(k * nc // groups * D, (k + 1) * nc // groups * D) for k in range(groups)]
        self.tbar, self.c, self.geom = tbar, c, g

    def sums(self, A: np.ndarray, B: np.ndarray | None = None) -> np.ndarray:
        """Group sums of ``w·A`` (vector per sample) or ``(w·A)ᵀB``: shape (G, ...)."""
        def group(_, sl):
            lo, hi = self.bounds[sl.start]
            wa = self.w[lo:hi, None] * A[lo:hi] if A.ndim == 2 else self.w[lo:hi] * A[lo:hi]
            return wa.sum(axis=0) if B is None else wa.T @ B[lo:hi]

        return np.array(self._by_group(group))

    def _by_group(self, group) -> list:
        """``group(g, slice(g, g + 1))`` for every group; for a large sample the groups
        on every core (numpy and BLAS release the GIL; one BLAS thread each)."""
        big = self.Z.shape[0] >= THREAD_SAMPLES
        return run_split(group, [slice(g, g + 1) for g in range(self.G)],
                         threads=usable_cores() if big else 1)

    def sym_sums(self, a: np.ndarray | None, A: np.ndarray) -> np.ndarray:
        """Group sums of ``a·w·AᵀA`` (``a ≥ 0`` per sample, or 1): the symmetric products
        by BLAS ``syrk``, half the work of ``(a w A)ᵀA`` (they were a fifth of a
        mean-field solve at d = 50, P = 100, with 4·10⁵ samples an iteration).  numpy's
        ``x.T @ x`` is a ``syrk`` (it fills the other triangle itself) and releases the
        GIL, so the groups run side by side; scipy's ``dsyrk`` wrapper holds the GIL."""
        r = np.sqrt(self.w if a is None else self.w * a)

        def group(_, sl):
            lo, hi = self.bounds[sl.start]
            x = r[lo:hi, None] * A[lo:hi]
            return x.T @ x

        return np.array(self._by_group(group))


class _Jack:
    """Group sums → full and delete-one-group means."""

    def __init__(self, S: _Samples):
        self.S = S
        self.n = S.sums(np.ones(S.Z.shape[0]))
        self.tot_n = self.n.sum()
        self._sums: dict = {}

    def add(self, name: str, A, B=None):
        self._sums[name] = self.S.sums(A, B)

    def add_sym(self, name: str, a, A):
        self._sums[name] = self.S.sym_sums(a, A)

    def mean(self, name: str, drop: int | None = None):
        s = self._sums[name]
        if drop is None:
            return s.sum(axis=0) / self.tot_n
        return (s.sum(axis=0) - s[drop]) / (self.tot_n - self.n[drop])

    def ratio(self, num: str, den: str, drop: int | None = None):
        return self.mean(num, drop) / self.mean(den, drop)


def jackknife(fn, G: int, keep: dict | None = None):
    """``fn(drop)`` for drop in None, 0..G−1 → (full value, jackknife SE) for arrays.

    With ``keep`` (dict results), the delete-one replicas of the keys already in ``keep``
    are stored there ((G, ...) arrays): the SE of any linear functional ``a·x`` is then
    ``√((G−1)/G Σ_g (a·(x_g − x̄))²)``, correlations between outputs included."""
    full = fn(None)
    reps = [fn(g) for g in range(G)]
    if isinstance(full, dict):
        se = {}
        for k in full:
            r = np.array([rep[k] for rep in reps], dtype=float)
            if keep is not None and k in keep:
                keep[k] = r
            se[k] = np.sqrt((G - 1) / G * np.sum((r - r.mean(axis=0)) ** 2, axis=0))
        return full, se
    r = np.array(reps, dtype=float)
    return full, np.sqrt((G - 1) / G * np.sum((r - r.mean(axis=0)) ** 2, axis=0))


class _Estimator:
    """Tilted averages at one (t̄, χ) from one sample set, with jackknife errors."""

    def __init__(self, problem: Problem, sp: Spectral, S: _Samples, full: bool = True,
                 beta: dict | None = None):
        net = problem.network
        self.problem, self.sp, self.S = problem, sp, S
        self.g_a, self.kappa, self.chi, self.N = net.g_a, net.kappa, net.chi, net.N
        self.c = S.c
        self.y = np.asarray(problem.data.y_train, float)
        self.tbar = S.tbar
        J = self.J = _Jack(S)
        Phi, Phis, s = S.Phi, S.Phis, S.s
        J.add_sym("PP", None, Phi)
        J.add("v", S.v)
        J.add_sym("vPP", S.v, Phi)
        J.add("sP", s[:, None] * Phi)
        J.add_sym("s2PP", s * s, Phi)
        k_ref, ks_ref = S.ref_kernels if S.ref_kernels is not None else (sp.k, sp.k_star)
        self.k_ref, self.ks_ref = k_ref, ks_ref
        kernels = [("PP", k_ref)]
        if full:   # the test-point and weight statistics (not needed while iterating)
            J.add("SP", Phis, Phi)
            J.add("vSP", S.v[:, None] * Phis, Phi)
            J.add("sS", s[:, None] * Phis)
            J.add("s2SP", (s * s)[:, None] * Phis, Phi)
            J.add("s2", s * s)
            J.add_sym("ZZ", None, S.Z)
            kernels.append(("SP", ks_ref))
        # control-variate choice (β ∈ {0, 1}) per kernel, by jackknife variance
        self.beta = {}
        for key, k0 in kernels:
            if beta is not None and key in beta:
                self.beta[key] = beta[key]
                continue
            var = []
            for b in (0.0, 1.0):
                # a strong tilt can leave a group with no prior weight (v underflows):
                # the control variate is then undefined there, and not chosen
                with np.errstate(invalid="ignore", divide="ignore"):
                    _, se = jackknife(lambda drop: self._kernel(key, k0, b, drop), S.G)
                v = float(np.sum(se ** 2))
                var.append(v if np.isfinite(v) else math.inf)
            self.beta[key] = 1.0 if var[1] < var[0] else 0.0
        wv = S.w * S.v
        self.ess_prior = float(wv.sum() ** 2 / np.sum(wv ** 2))

    def _kernel(self, key, k0, beta, drop):
        plain = self.J.mean(key, drop)
        if beta == 0.0:
            return plain
        return plain - beta * (self.J.ratio("v" + key, "v", drop) - k0)

    def K(self, drop=None):
        return self.g_a * self._kernel("PP", self.k_ref, self.beta["PP"], drop)

    def Ks(self, drop=None):
        return self.g_a * self._kernel("SP", self.ks_ref, self.beta["SP"], drop)

    def H(self, drop=None, K=None):
        J, P = self.J, self.y.size
        K = self.K(drop) if K is None else K
        m = J.mean("sP", drop)
        cov = J.mean("s2PP", drop) - np.outer(m, m)
        H = self.kappa * np.eye(P) + K + self.g_a * self.c * cov
        return 0.5 * (H + H.T)

    def Jstar(self, drop=None, Ks=None):
        J = self.J
        Ks = self.Ks(drop) if Ks is None else Ks
        cov = J.mean("s2SP", drop) - np.outer(J.mean("sS", drop), J.mean("sP", drop))
        return Ks + self.g_a * self.c * cov

    # -- tree level ---------------------------------------------------------------
    def tree_step(self, drop=None):
        K = self.K(drop)
        r = self.y - (K + self.kappa * np.eye(self.y.size)) @ self.tbar
        return {"r": r, "delta": np.linalg.solve(self.H(drop, K), r)}

    def tree_outputs(self, drop=None):
        K, Ks = self.K(drop), self.Ks(drop)
        t = self.tbar
        r = self.y - K @ t - self.kappa * t
        delta = np.linalg.solve(self.H(drop, K), r)
        train = self.y - self.kappa * (t + delta)
        test = Ks @ t + self.Jstar(drop, Ks) @ delta
        SW = self.S.geom.weight_cov(self.J.mean("ZZ", drop))
        return {"train": train, "test": test, "r": r, "delta": delta,
                "Q": self.g_a * (1.0 + self.c * self.J.mean("s2", drop)),
                **_weight_summary(SW, self.problem)}

    # -- one loop -----------------------------------------------------------------
    def loop_setup(self, drop=None):
        """Per-sample pieces of the one loop at ``M = H⁻¹`` of the (delete-one) estimate.

        ``M`` is re-estimated for every jackknife replica (the loop methods call this with
        their ``drop``), so its Monte Carlo error is part of the reported SE."""
        if getattr(self, "_loop_drop", "unset") == drop:
            return
        S, J = self.S, self.J
        self.M = np.linalg.inv(self.H(drop))
        self.M = 0.5 * (self.M + self.M.T)
        m = J.mean("sP", drop)
        self.Mm = self.M @ m
        Phi, Phis, s = S.Phi, S.Phis, S.s
        q = np.einsum("ij,jk,ik->i", Phi, self.M, Phi)
        rho = Phi @ self.Mm
        J.add("q", q)
        J.add("sq", s * q)
        J.add("s2q", s * s * q)
        J.add("qsP", (q * s)[:, None] * Phi)
        J.add("s3qP", (q * s ** 3)[:, None] * Phi)
        J.add("rhoP", rho[:, None] * Phi)
        J.add("s2rhoP", (rho * s * s)[:, None] * Phi)
        J.add("srho", s * rho)
        if "SP" in J._sums:
            J.add("sqS", (s * q)[:, None] * Phis)
            J.add("s3qS", (q * s ** 3)[:, None] * Phis)
        self._loop_drop = drop

    def loop_gradient(self, drop=None):
        """``∂_t̄ ½ log det H`` (see the module docstring)."""
        self.loop_setup(drop)
        J, g_a, c = self.J, self.g_a, self.c
        b = g_a * c
        E = lambda k: J.mean(k, drop)
        sP = E("sP")
        cov_q = E("qsP") - E("q") * sP
        cov_s2q = E("s3qP") - E("s2q") * sP
        cov_srho = E("s2rhoP") - E("srho") * sP
        return 0.5 * (g_a * c * cov_q
                      + b * (2 * E("qsP") + c * cov_s2q - 2 * E("rhoP") - 2 * c * cov_srho))

    def loop_step(self, drop=None):
        K = self.K(drop)
        t = self.tbar
        grad = self.y - self.kappa * t - K @ t + self.loop_gradient(drop) / self.chi
        return {"grad": grad, "delta": np.linalg.solve(self.H(drop, K), grad)}

    def loop_test(self, drop=None, Ks=None):
        self.loop_setup(drop)
        J, g_a, c = self.J, self.g_a, self.c
        a = g_a / self.N
        E = lambda k: J.mean(k, drop)
        Ks = self.Ks(drop) if Ks is None else Ks
        m = E("sP")
        N0 = Ks @ self.tbar
        mMm = float(m @ self.Mm)
        s2SP = E("s2SP")
        return (N0 - 1.5 * g_a * a * E("sqS") - 0.5 * g_a * a * c * E("s3qS")
                + N0 * (0.5 * a * E("q") + 0.5 * a * c * E("s2q") - a * c * mMm)
                + a * Ks @ self.Mm + a * c * g_a * s2SP @ self.Mm)

    def loop_outputs(self, drop=None):
        Ks = self.Ks(drop)
        t = self.tbar
        st = self.loop_step(drop)
        delta = st["delta"]
        jac = getattr(self, "loop_jacobians", None)
        if jac is not None:
            # H is only the tree-level Jacobian of the loop's stationarity condition; with
            # the measured Jacobians (finite differences on a fixed IS set) the error of
            # the replica's saddle is propagated exactly to first order
            Jg, Jt = jac
            delta = -np.linalg.solve(Jg, st["grad"])
            train = self.y - self.kappa * (t + delta)
            test = self.loop_test(drop, Ks) + Jt @ delta
        else:
            train = self.y - self.kappa * (t + delta)
            test = self.loop_test(drop, Ks) + self.Jstar(drop, Ks) @ delta
        SW = self.S.geom.weight_cov(self.J.mean("ZZ", drop))
        return {"train": train, "test": test, "r": st["grad"], "delta": delta,
                "Q": self.g_a * (1.0 + self.c * self.J.mean("s2", drop)),
                **_weight_summary(SW, self.problem)}

    # -- predictive variance (GP with the adapted kernels) ----------------------------
    def predictive_variance(self, Zs_sq: np.ndarray) -> np.ndarray:
        K, Ks = self.K(), self.Ks()
        A = K + self.kappa * np.eye(self.y.size)
        quad = np.einsum("ij,ji->i", Ks, np.linalg.solve(A, Ks.T))
        return np.maximum(self.g_a * Zs_sq - quad, 0.0) / self.chi


def _weight_summary(SW: np.ndarray, problem: Problem) -> dict:
    evals, evecs = np.linalg.eigh(SW)
    top = evecs[:, -1]
    d = problem.data.d
    out = {"SW": SW, "lam_top": evals[-1],
           "excess": evals[-1] / (problem.network.g_w / d) - 1.0}
    teacher = problem.data.teacher
    if teacher is not None:
        out["teacher_overlap"] = abs(top @ teacher) / np.linalg.norm(teacher)
    return out


def reweight(S: _Samples, sampler: TiltedSampler, tbar_new: np.ndarray, c: float) -> tuple:
    """Importance weights taking samples of ``p_t̄`` to ``p_t̄'`` and their relative ESS."""
    s_new = S.Phi @ tbar_new
    logw = 0.5 * c * (s_new ** 2 - S.s ** 2)
    w = np.exp(logw - logw.max())
    w /= w.mean()
    return w, float(w.sum() ** 2 / np.sum(w ** 2) / w.size)


# --------------------------------------------------------------------------- weak tilt: IS
class _GaussianIS:
    """A fixed, large sample set from a Gaussian proposal ``q = N(0, Σ_q)`` close to the
    tilted measure, importance-weighted to ``p_t̄`` (THEORY §6: "in standard scaling the
    tilt is weak; there, prior samples reweighted with a large sample set were adequate").

    ``Σ_q`` is (a slightly inflated) tilted second moment from the MCMC chains, so the
    weights ``ρ = p_t̄/q`` stay near 1: the ESS fraction is monitored and the caller falls
    back to MCMC below ``is_min_ess`` (this is not the trap of §6: there the proposal is
    the prior and the ESS is a few percent).  Variance reduction, both exact:

    - randomised quasi-Monte Carlo: each group is an independently scrambled Sobol
      sequence mapped to ``N(0, Σ_q)``, so the groups are independent replicas and the
      jackknife over them is the theory's own Monte Carlo error;
    - control variate: the kernels of ``q`` are analytic (the NNGP formulas with
      covariance ``A Σ_q Aᵀ``), so ``E_t̄[φφᵀ] = k_q + Ê[(ρ̃ − 1) φφᵀ]`` (β = 1), whose
      error vanishes as ``ρ → 1``.
    Only zero-mean proposals: the measure of an odd φ is symmetric, and the analytic ReLU
    kernel needs zero mean too (a ReLU tilt far from symmetric shows up as a low ESS).
    """

    def __init__(self, geom, Sig: np.ndarray, n: int, groups: int, rng: np.random.Generator,
                 qmc_: bool = True):
        from scipy.special import ndtri
        from scipy.stats import qmc
        from ..kernels import _kernel_from_cov
        m = geom.m
        self.geom = geom
        Sig = 0.5 * (Sig + Sig.T)
        self.Sig = Sig
        L = np.linalg.cholesky(Sig)
        per = max(2, 1 << int(round(math.log2(max(n // groups, 2)))))
        U = np.empty((groups, per, m))
        for k in range(groups):
            if qmc_:
                sob = qmc.Sobol(m, scramble=True, bits=30, seed=int(rng.integers(2 ** 63)))
                # the points lie on the grid j/2³⁰, 0 included (ndtri(0) = −inf: seen in
                # about one set in 400); the centre of each cell keeps the net and is inside
                U[k] = ndtri(sob.random(per) + 2.0 ** -31)
            else:
                U[k] = rng.standard_normal((per, m))
        self.U = U
        self.Z = U @ L.T
        Zf = self.Z.reshape(-1, m)
        # log q(z) − log N(z; 0, I), up to a constant: the prior part of ρ
        self.log_prior_over_q = -0.5 * np.sum(Zf * Zf, axis=1) + 0.5 * np.sum(
            U.reshape(-1, m) ** 2, axis=1)
        C = geom.A @ Sig @ geom.A.T
        dC = np.diag(C)
        Cs = geom.As @ Sig @ geom.A.T
        dCs = np.einsum("ij,jk,ik->i", geom.As, Sig, geom.As) + geom.v_star
        self.kernels = (_kernel_from_cov(geom.activation, C, dC, dC),
                        _kernel_from_cov(geom.activation, Cs, dCs, dC))
        self.groups = groups
        self.n = Zf.shape[0]
        self._Phi = None

    def weights(self, tbar: np.ndarray, c: float):
        """``ρ`` (mean 1) at ``t̄`` and its ESS fraction."""
        if self._Phi is None:
            self._Phi = self.geom.phi(self.Z.reshape(-1, self.geom.m))
        s = self._Phi @ tbar
        lr = self.log_prior_over_q + 0.5 * c * s * s
        w = np.exp(lr - lr.max())
        w /= w.mean()
        return w, float(1.0 / np.mean(w * w))

    def subset(self, k: int) -> "_GaussianIS":
        """The first ``k`` groups (a smaller, still fixed, set)."""
        sub = object.__new__(_GaussianIS)
        sub.__dict__.update(self.__dict__)
        sub.Z, sub.U, sub.groups = self.Z[:k], self.U[:k], k
        per = self.Z.shape[1]
        sub.n = k * per
        sub.log_prior_over_q = self.log_prior_over_q[:k * per]
        sub._Phi = None if self._Phi is None else self._Phi[:k * per]
        return sub

    def samples(self, tbar: np.ndarray, c: float, test: bool) -> tuple:
        w, ess = self.weights(tbar, c)
        S = _Samples(self, self.Z, tbar, c, self.groups, weights=w, test=test,
                     ref_v=1.0 / np.maximum(w, 1e-300), ref_kernels=self.kernels)
        return S, ess


def _is_proposal_cov(Z: np.ndarray, w: np.ndarray | None, inflate: float) -> np.ndarray:
    """Inflated second moment ``E[z zᵀ]`` of (weighted) samples (zero-mean proposal)."""
    Z = Z.reshape(-1, Z.shape[-1])
    w = np.ones(Z.shape[0]) if w is None else w
    M2 = (Z * w[:, None]).T @ Z / w.sum()
    return inflate * 0.5 * (M2 + M2.T)


def _is_iterate(problem, sp, prop, tbar, o, loop, callback, log, stage, check):
    """Newton on ONE fixed IS set (a deterministic map): returns (t̄, converged, ess).

    ``check(t̄)`` raises MSAError where the tilted measure does not exist (ReLU, §6):
    importance weights would still be finite there, so existence is checked at every
    iterate and a step outside the region ends the IS attempt (MCMC then decides)."""
    net = problem.network
    c = _c(problem)
    ynorm = max(float(np.linalg.norm(problem.data.y_train)), 1e-300)
    beta = {"PP": 1.0, "SP": 1.0}
    ess_min = 1.0
    last = math.inf
    for it in range(1, o["is_maxiter"] + 1):
        S, ess = prop.samples(tbar, c, test=False)
        ess_min = min(ess_min, ess)
        if ess < o["is_min_ess"]:
            return tbar, False, ess
        est = _Estimator(problem, sp, S, full=False, beta=beta)
        if loop:
            est.loop_setup()
            st = est.loop_step()
            r = st["grad"]
        else:
            st = est.tree_step()
            r = st["r"]
        delta = st["delta"]
        step = float(np.linalg.norm(delta))
        rec = IterationRecord(stage, net.chi, len(log) + 1, float(np.linalg.norm(r)) / ynorm,
                              step=step, damping=1.0)
        log.append(rec)
        if callback:
            callback(rec)
        if not np.all(np.isfinite(delta)):
            return tbar, False, ess
        try:
            check(tbar + delta)
        except NotNormalisable:
            return tbar, False, 0.0
        tbar = tbar + delta
        # converged to round-off of the fixed-set map (its MC error is far larger)
        if step <= 1e-10 * max(1.0, float(np.linalg.norm(tbar))) or (step >= last and
                                                                       step < 1e-7):
            return tbar, True, ess_min
        last = step
    return tbar, False, ess_min


def _loop_jacobians(problem, sp, prop, tbar, c):
    """Central finite differences, on a fixed IS set (a smooth deterministic map), of the
    one loop's stationarity condition and test mean with respect to t̄: (P×P, P*×P)."""
    P = tbar.size
    eps = 1e-4 * max(1.0, float(np.max(np.abs(tbar))))
    beta = {"PP": 1.0, "SP": 1.0}

    def at(t):
        S, _ = prop.samples(t, c, test=True)
        e = _Estimator(problem, sp, S, beta=beta)
        return e.loop_step()["grad"], e.loop_test()

    Jg, Jt = np.empty((P, P)), None
    for k in range(P):
        e_k = np.zeros(P)
        e_k[k] = eps
        gp, tp = at(tbar + e_k)
        gm, tm = at(tbar - e_k)
        Jg[:, k] = (gp - gm) / (2 * eps)
        if Jt is None:
            Jt = np.empty((tp.size, P))
        Jt[:, k] = (tp - tm) / (2 * eps)
    return Jg, Jt


def _is_hopeless(geom, Z: np.ndarray, tbar: np.ndarray, c: float, o: dict) -> bool:
    """A cheap look before the Gaussian-IS attempt: a proposal fitted to the chains'
    current states and 4096 points of it.  Where even that ESS fraction is below half of
    ``is_min_ess`` (a mean-field tilt: typically ≈ 0), the attempt — a full final MCMC
    sample and 2¹⁸ weighted points — cannot succeed (it cost 7 s of a 120 s solve at
    d = 50).  The look has its own generator, so it leaves the solve's stream alone."""
    if Z.shape[0] < 4 * Z.shape[1]:
        return False
    look = _GaussianIS(geom, _is_proposal_cov(Z, None, o["is_inflate"]), 4096, 16,
                       np.random.default_rng(0), o["is_qmc"])
    return look.weights(tbar, c)[1] < 0.5 * o["is_min_ess"]


def _is_solve(problem, sp, st, o, callback, loop, tbar_start):
    """The saddle (tree or one loop) on a Gaussian-IS set, its outputs with jackknife
    errors, and the residual on a FRESH independent set.  ``None`` when the importance
    weights' ESS fraction is below ``is_min_ess`` (the caller then uses MCMC)."""
    c = _c(problem)
    geom = st.sampler.geom
    stage = ("one-loop" if loop else "tree") + "-is"
    if _is_hopeless(geom, st.sampler.Z, tbar_start, c, o):
        return None
    Z = st.sampler.sample(tbar_start, c, o["final_draws"], o["thin"], o["final_burn_in"])
    Sig = _is_proposal_cov(Z, None, o["is_inflate"])
    tbar = np.array(tbar_start, dtype=float)
    ess = 0.0
    for rnd in range(2):   # refit the proposal once at the solution
        prop = _GaussianIS(geom, Sig, o["is_samples"], o["groups"], st.sampler.rng, o["is_qmc"])
        if prop.weights(tbar, c)[1] < o["is_min_ess"]:
            return None   # a strong tilt (mean field): weights underflow, nothing to solve on
        chk = lambda t: st.sampler.check(t, c)   # noqa: E731
        # converge on a quarter of the set first (cheap), then polish on all of it
        tbar, conv, ess = _is_iterate(problem, sp, prop.subset(max(1, o["groups"] // 4)), tbar,
                                      o, loop, callback, st.log, stage, chk)
        if ess < o["is_min_ess"] or not conv:
            return None
        tbar, conv, ess = _is_iterate(problem, sp, prop, tbar, o, loop, callback, st.log,
                                      stage, chk)
        if ess < o["is_min_ess"] or not conv:
            return None
        w, _ = prop.weights(tbar, c)
        Sig = _is_proposal_cov(prop.Z, w, o["is_inflate"])
    # outputs on the set the saddle was solved on (the jackknife propagates its error
    # through t̄ to first order: δ = H⁻¹ r of each delete-one-group replica)
    S, ess = prop.samples(tbar, c, test=True)
    est = _Estimator(problem, sp, S, beta={"PP": 1.0, "SP": 1.0})
    reps = {"train": None, "test": None}
    if loop:
        est.loop_jacobians = _loop_jacobians(problem, sp, prop.subset(1),
                                              tbar, c)
        est.loop_setup()
        full, se = jackknife(est.loop_outputs, o["groups"], reps)
    else:
        full, se = jackknife(est.tree_outputs, o["groups"], reps)
    Zf = S.Z
    phs = geom.phi_star_sq(Zf)
    var = est.predictive_variance((phs * S.w[:, None]).sum(axis=0) / S.w.sum())
    # the self-consistency residual on a fresh, independent sample set
    fresh = _GaussianIS(geom, Sig, o["is_samples"], o["groups"], st.sampler.rng, o["is_qmc"])
    Sf, ess_f = fresh.samples(tbar, c, test=False)
    ef = _Estimator(problem, sp, Sf, full=False, beta={"PP": 1.0})
    if loop:
        ef.loop_setup()
        ff, fse = jackknife(ef.loop_step, o["groups"])
        rf, rfse = ff["grad"], fse["grad"]
    else:
        ff, fse = jackknife(ef.tree_step, o["groups"])
        rf, rfse = ff["r"], fse["r"]
    st.tbar = tbar
    st.sampler.check(tbar, c)      # records the ReLU existence bracket at the saddle
    # r_fresh(t̄*) ≈ e_fresh − e_fixed: the solved-on set's own error (its jackknife SE of
    # r at t̄*) enters the fresh residual as much as the fresh set's does
    info = {"estimator": "gaussian-is", "is_ess_fraction": float(min(ess, ess_f)),
            "is_samples": int(prop.n), "fresh_r": rf, "fresh_r_se": np.hypot(rfse, se["r"]),
            "train_mean_jackknife": reps["train"], "test_mean_jackknife": reps["test"]}
    return est, full, se, var, info


# --------------------------------------------------------------------------- the solver
@dataclass
class _State:
    sampler: TiltedSampler
    tbar: np.ndarray
    log: list
    tau: float = 0.0      # autocorrelation time of s² (MALA steps) at the last iterate
    final_length: tuple = (0, 0)   # (draws, thin) the last final run kept


def _c(problem: Problem) -> float:
    net = problem.network
    return net.g_a * net.chi / net.N


def _shrink_into_existence(sampler: TiltedSampler, tbar: np.ndarray, c: float) -> np.ndarray:
    """A t̄ outside the region where the (ReLU) measure exists, shrunk towards the NNGP
    point t̄ = 0 until it is inside (c grows with χ; a warm start or a prediction from a
    smaller χ can lie outside)."""
    for _ in range(60):
        try:
            sampler.check(tbar, c)
            return tbar
        except NotNormalisable:
            tbar = 0.5 * tbar
    return tbar


# a step whose residual grows beyond this factor (plus 3σ of Monte Carlo noise) is taken
# back and halved: Newton from far away, on a noisy Jacobian, can throw t̄ onto a branch
# from which it never returns (measured: the mean-field erf case diverged for 2 seeds of 3)
BACKTRACK_GROWTH = 1.5
MIN_DAMPING = 1.0 / 64
# the anneal starts at the χ where c·Var_prior(s) at the NNGP point is this (or at χ = 1)
WEAK_TILT = 0.5


def _iterate(problem: Problem, sp: Spectral, st: _State, o: dict, draws: int,
             maxiter: int, min_iter: int, stage: str, callback: Callback,
             loop: bool = False, burn_in: int | None = None):
    """Damped stochastic Newton at one χ until the step is consistent with MC noise.

    A step after which the residual grew beyond noise is taken back and halved
    (backtracking on the residual measured at the next iterate's fresh samples).
    Returns the Newton targets ``t̄ + δ`` of the accepted iterations (for averaging),
    whether the stopping test was met, and the Monte Carlo noise of the last residual.
    """
    net = problem.network
    c = _c(problem)
    ynorm = max(float(np.linalg.norm(problem.data.y_train)), 1e-300)
    targets = []
    st.tbar = _shrink_into_existence(st.sampler, st.tbar, c)
    first = None
    prev = None          # (t̄, δ, α, residual, noise) of the last step taken
    for it in range(1, maxiter + 1):
        # the chains must follow t̄ before they are measured: a burn-in shorter than the
        # autocorrelation time of the tilt leaves K lagging behind t̄, and Newton on a
        # lagging K stalls (measured: erf d = 50, τ ≈ 140 MALA steps against 30)
        burn = max(o["burn_in"] if burn_in is None else burn_in,
                   min(math.ceil(2.0 * st.tau), o["max_burn_in"]))
        kept, thin = _kept(st.tau, draws, o["thin"])
        try:
            Z = st.sampler.sample(st.tbar, c, kept, thin, burn)
        except NotNormalisable:
            # the bound is searched for anew at every call (from the chains' states): an
            # iterate accepted next to it can be found beyond it later
            raise MSAError(_beyond_bound(problem, stage, loop,
                                         "an iterate lies beyond")) from None
        S = _Samples(st.sampler, Z, st.tbar, c, o["groups"], test=False)
        st.tau = thin * pooled_autocorr_time(S.s.reshape(Z.shape[0], -1) ** 2)
        est = _Estimator(problem, sp, S, full=False)
        if loop:
            est.loop_setup()
            full, se = jackknife(est.loop_step, o["groups"])
            r, rse = full["grad"], se["grad"]
        else:
            full, se = jackknife(est.tree_step, o["groups"])
            r, rse = full["r"], se["r"]
        delta, dse = full["delta"], se["delta"]
        res = float(np.linalg.norm(r)) / ynorm
        noise = residual_noise(problem, rse)
        if (prev is not None and np.isfinite(res)
                and res > BACKTRACK_GROWTH * prev[3] + 3.0 * max(noise, prev[4])):
            alpha = 0.5 * prev[2]
            rec = IterationRecord(stage, net.chi, len(st.log) + 1, res,
                                  step=float(alpha * np.linalg.norm(prev[1])), damping=alpha)
            st.log.append(rec)
            if callback:
                callback(rec)
            if alpha < MIN_DAMPING:
                raise MSAError(
                    f"the {stage} iteration cannot reduce its residual at chi = "
                    f"{net.chi:.4g} (residual {prev[3]:.3g}, every shorter step grew it): the "
                    "tilted measure changes faster than its samples resolve; increase kappa "
                    "or use a finer chi grid")
            st.tbar = _shrink_into_existence(st.sampler, prev[0] + alpha * prev[1], c)
            prev = (prev[0], prev[1], alpha, prev[3], prev[4])
            continue
        z2 = _mean_z2(delta, dse)
        targets.append(st.tbar + delta)
        # after a backtrack the damping recovers by doubling, not in one jump
        alpha = o["damping"] if prev is None else min(o["damping"], 2.0 * prev[2])
        new = None
        while alpha > 1e-3:
            trial = st.tbar + alpha * delta
            try:
                st.sampler.check(trial, c)
                new = trial
                break
            except NotNormalisable:
                alpha *= 0.5
        rec = IterationRecord(stage, net.chi, len(st.log) + 1, res,
                              step=float(alpha * np.linalg.norm(delta)), damping=alpha)
        st.log.append(rec)
        if callback:
            callback(rec)
        if new is None:
            raise MSAError(_beyond_bound(problem, stage, loop,
                                         "no damped step keeps it within"))
        first = rec.residual if first is None else first
        if rec.residual > 50 * max(first, 1e-3) or not np.all(np.isfinite(delta)):
            raise MSAError(
                f"the {stage} iteration diverged at chi = {net.chi:.4g} (residual "
                f"{rec.residual:.3g}): the tilted measure is close to non-normalisable or "
                "its samples do not resolve it; increase kappa or use a finer chi grid")
        # done: the step is consistent with noise, the noise itself is small (a noisy
        # estimate makes any step look consistent with it), and so is the residual (at
        # the final gate's bound): at d = 50 a Jacobian estimated from lagging chains
        # gave insignificant steps while the residual grew to |y| (seed 4: a stage
        # "converged" at residual 1.08 |y|, and the solve failed at the target)
        rz2 = _mean_z2(r, rse)
        done = (it >= min_iter and z2 < o["stop_z2"] and noise <= o["stage_precision"]
                and rz2 < RESIDUAL_Z2_MAX)
        prev = (st.tbar, delta, alpha, res, noise)
        st.tbar = new
        if done:
            return targets, True, noise
    return targets, False, noise


def _beyond_bound(problem: Problem, stage: str, loop: bool, what: str) -> str:
    """The one-line reason of a saddle that the tilted measure's existence bound stops
    (ReLU's, or the linear measure's: THEORY §6)."""
    act = "ReLU" if problem.network.activation == "relu" else problem.network.activation
    return (f"the {stage} iteration at chi = {problem.network.chi:.4g}: {what} the {act} "
            "tilted measure's existence bound (the sampler stops short of it, at c·M = "
            f"{RELU_MARGIN:g}, where its tail along the maximising direction is too heavy "
            "to resolve; THEORY §6); use " + ("the tree level, " if loop else "")
            + "a smaller chi or a larger kappa")


def _pressed_against_bound(sampler: TiltedSampler) -> bool:
    """Whether the last ReLU existence check found the iterate within 5% of the sampler's
    margin: damped steps are then cut by the bound, not by Monte Carlo noise."""
    b = sampler.relu_bound
    return b is not None and b[0] >= 0.95 * RELU_MARGIN


def _mean_z2(x: np.ndarray, se: np.ndarray) -> float:
    """Mean of ``(x/se)²`` over components: the consistency-with-zero statistic of a
    Monte Carlo vector (step, residual) against its standard errors."""
    return float(np.mean((x / np.maximum(se, 1e-300)) ** 2))


def residual_noise(problem: Problem, r_se: np.ndarray) -> float:
    """The expected size of pure Monte Carlo noise in the residual, relative to |y|:
    a saddle can be consistent with zero residual (mean z² ≈ 1) and still be imprecise."""
    y = problem.data.y_train
    return float(np.sqrt(np.sum(np.square(r_se))) / max(np.linalg.norm(y), 1e-300))


def _final(problem: Problem, sp: Spectral, st: _State, o: dict, loop: bool,
           draws: int | None = None, thin: int | None = None):
    c = _c(problem)
    draws, thin = _kept(st.tau, draws or o["final_draws"], thin or o["thin"])
    st.final_length = (draws, thin)
    Z = st.sampler.sample(st.tbar, c, draws, thin, o["final_burn_in"])
    S = _Samples(st.sampler, Z, st.tbar, c, o["groups"])
    est = _Estimator(problem, sp, S)
    reps = {"train": None, "test": None}
    if loop:
        est.loop_setup()
        full, se = jackknife(est.loop_outputs, o["groups"], reps)
    else:
        full, se = jackknife(est.tree_outputs, o["groups"], reps)
    var = est.predictive_variance(st.sampler.geom.phi_star_sq(S.Z).mean(axis=0))
    return est, full, se, var, reps


def _result(theory, problem, sp, st, est, full, se, var, converged, o, seed, t0,
            extra=None) -> TheoryResult:
    y = problem.data.y_train
    extra = dict(extra or {})
    if "fresh_r" in extra:   # IS: the set the saddle was solved on has r = 0 by construction
        r, rse = extra.pop("fresh_r"), extra.pop("fresh_r_se")
    else:
        r, rse = full["r"], se["r"]
    res = float(np.linalg.norm(r) / max(np.linalg.norm(y), 1e-300))
    res_se = float(np.sqrt(np.sum((r * rse) ** 2)) / max(np.linalg.norm(r), 1e-300)
                   / max(np.linalg.norm(y), 1e-300))
    extras = {
        "residual_se": res_se,
        "residual_z2": _mean_z2(r, rse),
        "residual_noise": residual_noise(problem, rse),
        "precision": float(o["precision"]),
        "weight_cov_top_eigenvalue_se": float(se["lam_top"]),
        "weight_cov_excess_se": float(se["excess"]),
        "Q_se": float(se["Q"]),
        "control_variate": dict(est.beta),
        "prior_ess_fraction": est.ess_prior / est.S.Z.shape[0],
        "acceptance": st.sampler.acceptance,
        "samples": int(est.S.Z.shape[0]),
        "chains": st.sampler.chains, "groups": o["groups"],
    }
    if "teacher_overlap" in full:
        extras["weight_cov_teacher_overlap_se"] = float(se["teacher_overlap"])
    if st.sampler.relu_bound is not None:
        extras["relu_tilt_bound"] = st.sampler.relu_bound
    if extra:
        extras.update(extra)
    # a saddle whose fresh-sample residual is far outside its own error bars is not one;
    # nor is one whose error bars are too wide to tell (the precision requirement)
    extras["steps_converged"] = bool(converged)
    converged = bool(extras["residual_z2"] < RESIDUAL_Z2_MAX
                     and extras["residual_noise"] <= o["precision"])
    return TheoryResult(
        theory, problem, full["train"], full["test"], var, full["SW"], est.K(), st.tbar.copy(),
        Q=float(full["Q"]), log_evidence=None, train_mean_se=se["train"],
        test_mean_se=se["test"], converged=converged, residual=res, log=tuple(st.log),
        wall_time=time.perf_counter() - t0, seed=seed, extras=extras)


def _anneal_tree(problem, sp, st, o, callback, chi_from):
    """The tree saddle along a geometric χ grid from ``chi_from`` up to (not at) the target.

    Each stage iterates until its Newton step is consistent with noise (at most
    ``anneal_maxiter``); a stage that does not get there is undone and its χ step halved
    (down to a ratio of 1 + 1/16).  Between stages t̄ is extrapolated linearly in log χ
    from the last two saddles, so that a stage starts near its saddle rather than at the
    last one (mean-field erf case: first residuals of a stage were 2–5 |y| without).
    """
    log_chi, log_target = math.log(chi_from), math.log(problem.network.chi)
    if abs(log_target - log_chi) < 1e-12:
        return
    sign = 1.0 if log_target > log_chi else -1.0
    hmax = math.log(o["anneal_factor"])
    hmin = math.log(1.0 + 1.0 / 16)
    h = hmax
    # the first stage sits at chi_from itself (the NNGP point's own saddle)
    _iterate(problem.with_chi(chi_from), sp, st, o, o["draws"], o["anneal_maxiter"], 1,
             "tree", callback)   # (an unresolved first stage is followed by smaller ones)
    path = [(log_chi, st.tbar.copy())]
    while True:
        rest = abs(log_target - log_chi)
        # split the rest evenly into steps of at most h (the geometric grid of solve)
        step = rest / max(1, math.ceil(rest / h - 1e-9))
        nxt = log_target if step >= rest - 1e-12 else log_chi + sign * step
        snap = (st.tbar.copy(), st.sampler.snapshot())
        st.tbar = _predict(path, nxt, st.tbar)
        if nxt == log_target:
            return                          # the target's own iterations follow
        try:
            _, ok, noise = _iterate(problem.with_chi(math.exp(nxt)), sp, st, o, o["draws"],
                                    o["anneal_maxiter"], 1, "tree", callback)
        except MSAError:   # diverged or could not backtrack: a shorter χ step may not
            ok, noise = False, 0.0
        if not ok and noise > o["stage_precision"] and _grow(st, o):
            # the samples, not the χ step, are the problem: retry it with twice the
            # chains (not at once by the factor the noise asks for, as at the target:
            # a stage's few iterations do not decorrelate 8 clones of each chain, and
            # N = 1000, χ = N failed at χ ≈ 200–320 for seeds 0 and 1 that way)
            st.tbar = snap[0]
            st.sampler.restore(snap[1])
            st.sampler.grow(o["groups"])
            continue
        if not ok and step > hmin:
            st.tbar = snap[0]
            st.sampler.restore(snap[1])
            h = 0.5 * step
            continue
        if not ok and _pressed_against_bound(st.sampler):
            # ReLU: the steps were cut by the existence bound (mean field at small κ:
            # c·M reached 0.98 by χ ≈ 10 on the Hermite task, N = 100); more chains or
            # a finer χ grid do not move it
            raise MSAError(_beyond_bound(problem.with_chi(math.exp(nxt)), "tree", False,
                                         "the iterates press against"))
        if not ok:   # fail fast: going on from an unresolved stage only crawls (measured)
            raise MSAError(
                f"the tree saddle cannot be followed at chi = {math.exp(nxt):.4g}: even a "
                f"χ step of {math.exp(step) - 1:.1%} leaves a residual of "
                f"{st.log[-1].residual:.3g} |y| that the chains' samples do not resolve "
                "(the tilted measure is too strong); increase kappa or use more chains")
        log_chi = nxt
        path.append((log_chi, st.tbar.copy()))
        h = min(hmax, 1.5 * h)             # widen again after a stage that converged


# states kept per autocorrelation time of s²: at d = 50 (τ ≈ 250 MALA steps) an iteration
# kept every second step, and the estimates on them (φ of every state, three P×P
# products) were a quarter of the time at the target χ.  s² is the slowest mode, not the
# only one: other entries of K decorrelate in far fewer steps, and with 8 states per τ
# (every ≈ 20th–30th step) the saddles of seeds 1 and 2 were visibly less precise (fresh
# residual mean z² 10.9 — a failure — and 4.9, against 1.6 for seed 0); with 32 (every
# 6th–12th step at τ ≈ 250–400) seeds 0–4 gave 1.6, 1.4, 5.4, 3.6, 1.4, and seeds 2 and 3
# kept at every second step 4.0 and 4.1
KEPT_PER_TAU = 32
MIN_KEPT = 8


def _kept(tau: float, draws: int, thin: int) -> tuple[int, int]:
    """``(draws, thin)`` for a run of at most ``draws·thin`` steps (shorter by less than
    ``f·thin``, f the thinning factor) that keeps a state every ≈ τ/KEPT_PER_TAU steps (a
    multiple of ``thin``) where that is sparser, and at least MIN_KEPT states (or
    ``draws``, if fewer) per chain."""
    f = max(1, int(tau // (KEPT_PER_TAU * thin)))
    f = max(1, min(f, draws // MIN_KEPT))
    return draws // f, thin * f


def _refined_length(o: dict, chains: int, k: int) -> tuple[int, int]:
    """``(draws, thin)`` of a final run ``k`` times as long as the default one.  The
    kept states are bounded by ``max_samples`` (memory: a state keeps P values of φ);
    where that binds, the run keeps every ``f``-th state instead, at the same length:
    the tilt's states are correlated over ≈ τ MALA steps (τ ≈ 140 at d = 50), so
    states ``f·thin`` apart carry nearly all of the run's information while
    ``f·thin`` is well below τ."""
    want = o["final_draws"] * k
    keep = max(1, min(want, o["max_samples"] // chains))
    f = math.ceil(want / keep)
    return math.ceil(want / f), o["thin"] * f


def _grow(st: _State, o: dict) -> bool:
    """Whether the chains may double (``max_chains``); the caller grows them."""
    return _growth(st, o, 2.0) > 0


def _growth(st: _State, o: dict, need: float) -> int:
    """The factor by which the chains grow when a sample ``need`` times as large is
    wanted: the smallest power of two at least ``need`` (at least 2), within
    ``max_chains``; 0 when they may not double.  More chains shrink the noise as
    1/√chains however slowly the chains mix (they are independent)."""
    room = o["max_chains"] // st.sampler.chains
    if room < 2:
        return 0
    f = 2
    while f < need and 2 * f <= room:
        f *= 2
    return f


def _predict(path, log_chi, tbar):
    """t̄ at log χ extrapolated linearly from the last two saddles of the path."""
    if len(path) < 2:
        return tbar
    (x0, t0), (x1, t1) = path[-2], path[-1]
    return t1 + (t1 - t0) * (log_chi - x1) / (x1 - x0)


def _start(problem: Problem, sp: Spectral, tbar0, seed, o):
    sampler = TiltedSampler(problem, chains=o["chains"], seed=seed)
    if tbar0 is None:
        net = problem.network
        tbar = gp_mean(sp, net.g_a, net.kappa)[2]
        # the anneal starts where the tilt at the NNGP point is weak: c·Var_prior(s) at
        # most WEAK_TILT, with Var_prior(s) = t̄ᵀ k t̄.  Usually χ = 1; with small κ or many
        # points t̄ is large and χ = 1 is already far from the NNGP (measured, erf d = 50,
        # P = 100, κ = 0.05: c·Var(s) = 54 at χ = 1, first residual 26 |y|)
        strength = (net.g_a / net.N) * float(tbar @ sp.k @ tbar)
        chi0 = min(1.0, net.chi, WEAK_TILT / strength if strength > 0 else 1.0)
        return _State(sampler, tbar, []), chi0, False
    tbar = np.array(tbar0, dtype=float)
    c = _c(problem)
    tbar = _shrink_into_existence(sampler, tbar, c)   # a warm start outside the ReLU region
    # burn the chains in on the way from the prior to the warm start's tilt
    for f in (0.25, 0.5, 0.75):
        sampler.sample(f * tbar, c, 4, 1, o["burn_in"])
    return _State(sampler, tbar, []), problem.network.chi, True


def _solve_saddle(problem, sp, st, o, callback, loop=False, grown=False):
    """Iterate at the target χ, then average the last Newton targets at full sample size.
    ``grown``: the chains were just cloned from a saddle solved at this χ, so the short
    iterations that bring t̄ near the saddle are skipped (at d = 50 they were 2 of the
    re-solve's 7 iterations)."""
    stage = "one-loop" if loop else "tree"
    if not grown:
        _iterate(problem, sp, st, o, o["draws"], o["maxiter"], 2, stage, callback, loop=loop)
    targets, conv, _ = _iterate(problem, sp, st, o, o["final_draws"],
                                max(o["average"], 2) + 4, max(o["average"], 2), stage,
                                callback, loop=loop, burn_in=o["final_burn_in"])
    k = min(len(targets), o["average"])
    tbar = np.mean(targets[-k:], axis=0)
    try:     # the targets are undamped Newton steps: for ReLU they can leave the region
        st.sampler.check(tbar, _c(problem))
    except NotNormalisable:
        raise MSAError(_beyond_bound(problem, stage, loop,
                                     "the average of its last Newton targets lies beyond")
                       ) from None
    st.tbar = tbar
    return conv


def _theory(name, problem, sp, callback, tbar0, seed, options):
    t0 = time.perf_counter()
    o = merged_options(options)  # unknown keys, types, ranges refused (theory.options)
    sp = sp or Spectral.of(problem)
    st, chi_from, warm = _start(problem, sp, tbar0, seed, o)
    loop = name == "one-loop"
    conv = None
    if not warm:
        _anneal_tree(problem, sp, st, o, callback, chi_from)
    # at the target χ the measure stays put: a prior proposal that is all but never
    # accepted may be made less often (not while annealing: tilted.IND_MIN_ACCEPT)
    st.sampler.thin_independence = True
    if not warm and (loop or o["estimator"] != "mcmc"):
        conv = _solve_saddle(problem, sp, st, o, callback)
    if o["estimator"] != "mcmc":
        # weak tilt (standard scaling): a large Gaussian-IS set beats the chains' MC error
        # by far; where its ESS fraction is too low (mean field), fall back to MCMC
        out = _is_solve(problem, sp, st, o, callback, loop, st.tbar)
        if out is not None:
            est, full, se, var, info = out
            return _result(name, problem, sp, st, est, full, se, var, True, o, seed, t0,
                           extra=info)
        if o["estimator"] == "is":
            raise MSAError("importance sampling of the tilted measure has an ESS fraction "
                           f"below {o['is_min_ess']}: the tilt is too strong; use MCMC")
    if loop or conv is None:   # the MCMC tree saddle, when it was not solved just above
        conv = _solve_saddle(problem, sp, st, o, callback, loop=loop)
    while True:
        est, full, se, var, reps = _final(problem, sp, st, o, loop=loop)
        draws, thin = o["final_draws"], o["thin"]
        noise = residual_noise(problem, se["r"])
        # a final run `refine` times as long cannot meet the precision when the noise
        # needs a larger factor than that even at 1/√length: then the chains grow at
        # once, by that factor (measured, d = 50 from a warm start: 256 → 512 → 1024 →
        # 2048 chains, each level re-solved, 47% of the time on the three levels
        # that could not have met it)
        need = (noise / o["precision"]) ** 2
        jump = _growth(st, o, need) if need > o["refine"] else 0
        if noise > o["precision"] and o["refine"] > 1 and not jump:
            # too noisy to be a usable saddle: a longer final run (noise ∝ 1/√length
            # when the chains mix within it) ...
            k = min(int(o["refine"]), math.ceil(need))
            longer = [k]
            if k < o["refine"] and not _grow(st, o):
                # ... and, where the noise fell more slowly than that (chains that mix
                # slowly) and no more chains are allowed, the longest the options allow
                longer.append(int(o["refine"]))
            for kk in longer:
                length = _refined_length(o, st.sampler.chains, kk)
                if noise <= o["precision"] or length[0] * length[1] <= draws * thin:
                    break
                draws, thin = length
                est, full, se, var, reps = _final(problem, sp, st, o, loop, draws, thin)
                noise = residual_noise(problem, se["r"])
        z2 = _mean_z2(full["r"], se["r"])
        if (noise <= o["precision"] and z2 < RESIDUAL_Z2_MAX) or not _grow(st, o):
            break
        # still imprecise or inconsistent: chains that mix slowly are not helped by
        # longer runs nearly as much as by more chains; re-solve with more of them
        st.sampler.grow(o["groups"], jump or _growth(st, o, (noise / o["precision"]) ** 2))
        # the short iterations are skipped only where the saddle was consistent and the
        # chains grow for noise alone
        conv = _solve_saddle(problem, sp, st, o, callback, loop=loop,
                             grown=bool(conv) and z2 < RESIDUAL_Z2_MAX)
    return _result(name, problem, sp, st, est, full, se, var, conv, o, seed, t0,
                   extra={"estimator": "mcmc", "train_mean_jackknife": reps["train"],
                          "test_mean_jackknife": reps["test"],
                          "final_draws": st.final_length[0],
                          "final_thin": st.final_length[1]})


def tree(problem: Problem, sp: Spectral | None = None, callback: Callback = None,
         tbar0: np.ndarray | None = None, seed: int | None = None, **options) -> TheoryResult:
    """MSA tree level for erf/ReLU networks (see the module docstring).

    Without ``tbar0`` the saddle is annealed from the NNGP at χ = 1; with it the chains
    are burnt in at this χ from the warm start.  ``options`` override :data:`.options.DEFAULTS`.
    """
    return _theory("tree", problem, sp, callback, tbar0, seed, options)


def one_loop(problem: Problem, sp: Spectral | None = None, callback: Callback = None,
             tbar0: np.ndarray | None = None, seed: int | None = None,
             **options) -> TheoryResult:
    """MSA one loop for erf/ReLU networks: the saddle of Γ = F + ½ log det H, test-mean
    correction included (see the module docstring).  Without ``tbar0`` the tree saddle
    is annealed first; with it the loop starts from the warm start."""
    return _theory("one-loop", problem, sp, callback, tbar0, seed, options)


# --------------------------------------------------------------------------- diagnostics
def fresh_residual(problem: Problem, tbar: np.ndarray, seed: int = 12345,
                   sp: Spectral | None = None, **options) -> dict:
    """The tree-level self-consistency residual ``r = y − (K(t̄)+κ)t̄`` at a given ``t̄``,
    measured on fresh MCMC samples (chains burnt in from the prior), with its SE."""
    o = merged_options(options)  # unknown keys, types, ranges refused (theory.options)
    sp = sp or Spectral.of(problem)
    st, _, _ = _start(problem, sp, tbar, seed, o)
    c = _c(problem)
    for _ in range(3):   # settle the preconditioner and step size
        st.sampler.sample(st.tbar, c, o["draws"], o["thin"], o["burn_in"])
    Z = st.sampler.sample(st.tbar, c, o["final_draws"], o["thin"], o["final_burn_in"])
    est = _Estimator(problem, sp, _Samples(st.sampler, Z, st.tbar, c, o["groups"]))
    full, se = jackknife(est.tree_step, o["groups"])
    r, rse = full["r"], se["r"]
    y = problem.data.y_train
    return {"residual": float(np.linalg.norm(r) / np.linalg.norm(y)),
            "z2": _mean_z2(r, rse), "r": r, "se": rse}


def prior_importance_tree(problem: Problem, n_samples: int = 50_000, seed: int = 0,
                          maxiter: int = 100, tol: float = 1e-10) -> TheoryResult:
    """THE TRAP of THEORY §6, kept for the test that shows it: the tree level with tilted
    averages from ONE fixed set of prior samples, importance-weighted by the tilt.

    On that fixed set the averages are smooth functions of t̄, so damped Newton (with the
    exact Jacobian of the reweighted map) converges to a solution that is self-consistent
    on its own samples; when the tilt pushes the measure into the prior's tail it is
    wrong, which a fresh sample set exposes (:func:`fresh_residual`).  Annealed along
    the same χ grid as the shipped solver.  Not a shipped theory.
    """
    from . import chi_grid
    t0 = time.perf_counter()
    net, data = problem.network, problem.data
    sp = Spectral.of(problem)
    g = TiltedSampler(problem, chains=1, seed=seed).geom
    Z = np.random.default_rng(seed).standard_normal((n_samples, g.m))
    Phi, Phis = g.phi(Z), g.phi_star(Z)
    y = np.asarray(data.y_train, float)
    I = np.eye(y.size)
    tbar = gp_mean(sp, net.g_a, net.kappa)[2]
    log = []

    def moments(t, cc):
        s = Phi @ t
        lw = 0.5 * cc * s * s
        w = np.exp(lw - lw.max())
        w /= w.sum()
        K = net.g_a * (Phi * w[:, None]).T @ Phi
        m = (Phi * (w * s)[:, None]).sum(axis=0)
        cov = (Phi * (w * s * s)[:, None]).T @ Phi - np.outer(m, m)
        return w, K, K + net.kappa * I + net.g_a * cc * cov, y - (K + net.kappa * I) @ t

    for chi in chi_grid(net.chi):
        cc = net.g_a * chi / net.N
        w, K, H, r = moments(tbar, cc)
        res = float(np.linalg.norm(r) / np.linalg.norm(y))
        for it in range(maxiter):
            if res < tol:
                break
            step = np.linalg.solve(H, r)
            alpha = 1.0
            while alpha > 1e-6:
                w2, K2, H2, r2 = moments(tbar + alpha * step, cc)
                res2 = float(np.linalg.norm(r2) / np.linalg.norm(y))
                if res2 < res:
                    break
                alpha *= 0.5
            if res2 >= res:
                break
            tbar, w, K, H, r, res = tbar + alpha * step, w2, K2, H2, r2, res2
        log.append(IterationRecord("tree-prior-is", float(chi), it + 1, res))
    Ks = net.g_a * (Phis * w[:, None]).T @ Phi
    SW = g.weight_cov((Z * w[:, None]).T @ Z)
    return TheoryResult(
        "tree-prior-is", problem, K @ tbar, Ks @ tbar, np.zeros(data.P_test), SW, K, tbar,
        converged=res < 1e-6, residual=res, log=tuple(log),
        wall_time=time.perf_counter() - t0, seed=seed,
        extras={"ess": float(1.0 / np.sum(w ** 2))})
