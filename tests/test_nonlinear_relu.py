"""ReLU networks in standard scaling (χ = 1, N = 100, g_w = g_a = 1, κ = 0.05) on the
Hermite (d = 10, P = 16) and XOR (d = 10, P = 40) tasks, against marginal Langevin
(THEORY §4, §6):

- the normalisability condition of §6 is detected: at XOR's NNGP t̄ the ReLU tilted
  measure does not exist (c·max(t̄·relu(Xu))² > 1) and is refused, and the bound's lower
  end is attained (no random direction beats it);
- the tree level solves on both tasks (fresh-sample residual consistent with zero, the
  measure inside its existence region) and is far closer to the simulation than the NNGP;
- the one loop agrees with the simulation within combined error bars on test points and
  improves on the tree level (Hermite); on train points it keeps a ~1e-3 systematic
  deviation (see the test);
- at χ = √N (= 10) the tree level still solves on both tasks and is far closer to the
  simulation than the NNGP (see the test for what it does not do there);
- in mean field (χ = N) at κ = 0.05 the anneal stops where its iterates press against
  the sampler's margin below the existence bound, and says so; at κ = 2 (N = 400, chosen
  afterwards, see the tests) the tree level agrees with the simulation on both tasks.
"""

import math

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.errors import MSAError
from msa_engine.sampling.run import simulate
from msa_engine.theory import nonlinear as NL
from msa_engine.theory import tilted as T
from msa_engine.theory.gp import Spectral, gp_mean

from .nonlinear_support import (N, Z_ORDER, difference, hermite_problem, rms_error,
                               simulate_with_batches, xor_problem, zscores)

pytestmark = pytest.mark.slow

RELU_RESIDUAL_Z2_MAX = 4.7    # 99.9% point of the measured null (see the tree test)


def _problem(task, chi=1.0):
    if task == "hermite":
        return hermite_problem("relu", chi=chi, g_w=1.0, g_a=1.0)
    return xor_problem(chi=chi, g_w=1.0, g_a=1.0)


@pytest.fixture(scope="module")
def cases():
    out = {}
    for task, seed in (("hermite", 5), ("xor", 6)):
        p = _problem(task)
        sim = simulate(p, "marginal", chains=4, steps=20_000, burn_in=1000, thin=2,
                       seed=seed, chunk=5000)
        out[task] = (p, sim, msa.solve(p, "tree", seed=1), msa.solve(p, "nngp"))
    return out


def test_relu_non_normalisable_tilt_detected_at_the_nngp_point():
    p = _problem("xor")
    s = T.TiltedSampler(p, chains=16, seed=0)
    tb = gp_mean(Spectral.of(p), p.network.g_a, p.network.kappa)[2]
    c = p.network.g_a * p.network.chi / p.network.N
    lo, up = T.relu_tilt_bound(s.geom.A, tb)
    U = np.random.default_rng(1).standard_normal((200_000, s.geom.m))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    rand = float(np.max((np.maximum(U @ s.geom.A.T, 0.0) @ tb) ** 2))
    print(f"XOR NNGP t̄: c·M in [{c * lo:.3f}, {c * up:.2f}], best random direction "
          f"{c * rand:.3f}")
    assert rand <= lo * (1 + 1e-9) <= up
    assert c * rand > 1.0                       # certainly not normalisable
    with pytest.raises(MSAError, match="not normalisable"):
        s.sample(tb, c, 4)


