"""Problems, task generators, loaders and NNGP kernels (THEORY §1, §3, §8)."""

import math
import warnings

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.kernels import monte_carlo_kernel, nngp_kernel, nngp_kernel_diag
from msa_engine.tasks import make_data


# --- networks and chi ------------------------------------------------------

def test_chi_presets_and_gamma():
    assert msa.Network.make(N=400, chi="standard").chi == 1.0
    assert msa.Network.make(N=400, chi="mean-field").chi == 400.0
    assert msa.Network.make(N=400, gamma=1.5).chi == pytest.approx(20.0)
    assert msa.Network.make(N=400, chi=7).chi == 7.0
    assert msa.Network.make(N=400, gamma=1.5).gamma == pytest.approx(1.5)


@pytest.mark.parametrize("kwargs,msg", [
    ({"kappa": -0.1}, "kappa must be > 0 (got -0.1)"),
    ({"kappa": 0}, "kappa must be > 0"),
    ({"g_w": 0}, "g_w must be > 0"),
    ({"g_a": float("nan")}, "g_a must be > 0"),
    ({"N": 0}, "N must be an integer >= 1"),
    ({"N": 2.5}, "N must be an integer"),
    ({"chi": -1}, "chi must be > 0"),
    ({"chi": "huge"}, "chi must be a positive number"),
    ({"activation": "tanh"}, "activation must be one of"),
    ({"gamma": 3}, "gamma must lie in"),
])
def test_network_validation_messages(kwargs, msg):
    with pytest.raises(msa.MSAError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        msa.Network.make(**kwargs)


def test_data_validation():
    X = np.zeros((3, 2))
    with pytest.raises(msa.MSAError, match="X_train has 3 rows but y_train has 2"):
        msa.Data(X, [1, 2], X, [1, 2, 3])
    with pytest.raises(msa.MSAError, match="NaN or inf"):
        msa.Data(X, [1, np.nan, 2], X, [1, 2, 3])
    with pytest.raises(msa.MSAError, match="X_test has 3 features"):
        msa.Data(X, [1, 2, 3], np.zeros((3, 3)), [1, 2, 3])
    with pytest.raises(msa.MSAError, match="empty"):
        msa.Data(np.zeros((0, 2)), [], X, [1, 2, 3])
    d = msa.Data(X, [1, 2, 3], X, [1, 2, 3])
    with pytest.raises(ValueError):
        d.X_train[0, 0] = 1.0          # frozen arrays


# --- tasks --------------------------------------------------------------------

@pytest.mark.parametrize("task", ["linear", "ising", "hermite", "xor"])
def test_generators_are_seeded_and_reproducible(task):
    a = make_data({"task": task, "seed": 3})
    b = make_data({"task": task, "seed": 3})
    c = make_data({"task": task, "seed": 4})
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.X_train, c.X_train)
    assert a.spec["seed"] == 3 and a.spec["task"] == task


def test_linear_teacher_definition():
    d = make_data({"task": "linear", "d": 12, "P": 50, "P_test": 5, "seed": 0})
    np.testing.assert_allclose(d.y_train, d.X_train @ d.teacher / math.sqrt(12))
    noisy = make_data({"task": "linear", "d": 12, "P": 50, "P_test": 5, "seed": 0, "sigma": 0.5})
    assert not np.allclose(noisy.y_train, noisy.X_train @ noisy.teacher / math.sqrt(12))


def test_ising_task_statistics():
    d = make_data({"task": "ising", "d": 40, "P": 2000, "P_test": 1, "seed": 0, "p": 0.75})
    agree = (d.X_train == d.y_train[:, None]).mean()
    assert agree == pytest.approx(0.75, abs=0.01)
    assert set(np.unique(d.y_train)) == {-1.0, 1.0}
    np.testing.assert_allclose(d.teacher, np.ones(40) / math.sqrt(40))
    # chain coupling J>0 adds positive nearest-neighbour correlation within a class
    j = make_data({"task": "ising", "d": 40, "P": 2000, "P_test": 1, "seed": 0, "J": 0.5})
    def nn_corr(data):
        s = data.X_train * data.y_train[:, None]
        return float(np.mean((s[:, 1:] - s.mean()) * (s[:, :-1] - s.mean())))
    assert nn_corr(j) > nn_corr(d) + 0.05


def test_hermite_task_definition():
    d = make_data({"task": "hermite", "d": 5, "P": 30, "seed": 1})
    z = d.X_train[:, 0]
    np.testing.assert_allclose(d.y_train, 3.2 * z - 0.8 * z ** 3)
    # = 0.8 (He1 - He3): He3 = z³ - 3z
    np.testing.assert_allclose(d.y_train, 0.8 * (z - (z ** 3 - 3 * z)))
    np.testing.assert_array_equal(d.teacher, np.eye(5)[0])


