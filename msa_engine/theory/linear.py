"""NNGP, kernel rescaling, MSA tree level and one loop (THEORY §3–§5).

``nngp`` and ``rescaling`` work for every activation (the base kernel is the
NNGP kernel without ``g_a``, THEORY §6).  ``tree`` and ``one_loop`` here are
the linear-network forms, where the tilted single-neuron measure is Gaussian.
"""

from __future__ import annotations

import math
import time

import numpy as np
from numpy.linalg import LinAlgError   # the class scipy.linalg raises too

from ..errors import MSAError
from ..problem import Problem
from ..results import Callback, IterationRecord, TheoryResult
from .gp import ScaleMixture, Spectral, gp_log_evidence, gp_mean, gp_variance

# Newton on a smooth residual converges quadratically; 1e-13 relative is a few
# ulps above round-off for well-conditioned P×P solves, and keeps the rescaling
# identity test (tree mean = GP with Q_tree C, to 1e-10) meaningful.
DEFAULT_TOL = 1e-13
DEFAULT_MAXITER = 200


def _isotropic_weight_cov(problem: Problem) -> np.ndarray:
    d = problem.data.d
    return (problem.network.g_w / d) * np.eye(d)


def _nngp_mean_kernel(problem: Problem, sp: Spectral) -> np.ndarray:
    return problem.network.g_a * sp.k


def nngp(problem: Problem, sp: Spectral | None = None, callback: Callback = None,
         **_) -> TheoryResult:
    """The infinite-width posterior: a GP with kernel ``g_a k`` for every χ (THEORY §3)."""
    t0 = time.perf_counter()
    sp = sp or Spectral.of(problem)
    net = problem.network
    train, test, t = gp_mean(sp, net.g_a, net.kappa)
    # one log line: the residual of the linear solve (K + κ) t = y
    y = problem.data.y_train
    residual = float(np.linalg.norm(net.g_a * sp.k @ t + net.kappa * t - y)
                     / max(np.linalg.norm(y), 1e-300))
    rec = IterationRecord("nngp", net.chi, 1, residual)
    if callback:
        callback(rec)
    return TheoryResult(
        "nngp", problem, train, test, gp_variance(sp, net.g_a, net.kappa, net.chi),
        _isotropic_weight_cov(problem), _nngp_mean_kernel(problem, sp), t,
        Q=net.g_a, log_evidence=gp_log_evidence(sp, net.g_a, net.kappa, net.chi),
        residual=residual, log=(rec,), wall_time=time.perf_counter() - t0)


def rescaling(problem: Problem, sp: Spectral | None = None, callback: Callback = None,
              **_) -> TheoryResult:
    """Kernel rescaling: GP with kernel ``Q k``, ``Q`` from the scalar one-loop equation.

    ``Q = g_a / (1 + (g_a/N)[tr(Bk) − χ yᵀBkBy])``, ``B = (Qk + κ)⁻¹``
    (THEORY §5; Li & Sompolinsky, Pacelli et al. at χ = 1).  It is solved as a
    bracketed root, and among several roots the one of highest posterior
    density in ``log q`` is taken.  ``log_evidence`` is the Laplace
    approximation of the ``q`` integral around that root.  The read-in
    weights are isotropic in this view: ``Σ_W = (g_w/d) I``.
    """
    t0 = time.perf_counter()
    sp = sp or Spectral.of(problem)
    net = problem.network
    mix = ScaleMixture(sp, net.N, net.g_a, net.kappa, net.chi)
    Q = mix.modes()[0]
    u = math.log(Q)
    residual = abs(float(mix.scalar_equation(Q)[0])) / net.g_a
    rec = IterationRecord("rescaling", net.chi, 1, residual)
    if callback:
        callback(rec)
    curv = mix.curvature(u)
    log_ev = float(mix.log_density(u)[0]) + 0.5 * math.log(2 * math.pi / -curv) if curv < 0 else None
    train, test, t = gp_mean(sp, Q, net.kappa)
    return TheoryResult(
        "rescaling", problem, train, test, gp_variance(sp, Q, net.kappa, net.chi),
        _isotropic_weight_cov(problem), _nngp_mean_kernel(problem, sp), t,
        Q=Q, log_evidence=log_ev, residual=residual, log=(rec,),
        wall_time=time.perf_counter() - t0)


