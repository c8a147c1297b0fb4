"""The chunked driver: seeds, checkpoints and resume, callbacks, cancellation,
divergence, step-size adaptation and the ULA bias (issue 3)."""

import threading

import numpy as np
import pytest

import msa_engine as msa
from msa_engine import Cancelled, MSAError
from msa_engine.sampling import ChunkRecord, SimulationResult, simulate
from msa_engine.results import TheoryResult

from .conftest import linear_problem

SMALL = dict(chains=3, steps=300, burn_in=100, chunk=100)


@pytest.fixture(scope="module")
def prob():
    return linear_problem(N=40, chi=4.0, d=10, P=12, P_test=8)


def test_same_seed_identical_different_seeds_independent(prob):
    a = simulate(prob, seed=3, **SMALL)
    b = simulate(prob, seed=3, **SMALL)
    c = simulate(prob, seed=4, **SMALL)
    assert isinstance(a, SimulationResult) and isinstance(a, TheoryResult)
    assert np.array_equal(a.traces["train_mean"], b.traces["train_mean"])
    assert np.array_equal(a.weight_cov, b.weight_cov)
    assert not np.array_equal(a.traces["train_mean"], c.traces["train_mean"])
    # independent: the two runs' chain-mean deviations are uncorrelated (z-test on r)
    ea, ec = a.traces["energy"].ravel(), c.traces["energy"].ravel()
    r = np.corrcoef(ea, ec)[0, 1]
    n_eff = min(a.ess_min, c.ess_min)
    assert abs(r) < 4.5 / np.sqrt(n_eff)
    # the chains within one run start from independent prior draws
    assert not np.allclose(a.traces["energy"][0], a.traces["energy"][1])


@pytest.mark.parametrize("act", ["linear", "erf"])
def test_resume_equals_uninterrupted(prob, tmp_path, act):
    # erf: the full sampler's observables read the Φ its step cached, which a resumed
    # run rebuilds from the checkpointed W
    if act == "erf":
        prob = msa.Problem(msa.make_data({"task": "hermite", "d": 6, "P": 10, "P_test": 5,
                                          "seed": 2}),
                           msa.Network.make("erf", N=20, g_w=1.0, g_a=1.0, kappa=0.3, chi=2.0))
    ck = tmp_path / "run.npz"
    full = simulate(prob, seed=5, sampler="full", **SMALL)
    seen = []

    def stop_after_two(rec):
        seen.append(rec)
        if len(seen) == 2:
            raise Cancelled("test")

    with pytest.raises(Cancelled):
        simulate(prob, seed=5, sampler="full", checkpoint=ck, callback=stop_after_two, **SMALL)
    assert ck.exists() and not (tmp_path / "run.npz.tmp").exists()
    resumed = simulate(prob, seed=5, sampler="full", checkpoint=ck, resume=True, **SMALL)
    for k in full.traces:
        assert np.array_equal(full.traces[k], resumed.traces[k]), k
    assert np.array_equal(full.weight_cov, resumed.weight_cov)
    assert np.array_equal(full.test_predictive_variance, resumed.test_predictive_variance)
    assert full.step_size == resumed.step_size and full.acceptance == resumed.acceptance
    # the whole run's chunk records, those before the interruption from the checkpoint
    # (the log held only the chunks after the resume)
    timing = ("steps_per_second", "eta_seconds", "time")
    same = [{k: v for k, v in r.to_dict().items() if k not in timing} for r in full.log]
    back = [{k: v for k, v in r.to_dict().items() if k not in timing} for r in resumed.log]
    assert len(resumed.log) == len(full.log) and str(back) == str(same)   # (NaN ≠ NaN)
    # a checkpoint of another run is refused
    with pytest.raises(MSAError, match="different run"):
        simulate(prob, seed=6, sampler="full", checkpoint=ck, resume=True, **SMALL)