def test_xor_task_definition():
    d = make_data({"task": "xor", "d": 6, "P": 400, "seed": 2, "sigma": 0.0})
    np.testing.assert_allclose(d.y_train, np.sign(d.X_train[:, 0]) * np.sign(d.X_train[:, 1]))
    assert d.teacher is None


def test_npz_and_csv_loaders(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((10, 3)), rng.standard_normal(10)
    np.savez(tmp_path / "d.npz", X_train=X[:6], y_train=y[:6], X_test=X[6:], y_test=y[6:],
             teacher=np.ones(3))
    d = make_data({"task": "npz", "path": "d.npz"}, base_dir=tmp_path)
    np.testing.assert_array_equal(d.X_test, X[6:])
    np.testing.assert_array_equal(d.teacher, np.ones(3))
    np.savez(tmp_path / "bad.npz", X_train=X)
    with pytest.raises(msa.MSAError, match="missing array"):
        make_data({"task": "npz", "path": str(tmp_path / "bad.npz")})
    with pytest.raises(msa.MSAError, match="no such file"):
        make_data({"task": "npz", "path": str(tmp_path / "nope.npz")})
    rows = "x1,x2,x3,y\n" + "\n".join(",".join(f"{v:.17g}" for v in (*X[i], y[i])) for i in range(10))
    (tmp_path / "d.csv").write_text(rows)
    c = make_data({"task": "csv", "path": str(tmp_path / "d.csv"), "test_fraction": 0.3, "seed": 1})
    assert c.P == 7 and c.P_test == 3 and c.d == 3
    assert sorted(np.concatenate([c.y_train, c.y_test])) == pytest.approx(sorted(y))
    (tmp_path / "bad.csv").write_text("1,2,3\n4,five,6\n")
    with pytest.raises(msa.MSAError, match="data row 2, column 2: 'five' is not a number"):
        make_data({"task": "csv", "path": str(tmp_path / "bad.csv")})


def test_standardize_and_scale_warning():
    with pytest.warns(msa.MSAWarning, match="far from O\\(1\\)"):
        d = make_data({"task": "hermite", "d": 5, "P": 30, "seed": 1, "a1": 300.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = make_data({"task": "hermite", "d": 5, "P": 30, "seed": 1, "a1": 300.0,
                       "standardize": True})
    assert np.mean(s.y_train) == pytest.approx(0, abs=1e-12)
    assert np.std(s.y_train) == pytest.approx(1)
    mu, sd = np.mean(d.y_train), np.std(d.y_train)
    np.testing.assert_allclose(s.y_test, (d.y_test - mu) / sd)


@pytest.mark.parametrize("spec,msg", [
    ({"task": "nope"}, "data.task must be one of"),
    ({"task": "linear", "P": 0}, "data.P must be >= 1"),
    ({"task": "linear", "P": 2.5}, "data.P must be an integer"),
    ({"task": "linear", "colour": 1}, "unknown key"),
    ({"task": "ising", "p": 1.5}, "data.p must be <= 1"),
    ({"task": "xor", "d": 1}, "d must be >= 2"),
])
def test_bad_task_specs(spec, msg):
    with pytest.raises(msa.MSAError, match=msg):
        make_data(spec)


# --- kernels -----------------------------------------------------------------

@pytest.mark.parametrize("act", ["linear", "erf", "relu"])
def test_nngp_kernels_match_monte_carlo(act):
    rng = np.random.default_rng(1)
    X1, X2 = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    exact = nngp_kernel(act, X1, X2, g_w=1.7)
    mc, se = monte_carlo_kernel(act, X1, X2, g_w=1.7, n_samples=200_000, rng=7)
    z = (mc - exact) / se
    assert np.max(np.abs(z)) < 4.5
    assert 0.3 < np.mean(z ** 2) < 3.0
    np.testing.assert_allclose(nngp_kernel_diag(act, X1, 1.7), np.diag(nngp_kernel(act, X1, None, 1.7)))


def test_kernel_mc_test_has_power():
    # the same z-test rejects a wrong prefactor (ReLU kernel without the 1/2π)
    rng = np.random.default_rng(1)
    X1 = rng.standard_normal((5, 4))
    wrong = nngp_kernel("relu", X1, None, 1.7) * 1.05
    mc, se = monte_carlo_kernel("relu", X1, None, g_w=1.7, n_samples=200_000, rng=7)
    assert np.max(np.abs((mc - wrong) / se)) > 6
