"""Linear-network theories against the exact posterior (THEORY §4, §5, §9)."""

import math

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.theory.gp import Spectral, gp_mean
from msa_engine.theory.linear import one_loop_gamma

from .conftest import G_W, linear_problem, rms

NS = (100, 200, 400, 800, 1600)


@pytest.mark.parametrize("chi", [1.0, 10.0, "mean-field"])
def test_tree_mean_is_a_rescaled_gp(chi):
    """'Adaptation reduces to rescaling for the mean output': the tree level, solved
    through the generic self-consistency with the Gaussian tilted covariance, equals
    a GP with kernel Q_tree C."""
    pb = linear_problem(N=100, chi=chi)
    res = msa.solve(pb, "tree")
    sp = Spectral.of(pb)
    train, test, _ = gp_mean(sp, res.Q, pb.network.kappa)
    assert np.max(np.abs(res.train_mean - train)) < 1e-10
    assert np.max(np.abs(res.test_mean - test)) < 1e-10
    # and the adapted kernel itself is NOT Q_tree C: it changed direction
    assert np.max(np.abs(res.mean_kernel - res.Q * sp.k)) > 1e-3


def _slope(ys):
    return float(np.polyfit(np.log(NS), np.log(ys), 1)[0])


def _errors(regime, theories, seed):
    out = {t: ([], []) for t in theories}
    for N in NS:
        pb = linear_problem(N=N, chi=regime, seed=seed)
        ex = msa.solve(pb, "exact")
        for t in theories:
            r = msa.solve(pb, t)
            out[t][0].append(rms(r.train_mean, ex.train_mean))
            out[t][1].append(rms(r.test_mean, ex.test_mean))
    return out


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("regime,expected", [
    ("standard", {"nngp": -1.0, "tree": -1.0, "one-loop": -2.0}),
    ("mean-field", {"nngp": 0.0, "tree": -1.0, "one-loop": -2.0}),
])
def test_error_slopes_against_exact(regime, expected, seed):
    errs = _errors(regime, expected, seed)
    for theory, slope in expected.items():
        train, test = errs[theory]
        assert _slope(train) == pytest.approx(slope, abs=0.3), (theory, train)
        assert _slope(test) == pytest.approx(slope, abs=0.3), (theory, test)


def test_paper_message_mean_field_needs_only_the_saddle():
    # mean field: tree error is small next to the NNGP's; standard: it is not
    mf, st = linear_problem(N=400, chi="mean-field"), linear_problem(N=400, chi=1.0)
    e = {k: msa.solve(p, "exact") for k, p in (("mf", mf), ("st", st))}
    tree_mf = rms(msa.solve(mf, "tree").test_mean, e["mf"].test_mean)
    nngp_mf = rms(msa.solve(mf, "nngp").test_mean, e["mf"].test_mean)
    tree_st = rms(msa.solve(st, "tree").test_mean, e["st"].test_mean)
    nngp_st = rms(msa.solve(st, "nngp").test_mean, e["st"].test_mean)
    assert tree_mf < 0.05 * nngp_mf
    assert tree_st > 0.5 * nngp_st
    for pb, ex in ((mf, e["mf"]), (st, e["st"])):
        one = rms(msa.solve(pb, "one-loop").test_mean, ex.test_mean)
        others = [rms(msa.solve(pb, t).test_mean, ex.test_mean) for t in ("nngp", "tree", "rescaling")]
        assert one < min(others)