def test_a_slow_checkpoint_is_written_less_often_and_always_before_a_stop(prob, tmp_path,
                                                                          monkeypatch):
    """The checkpoint holds the whole run's traces: written after every chunk it took
    most of a long run (53 s against 15 s for 4 × 40 000 steps).  Now at most 5% of the
    time: after the first chunk, the last, before a cancellation, and between them once
    twenty times the last write's duration has passed."""
    import time as _time
    from msa_engine.sampling import run as run_mod
    writes = []
    real_save = run_mod._Run.save

    def slow_save(self, path, elapsed, log=()):
        writes.append(self.steps_done)
        real_save(self, path, elapsed, log)
        _time.sleep(0.05)                        # a big checkpoint: ≥ 1 s between writes

    monkeypatch.setattr(run_mod._Run, "save", slow_save)
    ck = tmp_path / "run.npz"
    kw = dict(chains=2, steps=2000, burn_in=0, chunk=10, seed=3)
    simulate(prob, checkpoint=ck, **kw)
    assert writes[0] == 10 and writes[-1] == 2000 and len(writes) < 40, writes
    import json
    with np.load(ck, allow_pickle=False) as z:
        assert json.loads(str(z["meta"]))["steps_done"] == 2000
    # a stop between scheduled writes is written first, so that --resume starts there
    writes.clear()
    seen = []

    def stop(rec):
        seen.append(rec)
        if len(seen) == 7:
            raise Cancelled("test")

    with pytest.raises(Cancelled):
        simulate(prob, checkpoint=ck, callback=stop, **kw)
    assert writes[0] == 10 and writes[-1] == 70, writes
    resumed = simulate(prob, checkpoint=ck, resume=True, **kw)
    assert np.array_equal(resumed.traces["energy"], simulate(prob, **kw).traces["energy"])


def test_the_write_pacer_spaces_writes_by_their_cost_and_a_floor(monkeypatch):
    from msa_engine import pacing
    now = [128.0]                               # (binary fractions: exact sums)
    monkeypatch.setattr(pacing.time, "perf_counter", lambda: now[0])
    p = pacing.WritePacer(share=0.0625, min_interval=0.5)
    assert p.due()                              # nothing written yet
    p.wrote(start=now[0] - 0.25)                # a write of 0.25 s: the next after 4 s
    now[0] += 3.75
    assert not p.due()
    now[0] += 0.25
    assert p.due()
    p.wrote(start=now[0] - 0.0078125)           # a quick write: the floor, 0.5 s
    now[0] += 0.25
    assert not p.due()
    now[0] += 0.25
    assert p.due()


def test_callback_records_and_cancel_event(prob, tmp_path):
    recs = []
    res = simulate(prob, seed=1, callback=recs.append, **SMALL)
    assert len(recs) == 4 and all(isinstance(r, ChunkRecord) for r in recs)
    assert [r.steps_done for r in recs] == [100, 200, 300, 400]
    assert recs[-1].steps_total == 400 and recs[0].stage == "simulate"
    assert recs[0].burn_in and np.isnan(recs[0].train_discrepancy)   # no draws yet
    assert not recs[1].burn_in and np.isfinite(recs[1].train_discrepancy)
    last = recs[-1]
    assert last.train_discrepancy == pytest.approx(res.train_discrepancy)
    assert last.train_discrepancy_se > 0 and last.rhat_max > 0.9 and last.ess_min > 0
    assert set(last.to_dict()) >= {"stage", "chi", "steps_done", "steps_total", "rhat_max",
                                   "ess_min", "acceptance", "step_size", "steps_per_second",
                                   "eta_seconds", "time", "train_discrepancy_se"}
    assert res.log == tuple(recs)
    ev = threading.Event()
    ck = tmp_path / "c.npz"

    def set_event(rec):
        ev.set()

    with pytest.raises(Cancelled):
        simulate(prob, seed=1, callback=set_event, cancel=ev, checkpoint=ck, **SMALL)
    assert ck.exists()   # the checkpoint is written before the cancellation


def test_divergence_names_step_and_suggests_smaller_step(prob):
    with pytest.raises(MSAError, match=r"diverged at step \d+ .*smaller step size"):
        simulate(prob, method="ula", sampler="full", step_size=50.0, steps=200, burn_in=0,
                 chains=2)


