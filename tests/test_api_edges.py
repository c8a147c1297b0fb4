"""The headless Python API as a script calls it (the review of 2026-12-01): arguments a
researcher plausibly passes are refused with ``msa.MSAError`` in one line, before a
session is touched; a sweep never writes a file that cannot be loaded; a result records
the seed it ran with; annealing the one loop by hand reaches what ``msa.solve`` does."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.config import config_from_dict
from msa_engine.sessions import Session, load_session
from msa_engine.sweep import run_sweep

CFG = {"data": {"task": "linear", "d": 5, "P": 8, "P_test": 6, "seed": 2},
       "network": {"N": 20}}


def _session():
    return Session.new(config_from_dict(CFG).resolved, name="t")


@pytest.mark.parametrize("kwargs,message", [
    ({"chis": [0]}, "chis values must be finite numbers > 0 (got 0)"),
    ({"chis": [-1]}, "chis values must be finite numbers > 0 (got -1)"),
    ({"chis": [float("nan")]}, "chis values must be finite numbers > 0"),
    ({"chis": ["x"]}, "chis: 'x' is not a number, 'N' or 'mean-field'"),
    ({"chis": None}, "chis: expected χ values, got None"),
    ({"chis": [1], "widths": [0]}, "widths must be an integer >= 1 (got 0)"),
    ({"chis": [1], "widths": [10.5]}, "widths must be an integer >= 1 (got 10.5)"),
    ({"chis": [1], "widths": "x"}, "widths must be a list of integers >= 1"),
    ({"chis": [1], "seed": -1}, "seed must be an integer >= 0 (got -1)"),
    ({"chis": [1], "seed": None}, "seed must be an integer >= 0 (got None)"),
])
def test_a_sweep_refuses_bad_arguments_before_touching_the_session(tmp_path, kwargs, message):
    """χ = 0 or a width of 0 ran: the failed points were recorded with them and autosaved,
    and the file could no longer be loaded (its earlier results with it)."""
    s = _session()
    path = tmp_path / "s.json"
    run_sweep(s, [1, 2], theories=["exact"], path=path)
    before = path.read_bytes()
    with pytest.raises(msa.MSAError, match="^" + re.escape(message)):
        run_sweep(s, theories=["exact"], path=path, **kwargs)
    assert path.read_bytes() == before and s.sweep["chis"] == [1.0, 2.0]
    assert len(load_session(path).entries) == 2


def test_a_sweep_takes_the_chi_words_and_arrays():
    s = _session()
    run_sweep(s, ["mean-field", "standard"], widths=np.array([10, 30]), theories=["exact"],
              autosave=False)
    assert sorted((e["N"], e["chi"]) for e in s.entries) == [(10, 1.0), (10, 10.0),
                                                               (30, 1.0), (30, 30.0)]


def test_a_result_of_other_data_is_refused_by_the_session():
    s = _session()
    other = msa.solve(msa.Problem(msa.make_data({"task": "linear", "d": 3, "P": 4}),
                                  msa.Network()), "nngp")
    with pytest.raises(msa.MSAError, match="the result is of other data than the session's"):
        s.add_result(other)
    with pytest.raises(msa.MSAError, match="add_result needs a TheoryResult"):
        s.add_result({"a": 1})
    assert s.entries == []
    s.add_result(msa.solve(s.problem(chi=3.0), "nngp"))     # its own data, another χ
    assert len(s.entries) == 1


def test_objects_in_the_wrong_place_are_named():
    data = msa.make_data({"task": "linear", "d": 5, "P": 8, "seed": 1})
    with pytest.raises(msa.MSAError, match="expected a Problem .* got Data"):
        msa.solve(data, "tree")
    with pytest.raises(msa.MSAError, match="expected a Problem .* got NoneType"):
        msa.simulate(None)
    with pytest.raises(msa.MSAError, match="network must be a Network .* got str"):
        msa.Problem(data, "linear")
    with pytest.raises(msa.MSAError, match="data must be a Data .* got Network"):
        msa.Problem(msa.Network(), data)
    pb = msa.Problem(data, msa.Network.make(N=20))
    with pytest.raises(msa.MSAError, match="with_network: .*'foo'"):
        pb.with_network(foo=1)
    with pytest.raises(msa.MSAError, match="cancel must be a threading.Event"):
        msa.simulate(pb, cancel=True)
    with pytest.raises(msa.MSAError, match="callback must be callable"):
        msa.simulate(pb, callback=5)
    with pytest.raises(msa.MSAError, match="gamma must be a number"):
        msa.Network.make(N=100, gamma=True)
    msa.simulate(pb, steps=20, burn_in=10, chains=2, cancel=threading.Event())


def test_chi_takes_the_same_words_everywhere():
    pb = msa.Problem(msa.make_data({"task": "linear", "d": 5, "P": 8, "seed": 1}),
                     msa.Network.make(N=20))
    assert pb.with_chi("mean-field").network.chi == 20.0
    assert pb.with_chi("standard").network.chi == 1.0
    assert pb.with_chi(np.float64(3.5)).network.chi == 3.5
    with pytest.raises(msa.MSAError, match="with_chi needs a χ"):
        pb.network.with_chi(None)
    with pytest.raises(msa.MSAError, match=r"chi must be > 0 \(got -2.0\)"):
        pb.with_chi(-2.0)
    one = msa.anneal(pb, "tree", 20.0)                     # a single χ, not a sequence
    both = msa.anneal(pb, "tree", [1.0, "mean-field"])
    assert len(one) == 1 and one[0].problem.network.chi == both[1].problem.network.chi == 20.0
    with pytest.raises(msa.MSAError, match="tbar0 must have the P = 8"):
        msa.anneal(pb, "tree", [2.0], tbar0=np.zeros(3))


def test_an_annealing_grid_is_bounded():
    with pytest.raises(msa.MSAError, match="at most 10000 are taken"):
        msa.chi_grid(100, factor=1 + 1e-12)
    pb = msa.Problem(msa.make_data({"task": "linear", "d": 5, "P": 8, "seed": 1}),
                     msa.Network.make(N=200, chi="mean-field"))
    with pytest.raises(msa.MSAError, match="at most 10000"):
        msa.solve(pb, "tree", anneal_factor=1 + 1e-12)


def test_results_record_the_seed_they_ran_with():
    pb = msa.Problem(msa.make_data({"task": "linear", "d": 5, "P": 8, "seed": 1}),
                     msa.Network.make(N=20, chi=3.0))
    assert [r.seed for r in msa.anneal(pb, "tree", [1, 2], seed=5)] == [5, 5]
    assert msa.solve(pb, "tree", seed=5).seed == 5


def test_annealing_the_one_loop_by_hand_reaches_what_solve_gives():
    """``msa.anneal(pb, "one-loop", msa.chi_grid(100))`` on the README's problem failed at
    χ = 51.8 (the one loop warm-started from the previous χ's left the region where the
    tilted precision is positive) while ``msa.solve`` succeeded: such a point now starts
    from the tree annealed to it, as ``solve`` does, and the path ends on solve's numbers."""
    data = msa.make_data({"task": "linear", "d": 30, "P": 20, "P_test": 40, "seed": 1})
    pb = msa.Problem(data, msa.Network.make("linear", N=100, g_w=1.5, g_a=0.8, kappa=0.1,
                                            chi="mean-field"))
    path = msa.anneal(pb, "one-loop", msa.chi_grid(100.0))
    ref = msa.solve(pb, "one-loop")
    assert len(path) == len(msa.chi_grid(100.0))
    assert np.array_equal(path[-1].test_mean, ref.test_mean) and path[-1].Q == ref.Q


