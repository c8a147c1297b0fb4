"""The tilted-measure sampler of THEORY §4/§6: the numba kernel step for step against its
numpy reference, the ReLU normalisability check, and the non-linear machinery run with
φ(h) = h against the closed-form linear tree level and one loop."""

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.errors import MSAError
from msa_engine.theory import nonlinear as NL
from msa_engine.theory import tilted as T

from .conftest import linear_problem
from .nonlinear_support import hermite_problem, xor_problem


@pytest.mark.parametrize("activation", ["erf", "relu", "linear"])
@pytest.mark.parametrize("P", [16, 6])          # P >= d (w space) and P < d (h space)
@pytest.mark.parametrize("every,phase", [(1, 0), (3, 1), (0, 0)])   # independence schedule
def test_kernel_matches_numpy_reference(activation, P, every, phase):
    p = hermite_problem(activation, chi=100.0, P=P, P_test=5)
    g = T.TiltedGeometry(p)
    assert g.m == min(P, p.data.d)
    rng = np.random.default_rng(3)
    steps, nc, m = 9, 7, g.m
    tb = 0.3 * rng.standard_normal(P)
    xi, lu = rng.standard_normal((steps, nc, m)), np.log(rng.random((steps, nc)))
    n_ind = T.independence_moves(steps, every, phase)
    assert n_ind == sum(1 for t in range(steps) if every and (phase + t) % every == 0)
    ze, lu2 = rng.standard_normal((n_ind, nc, m)), np.log(rng.random((n_ind, nc)))
    L = np.linalg.cholesky(np.eye(m) + 0.2 * np.ones((m, m)))
    Z0 = rng.standard_normal((nc, m))
    outs = []
    for fn in (T.tilted_chunk, T.reference_chunk):
        Z = Z0.copy()
        LP, S, GR = (a.copy() for a in T._np_logp_grad(g.code, g.A, tb, 0.8, Z))
        out, acc = np.zeros((nc, 3, m)), np.zeros((2, nc))
        fn(Z, LP, S, GR, g.A, tb, 0.8, g.code, L, 0.4, xi, lu, ze, lu2, every, phase, 3,
           out, acc)
        outs.append((Z, LP, S, GR, out, acc))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert 0 < outs[0][5][0].mean() / steps < 1     # some MALA moves accepted, some not


def test_kernel_erf_matches_scipy():
    """The kernel's polynomial erf (and the exp(−h²) it returns with it) against scipy on
    a dense grid, tails included."""
    from scipy.special import erf
    h = np.concatenate([np.linspace(-30.0, 30.0, 600_001), [0.0, 1.5, -1.5, 1e-300]])
    np.testing.assert_allclose(T.erf_array(h), erf(h), rtol=0, atol=4e-15)
    small = np.linspace(-1e-3, 1e-3, 2001)
    np.testing.assert_allclose(T.erf_array(small), erf(small), rtol=4e-15, atol=0)
    assert T.erf_array(np.array([np.inf, -np.inf])).tolist() == [1.0, -1.0]


def test_kernel_gauss_matches_numpy_exp_and_nan_stays_nan():
    """The vectorised pass's exp(−h²) (Cody–Waite reduction, Taylor polynomial, 2^k from
    its bits) against numpy's exp: within 2 ulp where h² ≤ 700, at most ≈ 1e-304 (the
    clamp) beyond; NaN in, NaN out."""
    h = np.concatenate([np.linspace(-30.0, 30.0, 200_001), [0.0, -0.0, 26.5, 27.0, np.inf,
                                                            -np.inf, np.nan]])
    phi, g, kb = np.empty_like(h), np.empty_like(h), np.empty(h.size, dtype=np.int64)
    T.erf_gauss_row(h, phi, g, kb)
    ref = np.exp(-h * h)
    normal = h * h <= 700.0
    assert np.max(np.abs(g[normal] - ref[normal]) / ref[normal]) <= 4.5e-16
    finite = np.isfinite(h) & ~normal
    assert np.all(g[finite] <= 1e-303) and np.all(g[finite] >= ref[finite])
    assert np.isnan(phi[-1]) and np.isnan(g[-1]) and phi[-3] == 1.0 and phi[-2] == -1.0
    assert g[h == 0.0].tolist() == [1.0, 1.0]


def test_sampling_in_blocks_keeps_every_state(monkeypatch):
    """A call too large for one block of random numbers runs in several: every kept state
    is written, and the last is where the chains are."""
    p = hermite_problem("erf", chi=10.0)
    monkeypatch.setattr(T, "BLOCK_NUMBERS", 64 * 10 * 6)      # 6 steps a block
    s = T.TiltedSampler(p, chains=64, seed=1)
    tb = 0.2 * p.data.y_train
    out = s.sample(tb, 0.08, draws=25, thin=2, burn_in=7)
    assert out.shape == (64, 25, s.geom.m) and np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[:, -1], s.Z)
    # consecutive kept states differ (no block left a row unwritten or repeated wholesale)
    assert np.all(np.any(out[:, 1:] != out[:, :-1], axis=(0, 2)))