@pytest.mark.parametrize("task", ["hermite", "xor"])
def test_relu_tree_level_solves_and_beats_nngp(cases, task):
    p, sim, tree, nngp = cases[task]
    lo, up = tree.extras["relu_tilt_bound"]
    diff, se = difference(nngp, tree, sim)
    print(f"ReLU {task}: tree ({tree.extras['estimator']}, wall {tree.wall_time:.0f}s) rms "
          f"train {rms_error(tree, sim, 'train'):.2e} test {rms_error(tree, sim):.2e}; NNGP "
          f"{rms_error(nngp, sim, 'train'):.2e} / {rms_error(nngp, sim):.2e}; sim se rms "
          f"{np.sqrt(np.mean(sim.test_mean_se ** 2)):.1e}, R̂ {sim.rhat_max:.3f}, ESS "
          f"{sim.ess_min:.0f}, wall {sim.wall_time:.0f}s; c·M in [{lo:.3f}, {up:.2f}]; "
          f"residual z² {tree.extras['residual_z2']:.2f}; D_nngp − D_tree = {diff:.2e} ± "
          f"{se:.1e}")
    assert sim.rhat_max < 1.05
    # residual_z2 is the mean of P correlated z² (P = 16 on Hermite), here from the
    # Gaussian-IS re-solve: over 40 seeds of this solve (1-40, measured with Geyer's τ
    # in the MCMC burn-in that precedes it) it had mean 1.02, sd 0.72, i.e. a scaled χ²
    # with ≈ 4 degrees of freedom; its 99.9% point is 4.7 (the solver's own gate is 9).
    # A bound of 3 fails a correct solve about 2% of the time (the largest of the 40:
    # 3.83; at one t̄, 16 fresh MCMC residuals ranged over 0.37-2.97).
    assert tree.converged and tree.extras["residual_z2"] < RELU_RESIDUAL_Z2_MAX
    diag = tree.to_json_dict()["diagnostics"]        # what --json and sessions carry
    assert diag["residual_z2"] == tree.extras["residual_z2"]
    assert diag["estimator"] == tree.extras["estimator"] and "residual_se" in diag
    assert lo < 1.0                              # the measure it sampled exists
    assert diff > Z_ORDER * se


def test_relu_one_loop_improves_on_the_tree_and_agrees_on_test_points(cases):
    """On test points the one loop agrees with the simulation within combined error
    bars and is closer to it than the tree level.  On train points it is far closer
    than the tree, but not within error bars: against three 20k-step simulations
    averaged (seeds 5 and 7 with the lane streams, 5 with the single streams; they
    agree with each other, mean z² 0.91–0.95) its train-point mean z² is 4.8 (max |z|
    4.9, deviations ~1e-3 against SEs ~4e-4; the tree's: 513), a systematic error
    of the truncated expansion at N = 100 (O(1/N²)) or of its error bars, not
    separated here.  So the train points are held to the improvement, not to
    agreement."""
    p, sim, tree, _ = cases["hermite"]
    P = p.data.P
    ol = NL.one_loop(p, seed=2, tbar0=tree.tbar)
    z, zt = zscores(ol, sim), zscores(tree, sim)
    diff, se = difference(tree, ol, sim)
    print(f"ReLU hermite one loop ({ol.extras['estimator']}, wall {ol.wall_time:.0f}s): test "
          f"max|z| {np.abs(z[P:]).max():.2f}, mean z² {np.mean(z[P:] ** 2):.2f}; train max|z| "
          f"{np.abs(z[:P]).max():.2f}, mean z² {np.mean(z[:P] ** 2):.2f} (tree "
          f"{np.mean(zt[:P] ** 2):.1f}); rms train {rms_error(ol, sim, 'train'):.2e} test "
          f"{rms_error(ol, sim):.2e}; D_tree − D_loop = {diff:.2e} ± {se:.1e}")
    assert ol.extras["residual_z2"] < 3.0
    assert np.abs(z[P:]).max() <= 4.0
    assert 0.3 <= np.mean(z[P:] ** 2) <= 3.0
    assert diff > Z_ORDER * se
    assert np.mean(z[:P] ** 2) < 0.1 * np.mean(zt[:P] ** 2)