@pytest.mark.parametrize("N", [100, 400])
@pytest.mark.parametrize("chi_of_N", ["N", "sqrtN"])
@pytest.mark.parametrize("theory", ["one-loop", "tree"])
def test_weight_cov_outlier_matches_exact(theory, chi_of_N, N):
    chi = float(N) if chi_of_N == "N" else math.sqrt(N)
    pb = linear_problem(N=N, chi=chi)
    ex = msa.solve(pb, "exact")
    r = msa.solve(pb, theory)
    sigma2 = G_W / pb.data.d
    # raw Σ_W, not only ratios: a g_w <-> g_a swap would move the bulk away from g_w/d
    assert ex.weight_cov_summary.eigenvalues[-1] == pytest.approx(sigma2, rel=0.05)
    assert np.max(np.abs(r.weight_cov - ex.weight_cov)) < 0.02 * ex.weight_cov_top_eigenvalue
    overlap = abs(r.weight_cov_summary.top_eigenvector @ ex.weight_cov_summary.top_eigenvector)
    assert overlap >= 0.99
    rel = r.weight_cov_excess / ex.weight_cov_excess - 1
    if theory == "tree" and chi_of_N == "sqrtN" and N == 100:
        # The tree level misses the O(1/N) entropic term of THEORY §5; its
        # relative error on the excess is O(1/N) with a prefactor ≈6 at χ = √N
        # (≈2.5 at χ = N), so at N = 100 it is ≈6%, just outside 5%.  Asserted
        # as measured, so that a change shows up here; see the next test.
        assert 0.03 < -rel < 0.09
    else:
        assert abs(rel) < 0.05, rel


def test_tree_outlier_error_at_sqrtN_shrinks_as_inverse_N():
    rels = []
    Ns = (100, 400, 1600)
    for N in Ns:
        pb = linear_problem(N=N, chi=math.sqrt(N))
        rels.append(abs(msa.solve(pb, "tree").weight_cov_excess
                        / msa.solve(pb, "exact").weight_cov_excess - 1))
    slope = float(np.polyfit(np.log(Ns), np.log(rels), 1)[0])
    assert slope == pytest.approx(-1.0, abs=0.3)
    assert rels[1] < 0.05 and rels[2] < 0.05


def test_weight_cov_outlier_is_aligned_with_teacher_and_Xt():
    pb = linear_problem(N=400, chi="mean-field")
    for theory in ("exact", "one-loop", "tree"):
        ws = msa.solve(pb, theory).weight_cov_summary
        assert ws.tbar_overlap > 0.999
        assert ws.teacher_overlap > 0.7
    for theory in ("nngp", "rescaling"):    # no read-in adaptation in these views
        r = msa.solve(pb, theory)
        np.testing.assert_array_equal(r.weight_cov, (G_W / pb.data.d) * np.eye(pb.data.d))


