"""Numba kernels against the plain-NumPy reference, step for step with the same random
numbers, and the gradients against finite differences (THEORY §7)."""

import copy

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.sampling import kernels_numba as kn
from msa_engine.sampling import reference as ref
from msa_engine.sampling.rng_numba import replay
from msa_engine.sampling.run import _Run

from .conftest import G_A, G_W


def tiny(act="erf", chi=3.0, N=7, d=5, P=6):
    data = msa.make_data({"task": "hermite" if act != "linear" else "linear", "d": d, "P": P,
                          "P_test": 4, "seed": 3})
    return msa.Problem(data, msa.Network.make(act, N=N, g_w=G_W, g_a=G_A, kappa=0.2, chi=chi))


@pytest.mark.parametrize("sampler", ["marginal", "full"])
@pytest.mark.parametrize("act", ["linear", "erf", "relu"])
def test_gradient_matches_finite_differences(sampler, act):
    p = tiny(act)
    net, data = p.network, p.data
    rng = np.random.default_rng(0)
    W = rng.standard_normal((net.N, data.d)) * 0.7
    a = rng.standard_normal(net.N) * 0.3
    args = (data.X_train, data.y_train, kn.act_code(act), net.g_w, net.g_a, net.kappa, net.chi)
    if sampler == "marginal":
        def energy(W_, a_):
            return kn.marginal_energy_grad(W_, *args)[0]
        _, gW = kn.marginal_energy_grad(W, *args)
        ga = None
    else:
        def energy(W_, a_):
            return kn.full_energy_grad(W_, a_, *args)[0]
        _, gW, ga = kn.full_energy_grad(W, a, *args)
    eps = 1e-6
    for (i, j) in [(0, 0), (3, 2), (6, 4)]:
        Wp, Wm = W.copy(), W.copy()
        Wp[i, j] += eps
        Wm[i, j] -= eps
        fd = (energy(Wp, a) - energy(Wm, a)) / (2 * eps)
        assert gW[i, j] == pytest.approx(fd, rel=1e-5, abs=1e-6)
    if ga is not None:
        for i in (0, 4):
            ap, am = a.copy(), a.copy()
            ap[i] += eps
            am[i] -= eps
            assert ga[i] == pytest.approx((energy(W, ap) - energy(W, am)) / (2 * eps),
                                          rel=1e-5, abs=1e-6)