@pytest.mark.parametrize("task,seed", [("hermite", 5), ("xor", 6)])
def test_relu_tree_level_at_chi_sqrt_n_solves_and_beats_nngp(task, seed):
    """χ = √N = 10, between the scalings.  Measured (seeds as here): the tree level solves
    by MCMC (residual mean z² 1.49 Hermite, 1.40 XOR) with the measure just inside its
    existence region (c·M ≥ 0.956 and 0.919: the tilt is near the §6 bound), and is far
    closer to a 4 × 20k-step simulation than the NNGP (D_nngp − D_tree = 0.076 ± 0.0009
    and 0.031 ± 0.0002).  On test points it agrees within error bars (max|z| 3.21 and
    3.75, mean z² 1.56 and 2.48) but not on train points (mean z² 9.9 and 7.3: the
    finite-N corrections that the one loop would add).  Not asserted: that agreement
    (one measurement each, and not a claim of the theory at intermediate χ), and the
    one loop, which fails here with "... the ReLU tilted measure's existence bound ..."
    (Hermite: no damped step keeps it inside, or an accepted iterate is later found
    beyond it) or a loop saddle outside the existence region (XOR)."""
    p = _problem(task, chi=math.sqrt(N))
    sim = simulate(p, "marginal", chains=4, steps=20_000, burn_in=1000, thin=2, seed=seed,
                   chunk=5000)
    tree, nngp = msa.solve(p, "tree", seed=1), msa.solve(p, "nngp")
    lo, up = tree.extras["relu_tilt_bound"]
    diff, se = difference(nngp, tree, sim)
    z = zscores(tree, sim)
    P = p.data.P
    print(f"ReLU {task} χ=√N: tree ({tree.extras['estimator']}, wall {tree.wall_time:.0f}s) "
          f"residual z² {tree.extras['residual_z2']:.2f}, c·M in [{lo:.3f}, {up:.2f}]; test "
          f"max|z| {np.abs(z[P:]).max():.2f}, mean z² {np.mean(z[P:] ** 2):.2f}; train mean "
          f"z² {np.mean(z[:P] ** 2):.2f}; D_nngp − D_tree = {diff:.2e} ± {se:.1e}; sim R̂ "
          f"{sim.rhat_max:.3f}")
    assert sim.rhat_max < 1.05
    assert tree.converged and tree.extras["residual_z2"] < NL.RESIDUAL_Z2_MAX
    assert lo < 1.0
    assert diff > Z_ORDER * se
    if task == "hermite":   # the one loop's failure is a one-line reason, not a number
        with pytest.raises(MSAError, match="existence bound"):
            NL.one_loop(p, seed=2, tbar0=tree.tbar)


def test_an_iterate_found_beyond_the_bound_later_is_a_one_line_reason(monkeypatch):
    """The bound is searched for anew at every sampling call, so an iterate accepted just
    inside it can be found beyond it at the next: the solver says so in one line (it used
    to surface as the sampler's own message, naming no iterate)."""
    from msa_engine.errors import NotNormalisable
    p = _problem("hermite", chi=math.sqrt(N))
    calls = {"n": 0}
    real = T.TiltedSampler.sample

    def sample(self, tbar, c, draws, *args, **kwargs):
        calls["n"] += draws == 16        # the iterations' calls (the warm start's draw 4)
        if calls["n"] == 2:
            raise NotNormalisable("the ReLU tilted measure is not normalisable (test)")
        return real(self, tbar, c, draws, *args, **kwargs)

    monkeypatch.setattr(T.TiltedSampler, "sample", sample)
    with pytest.raises(MSAError, match="existence bound") as err:   # no anneal: at the target
        NL.tree(p, seed=1, tbar0=0.1 * p.data.y_train, chains=64, max_chains=64, groups=16,
                draws=16, final_draws=32)
    assert "\n" not in str(err.value) and "iterate lies beyond" in str(err.value)
    assert not isinstance(err.value, NotNormalisable)


def test_relu_mean_field_stops_with_the_existence_bound_as_its_reason():
    """Mean field (χ = N) on Hermite at κ = 0.05: the anneal's iterates press against the
    sampler's margin below the ReLU existence bound (c·M ≥ 0.95·RELU_MARGIN) by χ ≈ 20,
    and the failure names that cause in one line — not "use more chains", which cannot
    help (the tree saddle is strictly inside the bound, F being strictly concave, but the
    chains do not follow the iterates there: README, non-linear theory)."""
    p = _problem("hermite", chi=float(N))
    with pytest.raises(MSAError, match="press against the ReLU tilted measure's existence "
                                       "bound") as err:
        msa.solve(p, "tree", seed=0)
    assert "\n" not in str(err.value) and "more chains" not in str(err.value)