def test_reduced_coordinates_reproduce_w_moments():
    """P < d: sampling h = Xw with the conditional Gaussian for the rest of w gives the
    prior's Σ_W = (g_w/d) I and the NNGP test kernel at t̄ = 0."""
    p = hermite_problem("erf", chi=1.0, P=6, P_test=8)
    g = T.TiltedGeometry(p)
    Z = np.random.default_rng(0).standard_normal((200_000, g.m))
    SW = g.weight_cov(Z.T @ Z / Z.shape[0])
    np.testing.assert_allclose(SW, (p.network.g_w / p.data.d) * np.eye(p.data.d), atol=3e-3)
    from msa_engine.kernels import nngp_kernel
    Ks = g.phi_star(Z).T @ g.phi(Z) / Z.shape[0]
    np.testing.assert_allclose(Ks, nngp_kernel("erf", p.data.X_test, p.data.X_train, 1.5),
                               atol=6e-3)


def test_relu_non_normalisable_tilt_is_refused():
    p = xor_problem(chi=100.0)
    s = T.TiltedSampler(p, chains=16, seed=0)
    tb = 5.0 * np.sign(p.data.y_train)
    lo, up = T.relu_tilt_bound(s.geom.A, tb)
    assert 0 < lo <= up
    c = 0.8
    assert c * lo > 1
    with pytest.raises(MSAError, match="not normalisable"):
        s.sample(tb, c, 4)
    # a small tilt is fine, and certified by the upper bound
    small = tb * 0.5 / np.sqrt(c * up)
    lo2, up2 = T.relu_tilt_bound(s.geom.A, small)
    assert c * up2 < 1
    Z = s.sample(small, c, 8)
    assert np.all(np.isfinite(Z))


FAST = dict(chains=128, groups=16, draws=32, final_draws=96)


@pytest.mark.parametrize("chi", [1.0, 10.0])
def test_linear_activation_matches_closed_forms(chi):
    """φ(h) = h through the MCMC machinery (h space, P < d) reproduces the closed-form
    linear tree level and one loop (THEORY §5) within the reported Monte Carlo error."""
    p = linear_problem(N=100, chi=chi, d=30, P=20, P_test=12)
    ref_tree, ref_loop = msa.solve(p, "tree"), msa.solve(p, "one-loop")
    tr = NL.tree(p, seed=1, **FAST)
    ol = NL.one_loop(p, seed=2, tbar0=tr.tbar, **FAST)
    for th, ref in ((tr, ref_tree), (ol, ref_loop)):
        z = np.concatenate([(th.train_mean - ref.train_mean) / th.train_mean_se,
                            (th.test_mean - ref.test_mean) / th.test_mean_se])
        print(f"chi {chi} {th.theory}: max|z| {np.abs(z).max():.2f}, mean z² {np.mean(z**2):.2f}")
        assert np.abs(z).max() < 4.5
        assert 0.2 < np.mean(z ** 2) < 3.0
    # power: the loop correction itself is resolved (tree and one loop differ by > 6 SE)
    d = (ref_tree.test_mean - ref_loop.test_mean) / ol.test_mean_se
    assert np.abs(d).max() > 6


def test_seeded_and_reproducible():
    p = hermite_problem("erf", chi=4.0)
    a = NL.tree(p, seed=5, **FAST)
    b = NL.tree(p, seed=5, **FAST)
    np.testing.assert_array_equal(a.test_mean, b.test_mean)
    assert a.seed == 5 and np.all(a.test_mean_se > 0)
    assert "tree" in msa.theory.available_theories("erf")


@pytest.mark.parametrize("activation", ["erf", "relu"])
@pytest.mark.parametrize("P", [16, 6])
def test_gaussian_is_kernels_and_weights(activation, P):
    """The weak-tilt estimator (THEORY §6): the proposal's analytic kernels are the NNGP
    formulas with covariance AΣAᵀ (= the NNGP kernels at Σ = I), and at t̄ = 0 the
    importance weights prior/q with Σ ≠ I recover the NNGP kernels within the jackknife
    error, with and without the control variate."""
    p = hermite_problem(activation, chi=1.0, P=P, P_test=8)
    sp = msa.theory.gp.Spectral.of(p)
    g = T.TiltedGeometry(p)
    rng = np.random.default_rng(0)
    prior = NL._GaussianIS(g, np.eye(g.m), 2 ** 10, 4, rng)
    np.testing.assert_allclose(prior.kernels[0], sp.k, atol=1e-12)
    np.testing.assert_allclose(prior.kernels[1], sp.k_star, atol=1e-12)
    Sig = np.eye(g.m) + 0.15 * np.outer(np.ones(g.m), np.ones(g.m)) / g.m
    prop = NL._GaussianIS(g, 1.2 * Sig, 2 ** 15, 16, rng)
    S, ess = prop.samples(np.zeros(P), 0.5, test=True)
    assert 0.5 < ess < 1.0
    for beta in (0.0, 1.0):
        est = NL._Estimator(p, sp, S, beta={"PP": beta, "SP": beta})
        for fn, ref in ((est.K, sp.k), (est.Ks, sp.k_star)):
            val, se = NL.jackknife(fn, S.G)
            z = (val - p.network.g_a * ref) / np.maximum(se, 1e-12)
            assert np.abs(z).max() < 5 and np.mean(z ** 2) < 2.5, (beta, np.mean(z ** 2))


