"""Mean-field scaling (χ = N = 100), erf on the Hermite task (THEORY §4, §6):

1. importance sampling from the prior with one fixed sample set converges to a
   self-consistent but wrong saddle, which a fresh sample set exposes, while the shipped
   MCMC estimator's fresh-sample residual is consistent with zero;
2. the tree level agrees with marginal Langevin within combined error bars, and the same
   simulation rejects the NNGP;
5. the Σ_W outlier excess and its teacher overlap agree with the simulation.
"""

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.theory import nonlinear as NL

from .nonlinear_support import hermite_problem, simulate_with_batches, zscores

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def case():
    p = hermite_problem("erf", chi=100.0)
    tree = msa.solve(p, "tree", seed=1)
    sim, wsum = simulate_with_batches(p, steps=4000, burn_in=1000, thin=2, seed=3)
    return p, tree, sim, wsum


def test_prior_importance_sampling_is_self_consistent_but_wrong(case):
    p, tree, _, _ = case
    trap = NL.prior_importance_tree(p, n_samples=50_000, seed=0)
    assert trap.residual < 1e-8                      # converged on its own sample set
    fresh_trap = NL.fresh_residual(p, trap.tbar, seed=7)
    fresh_ours = NL.fresh_residual(p, tree.tbar, seed=7)
    print(f"prior IS: own residual {trap.residual:.2e}, ESS {trap.extras['ess']:.0f}, "
          f"fresh residual {fresh_trap['residual']:.3f} (mean z² {fresh_trap['z2']:.1f}); "
          f"MCMC tree: reported {tree.residual:.4f} ± {tree.extras['residual_se']:.4f} "
          f"(mean z² {tree.extras['residual_z2']:.2f}), fresh {fresh_ours['residual']:.4f} "
          f"(mean z² {fresh_ours['z2']:.2f})")
    assert fresh_trap["residual"] > 0.05 and fresh_trap["z2"] > 20
    # the fresh-sample residual (an independent set) is held to mean z² < 3; the residual
    # the solver reports is measured on the set its outputs were linearised on, and is held
    # to the solver's gate: with 16 jackknife groups and correlated components its mean z²
    # has sd ≈ 1.8, and over seeds 1–8 it was 4.25, 0.75, 0.74, 1.04, 1.35, 1.09, 0.73, 1.15
    assert fresh_ours["z2"] < 3.0 and tree.extras["residual_z2"] < NL.RESIDUAL_Z2_MAX
    assert fresh_ours["residual"] < 0.3 * fresh_trap["residual"]


def test_tree_level_agrees_with_simulation_and_nngp_is_rejected(case):
    p, tree, sim, _ = case
    assert sim.rhat_max < 1.1
    z = zscores(tree, sim)
    zn = zscores(msa.solve(p, "nngp"), sim)
    print(f"tree vs sim: max|z| {np.abs(z).max():.2f}, mean z² {np.mean(z**2):.2f}; "
          f"NNGP max|z| {np.abs(zn).max():.1f}; tree wall {tree.wall_time:.1f}s")
    assert np.abs(z).max() <= 4.0
    assert 0.3 <= np.mean(z ** 2) <= 3.0
    assert np.abs(zn).max() > 6


def test_weight_covariance_outlier_and_teacher_overlap(case):
    p, tree, sim, w = case
    ex, ex_se = tree.weight_cov_excess, tree.extras["weight_cov_excess_se"]
    ov, ov_se = tree.weight_cov_summary.teacher_overlap, tree.extras["weight_cov_teacher_overlap_se"]
    z_ex = (ex - w["excess"]) / np.hypot(ex_se, w["excess_se"])
    z_ov = (ov - w["overlap"]) / np.hypot(ov_se, w["overlap_se"])
    print(f"excess: tree {ex:.3f} ± {ex_se:.3f}, sim {w['excess']:.3f} ± {w['excess_se']:.3f} "
          f"(z {z_ex:.2f}); overlap: tree {ov:.4f} ± {ov_se:.4f}, sim {w['overlap']:.4f} ± "
          f"{w['overlap_se']:.4f} (z {z_ov:.2f})")
    assert ex > 3.0                 # a real outlier: directional feature learning
    assert ov > 0.9
    assert abs(z_ex) <= 4.0 and abs(z_ov) <= 4.0