def test_make_data_takes_its_spec_as_keywords_too():
    """``msa.make_data(task="linear", d=4)`` was a TypeError (a dict only)."""
    a = msa.make_data(task="linear", d=4, P=5, seed=2)
    b = msa.make_data({"task": "linear", "d": 4, "P": 5, "seed": 2})
    c = msa.make_data({"task": "linear", "d": 9, "P": 5}, d=4, seed=2)    # keywords win
    assert np.array_equal(a.X_train, b.X_train) and a.spec == b.spec == c.spec
    with pytest.raises(msa.MSAError, match="unknown key"):
        msa.make_data(task="linear", dd=4)


def test_extreme_scales_give_no_numpy_warnings():
    """κ = 1e300 (exact) and an Ising coupling of 1e308 leaked numpy overflow warnings
    (the overflowing terms are the 0 or 1 their limits give)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        data = msa.make_data({"task": "linear", "d": 6, "P": 10, "seed": 1})
        r = msa.solve(msa.Problem(data, msa.Network.make(N=30, kappa=1e300)), "exact")
        assert np.isfinite(r.test_discrepancy)
        msa.make_data({"task": "ising", "J": 1e308, "d": 5, "P": 6})


def test_data_from_python_objects_says_what_is_wrong():
    X, y = np.ones((3, 2)), np.ones(3)
    assert msa.Data(X, y, X, y, spec=None).spec == {}
    with pytest.raises(msa.MSAError, match="X_train must be numeric"):
        msa.Data([[10 ** 400, 1]], [1], X[:1], y[:1])           # an OverflowError
    with pytest.raises(msa.MSAError, match="X_train holds None"):
        msa.Data(np.array([[1, None]], dtype=object), [1], X[:1], y[:1])
    with pytest.raises(msa.MSAError, match="Data spec must be a dict"):
        msa.Data(X, y, X, y, spec=5)


def test_results_are_read_only_and_print_as_one_line():
    """A result's repr was 40 kB (its arrays and the problem's); its arrays could be
    written, unseen by the Σ_W summary it had already cached."""
    p = config_from_dict(CFG).problem
    res = msa.anneal(p, "tree", [1.0, 2.0], tbar0=np.zeros(p.data.P))[-1]
    for name in ("train_mean", "test_mean", "test_predictive_variance", "weight_cov",
                 "mean_kernel", "tbar", "train_mean_se", "test_mean_se"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(res, name)[0] = 1.0
    # a result built from a caller's arrays leaves them writable for their owner
    mine = np.zeros(p.data.P)
    built = msa.results.TheoryResult("x", p, res.train_mean, res.test_mean,
                                     res.test_predictive_variance, res.weight_cov, None, mine)
    mine[0] = 1.0
    assert built.tbar[0] == 1.0 and not built.tbar.flags.writeable
    import copy
    import pickle
    for back in (pickle.loads(pickle.dumps(res)), copy.deepcopy(res)):
        assert not back.weight_cov.flags.writeable and not back.test_mean.flags.writeable
        assert np.array_equal(back.test_mean, res.test_mean) and repr(back) == repr(res)
    text = repr(res)
    assert "\n" not in text and len(text) < 300, text
    assert re.fullmatch(r"TheoryResult\(theory='tree', chi=2, N=20, P=8, d=5, "
                        r"train_discrepancy=\S+, test_discrepancy=\S+, Q=\S+, converged=True, "
                        r"wall_time=\S+\)", text), text
    assert repr(p).startswith("Problem(data=Data(P=8, P_test=6, d=5, teacher=yes, spec={")
    assert len(repr(p)) < 400
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", msa.MSAWarning)
        sim = msa.simulate(p, steps=20, burn_in=10, chains=2)
    text = repr(sim)
    assert text.startswith("SimulationResult(theory='sim-marginal', chi=") and len(text) < 400
    assert "sampler='marginal'" in text and "rhat_max=" in text and "\n" not in text
    with pytest.raises(ValueError, match="read-only"):
        sim.test_mean[0] = 0.0