def test_energies_match_reference():
    p = tiny("erf")
    net, data = p.network, p.data
    rng = np.random.default_rng(1)
    W = rng.standard_normal((2, net.N, data.d))
    a = rng.standard_normal((2, net.N))
    args = (data.X_train, data.y_train)
    Er, gr = ref.marginal_energy_grad(W, *args, "erf", net.g_w, net.g_a, net.kappa, net.chi)
    Fr, gWr, gar = ref.full_energy_grad(W, a, *args, "erf", net.g_w, net.g_a, net.kappa, net.chi)
    for c in range(2):
        E, g = kn.marginal_energy_grad(W[c], *args, 1, net.g_w, net.g_a, net.kappa, net.chi)
        assert E == pytest.approx(Er[c], rel=1e-12)
        np.testing.assert_allclose(g, gr[c], rtol=1e-10, atol=1e-12)
        F, gW, ga = kn.full_energy_grad(W[c], a[c], *args, 1, net.g_w, net.g_a, net.kappa, net.chi)
        assert F == pytest.approx(Fr[c], rel=1e-12)
        np.testing.assert_allclose(gW, gWr[c], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ga, gar[c], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("N", [3, 12])
def test_linear_marginal_gradient_both_product_orders(N):
    """The linear marginal gradient takes Φᵀ(GX) when d < N and (GΦ)ᵀX otherwise
    (whichever needs fewer multiply-adds): both against the NumPy reference."""
    p = tiny("linear", N=N)
    net, data = p.network, p.data
    assert (data.d < N) == (N == 12)
    W = np.random.default_rng(2).standard_normal((1, N, data.d))
    args = (data.X_train, data.y_train)
    Er, gr = ref.marginal_energy_grad(W, *args, "linear", net.g_w, net.g_a, net.kappa, net.chi)
    # None: the linear paths (what runs use); 0: φ = identity through the general ones
    for code in (kn.act_code("linear"), 0):
        E, g = kn.marginal_energy_grad(W[0], *args, code, net.g_w, net.g_a, net.kappa,
                                       net.chi)
        assert E == pytest.approx(Er[0], rel=1e-12)
        np.testing.assert_allclose(g, gr[0], rtol=1e-10, atol=1e-12)


# (d, P, N): P > d takes the Woodbury form for a linear φ (the marginal step and both
# samplers' observables); with P ≤ d a linear φ's observables come from S = WᵀW when
# kn.gram_form says so (N = 12), else through Φ = XWᵀ (N = 5)
@pytest.mark.parametrize("sampler,method,act,shape", [
    ("marginal", "mala", "erf", (5, 6, 7)),
    ("marginal", "ula", "relu", (5, 6, 7)),
    ("marginal", "mala", "linear", (5, 6, 7)),
    ("marginal", "mala", "linear", (6, 4, 12)),
    ("marginal", "mala", "linear", (6, 4, 5)),
    ("full", "mala", "linear", (5, 6, 7)),
    ("full", "mala", "linear", (6, 4, 12)),
    ("full", "mala", "linear", (6, 4, 5)),
    ("full", "ula", "erf", (5, 6, 7)),
    ("full", "mala", "erf", (5, 6, 7))])   # Φ of the current state kept through rejections
def test_chunk_matches_reference_step_for_step(sampler, method, act, shape):
    d, P, N = shape
    p = tiny(act, N=N, d=d, P=P)
    # h: some proposals accepted and some rejected in 18 (the full sampler's linear
    # posterior is stiffer: at 0.3 it rejected all of them)
    steps, h = 6, (0.1 if sampler == "full" else 0.3)
    run = _Run(p, sampler, 3, steps, 0, 1, method, h, 42, 100)
    assert run.sampler.uses_woodbury == (act == "linear" and P > d)
    if act == "linear" and P <= d:
        assert kn.gram_form(P, N, d) == (N == 12)
    state0 = copy.deepcopy(run.state)
    rng0 = run.rng.copy()
    run.advance(2)         # two kernel calls: what a step caches (Φ, its index) carries over
    run.advance(steps)
    # regenerate the very same random numbers (per-chain streams) for the reference,
    # which wants them as (steps, chains, ...)
    N, d = p.network.N, p.data.d
    nw, na, u = replay(rng0, steps, N * d, N if sampler == "full" else 0)
    noise = nw.reshape(3, steps, N, d).transpose(1, 0, 2, 3)
    noise_a = na.transpose(1, 0, 2) if sampler == "full" else None
    logu = np.log(u).T
    takes = []
    obs, alphas = ref.run_steps(state0, noise, logu, p, sampler=sampler,
                                mala=method == "mala", h=h, u_slow=run.u_slow, noise_a=noise_a,
                                takes=takes)
    np.testing.assert_allclose(run.state["W"], state0["W"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(run.state["E"], state0["E"], rtol=1e-9)
    if sampler == "full":
        np.testing.assert_allclose(run.state["a"], state0["a"], rtol=1e-9, atol=1e-12)
    for k, (ftr, fte, var, K, SW, Q, slow) in enumerate(obs):
        np.testing.assert_allclose(run.tr_ftr[:, k], ftr, rtol=1e-8, atol=1e-11)
        np.testing.assert_allclose(run.tr_fte[:, k], fte, rtol=1e-8, atol=1e-11)
        np.testing.assert_allclose(run.tr_Q[:, k], Q, rtol=1e-9)
        np.testing.assert_allclose(run.tr_slow[:, k], slow, rtol=1e-9)
    np.testing.assert_allclose(run.vte, sum(o[2] for o in obs), rtol=1e-8, atol=1e-12)
    Kacc = run.Kacc
    if run.sampler.uses_woodbury:   # ⟨K⟩ comes from Σ WᵀW/N
        X = p.data.X_train
        Kacc = p.network.g_a * np.einsum("pi,cbij,qj->cpq", X, run.SWb, X)
        assert not np.any(run.Kacc)
    np.testing.assert_allclose(Kacc, sum(o[3] for o in obs), rtol=1e-9)
    np.testing.assert_allclose(run.SWb.sum(axis=1), sum(o[4] for o in obs), rtol=1e-9)
    assert np.sum(run.acc) / 3 == pytest.approx(sum(alphas), rel=1e-9)
    if method == "mala":   # the test has teeth: some proposals were rejected, some accepted
        assert 0 < np.mean(alphas) < 1
        assert np.any(takes) and not np.all(takes)
