"""Sweeps on executors: in process, a local process pool, and Dask distributed."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from msa_engine.cli import main
from msa_engine.config import config_from_dict
from msa_engine.errors import Cancelled, MSAError
from msa_engine.executors import DaskExecutor, LocalPoolExecutor, SerialExecutor, make_executor
from msa_engine.sessions import Session, load_session
from msa_engine.sweep import run_sweep

distributed = pytest.importorskip("distributed")

CONFIG = {"data": {"task": "linear", "d": 10, "P": 10, "P_test": 12, "seed": 3},
          "network": {"activation": "linear", "N": 50, "g_w": 1.5, "g_a": 0.8, "kappa": 0.1,
                      "chi": 1.0}}
SIM = {"sampler": "marginal", "chains": 2, "steps": 400, "burn_in": 100}
CHIS = [1, 7, "N"]


def new_session():
    return Session.new(config_from_dict(CONFIG).resolved, name="dist")


def sweep(executor, sim=SIM, chis=CHIS, **kw):
    s = new_session()
    run_sweep(s, chis, theories=["nngp", "tree", "one-loop", "exact"], simulate=True,
              sim_options=sim, autosave=False, executor=executor, seed=5, **kw)
    return s


def summaries(s):
    return {(e["kind"], e["name"], e["N"], e["chi"]): e for e in s.entries}


def assert_same(a, b, rtol=1e-12):
    A, B = summaries(a), summaries(b)
    assert A.keys() == B.keys()
    for k in A:
        assert A[k]["status"] == B[k]["status"] == "ok", k
        for key in ("train_mean", "test_mean"):
            np.testing.assert_allclose(A[k]["summary"][key], B[k]["summary"][key],
                                       rtol=rtol, atol=0, err_msg=str(k))


@pytest.fixture(scope="module")
def reference():
    return sweep(SerialExecutor())


def test_local_pool_equals_in_process(reference):
    assert_same(sweep(LocalPoolExecutor(2)), reference)


def test_dask_local_cluster_equals_local_pool(reference):
    ex = DaskExecutor("local:2")
    try:
        s = sweep(ex)
    finally:
        ex.close()
    assert s.sweep["executor"] == {"kind": "dask", "workers": 2}
    assert_same(s, reference)


def test_cli_scheduler_address(tmp_path, reference):
    from distributed import LocalCluster
    cfg = tmp_path / "c.toml"
    cfg.write_text("\n".join(
        f"[{table}]\n" + "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in vals.items())
        for table, vals in CONFIG.items()) + "\n")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        out = tmp_path / "s.json"
        rc = main(["sweep", str(cfg), "--chi", "1,7,N", "--theories", "nngp,tree,one-loop,exact",
                   "--simulate", "--sampler", "marginal", "--chains", "2", "--steps", "400",
                   "--burn-in", "100", "--seed", "5", "--scheduler", cluster.scheduler_address,
                   "--out", str(out)])
    assert rc == 0
    assert_same(load_session(out), reference)


def _kill_a_worker_when_busy(executor, stop):
    """Kill one pool worker with SIGKILL as soon as the pool is running tasks."""
    while not stop.is_set():
        pids = executor.worker_pids()
        if len(pids) >= 2:
            time.sleep(1.0)      # let the workers pick up tasks
            try:
                os.kill(pids[0], signal.SIGKILL)
            except ProcessLookupError:
                continue
            return pids[0]
        time.sleep(0.05)


def test_killed_pool_worker_is_retried_and_nothing_is_lost(reference):
    ex = LocalPoolExecutor(2, retries=2)
    stop = threading.Event()
    killed = []
    t = threading.Thread(target=lambda: killed.append(_kill_a_worker_when_busy(ex, stop)))
    t.start()
    try:
        s = sweep(ex, sim={**SIM, "steps": 1500})
    finally:
        stop.set()
        t.join()
    assert killed and killed[0] is not None
    ref = sweep(SerialExecutor(), sim={**SIM, "steps": 1500})
    A, B = summaries(s), summaries(ref)
    assert A.keys() == B.keys()                      # every point present
    for k, e in A.items():
        if e["status"] == "ok":                      # retried points equal the reference
            assert e["summary"]["test_mean"] == B[k]["summary"]["test_mean"]
        else:
            assert "worker lost" in e["error"]
    assert sum(e["status"] == "ok" for e in A.values()) >= len(A) - 1


def test_killed_dask_worker_is_retried(reference):
    ex = DaskExecutor("local:2")
    client = ex._connect()

    def killer():
        time.sleep(2.0)
        pids = list(client.run(os.getpid).values())
        os.kill(pids[0], signal.SIGKILL)
    t = threading.Thread(target=killer)
    t.start()
    try:
        s = sweep(ex)
    finally:
        t.join()
        ex.close()
    A = summaries(s)
    assert A.keys() == summaries(reference).keys()
    for k, e in A.items():
        assert e["status"] == "ok" or "Killed" in (e["error"] or ""), e["error"]
        if e["status"] == "ok":
            assert e["summary"]["test_mean"] == summaries(reference)[k]["summary"]["test_mean"]


def test_cancelling_a_pool_sweep_cancels_its_tasks():
    cancel = threading.Event()
    seen = []

    ex = LocalPoolExecutor(2)
    pids = []

    def cb(rec):
        if type(rec).__name__ != "SweepProgress" or rec.done == 0:
            return                                # a task's progress, or the sweep's size
        seen.append(rec)
        pids.extend(ex.worker_pids())
        cancel.set()                              # cancel after the first completed point
    s = new_session()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        run_sweep(s, [1, 2, 4, 8, 16, 32, "N"], theories=["exact"], simulate=True,
                  sim_options={**SIM, "steps": 100000}, autosave=False, callback=cb,
                  cancel=cancel, executor=ex)
    assert time.monotonic() - t0 < 60             # the long simulations were not waited for
    assert len(s.find()) < 14
    assert pids
    for pid in pids:                              # its running tasks were stopped too
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_executor_flags():
    assert isinstance(make_executor(1), SerialExecutor)
    assert isinstance(make_executor(3), LocalPoolExecutor)
    with pytest.raises(MSAError, match="--dask must be local"):
        make_executor(dask="remote")
    with pytest.raises(MSAError, match="--scheduler must look like"):
        make_executor(scheduler="localhost:8786")
    with pytest.raises(MSAError, match="--workers must be >= 1"):
        make_executor(0)


def test_a_pool_sweep_reports_its_running_tasks_progress():
    """Pool tasks came back whole: the bar stood still while every worker ran a long
    simulation.  The workers now report their share of steps (and a chain its points)
    on a queue; the meter adds them to the merged points and drops a task at its end."""
    from msa_engine.sweep import SweepMeter, SweepProgress, TaskProgress

    meter, seen = SweepMeter(), []

    def cb(rec):
        seen.append((rec, meter.update(rec)))

    s = new_session()
    run_sweep(s, [1, 7], theories=["tree"], simulate=True,
              sim_options={**SIM, "steps": 30000, "chunk": 500}, autosave=False,
              callback=cb, executor=LocalPoolExecutor(2), seed=5)
    assert len(s.find()) == 4 and meter.done == meter.total == 4
    steps = [r.points for r, _ in seen if isinstance(r, TaskProgress) and r.points is not None
             and r.points < 1]
    assert len(steps) >= 2 and all(0 < p < 1 for p in steps)     # inside simulation points
    ends = [r.task for r, _ in seen if isinstance(r, TaskProgress) and r.points is None]
    assert sorted(ends) == [0, 1, 2]                 # the tree chain and two simulations
    values = [v for _, v in seen if v is not None]
    assert all(0 <= v <= 4 for v in values) and values[-1] == 4.0
    # between the size and the last point the bar shows fractions of points
    assert any(v != int(v) for v in values)
    assert isinstance(seen[0][0], SweepProgress) and seen[0][0].done == 0
    # after a task's end its late reports are dropped: nothing left running at the end
    assert meter._running == {}