def test_one_loop_gradient_matches_finite_differences():
    pb = linear_problem(N=50, chi=5.0, P=8, d=6, P_test=3)
    rng = np.random.default_rng(0)
    tbar = msa.solve(pb, "tree").tbar + 0.05 * rng.standard_normal(pb.data.P)
    g0, grad = one_loop_gamma(pb, tbar)
    fd = np.empty_like(tbar)
    h = 1e-6
    for i in range(tbar.size):
        e = np.zeros_like(tbar)
        e[i] = h
        fd[i] = (one_loop_gamma(pb, tbar + e)[0] - one_loop_gamma(pb, tbar - e)[0]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_one_loop_sign_of_log_det_matters():
    """With −½ log det H the corrections point the wrong way (THEORY §4)."""
    from msa_engine.theory import linear as lin
    pb = linear_problem(N=100, chi=1.0)
    ex = msa.solve(pb, "exact")
    good = rms(msa.solve(pb, "one-loop").train_mean, ex.train_mean)
    orig = lin._OneLoopLinear.gradient

    def flipped(self):
        net, sp = self.net, self.sp
        Hu, scal = self.loop_pieces()
        pref = net.g_a ** 2 / net.N * self.D ** 2
        return (sp.y_rot - net.kappa * self.tau - net.g_a * self.D * self.u
                - pref * (scal * self.u + 2 * sp.lam * Hu))
    lin._OneLoopLinear.gradient = flipped
    try:
        bad = rms(msa.solve(pb, "one-loop").train_mean, ex.train_mean)
    finally:
        lin._OneLoopLinear.gradient = orig
    assert bad > 10 * good


def test_one_loop_test_correction_is_needed():
    """K*(t̄₁)t̄₁ alone at the one-loop saddle is far worse than the corrected test mean."""
    pb = linear_problem(N=100, chi=1.0)
    ex = msa.solve(pb, "exact")
    r = msa.solve(pb, "one-loop")
    sp = Spectral.of(pb)
    c = pb.network.g_a * pb.network.chi / pb.network.N
    s = float(r.tbar @ sp.k @ r.tbar)
    naive = pb.network.g_a / (1 - c * s) * sp.k_star @ r.tbar
    assert rms(naive, ex.test_mean) > 5 * rms(r.test_mean, ex.test_mean)


def test_one_loop_test_formula_reproduces_train_mean_on_train_points():
    """Our test-mean correction, evaluated with X* = X, must give y − κ t̄₁."""
    pb = linear_problem(N=100, chi=3.0)
    d = pb.data
    pb2 = msa.Problem(msa.Data(d.X_train, d.y_train, d.X_train, d.y_train), pb.network)
    r = msa.solve(pb2, "one-loop")
    np.testing.assert_allclose(r.test_mean, r.train_mean, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("chi", [1.0, 100.0])
def test_Q_and_variance_against_exact(chi):
    pb = linear_problem(N=100, chi=chi)
    ex = msa.solve(pb, "exact")
    for theory, rel in (("rescaling", 0.01), ("one-loop", 0.01)):
        r = msa.solve(pb, theory)
        assert r.Q == pytest.approx(ex.Q, rel=rel)
        assert r.test_variance == pytest.approx(ex.test_variance, rel=0.02)
    # rescaling's Laplace evidence is close to the exact evidence
    assert msa.solve(pb, "rescaling").log_evidence == pytest.approx(ex.log_evidence, abs=0.05)


def test_nngp_limit_of_rescaling_and_one_loop_at_large_N():
    pb = linear_problem(N=100_000, chi=1.0)
    nn = msa.solve(pb, "nngp")
    for theory in ("rescaling", "tree", "one-loop", "exact"):
        assert rms(msa.solve(pb, theory).test_mean, nn.test_mean) < 1e-4


def test_anneal_reports_iterations_through_callback():
    pb = linear_problem(N=100, chi="mean-field")
    records = []
    res = msa.solve(pb, "tree", callback=records.append)
    chis = sorted({r.chi for r in records})
    assert chis[0] == pytest.approx(1.0) and chis[-1] == pytest.approx(100.0)
    assert len(chis) >= 7          # geometric grid, ratio ≤ 2
    assert records[-1].residual < 1e-12
    assert res.converged and len(res.log) == len(records)


def test_anneal_path_is_monotone_in_Q():
    pb = linear_problem(N=200, chi=1.0)
    path = msa.anneal(pb, "tree", msa.chi_grid(200.0))
    Qs = [r.Q for r in path]
    assert all(b > a for a, b in zip(Qs, Qs[1:]))


def test_cancel_from_callback():
    pb = linear_problem(N=100, chi="mean-field")

    def cb(rec):
        raise msa.Cancelled()
    with pytest.raises(msa.Cancelled):
        msa.solve(pb, "tree", callback=cb)


def test_nonlinear_rescaling_uses_kernel_without_g_a():
    """THEORY §6: Q → g_a recovers the NNGP; using g_a·k would double-count g_a."""
    data = msa.make_data({"task": "hermite", "d": 10, "P": 16, "seed": 0})
    for act in ("erf", "relu"):
        pb = msa.Problem(data, msa.Network(act, N=10**7, g_w=1.5, g_a=0.8, kappa=0.05))
        assert rms(msa.solve(pb, "rescaling").test_mean, msa.solve(pb, "nngp").test_mean) < 1e-5
        with pytest.raises(msa.MSAError, match="exists only for linear networks"):
            msa.solve(pb, "exact")


@pytest.mark.parametrize("chi", [1.0, "mean-field"])
def test_spectral_tree_matches_the_dense_generic_newton(chi):
    """The O(P) eigenbasis Newton that `tree` uses (issue 7) lands on the saddle of the
    dense reference solver, which builds K(t̄) from the Gaussian tilted covariance and
    solves with the P×P Jacobian of THEORY §4; both annealed along the same χ grid."""
    from msa_engine.theory import chi_grid, linear as lin
    pb = linear_problem(N=100, chi=chi, d=12, P=30)   # d < P: a singular kernel as well
    sp = Spectral.of(pb)
    t_dense = t_spec = None
    for c in chi_grid(pb.network.chi):
        p = pb.with_chi(float(c))
        t_dense, _, res_dense, _ = lin.solve_tree(p, t_dense)
        tau, _, res_spec, _ = lin.solve_tree_spectral(p, sp, t_spec)
        t_spec = sp.U @ tau
        assert res_dense < 1e-12 and res_spec < 1e-12
    assert np.max(np.abs(t_spec - t_dense)) < 1e-9 * np.max(np.abs(t_dense))
    res = msa.solve(pb, "tree")
    assert res.converged and res.extras["tilted_residual"] < 1e-10
    assert np.max(np.abs(res.tbar - t_dense)) < 1e-9 * np.max(np.abs(t_dense))
    # Σ_w by Sherman–Morrison (what `tree` reports) against the tilted precision's inverse
    meas = lin.GaussianTiltedMeasure(pb)
    S_chol = meas.covariance(res.tbar)
    S_sm, Sv = meas.covariance_rank_one(res.tbar)
    assert np.max(np.abs(S_sm - S_chol)) < 1e-12 * np.max(np.abs(S_chol))
    assert np.allclose(Sv, S_chol @ (pb.data.X_train.T @ res.tbar), rtol=1e-12, atol=0)
    assert np.max(np.abs(res.weight_cov - S_chol)) < 1e-12 * np.max(np.abs(S_chol))
    with pytest.raises(msa.MSAError, match="not positive definite"):
        meas.covariance_rank_one(10.0 * res.tbar / math.sqrt(meas.c * float(res.tbar @ sp.k @ res.tbar)))


@pytest.mark.parametrize("theory", ["exact", "rescaling", "tree", "one-loop"])
def test_low_rank_eigendecomposition_matches_dense_eigh(theory):
    """The QR route for the rank-d linear kernel (used at large P, d ≤ P/2) against
    numpy's dense eigh: same spectrum and the same results for every linear theory."""
    from msa_engine.theory import THEORIES
    pb = linear_problem(N=80, chi="mean-field", d=8, P=40, P_test=10)
    lo, de = Spectral.of(pb, low_rank=True), Spectral.of(pb, low_rank=False)
    assert np.allclose(lo.U @ np.diag(lo.lam) @ lo.U.T, lo.k, atol=1e-12 * lo.lam[-1])
    assert np.allclose(lo.U.T @ lo.U, np.eye(40), atol=1e-12)
    assert np.allclose(lo.lam, de.lam, atol=1e-12 * de.lam[-1])
    assert np.count_nonzero(lo.lam == 0.0) == 40 - 8

    def run(sp):
        if theory in ("tree", "one-loop"):
            return msa.anneal(pb, theory, msa.chi_grid(pb.network.chi), sp=sp)[-1]
        return THEORIES[theory](pb, sp=sp)
    a, b = run(lo), run(de)
    for key in ("train_mean", "test_mean", "test_predictive_variance", "weight_cov"):
        x, y = getattr(a, key), getattr(b, key)
        assert np.max(np.abs(x - y)) < 1e-9 * max(1.0, np.max(np.abs(y))), key
    assert a.Q == pytest.approx(b.Q, rel=1e-10)


@pytest.mark.parametrize("P,d,rank", [(40, 8, 8), (9, 8, 8), (30, 1, 1), (50, 12, 5)])
def test_complete_qr_from_the_compact_wy_form(P, d, rank):
    """gp._complete_qr (geqrf's reflectors, Q = I − Y T Yᵀ) against numpy's complete QR
    (orgqr): the same Q₁, Q₂ and R to round-off, also for rank-deficient X."""
    from msa_engine.theory.gp import _complete_qr
    rng = np.random.default_rng(P + d)
    X = rng.standard_normal((P, rank)) @ rng.standard_normal((rank, d))
    Q1, Q2, R = _complete_qr(X)
    Qf, Rf = np.linalg.qr(X, mode="complete")
    assert Q1.shape == (P, d) and Q2.shape == (P, P - d) and R.shape == (d, d)
    np.testing.assert_allclose(Q1, Qf[:, :d], rtol=0, atol=1e-14)
    np.testing.assert_allclose(Q2, Qf[:, d:], rtol=0, atol=1e-14)
    np.testing.assert_array_equal(R, Rf[:d])
    Q = np.hstack([Q1, Q2])
    np.testing.assert_allclose(Q.T @ Q, np.eye(P), rtol=0, atol=1e-14)
    np.testing.assert_allclose(Q1 @ R, X, rtol=0, atol=1e-13 * np.abs(X).max())


@pytest.mark.parametrize("theory", ["tree", "one-loop"])
def test_solve_warm_points_without_kernels_change_nothing(theory):
    """msa.solve anneals through points that only warm-start the next (their P×P mean
    kernel is not formed): the result is the one of the full annealing path, bit for bit,
    and a warm point really comes without its kernel."""
    pb = linear_problem(N=80, chi="mean-field", d=8, P=40, P_test=10)
    grid = msa.chi_grid(pb.network.chi)
    path = msa.anneal(pb, "tree", grid)
    full = path[-1] if theory == "tree" else msa.anneal(pb, "one-loop", [pb.network.chi],
                                                        tbar0=path[-1].tbar)[-1]
    got = msa.solve(pb, theory)
    for key in ("train_mean", "test_mean", "test_predictive_variance", "weight_cov",
                "mean_kernel", "tbar"):
        np.testing.assert_array_equal(getattr(got, key), getattr(full, key), err_msg=key)
    assert got.Q == full.Q and got.residual == full.residual
    assert len(got.log) == sum(len(r.log) for r in path) + (theory == "one-loop") * len(full.log)
    warm = msa.anneal(pb, "tree", grid, _warm=len(grid) - 1)
    assert all(r.mean_kernel is None for r in warm[:-1])
    np.testing.assert_array_equal(warm[-1].mean_kernel, path[-1].mean_kernel)


@pytest.mark.parametrize("N", [80, 10 ** 4, 10 ** 6])
def test_exact_test_variance_does_not_cancel(N):
    """The exact predictive variance's Var_q term, centred: as E[F²] − E[F]² it lost
    digits as the law of q narrows with N — two eigenbases of the same kernel (QR route
    and dense eigh, equal to round-off) gave variances 1.8e-12, 3.6e-10 and 5.8e-8 of
    their scale apart at N = 80, 10⁴, 10⁶ (1e-9 at the benchmark's P = 2000)."""
    from msa_engine.theory import THEORIES
    pb = linear_problem(N=N, chi="mean-field", d=8, P=60, P_test=10)
    lo, de = Spectral.of(pb, low_rank=True), Spectral.of(pb, low_rank=False)
    a = THEORIES["exact"](pb, sp=lo).test_predictive_variance
    b = THEORIES["exact"](pb, sp=de).test_predictive_variance
    assert np.max(np.abs(a - b)) < 1e-12 * np.max(np.abs(b))
