"""Standard scaling (χ = 1, N = 100), erf on the Hermite task, the case fixed in advance
(issue 6; THEORY §9's erf table): d = 10, P = 16, P* = 40, data seed 0, κ = 0.05,
g_w = g_a = 1.  Against one marginal-Langevin reference shared by the tests:

1. the one loop agrees with the simulation within combined error bars;
2. the one loop is closer to the simulation than the tree level and than the NNGP on the
   test points (THEORY §9);
3. rescaling (the scalar Q equation with the NNGP kernel without g_a, §6) is no better
   than the NNGP on the test points (THEORY §9) — measured otherwise on this case, so
   kept as a strict xfail with the numbers (the assertion is not flipped).

Orderings are asserted on mean-square deviations ``D = mean_i (f_i − f_sim,i)² − se²``
(the rms of THEORY §9 squared, MC noise subtracted) with the uncertainty of their
difference: the simulation's part from its stored traces (the linear functional's own
MCSE, correlations between test points included), each theory's part from its jackknife
replicas (``extras["test_mean_jackknife"]``).
"""

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.sampling.run import simulate

from .nonlinear_support import Z_ORDER, difference, hermite_problem, rms_error, zscores

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def case():
    p = hermite_problem("erf", chi=1.0, g_w=1.0, g_a=1.0)
    sim = simulate(p, "marginal", chains=4, steps=40_000, burn_in=1000, thin=2, seed=3,
                   chunk=5000)
    th = {"nngp": msa.solve(p, "nngp"), "rescaling": msa.solve(p, "rescaling"),
          "tree": msa.solve(p, "tree", seed=1), "one-loop": msa.solve(p, "one-loop", seed=2)}
    return p, sim, th


def _report(p, sim, th):
    lines = [f"sim: test se rms {np.sqrt(np.mean(sim.test_mean_se ** 2)):.2e}, train se rms "
             f"{np.sqrt(np.mean(sim.train_mean_se ** 2)):.2e}, R̂ {sim.rhat_max:.3f}, "
             f"ESS {sim.ess_min:.0f}, wall {sim.wall_time:.0f}s"]
    for k, t in th.items():
        lines.append(
            f"{k:9s} rms train {rms_error(t, sim, 'train'):.2e} test "
            f"{rms_error(t, sim, 'test'):.2e} (own test se rms "
            f"{np.sqrt(np.mean(t.test_mean_se ** 2)):.1e}, wall {t.wall_time:.1f}s, "
            f"{t.extras.get('estimator', '')})")
    print("\n".join(lines))


def test_one_loop_agrees_with_simulation(case):
    p, sim, th = case
    _report(p, sim, th)
    assert sim.rhat_max < 1.05
    ol = th["one-loop"]
    assert ol.extras["estimator"] == "gaussian-is" and ol.extras["is_ess_fraction"] > 0.8
    assert ol.extras["residual_z2"] < 3.0           # fresh-sample self-consistency
    z = zscores(ol, sim)
    print(f"one loop vs sim: max|z| {np.abs(z).max():.2f}, mean z² {np.mean(z ** 2):.2f}")
    assert np.abs(z).max() <= 4.0
    assert 0.3 <= np.mean(z ** 2) <= 3.0


@pytest.mark.parametrize("other", ["tree", "nngp"])
def test_one_loop_beats_tree_and_nngp_on_test_points(case, other):
    p, sim, th = case
    diff, se = difference(th[other], th["one-loop"], sim)
    print(f"D_{other} − D_one-loop = {diff:.3e} ± {se:.1e} (z {diff / se:.1f})")
    assert diff > Z_ORDER * se


@pytest.mark.xfail(strict=True, reason=(
    "THEORY §9 (rescaling 9.1e-3 vs NNGP 8.7e-3) does not hold on this fixed case: "
    "against a 3.6M-step Langevin reference (test se 4.4e-4) rescaling's test rms "
    "deviation is 0.060 and the NNGP's 0.095 (Q = 1.43); in this test's run "
    "D_rescaling - D_nngp = -5.4e-3 +- 1.6e-4 (z -34)"))
def test_rescaling_no_better_than_nngp_on_test_points(case):
    p, sim, th = case
    diff, se = difference(th["rescaling"], th["nngp"], sim)
    print(f"D_rescaling − D_nngp = {diff:.3e} ± {se:.1e} (z {diff / se:.1f})")
    assert diff > -Z_ORDER * se          # rescaling not significantly better than the NNGP


def test_rescaling_uses_the_nngp_kernel_without_g_a():
    """THEORY §6: the rescaling kernel is ``Q k`` with ``k`` the NNGP kernel without g_a,
    so ``Q → g_a`` (N → ∞) recovers the NNGP; ``Q g_a k`` would differ at g_a ≠ 1."""
    p = hermite_problem("erf", chi=1.0, g_w=1.5, g_a=0.8)
    wide = msa.Problem(p.data, msa.Network.make("erf", N=10 ** 9, g_w=1.5, g_a=0.8,
                                                kappa=0.05, chi=1.0))
    r, n = msa.solve(wide, "rescaling"), msa.solve(wide, "nngp")
    assert abs(r.Q - 0.8) < 1e-6
    np.testing.assert_allclose(r.test_mean, n.test_mean, atol=1e-6)
    np.testing.assert_allclose(r.mean_kernel, n.mean_kernel)


# --------------------------------------------------------------------------- χ = √N
@pytest.fixture(scope="module")
def case_sqrt_n():
    p = hermite_problem("erf", chi=10.0, g_w=1.0, g_a=1.0)
    sim = simulate(p, "marginal", chains=4, steps=20_000, burn_in=1000, thin=2, seed=4,
                   chunk=5000)
    return p, sim, msa.solve(p, "one-loop", seed=2), msa.solve(p, "nngp")


def test_one_loop_agrees_with_simulation_at_chi_sqrt_n(case_sqrt_n):
    """χ = √N = 10: the tilt is stronger (IS ESS fraction ≈ 0.6), the one loop still
    agrees with the simulation within combined error bars, the NNGP is rejected."""
    p, sim, ol, nngp = case_sqrt_n
    z, zn = zscores(ol, sim), zscores(nngp, sim)
    print(f"chi=10 one loop ({ol.extras['estimator']}, ESS fraction "
          f"{ol.extras.get('is_ess_fraction', float('nan')):.2f}, wall {ol.wall_time:.0f}s): "
          f"max|z| {np.abs(z).max():.2f}, mean z² {np.mean(z ** 2):.2f}, rms test "
          f"{rms_error(ol, sim):.2e} (own se rms {np.sqrt(np.mean(ol.test_mean_se ** 2)):.1e},"
          f" sim se rms {np.sqrt(np.mean(sim.test_mean_se ** 2)):.1e}); NNGP max|z| "
          f"{np.abs(zn).max():.0f}; sim R̂ {sim.rhat_max:.3f}, wall {sim.wall_time:.0f}s")
    assert sim.rhat_max < 1.05
    assert ol.extras["residual_z2"] < 3.0
    assert np.abs(z).max() <= 4.0
    assert 0.3 <= np.mean(z ** 2) <= 3.0
    assert np.abs(zn).max() > 6
