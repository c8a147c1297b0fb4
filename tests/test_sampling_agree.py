"""Full and marginal samplers agree within error bars on an erf network (THEORY §7),
and a theory solve runs concurrently with a simulation (the TUI does exactly that)."""

import threading

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.sampling import simulate

from .conftest import G_A, G_W, linear_problem


@pytest.mark.slow
def test_full_and_marginal_agree_on_erf():
    data = msa.make_data({"task": "hermite", "d": 10, "P": 16, "P_test": 12, "seed": 4})
    p = msa.Problem(data, msa.Network.make("erf", N=50, g_w=G_W, g_a=G_A, kappa=0.05, chi=5.0))
    m = simulate(p, sampler="marginal", steps=3000, burn_in=600, thin=2, seed=1)
    f = simulate(p, sampler="full", steps=12000, burn_in=2000, thin=5, seed=2)
    z = np.concatenate([(m.train_mean - f.train_mean) / np.hypot(m.train_mean_se, f.train_mean_se),
                        (m.test_mean - f.test_mean) / np.hypot(m.test_mean_se, f.test_mean_se)])
    zq = (m.Q - f.Q) / np.hypot(m.Q_se, f.Q_se)
    zl = ((m.weight_cov_top_eigenvalue - f.weight_cov_top_eigenvalue)
          / np.hypot(m.weight_cov_top_eigenvalue_se, f.weight_cov_top_eigenvalue_se))
    print(f"erf full vs marginal: max|z| {np.abs(z).max():.2f}, mean z² {np.mean(z**2):.2f}, "
          f"Q z {zq:.2f}, λ_top z {zl:.2f}")
    assert np.all(np.abs(z) < 4.5)
    assert 0.3 <= np.mean(z ** 2) <= 3.0
    assert abs(zq) < 4.5 and abs(zl) < 4.5
    # power: the NNGP is distinguishable from the simulation on the same run
    nn = msa.solve(p, "nngp")
    assert np.abs((m.train_mean - nn.train_mean) / m.train_mean_se).max() > 6


def test_theory_and_simulation_concurrently():
    p = linear_problem(N=50, chi=10.0, d=12, P=10, P_test=6)
    kw = dict(steps=400, burn_in=100, chains=2, seed=9)
    alone = simulate(p, **kw)
    theory_alone = msa.solve(p, "one-loop")
    out, errors = {}, []

    def sim():
        try:
            out["sim"] = simulate(p, **kw)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def theory():
        try:
            out["theory"] = [msa.solve(p, "one-loop") for _ in range(5)]
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=sim), threading.Thread(target=theory),
               threading.Thread(target=lambda: out.__setitem__("sim2", simulate(p, **kw)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert np.array_equal(out["sim"].traces["train_mean"], alone.traces["train_mean"])
    assert np.array_equal(out["sim2"].traces["train_mean"], alone.traces["train_mean"])
    for r in out["theory"]:
        np.testing.assert_allclose(r.test_mean, theory_alone.test_mean, rtol=1e-12)