@pytest.mark.parametrize("kw,match", [({"sampler": "hmc"}, "sampler"),
                                      ({"method": "nuts"}, "method"),
                                      ({"chains": 0}, "chains"),
                                      ({"step_size": -1.0}, "step_size"),
                                      ({"resume": True}, "checkpoint")])
def test_bad_arguments(prob, kw, match):
    with pytest.raises(MSAError, match=match):
        simulate(prob, **kw)


def test_mala_acceptance_and_ula_bias_shrinks_with_step():
    # Σ_W's trace is sensitive to the discretisation: ULA's stationary width in the
    # prior-dominated directions is 1/(1 - h/4) too large (whitened units)
    p = linear_problem(N=60, chi=1.0, d=20, P=10, P_test=5)
    exact = np.trace(msa.solve(p, "exact").weight_cov)
    kw = dict(sampler="marginal", chains=4, steps=1500, burn_in=300, seed=2, thin=3)
    auto = simulate(p, **kw)
    assert 0.45 < auto.acceptance < 0.8
    bias = {}
    for h in (0.8, 0.2):
        r = simulate(p, method="ula", step_size=h, **kw)
        bias[h] = np.trace(r.weight_cov) / exact - 1
    mala_bias = np.trace(auto.weight_cov) / exact - 1
    print("ULA relative bias of tr Σ_W:", bias, "MALA (adapted step", auto.step_size, "):",
          mala_bias, "acceptance", auto.acceptance)
    assert bias[0.8] > 0.1
    assert 0 < bias[0.2] < 0.5 * bias[0.8]
    assert abs(mala_bias) < 0.2 * bias[0.8]


def test_final_diagnostics_in_batches_are_the_one_batch_ones(monkeypatch):
    # the R̂/ESS go through the series in column ranges, split between threads and cut
    # to about DIAG_BATCH draws (memory): every step works series by series, so neither
    # the cut nor the threads change anything
    from msa_engine.sampling import run as run_mod
    from msa_engine import diagnostics as diag
    rng = np.random.default_rng(4)
    walk = np.cumsum(rng.standard_normal((3, 50, 9)), axis=1)
    series = [walk[:, :, :5], walk[:, :, 5:8], walk[:, :, 8], rng.standard_normal((3, 50))]
    r, eb, et = diag.rhat_ess(np.concatenate([walk, series[3][:, :, None]], axis=2))
    whole = (float(np.max(r)), float(min(np.min(eb), np.min(et))))
    assert run_mod._rhat_ess(series, threads=1) == whole
    for cap in (150, 300, 451, 1 << 21):   # 1, 2, 3 and every series a batch (3 × 50 draws)
        monkeypatch.setattr(run_mod, "DIAG_BATCH", cap)
        for threads in (1, 2, 3, 16):
            assert run_mod._rhat_ess(series, threads=threads) == whole


def test_diagnostics_keep_to_the_runs_threads_and_memory(prob, monkeypatch):
    # a sweep's worker asks for one thread: its R̂/ESS must not start one per core; and
    # all threads together hold at most about DIAG_BATCH draws (at least one column)
    from msa_engine.sampling import run as run_mod
    calls = []
    real = run_mod.run_split

    def spy(job, slices, blas=1, threads=None):
        if blas is None:                     # the diagnostics' split (the chains' has BLAS)
            width = max(sl.stop - sl.start for sl in slices)
            calls.append((threads, width))
        return real(job, slices, blas=blas, threads=threads)

    monkeypatch.setattr(run_mod, "run_split", spy)
    monkeypatch.setattr(run_mod, "usable_cores", lambda: 16)
    simulate(prob, chains=3, steps=60, burn_in=20, chunk=20, threads=1)
    assert calls and all(t == 1 for t, _ in calls)
    calls.clear()
    rng = np.random.default_rng(1)
    series = [rng.standard_normal((4, 100, 30)), rng.standard_normal((4, 100))]
    for cap in (150, 400, 1000, 5000, 1 << 21):
        monkeypatch.setattr(run_mod, "DIAG_BATCH", cap)
        run_mod._rhat_ess(series)
        threads, width = calls.pop()
        assert threads * width * 400 <= max(cap, 400)
        assert threads == min(16, 31, max(1, cap // 400))