# --------------------------------------------------------------------------- χ = N
# Fixed after the κ = 0.05 mean-field failure above, and said so: at κ = 0.05 the saddle
# is beyond the chains' reach; the tree level's c·M at the saddle on Hermite was 0.79,
# 0.90 and 0.95 at κ = 3, 2 and 1.5, and κ = 1 failed (> 0.98).  κ = 2 puts it at ≈ 0.90.
# N = 400, not 100: at N = 100 the N = ∞ tree level's own error showed against the
# simulation (Hermite max|z| 4.1–4.3 over 56 points; XOR mean z² 3.2); at 400 it did not
# (Hermite max|z| 1.9–2.6, XOR 2.1–3.1, mean z² 0.5–1.7 over tree seeds 1, 2, 5).
MF_N, MF_KAPPA = 400, 2.0


def _mean_field_problem(task):
    spec = ({"task": "hermite", "d": 10, "P": 16, "P_test": 40, "seed": 0} if task == "hermite"
            else {"task": "xor", "d": 10, "P": 40, "P_test": 40, "seed": 0})
    return msa.Problem(msa.make_data(spec), msa.Network.make(
        "relu", N=MF_N, g_w=1.0, g_a=1.0, kappa=MF_KAPPA, chi=float(MF_N)))


@pytest.mark.parametrize("task", ["hermite", "xor"])
def test_relu_mean_field_tree_level_agrees_with_simulation(task):
    """Mean field (χ = N = 400, κ = 2): the tree level solves inside the existence bound
    and agrees with marginal Langevin within combined error bars (|z| ≤ 4, mean z² in
    [0.3, 3]), while the same simulation rejects the NNGP; on Hermite the Σ_W outlier
    excess and its teacher overlap agree too (directional feature learning)."""
    p = _mean_field_problem(task)
    tree = msa.solve(p, "tree", seed=1)
    if task == "hermite":        # (XOR has no teacher direction: no Σ_W overlap)
        sim, w = simulate_with_batches(p, steps=8000, burn_in=1000, thin=2, seed=3)
    else:
        sim = simulate(p, "marginal", chains=4, steps=8000, burn_in=1000, thin=2, seed=3,
                       chunk=5000)
    z, zn = zscores(tree, sim), zscores(msa.solve(p, "nngp"), sim)
    lo, _ = tree.extras["relu_tilt_bound"]
    print(f"{task}: c·M {lo:.3f}; tree vs sim max|z| {np.abs(z).max():.2f}, mean z² "
          f"{np.mean(z ** 2):.2f}; NNGP max|z| {np.abs(zn).max():.0f}; R̂ {sim.rhat_max:.3f}")
    assert tree.converged and lo < T.RELU_MARGIN
    assert sim.rhat_max < 1.1
    assert np.abs(z).max() <= 4.0 and 0.3 <= np.mean(z ** 2) <= 3.0
    assert np.abs(zn).max() > 6
    if task == "hermite":
        ex, ex_se = tree.weight_cov_excess, tree.extras["weight_cov_excess_se"]
        ov = tree.weight_cov_summary.teacher_overlap
        ov_se = tree.extras["weight_cov_teacher_overlap_se"]
        z_ex = (ex - w["excess"]) / np.hypot(ex_se, w["excess_se"])
        z_ov = (ov - w["overlap"]) / np.hypot(ov_se, w["overlap_se"])
        print(f"  excess {ex:.3f} ± {ex_se:.3f} vs {w['excess']:.3f} (z {z_ex:.2f}); overlap "
              f"{ov:.4f} ± {ov_se:.4f} vs {w['overlap']:.4f} (z {z_ov:.2f})")
        assert ex > 1.0 and abs(z_ex) <= 4.0 and abs(z_ov) <= 4.0