# ---------------------------------------------------------------------------
# Tree level: the generic self-consistency with the Gaussian tilted measure
# ---------------------------------------------------------------------------

class GaussianTiltedMeasure:
    """The tilted single-neuron measure of a linear network (THEORY §4, §5).

    ``p_t̄(w) ∝ N(w; 0, σ² I) exp((c/2)(t̄·Xw)²)`` with ``σ² = g_w/d`` and
    ``c = g_a χ/N`` is Gaussian, with precision ``I/σ² − c X ᵀt̄ t̄ᵀX``.  Its
    moments give the adapted kernel ``K(t̄) = g_a X Σ_w Xᵀ`` and the tree-level
    Jacobian ``H`` of THEORY §4, through Isserlis' theorem.  It does not know
    the closed-form ``Q`` equation: that is what makes the rescaling identity
    a test.
    """

    def __init__(self, problem: Problem):
        data, net = problem.data, problem.network
        self.X, self.Xs = data.X_train, data.X_test
        self.sigma2 = net.g_w / data.d
        self.g_a = net.g_a
        self.c = net.g_a * net.chi / net.N

    def covariance(self, tbar: np.ndarray) -> np.ndarray:
        """Σ_w = E_t̄[w wᵀ]; raises MSAError if the tilted precision is not positive definite."""
        from scipy.linalg import cho_factor, cho_solve   # on use: scipy costs 0.5 s of startup
        v = self.X.T @ tbar
        prec = np.eye(v.size) / self.sigma2 - self.c * np.outer(v, v)
        try:
            fac = cho_factor(prec, lower=True)
        except LinAlgError:
            raise MSAError(
                "the tilted precision is not positive definite (c·t̄ᵀCt̄ >= 1); "
                "anneal with a finer chi grid") from None
        return cho_solve(fac, np.eye(v.size))

    def covariance_rank_one(self, tbar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Σ_w by Sherman–Morrison, ``σ²I + σ⁴c v vᵀ/(1 − cσ²|v|²)`` with ``v = Xᵀt̄``: O(d²)
        where :meth:`covariance` (a Cholesky solve) is O(d³), 1 s per χ point at d = 2000.
        Returns ``(Σ_w, Σ_w v)``; raises MSAError where the precision is not positive."""
        v = self.X.T @ tbar
        cs = self.c * self.sigma2 * float(v @ v)
        if not cs < 1.0:
            raise MSAError(
                f"the tilted precision is not positive definite (c·s = {cs:.4g} >= 1); "
                "anneal with a finer chi grid")
        a = self.sigma2 ** 2 * self.c / (1.0 - cs)
        S = np.multiply.outer(a * v, v)
        S[np.diag_indices_from(S)] += self.sigma2
        return S, (self.sigma2 + a * float(v @ v)) * v

    def kernel(self, Sigma_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``K(t̄)`` on train points and ``K*(t̄)`` (test × train)."""
        XS = self.X @ Sigma_w
        return self.g_a * XS @ self.X.T, self.g_a * (self.Xs @ Sigma_w) @ self.X.T

    def jacobian(self, K: np.ndarray, tbar: np.ndarray, kappa: float) -> np.ndarray:
        """``H = κ + K + (g_a² χ/N) Cov_t̄((t̄·h)h, (t̄·h)h)`` with Gaussian ``h``."""
        Sh = K / self.g_a
        St = Sh @ tbar
        cov = float(tbar @ St) * Sh + np.outer(St, St)   # Isserlis
        return kappa * np.eye(K.shape[0]) + K + self.g_a * self.c * cov


def _damped_newton(evaluate, x0, newton_step, ynorm: float, chi: float,
                   callback: Callback, tol: float, maxiter: int):
    """Backtracking Newton shared by :func:`solve_tree` and :func:`solve_tree_spectral`.

    ``evaluate(x) -> (state, r)`` raises :class:`MSAError` where the tilted measure does
    not exist; ``newton_step(x, state, r)`` is the full Newton step.  A warm start from a
    smaller χ can lie outside the region where the measure exists (c grows with χ): it is
    shrunk towards the NNGP point x = 0, where the measure is the prior.  Steps are halved
    until the measure exists and the residual falls, so a bad warm start reports failure
    instead of jumping to an unphysical branch.  Returns ``(x, state, residual, log)``.
    """
    x = x0
    for _ in range(60):
        try:
            state, r = evaluate(x)
            break
        except MSAError:
            x = 0.5 * x
    else:  # pragma: no cover - x = 0 is always admissible
        x = np.zeros_like(x0)
        state, r = evaluate(x)
    res = float(np.linalg.norm(r)) / ynorm
    log = []
    for it in range(1, maxiter + 1):
        if res < tol:
            break
        step = newton_step(x, state, r)
        alpha = 1.0
        while True:
            trial = x + alpha * step
            try:
                state_t, r_t = evaluate(trial)
                res_t = float(np.linalg.norm(r_t)) / ynorm
                if res_t < res or res_t < tol:
                    break
            except MSAError:
                pass
            alpha *= 0.5
            if alpha < 1e-10:
                res_t = None
                break
        rec = IterationRecord("tree", chi, it, res if res_t is None else res_t,
                              step=float(alpha * np.linalg.norm(step)), damping=alpha)
        log.append(rec)
        if callback:
            callback(rec)
        if res_t is None:   # no step decreases the residual: round-off floor or failure
            break
        x, state, r, res = trial, state_t, r_t, res_t
    return x, state, res, tuple(log)


def solve_tree(problem: Problem, tbar0: np.ndarray | None = None, callback: Callback = None,
               tol: float = DEFAULT_TOL, maxiter: int = DEFAULT_MAXITER):
    """Solve ``t̄ = (K(t̄) + κI)⁻¹ y`` by damped Newton (:func:`_damped_newton`);
    returns ``(t̄, Σ_w, residual, log)``.

    The Newton matrix is ``H`` of THEORY §4 (the Hessian of ``−F/χ``).
    """
    net, y = problem.network, problem.data.y_train
    meas = GaussianTiltedMeasure(problem)
    kappa = net.kappa
    tbar = np.zeros_like(y) if tbar0 is None else np.array(tbar0, dtype=float)

    def evaluate(t):
        S = meas.covariance(t)
        K, _ = meas.kernel(S)
        return (S, K), K @ t + kappa * t - y

    def newton_step(t, state, r):
        return -np.linalg.solve(meas.jacobian(state[1], t, kappa), r)

    tbar, (S, _), res, log = _damped_newton(evaluate, tbar, newton_step,
                                            max(float(np.linalg.norm(y)), 1e-300), net.chi,
                                            callback, tol, maxiter)
    return tbar, S, res, log


def solve_tree_spectral(problem: Problem, sp: Spectral, tbar0: np.ndarray | None = None,
                        callback: Callback = None, tol: float = DEFAULT_TOL,
                        maxiter: int = DEFAULT_MAXITER):
    """The damped Newton of :func:`solve_tree`, in the eigenbasis of ``C``; O(P) per step.

    With ``u = C t̄``, ``s = t̄ᵀu`` and ``D = 1/(1 − c s)`` the Gaussian tilted kernel is
    ``K(t̄) = g_a (C + c D u uᵀ)`` (Sherman–Morrison on the tilted precision), so the
    residual is ``y − κ t̄ − g_a D u`` and the Newton matrix ``H`` (THEORY §4) is
    diagonal-plus-rank-one there (THEORY §5), as in the one loop.  :func:`solve_tree`
    (P×P kernels, an O(P³) solve per step: 10 s at P = 500) is kept as the independent
    reference it is tested against.  Returns ``(τ = Uᵀt̄, state, residual, log)``.
    """
    net = problem.network
    tau = (np.zeros_like(sp.y_rot) if tbar0 is None
           else sp.U.T @ np.asarray(tbar0, dtype=float))

    def evaluate(tau):
        st = _OneLoopLinear(sp, net, tau)      # MSAError where the tilted measure does not exist
        return st, sp.y_rot - net.kappa * tau - net.g_a * st.D * st.u

    return _damped_newton(evaluate, tau, lambda tau, st, g: st.H_solve(g),
                          max(float(np.linalg.norm(sp.y_rot)), 1e-300), net.chi, callback,
                          tol, maxiter)


def tree(problem: Problem, sp: Spectral | None = None, callback: Callback = None,
         tbar0: np.ndarray | None = None, tol: float = DEFAULT_TOL, kernel: bool = True,
         **_) -> TheoryResult:
    """MSA tree level (saddle point) for a linear network, from a warm start ``tbar0``.

    ``kernel=False`` leaves ``mean_kernel`` ``None`` (everything else the same): a point
    of an annealing path that only warm-starts the next one (:func:`msa_engine.solve`)
    need not write the ``P×P`` kernel, 40 of the 45 ms such a point took at P = 2000.

    Solved in the eigenbasis (:func:`solve_tree_spectral`); the means, ``Σ_w`` and the
    reported ``tilted_residual`` are then evaluated in weight space from the tilted
    covariance ``Σ_w`` (Sherman–Morrison; tested against its Cholesky inverse): the
    residual of the self-consistency ``t̄ = (K(t̄) + κ)⁻¹ y`` of THEORY §4 through X,
    not through the eigenbasis.
    """
    _require_linear(problem, "tree")
    t0 = time.perf_counter()
    sp = sp or Spectral.of(problem)
    net, data = problem.network, problem.data
    tau, st, res, log = solve_tree_spectral(problem, sp, tbar0, callback, tol)
    tbar = sp.U @ tau
    meas = GaussianTiltedMeasure(problem)
    Sigma_w, Sv = meas.covariance_rank_one(tbar)
    train, test = meas.g_a * (data.X_train @ Sv), meas.g_a * (data.X_test @ Sv)
    y = data.y_train
    tilted_res = float(np.linalg.norm(train + net.kappa * tbar - y)
                       / max(float(np.linalg.norm(y)), 1e-300))
    # Convergence is judged on the Newton residual, as for the one loop: near-singular
    # kernels put round-off eigenvalues δλ in the spectral form, which the residual
    # through the tilted covariance sees amplified as g_a δλ/κ (bounded by
    # gp.ROUNDOFF_TOL; 5e-9 with duplicate inputs at κ = 1e-4).  `tilted_residual` is
    # reported, and tested to vanish on regular problems.
    converged = res < max(tol, 1e-9)
    # K = g_a X Σ_w Xᵀ = g_a (C + c D u uᵀ) with u = C t̄ (Sherman–Morrison): O(P²), where
    # the product through Σ_w costs P²d at every point of an annealing path
    kt = sp.k @ tbar
    s = float(tbar @ kt)
    D = 1.0 / (1.0 - meas.c * s)
    K = None
    if kernel:
        K = net.g_a * sp.k
        K += np.multiply.outer((net.g_a * meas.c * D) * kt, kt)
    Q = net.g_a * D
    return TheoryResult(
        "tree", problem, train, test, gp_variance(sp, Q, net.kappa, net.chi),
        Sigma_w, K, tbar, Q=Q, converged=converged, residual=res, log=log,
        wall_time=time.perf_counter() - t0, extras={"tilted_residual": tilted_res})


# ---------------------------------------------------------------------------
# One loop: Γ = F + ½ log det H, in the eigenbasis of C (THEORY §4, §5)
# ---------------------------------------------------------------------------

class _OneLoopLinear:
    """Closed-form pieces of the linear one loop at a point ``τ = Uᵀt̄``.

    With ``u = C t̄``, ``s = t̄ᵀu``, ``D = 1/(1 − c s)``:
    ``H = κ + g_a D C + 2 g_a c D² u uᵀ`` is diagonal-plus-rank-one in the
    eigenbasis of ``C``, so every solve is O(P).
    """

    def __init__(self, sp: Spectral, net, tau: np.ndarray):
        self.sp, self.net, self.tau = sp, net, tau
        lam = sp.lam
        self.c = c = net.g_a * net.chi / net.N
        self.u = lam * tau
        self.s = float(tau @ self.u)
        if not c * self.s < 1.0:
            raise MSAError(
                f"the tilted precision is not positive definite (c·s = {c * self.s:.4g} >= 1); "
                "anneal with a finer chi grid")
        self.D = D = 1.0 / (1.0 - c * self.s)
        self.a = net.kappa + net.g_a * D * lam
        self.w = math.sqrt(2 * net.g_a * c) * D * self.u
        self.wa = self.w / self.a
        self.denom = 1.0 + float(self.w @ self.wa)

    def H_solve(self, r: np.ndarray) -> np.ndarray:
        ra = r / self.a
        return ra - self.wa * (float(self.w @ ra) / self.denom)

    def logdet_H(self) -> float:
        return float(np.sum(np.log(self.a)) + math.log(self.denom))

    def trace_HinvC(self) -> float:
        lam = self.sp.lam
        return float(np.sum(lam / self.a) - np.sum(lam * self.wa ** 2) / self.denom)

    def loop_pieces(self):
        """``H⁻¹u`` and the scalar ``tr(H⁻¹C) + 4cD uᵀH⁻¹u`` shared by Γ' and the observables."""
        Hu = self.H_solve(self.u)
        return Hu, self.trace_HinvC() + 4 * self.c * self.D * float(self.u @ Hu)

    def gradient(self) -> np.ndarray:
        """``∇Γ/χ`` in the eigenbasis."""
        net, sp = self.net, self.sp
        Hu, scal = self.loop_pieces()
        pref = net.g_a ** 2 / net.N * self.D ** 2   # g_a c D²/χ
        return (sp.y_rot - net.kappa * self.tau - net.g_a * self.D * self.u
                + pref * (scal * self.u + 2 * sp.lam * Hu))

    def gamma(self) -> float:
        """Γ(t̄) = F(t̄) + ½ log det H, up to a t̄-independent constant."""
        net = self.net
        F = (net.chi * (float(self.tau @ self.sp.y_rot) - net.kappa * float(self.tau @ self.tau) / 2)
             + (net.N / 2) * math.log(1.0 - self.c * self.s))
        return F + 0.5 * self.logdet_H()


def one_loop_gamma(problem: Problem, tbar: np.ndarray, sp: Spectral | None = None):
    """``(Γ(t̄), ∇Γ(t̄))`` for a linear network, in the original basis (for tests)."""
    sp = sp or Spectral.of(problem)
    st = _OneLoopLinear(sp, problem.network, sp.U.T @ tbar)
    return st.gamma(), problem.network.chi * (sp.U @ st.gradient())


def one_loop(problem: Problem, sp: Spectral | None = None, callback: Callback = None,
             tbar0: np.ndarray | None = None, tol: float = DEFAULT_TOL,
             maxiter: int = DEFAULT_MAXITER, **_) -> TheoryResult:
    """Full MSA one loop for a linear network (THEORY §4, §5).

    Finds the stationary point ``t̄₁`` of ``Γ = F + ½ log det H`` by
    quasi-Newton steps ``t̄ ← t̄ + H⁻¹ ∇Γ/χ`` (``−∇²F = χH``; the loop term's
    Hessian is O(1/N) smaller).  The train mean is ``y − κ t̄₁``.  The test
    mean averages the observable over the Gaussian fluctuations of ``t``
    (covariance ``χH⁻¹``):

        f̄* = g_a D C* t̄₁ − (g_a² D²/N) [2 C* H⁻¹u + (tr(H⁻¹C) + 4cD uᵀH⁻¹u) C* t̄₁]

    (our derivation; with ``C*`` replaced by ``C`` it reproduces ``y − κt̄₁``).
    ``Σ_W`` is the tilted second moment averaged over the same fluctuations.
    ``Q = E[q]`` follows from ``∂Γ/∂g_a`` (the prior of ``q`` depends on
    ``g_a`` alone): ``Q = g_a D − (g_a² D²/N)(tr(H⁻¹C) + 4cD uᵀH⁻¹u)``.  The
    predictive variance is that of the GP with kernel ``Q C``.
    """
    _require_linear(problem, "one-loop")
    t0 = time.perf_counter()
    sp = sp or Spectral.of(problem)
    net, data = problem.network, problem.data
    if tbar0 is None:
        tbar0 = tree(problem, sp, tol=tol).tbar
    tau = sp.U.T @ np.asarray(tbar0, dtype=float)
    ynorm = max(float(np.linalg.norm(sp.y_rot)), 1e-300)
    st = _OneLoopLinear(sp, net, tau)
    g = st.gradient()
    res = float(np.linalg.norm(g)) / ynorm
    log = []
    for it in range(1, maxiter + 1):
        if res < tol:
            break
        step = st.H_solve(g)
        alpha, accepted = 1.0, None
        while alpha >= 1e-10:
            try:
                trial = _OneLoopLinear(sp, net, st.tau + alpha * step)
                g_t = trial.gradient()
                res_t = float(np.linalg.norm(g_t)) / ynorm
                if res_t < res:
                    accepted = (trial, g_t, res_t)
                    break
            except MSAError:
                pass
            alpha *= 0.5
        rec = IterationRecord("one-loop", net.chi, it, res if accepted is None else accepted[2],
                              step=float(alpha * np.linalg.norm(step)), damping=alpha)
        log.append(rec)
        if callback:
            callback(rec)
        if accepted is None:
            break
        st, g, res = accepted
    converged = res < max(tol, 1e-9)

    tau, D, c = st.tau, st.D, st.c
    tbar = sp.U @ tau
    Hu, scal = st.loop_pieces()
    pref = net.g_a ** 2 / net.N * D ** 2
    Cs_t = sp.M @ tau
    test = net.g_a * D * Cs_t - pref * (2 * (sp.M @ Hu) + scal * Cs_t)
    train = data.y_train - net.kappa * tbar

    # Σ_W: tilted second moment plus its one-loop fluctuation average (our derivation)
    sigma2 = net.g_w / data.d
    V = data.X_train.T @ sp.U            # d×P
    vbar = V @ tau
    XHX = (V / st.a) @ V.T - np.outer(V @ st.wa, V @ st.wa) / st.denom
    XHu = V @ Hu
    corr = (D * XHX + 2 * c * D ** 2 * (np.outer(XHu, vbar) + np.outer(vbar, XHu))
            + c * D ** 2 * scal * np.outer(vbar, vbar))
    Sigma_W = (sigma2 * np.eye(data.d) + sigma2 ** 2 * c * D * np.outer(vbar, vbar)
               - sigma2 ** 2 * (net.g_a / net.N) * corr)
    Sigma_W = 0.5 * (Sigma_W + Sigma_W.T)
    # Q = E[q] from the evidence: E[q] = g_a + (2g_a²/N) ∂_{g_a} log Z and
    # log Z ≈ −Γ(t̄₁); ∂Γ/∂g_a = −(χ/2) s D + (D²/2)(tr(H⁻¹C) + 4cD uᵀH⁻¹u).
    # At tree level this reduces to g_a D (our derivation).
    Q = net.g_a * D - pref * scal
    return TheoryResult(
        "one-loop", problem, train, test, gp_variance(sp, Q, net.kappa, net.chi),
        Sigma_W, net.g_a * data.X_train @ Sigma_W @ data.X_train.T, tbar, Q=Q,
        converged=converged, residual=res, log=tuple(log),
        wall_time=time.perf_counter() - t0,
        extras={"gamma": st.gamma()})


def _require_linear(problem: Problem, theory: str) -> None:
    if problem.network.activation != "linear":
        raise MSAError(
            f"theory {theory!r} is implemented for linear networks only so far "
            f"(got activation {problem.network.activation!r}); use nngp or rescaling")