def test_independence_move_is_thinned_where_it_is_never_accepted():
    """A strong tilt (mean field, t̄ = y): the prior's proposals are all but never accepted,
    so the move is made every IND_PROBE_EVERY-th step only (half of a step's cost saved);
    the probes keep measuring, and a weak tilt (t̄ = y/10) restores it at every step."""
    p = hermite_problem("erf")
    y = p.data.y_train
    s = T.TiltedSampler(p, chains=64, seed=1)
    assert s._ind_every == 1
    s.sample(y, 0.8, draws=20, thin=2, burn_in=40)      # not allowed (the anneal's default)
    assert s.acceptance[1] < T.IND_MIN_ACCEPT and s._ind_every == 1
    s.thin_independence = True                           # allowed (the solver's target χ)
    s.sample(y, 0.8, draws=20, thin=2, burn_in=40)
    assert s.acceptance[1] < T.IND_MIN_ACCEPT and s._ind_every == T.IND_PROBE_EVERY
    s.sample(0.1 * y, 0.8, draws=20, thin=2, burn_in=40)
    assert s.acceptance[1] > 0.5 and s._ind_every == 1
    off = T.TiltedSampler(p, chains=64, seed=1, independence=False)
    off.sample(y, 0.8, draws=5, thin=2, burn_in=10)
    assert off._ind_every == 0 and off.acceptance[1] == 0.0


def test_independence_moves_count():
    for steps in range(0, 40):
        for every in range(0, 6):
            for phase in range(0, 6):
                want = sum(1 for t in range(steps) if every and (phase + t) % every == 0)
                assert T.independence_moves(steps, every, phase) == want


def test_chains_split_between_threads_give_the_same_states(monkeypatch):
    """The chains are advanced in slices split between threads (the kernel releases the
    GIL); the slices depend on the number of chains only, so one thread and three give
    the very same states, kept draws and acceptances, with the independence move thinned
    or not."""
    monkeypatch.setattr(T, "SLICE_CHAINS", 16)
    p = hermite_problem("erf")
    y = p.data.y_train
    runs = []
    for threads in (1, 3):
        s = T.TiltedSampler(p, chains=64, seed=2, threads=threads)
        s.thin_independence = True
        outs = [s.sample(t * y, 0.8, draws=10, thin=2, burn_in=15) for t in (0.1, 1.0)]
        runs.append((outs, s.Z.copy(), s.acceptance, s._ind_every))
    assert runs[1][3] == T.IND_PROBE_EVERY
    for a, b in zip(runs[0][0] + [runs[0][1]], runs[1][0] + [runs[1][1]]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][2] == pytest.approx(runs[1][2], rel=1e-12)


def test_erf_of_a_large_array_split_between_threads(monkeypatch):
    from scipy.special import erf
    monkeypatch.setattr(T, "ERF_THREAD_ELEMENTS", 1000)
    monkeypatch.setattr(T, "usable_cores", lambda: 3)
    H = np.random.default_rng(0).normal(0.0, 3.0, (301, 7))
    out = T.erf_array(H)
    assert out.shape == H.shape
    np.testing.assert_allclose(out, erf(H), rtol=0, atol=4e-15)
    monkeypatch.setattr(T, "ERF_THREAD_ELEMENTS", 10 ** 9)
    np.testing.assert_array_equal(out, T.erf_array(H))      # the same numbers unsplit


def test_independence_acceptance_is_averaged_over_the_moves_made():
    """At t̄ = 0 the prior is the target: every independence proposal is accepted with
    probability 1, so its mean acceptance is exactly 1 whether the move is made at every
    step or, thinned, at two of 32 (a mean over the steps would read 1/16)."""
    p = hermite_problem("erf")
    tb = np.zeros(p.data.P)
    for every in (1, T.IND_PROBE_EVERY):
        s = T.TiltedSampler(p, chains=8, seed=0)
        s._ind_every, s._ind_phase = every, 0
        LP, S, GR = s._state(tb, 0.8)
        acc = s._run(tb, 0.8, 32, 1, np.zeros((8, 0, s.geom.m)), LP, S, GR, 0.1)
        np.testing.assert_array_equal(acc[1], np.ones(8))
        assert T.independence_moves(32, every, 0) == (32 if every == 1 else 2)
