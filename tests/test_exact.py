"""The exact linear reference (THEORY §5) against independent computations."""

import math

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.theory.gp import ScaleMixture, Spectral

from .conftest import linear_problem, rms


def _tiny_problem(N, d, P=3, P_test=2, chi=1.3, kappa=0.5, seed=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P + P_test, d))
    y = rng.standard_normal(P + P_test)
    data = msa.Data(X[:P], y[:P], X[P:], y[P:], teacher=np.ones(d))
    return msa.Problem(data, msa.Network("linear", N=N, g_w=1.5, g_a=0.8, kappa=kappa, chi=chi))


def _brute_force(problem, n=301, half_width=12.0, chunk=40_000):
    """Integrate the read-in weights W on a dense trapezoid grid over ±12 prior widths
    and the read-out a analytically (Gaussian given W): a route independent of the
    q = χ|a|² scale mixture that `exact` uses.  For N·d = 2 only."""
    net, data = problem.network, problem.data
    N, d = net.N, data.d
    assert N * d == 2
    sd = math.sqrt(net.g_w / d)
    x = np.linspace(-half_width, half_width, n)
    g1, g2 = np.meshgrid(x, x, indexing="ij")
    nodes = np.stack([g1.ravel(), g2.ravel()], axis=1)
    logprior = -0.5 * np.sum(nodes ** 2, axis=1)
    W_all = nodes.reshape(-1, N, d) * sd
    s2a, noise = net.g_a / (net.chi * N), net.kappa / net.chi
    acc = []
    for W in np.array_split(W_all, max(1, len(W_all) // chunk)):
        Phi = np.einsum("pd,mnd->mpn", data.X_train, W)      # linear φ
        Phis = np.einsum("pd,mnd->mpn", data.X_test, W)
        Sy = s2a * Phi @ Phi.transpose(0, 2, 1) + noise * np.eye(data.P)
        sign, logdet = np.linalg.slogdet(Sy)
        alpha = np.linalg.solve(Sy, np.broadcast_to(data.y_train, (len(W), data.P))[..., None])[..., 0]
        lw = -0.5 * np.einsum("p,mp->m", data.y_train, alpha) - 0.5 * logdet
        A = np.linalg.inv(Phi.transpose(0, 2, 1) @ Phi / noise + np.eye(N) / s2a)  # Cov(a|W,y)
        a_mean = np.einsum("mnk,mpk,p->mn", A, Phi, data.y_train) / noise
        acc.append((lw, np.einsum("mpn,mn->mp", Phi, a_mean), np.einsum("mpn,mn->mp", Phis, a_mean),
                    np.einsum("mpn,mnk,mpk->mp", Phis, A, Phis),
                    net.chi * (np.trace(A, axis1=1, axis2=2) + np.sum(a_mean ** 2, axis=1))))
    lw, f, fs, vs, q = (np.concatenate(z) for z in zip(*acc))
    lw = lw + logprior
    top = lw.max()
    p = np.exp(lw - top)
    Z = p.sum()
    p /= Z
    mean_s = p @ fs
    log_norm = math.log((x[1] - x[0]) ** 2 / (2 * math.pi)) - 0.5 * data.P * math.log(2 * math.pi)
    return {"test_mean": mean_s, "train_mean": p @ f, "var": p @ vs + p @ fs ** 2 - mean_s ** 2,
            "Q": p @ q, "Sigma_W": np.einsum("m,mni,mnj->ij", p, W_all, W_all) / N,
            "log_evidence": top + math.log(Z) + log_norm}


@pytest.mark.parametrize("N,d", [(1, 2), (2, 1)])
def test_exact_matches_brute_force_integration(N, d):
    pb = _tiny_problem(N, d)
    ref = _brute_force(pb)
    ex = msa.solve(pb, "exact")
    np.testing.assert_allclose(ex.test_mean, ref["test_mean"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ex.train_mean, ref["train_mean"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ex.test_predictive_variance, ref["var"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ex.Q, ref["Q"], rtol=1e-10)
    np.testing.assert_allclose(ex.weight_cov, ref["Sigma_W"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ex.log_evidence, ref["log_evidence"], rtol=1e-10, atol=1e-10)


def test_exact_approaches_nngp_as_N_grows_at_fixed_chi():
    errs = []
    for N in (100, 1000, 10000):
        pb = linear_problem(N=N, chi=2.0)
        errs.append(rms(msa.solve(pb, "exact").test_mean, msa.solve(pb, "nngp").test_mean))
    assert errs[0] > errs[1] > errs[2]
    # the deviation is O(1/N): ten times the width, a tenth of the error (±30%)
    for a, b in zip(errs, errs[1:]):
        assert 7.0 < a / b < 13.0


def _dense_reference(pb):
    """E[q] and the train mean by brute force: 400k trapezoid nodes over 70 e-folds of q."""
    sp = Spectral.of(pb)
    net = pb.network
    mix = ScaleMixture(sp, net.N, net.g_a, net.kappa, net.chi)
    u = np.linspace(math.log(net.g_a) - 35, math.log(net.g_a) + 35, 400_001)
    logp = np.concatenate([mix.log_density(c) for c in np.array_split(u, 40)])
    p = np.exp(logp - logp.max())
    p /= p.sum()
    q = np.exp(u)
    Eq = p @ q
    coef = sum((pc * qc) @ (1.0 / (qc[:, None] * sp.lam + net.kappa))
               for pc, qc in zip(np.array_split(p, 40), np.array_split(q, 40)))
    return Eq, sp.U @ (sp.y_rot * sp.lam * coef)


def _fixed_window_Eq(pb, lo=1e-6, hi=50.0):
    """The trap of THEORY §5: a fixed window [1e-6, 50]·g_a in q."""
    sp = Spectral.of(pb)
    net = pb.network
    mix = ScaleMixture(sp, net.N, net.g_a, net.kappa, net.chi)
    u = np.linspace(math.log(lo * net.g_a), math.log(hi * net.g_a), 4001)
    logp = mix.log_density(u)
    p = np.exp(logp - logp.max())
    return float(p @ np.exp(u) / p.sum())


@pytest.mark.parametrize("scale", [1.0, 10.0, 30.0])
@pytest.mark.parametrize("chi", [1.0, 100.0])
def test_exact_quadrature_does_not_truncate_scaled_targets(scale, chi):
    pb = linear_problem(N=100, chi=chi, scale=scale)
    ex = msa.solve(pb, "exact")
    Eq, train = _dense_reference(pb)
    assert ex.Q == pytest.approx(Eq, rel=1e-9)
    np.testing.assert_allclose(ex.train_mean, train, rtol=1e-8, atol=1e-10 * scale)
    assert ex.extras["end_log_drop"] >= 45.0     # the grid's ends carry no weight


def test_fixed_window_would_fail_the_scaled_target_check():
    # the check above has power: the fixed window of THEORY §5 truncates here
    pb = linear_problem(N=100, chi=100.0, scale=30.0)
    Eq, _ = _dense_reference(pb)
    assert abs(_fixed_window_Eq(pb) / Eq - 1) > 0.05
    assert msa.solve(pb, "exact").Q == pytest.approx(Eq, rel=1e-9)


def test_exact_grid_resolution_is_converged():
    from msa_engine.theory.exact import QuadratureGrid
    pb = linear_problem(N=100, chi=10.0)
    sp = Spectral.of(pb)
    net = pb.network
    mix = ScaleMixture(sp, net.N, net.g_a, net.kappa, net.chi)
    fine = QuadratureGrid(mix, nodes_per_width=200)
    coarse = QuadratureGrid(mix)
    assert coarse.p @ coarse.q == pytest.approx(fine.p @ fine.q, rel=1e-13)
    assert coarse.log_evidence == pytest.approx(fine.log_evidence, rel=1e-13)


def test_exact_log_evidence_is_a_normalised_density():
    # integrating the evidence over y must give 1: check on a 1-point data set
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1, 3))
    ys = np.linspace(-12, 12, 2001)
    vals = []
    for yv in ys:
        data = msa.Data(X, [yv], X, [0.0])
        pb = msa.Problem(data, msa.Network("linear", N=5, g_w=1.5, g_a=0.8, kappa=0.3, chi=2.0))
        vals.append(math.exp(msa.solve(pb, "exact").log_evidence))
    assert np.trapezoid(vals, ys) == pytest.approx(1.0, abs=1e-6)
