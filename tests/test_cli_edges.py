"""Edges a user met in daily use (the exploratory review of 2026-11-30): sweeps that
lost finished points on Ctrl-C or replaced an existing session, options refused only
after a sweep had started, files that could not be written, a closed pipe, and Python
API arguments that escaped as something other than ``msa.MSAError``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.config import load_config
from msa_engine.sessions import Session, load_session, save_session
from msa_engine.sweep import run_sweep

from .test_reliability import CONFIG, _cfg, assert_one_line_error, run_cli
from .test_sessions import ERF

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "sessions" / "pair-standard.json"


# --------------------------------------------------------------------------- sweeps
def test_an_interrupted_sweep_keeps_the_theory_points_it_finished(tmp_path):
    """Theory points inside the autosave interval were written only by the next save; a
    Ctrl-C during the long simulation that followed lost all of them."""
    cfg = load_config(_cfg(tmp_path, CONFIG))
    session = Session.new(cfg.resolved, name="t")
    path = tmp_path / "s.json"

    def callback(rec):
        if type(rec).__name__ == "ChunkRecord":      # the simulation after the theories
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(session, [1, 2, 4], theories=["nngp", "rescaling"], simulate=True,
                  sim_options={"steps": 400, "burn_in": 40, "chains": 2, "chunk": 20},
                  callback=callback, path=path, autosave_interval=1e9)
    saved = load_session(path)
    assert len(saved.find("theory", "nngp")) == 3 and len(saved.find("theory", "rescaling")) == 3
    assert not saved.sweep["completed"]


def test_a_chains_points_are_saved_when_the_chain_ends(tmp_path):
    """Between the points of one chain saves are throttled; at the chain's end (before the
    next task runs, maybe for hours) every point is on disk."""
    cfg = load_config(_cfg(tmp_path, CONFIG))
    session = Session.new(cfg.resolved, name="t")
    path = tmp_path / "s.json"
    seen = []

    def callback(rec):
        if type(rec).__name__ == "SweepProgress" and rec.done in (3, 4):
            seen.append(len(load_session(path).find("theory", "nngp")))

    run_sweep(session, [1, 2, 4], theories=["nngp", "rescaling"], callback=callback,
              path=path, autosave_interval=1e9)
    # at the nngp chain's last point the throttle still holds; by the first point of the
    # next chain the whole nngp chain is on disk
    assert seen == [0, 3]
    assert len(load_session(path).entries) == 6


def test_a_new_sweep_refuses_an_existing_session_unless_forced(tmp_path, capsys):
    cfg = _cfg(tmp_path, CONFIG)
    victim = tmp_path / "victim.json"
    victim.write_bytes(BUNDLED.read_bytes())
    before = victim.read_bytes()
    rc, out, err = run_cli(["sweep", cfg, "--chi", "1", "--theories", "nngp",
                            "--workers", "1", "--out", victim], capsys)
    assert_one_line_error(rc, out, err, "exists: continue its sweep with --resume")
    assert victim.read_bytes() == before
    rc, out, err = run_cli(["sweep", cfg, "--chi", "1", "--theories", "nngp", "--workers", "1",
                            "--out", victim, "--force", "--json"], capsys)
    assert rc == 0 and json.loads(out)["entries"] == 1
    assert load_session(victim).name == "c"


def test_resume_refuses_flags_it_would_ignore(tmp_path, capsys):
    cfg = _cfg(tmp_path, CONFIG)
    s = tmp_path / "s.json"
    rc, _, _ = run_cli(["sweep", cfg, "--chi", "1,2", "--theories", "nngp", "--workers", "1",
                        "--out", s, "--json"], capsys)
    assert rc == 0
    before = s.read_bytes()
    rc, out, err = run_cli(["sweep", "--resume", s, "--chi", "1,3", "--steps", "9"], capsys)
    assert_one_line_error(rc, out, err, "drop --chi, --steps")
    assert s.read_bytes() == before
    rc, out, err = run_cli(["sweep", "--resume", s, "--workers", "1", "--json"], capsys)
    assert rc == 0 and json.loads(out)["entries"] == 2


def test_a_sweeps_simulation_table_is_checked_before_anything_runs(tmp_path, capsys):
    cfg = _cfg(tmp_path, CONFIG + "\n[simulation]\nfoo = 1\nsteps = 100\n")
    out_path = tmp_path / "s.json"
    rc, out, err = run_cli(["sweep", cfg, "--chi", "1", "--theories", "nngp", "--simulate",
                            "--workers", "1", "--out", out_path], capsys)
    assert_one_line_error(rc, out, err, "simulation: unknown key(s) foo")
    assert not out_path.exists()


def test_pool_workers_do_not_repeat_the_configs_warnings():
    """A pool worker rebuilds the data, which warned again, once a worker, as Python's
    two-line warning (the command had already said it in one line)."""
    code = ("import warnings\n"
            "from msa_engine import jit\n"
            "from msa_engine.errors import MSAWarning\n"
            "jit.pool_worker_init(True)\n"
            "warnings.warn('targets have rms 117', MSAWarning)\n"
            "warnings.warn('other', UserWarning)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "rms 117" not in r.stderr and "UserWarning: other" in r.stderr


# --------------------------------------------------------------------------- files and pipes
def test_export_that_cannot_write_is_a_one_line_error(tmp_path, capsys):
    s = tmp_path / "s.json"
    s.write_bytes(BUNDLED.read_bytes())
    out_dir = tmp_path / "out"
    (out_dir / "pair-standard-results.csv").mkdir(parents=True)     # a folder in its place
    rc, out, err = run_cli(["export", s, "--format", "csv", "--out", out_dir], capsys)
    assert_one_line_error(rc, out, err, "cannot write")
    assert "pair-standard-results.csv" in err


def test_export_of_a_chi_the_session_lacks_says_which_it_has(tmp_path, capsys):
    s = tmp_path / "s.json"
    s.write_bytes(BUNDLED.read_bytes())
    rc, out, err = run_cli(["export", s, "--format", "svg", "--chi", "77",
                            "--out", tmp_path / "figs"], capsys)
    assert_one_line_error(rc, out, err, "has no result at chi = 77")
    assert "it has chi = 1" in err and not (tmp_path / "figs").exists()


@pytest.mark.parametrize("args", [["replay", str(BUNDLED)], ["solve", "--theory", "nngp"],
                                  ["solve", "--theory", "nngp", "--json"]])
def test_a_closed_stdout_ends_quietly_with_status_0(args):
    """`msa replay S | head -1`: rich exited with status 1 on the closed pipe, which a
    `set -o pipefail` script reads as a failure."""
    r, w = os.pipe()
    os.close(r)                    # the reader is gone before the first byte
    try:
        proc = subprocess.run([sys.executable, "-m", "msa_engine", *args], stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(w)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_an_interrupted_checkpoint_write_leaves_no_temp_file(tmp_path, monkeypatch):
    from msa_engine.sampling import run as run_mod
    cfg = load_config(_cfg(tmp_path, CONFIG))
    ck = tmp_path / "ck.npz"
    msa.simulate(cfg.problem, chains=2, steps=20, burn_in=10, chunk=10, checkpoint=ck)
    before = ck.read_bytes()

    def savez(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod.np, "savez", savez)
    with pytest.raises(KeyboardInterrupt):
        msa.simulate(cfg.problem, chains=2, steps=40, burn_in=10, chunk=10, checkpoint=ck)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "ck.npz"]
    assert ck.read_bytes() == before


def test_an_interrupted_session_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    s = load_session(BUNDLED)
    path = save_session(s, tmp_path / "s.json")
    before = path.read_bytes()

    def fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(KeyboardInterrupt):
        save_session(s, path)
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- Python API
@pytest.mark.parametrize("args,msg", [
    ((0.0,), "chi must be a finite number > 0"), ((float("nan"),), "chi must be"),
    ((float("inf"),), "chi must be"), ((10.0, 1.0), "factor must be a finite number > 1"),
    ((10.0, 2.0, -1.0), "start must be"),
])
def test_chi_grid_refuses_what_it_cannot_grid(args, msg):
    with pytest.raises(msa.MSAError, match=msg):
        msa.chi_grid(*args)


def test_api_arguments_raise_msa_error_only():
    d = msa.make_data({"task": "linear", "d": 5, "P": 8, "P_test": 4, "seed": 1})
    p = msa.Problem(d, msa.Network.make("linear", N=20, chi=2.0))
    for theory in (None, 1):
        with pytest.raises(msa.MSAError, match="theory must be one of"):
            msa.solve(p, theory)
    for seed in (-1, 1.5, "a", True):
        with pytest.raises(msa.MSAError, match="seed must be an integer >= 0"):
            msa.solve(p, "tree", seed=seed)
        with pytest.raises(msa.MSAError, match="seed must be an integer >= 0"):
            msa.anneal(p, "tree", [1.0, 2.0], seed=seed)
    assert msa.solve(p, "tree", seed=np.int64(3)).seed == 3
    with pytest.raises(msa.MSAError, match="N must be an integer >= 1"):
        msa.Network.make("linear", N=float("inf"))
    for kappa in (True, "0.1"):
        with pytest.raises(msa.MSAError, match="kappa must be a number"):
            msa.Network.make("linear", N=20, kappa=kappa)


def test_compare_recompute_uses_each_entrys_seed_and_options(monkeypatch):
    from msa_engine import analysis
    s = load_session(BUNDLED)
    e = s.find("theory", "tree")[0]
    e["seed"], e["options"] = 7, {"chains": 64}
    calls = {}

    def solve(pb, name, seed=None, options=None):
        calls[name] = (seed, options)
        return msa.solve(pb, name)

    monkeypatch.setattr(analysis, "solve", solve)
    analysis.point_summaries(s, e["chi"], e["N"], recompute=True)
    assert calls["tree"] == (7, {"chains": 64})
    assert calls["nngp"] == (s.find("theory", "nngp")[0].get("seed"),
                             s.find("theory", "nngp")[0].get("options"))


@pytest.mark.parametrize("theory", ["tree", "one-loop"])
def test_extreme_scales_are_a_one_line_error(tmp_path, capsys, theory):
    """g_w = 1e300: Python float arithmetic in the linear saddle raised OverflowError
    (a traceback) where numpy arithmetic gives inf."""
    cfg = _cfg(tmp_path, CONFIG.replace("g_w = 1.5", "g_w = 1e300").replace("d = 5", "d = 12"))
    rc, out, err = run_cli(["solve", cfg, "--theory", theory, "--json"], capsys)
    assert_one_line_error(rc, out, err, "numerical overflow (Numerical result out of range)")


def test_compare_warns_when_the_sessions_are_not_of_one_problem(capsys):
    sessions = ROOT / "sessions"
    rc, _, err = run_cli(["compare", sessions / "pair-standard.json",
                          sessions / "pair-mean-field.json", "--json"], capsys)
    assert rc == 0 and err == ""
    rc, out, err = run_cli(["compare", sessions / "pair-standard.json",
                            sessions / "hermite-erf-sweep.json", "--json"], capsys)
    assert rc == 0 and json.loads(out)
    lines = err.splitlines()
    assert len(lines) == 2 and all(x.startswith("msa: warning: the sessions differ") for x in lines)
    assert "ising" in lines[0] and "hermite" in lines[0] and "erf" in lines[1]
    # Σ_W from each session's best theory: the erf session has no exact (it showed "—")
    rc, out, _ = run_cli(["compare", sessions / "pair-standard.json",
                          sessions / "hermite-erf-sweep.json"], capsys)
    row = next(x for x in out.splitlines() if "Σ_W λ_top" in x)
    assert "(exact)" in row and "(one-loop)" in row and "—" not in row


def test_points_inside_an_unfinished_chain_are_kept_on_ctrl_c(tmp_path):
    """Ctrl-C at the third χ of a chain: the two points before it are written although
    the throttle held their saves and the chain never ended."""
    cfg = load_config(_cfg(tmp_path, CONFIG))
    session = Session.new(cfg.resolved, name="t")
    path = tmp_path / "s.json"

    def callback(rec):
        if type(rec).__name__ == "IterationRecord" and rec.chi > 3.0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(session, [1, 2, 4], theories=["tree"], callback=callback, path=path,
                  autosave_interval=1e9)
    assert sorted(e["chi"] for e in load_session(path).find("theory", "tree")) == [1.0, 2.0]


def test_an_unreachable_cluster_is_refused_before_the_session_is_written(tmp_path, capsys):
    pytest.importorskip("distributed")
    cfg = _cfg(tmp_path, CONFIG)
    out = tmp_path / "new.json"
    rc, o, err = run_cli(["sweep", cfg, "--chi", "1", "--theories", "nngp", "--dask", "local:x",
                          "--out", out], capsys)
    assert_one_line_error(rc, o, err, "--dask local[:WORKERS]: 'x' is not a number")
    assert not out.exists()           # so the corrected command is not refused for it


def test_resume_to_another_existing_file_asks_for_force(tmp_path, capsys):
    cfg = _cfg(tmp_path, CONFIG)
    s, victim = tmp_path / "s.json", tmp_path / "victim.json"
    victim.write_bytes(BUNDLED.read_bytes())
    before = victim.read_bytes()
    assert run_cli(["sweep", cfg, "--chi", "1,2", "--theories", "nngp", "--workers", "1",
                    "--out", s, "--json"], capsys)[0] == 0
    rc, o, err = run_cli(["sweep", "--resume", s, "--out", victim, "--workers", "1"], capsys)
    assert_one_line_error(rc, o, err, "exists: the resumed sweep would replace it")
    assert victim.read_bytes() == before
    rc, o, err = run_cli(["sweep", "--resume", s, "--force", "--workers", "1"], capsys)
    assert_one_line_error(rc, o, err, "drop --force")
    rc, o, err = run_cli(["sweep", "--resume", s, "--out", victim, "--force", "--workers", "1",
                          "--json"], capsys)
    assert rc == 0 and json.loads(o)["entries"] == 2 and victim.read_bytes() != before
    # resuming into its own file needs no --force
    rc, o, err = run_cli(["sweep", "--resume", s, "--out", s, "--workers", "1", "--json"], capsys)
    assert rc == 0


def test_resume_of_a_session_without_a_sweep_takes_chi(tmp_path, capsys):
    cfg = load_config(_cfg(tmp_path, CONFIG))
    session = Session.new(cfg.resolved, name="t")
    session.add_result(msa.solve(cfg.problem, "nngp"))
    s = save_session(session, tmp_path / "s.json")
    assert not load_session(s).sweep
    rc, o, err = run_cli(["sweep", "--resume", s, "--chi", "1,2", "--workers", "1", "--json"],
                         capsys)
    assert rc == 0, err
    assert sorted({e["chi"] for e in load_session(s).entries}) == [1.0, 2.0]


def test_compare_picks_a_width_and_the_mean_field_of_a_sweep(tmp_path, capsys):
    """A sweep over widths 20 and 40 could not be compared: `compare` looked only at the
    config's own N (and `--chi N` was refused)."""
    cfg = load_config(_cfg(tmp_path, CONFIG))
    s = Session.new(cfg.resolved, name="w")
    run_sweep(s, [1, "N"], widths=[20, 40], theories=["nngp", "exact"], autosave=False)
    path = save_session(s, tmp_path / "w.json")
    rc, out, err = run_cli(["compare", path, path, "--width", "40", "--chi", "N", "--json"],
                           capsys)
    assert rc == 0, err
    cols = json.loads(out)["sessions"]
    assert [(c["chi"], c["N"]) for c in cols] == [(40.0, 40), (40.0, 40)]
    rc, out, err = run_cli(["compare", path, path, "--width", "30"], capsys)
    assert_one_line_error(rc, out, err, "it has (chi, N) = (1, 20), (1, 40), (20, 20), (40, 40)")


def test_solve_all_keeps_the_theories_that_succeed(tmp_path, capsys):
    """At N = 5 < P = 8 the one loop does not converge; `msa solve` (all theories) printed
    nothing but that error, losing the four theories that did."""
    cfg = _cfg(tmp_path, CONFIG.replace("N = 20", "N = 5"))
    rc, out, err = run_cli(["solve", cfg, "--json"], capsys)
    obj = json.loads(out)
    assert rc == 1
    assert [r["theory"] for r in obj["results"]] == ["nngp", "rescaling", "tree", "exact"]
    assert [f["theory"] for f in obj["failed"]] == ["one-loop"]
    assert err.count("\n") == 1 and err.startswith("msa: error: one-loop did not converge")
    rc, out, err = run_cli(["solve", cfg], capsys)
    assert rc == 1 and "1 of 5 theories failed: one-loop" in out and "exact" in out
    # one theory asked for by name: its failure is the command's
    rc, out, err = run_cli(["solve", cfg, "--theory", "one-loop", "--json"], capsys)
    assert_one_line_error(rc, out, err, "one-loop did not converge")


def test_every_sweep_point_records_its_seed(tmp_path):
    """A linear tree / one-loop chain's entries had seed null, the other theories' their
    point seed."""
    from msa_engine.sweep import point_seed
    cfg = load_config(_cfg(tmp_path, CONFIG))
    s = Session.new(cfg.resolved, name="t")
    run_sweep(s, [1, 4], theories=["nngp", "tree", "one-loop"], autosave=False, seed=3)
    assert {(e["name"], e["seed"] == point_seed(3, 20, e["chi"])) for e in s.entries} == {
        ("nngp", True), ("tree", True), ("one-loop", True)}


def test_replay_and_csv_show_the_simulations_own_discrepancy_error():
    """`sweep_rows` (replay's table, the CSV export) recomputed a simulation's error by the
    delta method, which ignores the correlation between points that share W: 2.0e-5
    against the 2.8e-5 the sampler reported, and the TUI showed."""
    s = load_session(ROOT / "sessions" / "ising-linear-sweep.json")
    rows = {(r["name"], r["chi"], r["N"]): r for r in s.sweep_rows()}
    sims = s.find("simulation")
    assert sims
    for e in sims:
        r = rows[(e["name"], e["chi"], e["N"])]
        for key in ("train_discrepancy_se", "test_discrepancy_se"):
            assert r[key] == e["summary"][key] > 0


@pytest.mark.slow
def test_rerun_of_a_chain_whose_first_point_was_replaced(tmp_path):
    """`r` in the TUI replaced a sweep's χ = 1 tree (a chain point) by a standalone one;
    `replay --rerun` then restarted the chain cold at χ = 4 with that point's seed, and
    the Monte Carlo tree differed by 1e-8 there: "not reproduced" for untouched entries."""
    from msa_engine.analysis import rerun
    cfg = load_config(_cfg(tmp_path, ERF))
    s = Session.new(cfg.resolved, name="t")
    run_sweep(s, [1, 4], theories=["tree"], autosave=False, seed=2)
    s.add_result(msa.solve(s.problem(chi=1.0), "tree"))
    assert [e.get("via") for e in s.entries] == ["sweep-chain", None]
    rep = rerun(s)
    assert rep["reproduced"], rep
    assert all(r["max_rel_diff"] == 0.0 for r in rep["entries"])


def test_the_sweep_meter_moves_within_a_simulation_point(tmp_path):
    """A sweep's bar counted whole points: during a simulation point (minutes, where a
    theory point takes seconds) it stood still.  The sweep now says its size before the
    first point, and the meter adds the running simulation's share of its steps."""
    from msa_engine.sweep import SweepMeter, SweepProgress

    cfg = load_config(_cfg(tmp_path, CONFIG))
    session = Session.new(cfg.resolved, name="t")
    meter, seen = SweepMeter(), []

    def callback(rec):
        seen.append((type(rec).__name__, meter.update(rec), meter.done))

    run_sweep(session, [1, 4], theories=["nngp"], simulate=True,
              sim_options={"steps": 200, "burn_in": 40, "chains": 2, "chunk": 40},
              callback=callback, autosave=False)
    assert seen[0] == ("SweepProgress", 0.0, 0)          # the size, before any point
    assert meter.total == 4 and meter.done == 4            # 2 nngp + 2 simulation points
    inside = [(v, done) for kind, v, done in seen if kind == "ChunkRecord"]
    assert len(inside) >= 8                                # 6 chunks a simulation point
    assert all(done < v < done + 1 for v, done in inside)  # never a whole point early
    values = [v for _, v, _ in seen if v is not None]
    assert values == sorted(values) and values[-1] == 4.0
    assert len(set(v for v, _ in inside)) == len(inside)   # it moves chunk by chunk
    # records that say nothing about progress, and chunks before the size is known
    assert SweepMeter().update(SweepProgress(2, 5, "x")) == 2.0
    assert SweepMeter().update(type("Chunk", (), {"steps_done": 5, "steps_total": 10})()) is None
    assert meter.update(type("Iteration", (), {"chi": 1.0})()) is None


@pytest.mark.parametrize("first, gap", [(2.0, 0.5), (3.0, 0.5), (2.0, 0.02)])
def test_two_ctrl_c_stop_a_pool_sweep_with_one_line(tmp_path, first, gap):
    """A second Ctrl-C during a pool sweep's shutdown hung the process for good (at exit,
    joining workers idle on their task queue that were never told to stop: 4 of 4 runs
    of this case hung before the fix) or printed a chained traceback; the workers,
    interrupted too, printed their own."""
    import signal
    import time
    out = tmp_path / "k.json"
    p = subprocess.Popen(
        [sys.executable, "-m", "msa_engine", "sweep", str(ROOT / "examples" / "pair_standard.toml"),
         "--chi", "1,3,10,30,N", "--simulate", "--steps", "2000", "--burn-in", "200",
         "--workers", "2", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(first)
        os.killpg(p.pid, signal.SIGINT)            # as a terminal's Ctrl-C: the whole group
        time.sleep(gap)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail("the sweep hung after two Ctrl-C")
    assert p.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "msa: interrupted", err
    if out.exists():                               # (a Ctrl-C before the first write: none)
        load_session(out)


def test_simulate_checks_its_output_files_before_it_runs(tmp_path, capsys):
    """--traces in a missing folder failed after the whole run (its results lost), and
    --checkpoint or --traces silently replaced any file, a session included."""
    import hashlib
    cfg = _cfg(tmp_path, CONFIG)
    run = ["simulate", cfg, "--steps", "40", "--burn-in", "10", "--json"]
    rc, out, err = run_cli(run + ["--traces", tmp_path / "missing" / "t.npz"], capsys)
    assert_one_line_error(rc, out, err, "missing' does not exist")
    session = tmp_path / "s.json"
    session.write_bytes(BUNDLED.read_bytes())
    digest = hashlib.sha256(session.read_bytes()).hexdigest()
    for flag in ("--checkpoint", "--traces"):
        rc, out, err = run_cli(run + [flag, session], capsys)
        assert_one_line_error(rc, out, err, "exists: give --force to replace it")
    assert hashlib.sha256(session.read_bytes()).hexdigest() == digest
    # --force replaces; --resume reads an existing checkpoint
    tr, ck = tmp_path / "t.npz", tmp_path / "ck.npz"
    assert run_cli(run + ["--traces", tr, "--checkpoint", ck], capsys)[0] == 0
    assert run_cli(run + ["--traces", tr, "--force"], capsys)[0] == 0
    assert run_cli(run + ["--checkpoint", ck, "--resume"], capsys)[0] == 0


def test_inputs_the_review_of_11_30_found_escaping_as_tracebacks(tmp_path, capsys,
                                                                 monkeypatch):
    """Each gave a traceback (or, for --name, wrote outside the session folder)."""
    import hashlib
    cfg = _cfg(tmp_path, CONFIG)
    # the marginal sampler's Cholesky failing on a huge step; a κ too small for a step
    rc, out, err = run_cli(["simulate", cfg, "--steps", "200", "--burn-in", "50",
                            "--step-size", "1e200", "--json"], capsys)
    assert_one_line_error(rc, out, err, "simulation diverged")
    (tmp_path / "tiny").mkdir()
    tiny = _cfg(tmp_path / "tiny", CONFIG.replace("kappa = 0.1", "kappa = 1e-320"))
    rc, out, err = run_cli(["simulate", tiny, "--steps", "20", "--burn-in", "5", "--json"],
                           capsys)
    assert_one_line_error(rc, out, err, "too small against the kernel's scale")
    rc, out, err = run_cli(["sweep", cfg, "--chi", "1", "--theories", "nngp", "--seed", "-1",
                            "--out", tmp_path / "n.json"], capsys)
    assert_one_line_error(rc, out, err, "--seed must be an integer >= 0")
    # rich markup in a name, a path and notes: printed as written
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sessions").mkdir()
    rc, out, err = run_cli(["sweep", cfg, "--chi", "1", "--theories", "nngp", "--workers", "1",
                            "--name", "run [/w bias]"], capsys)
    assert rc == 0 and "Traceback" not in err, (out, err)
    [saved] = (tmp_path / "sessions").glob("*.json")      # in the folder, a safe file name
    s = load_session(saved)
    assert s.name == "run [/w bias]"
    s.doc["notes"] = "from [bold]run[/] 3 [/]"
    marked = tmp_path / "res[final].json"
    save_session(s, marked)
    rc, out, err = run_cli(["replay", marked], capsys)
    assert rc == 0 and "res[final].json" in out and "[/]" in out, (out, err)
    rc, out, err = run_cli(["sweep", cfg, "--chi", "1", "--theories", "nngp", "--workers", "1",
                            "--name", "sub/dir"], capsys)
    assert rc == 0 and not (tmp_path / "sessions" / "sub").exists()
    # a recorded sweep that would run with N = 0 is refused, the session untouched
    s.doc["sweep"]["widths"] = [0]
    bad = tmp_path / "wz.json"
    save_session(s, bad)
    digest = hashlib.sha256(bad.read_bytes()).hexdigest()
    rc, out, err = run_cli(["sweep", "--resume", bad, "--workers", "1"], capsys)
    assert_one_line_error(rc, out, err, "recorded sweep is malformed: widths must be")
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == digest
    # whatever still escapes is one line, not a traceback (MSA_DEBUG=1 shows it)
    s.doc["config"].pop("data")
    broken = tmp_path / "nodata.json"
    save_session(s, broken)
    rc, out, err = run_cli(["replay", broken], capsys)
    assert rc in (1, 2) and "Traceback" not in err and err.count("\n") == 1, err


def test_a_bom_a_symlink_and_a_narrow_terminal(tmp_path, capsys, monkeypatch):
    """A config saved with a UTF-8 byte-order mark was a TOML syntax error; saving through
    a symlink replaced the link and left its target stale; COLUMNS=0 printed nothing."""
    from msa_engine.config import load_config as load
    cfg = tmp_path / "bom.toml"
    cfg.write_bytes(b"\xef\xbb\xbf" + CONFIG.encode())
    assert load(cfg).problem.network.N == 20
    target = tmp_path / "real.json"
    save_session(Session.new(load(cfg).resolved, name="t"), target)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    s = load_session(link)
    s.doc["notes"] = "through the link"
    save_session(s, link)
    assert link.is_symlink() and load_session(target).doc["notes"] == "through the link"
    monkeypatch.setenv("COLUMNS", "0")
    rc, out, err = run_cli(["solve", cfg, "--theory", "nngp"], capsys)
    assert rc == 0 and "nngp" in out, (out, err)


def test_a_checkpoint_with_tampered_metadata_is_refused(tmp_path, capsys):
    """steps_done = -100 resumed silently (exit 0); 1e9 failed in a reshape; a NaN step
    size failed in a Cholesky."""
    cfg = _cfg(tmp_path, CONFIG)
    ck = tmp_path / "ck.npz"
    args = ["simulate", cfg, "--steps", "40", "--burn-in", "10", "--checkpoint", ck, "--json"]
    assert run_cli(args, capsys)[0] == 0
    with np.load(ck) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    for change, msg in ((("steps_done", -100), "steps_done -100 outside"),
                        (("steps_done", 1e9), "steps_done 1000000000.0 outside"),
                        (("log_h", None), "step size is not finite")):
        key, value = change
        bad = dict(arrays)
        if key == "log_h":
            bad["log_h"] = np.full_like(arrays["log_h"], np.nan)
        else:
            bad["meta"] = np.array(json.dumps({**meta, key: value}))
        np.savez(ck, **bad)
        rc, out, err = run_cli(args + ["--resume"], capsys)
        assert_one_line_error(rc, out, err, msg)


def test_an_empty_sweep_chi_list_is_an_error(tmp_path, capsys):
    cfg = _cfg(tmp_path, CONFIG + '\n[sweep]\nchi = []\n')
    rc, out, err = run_cli(["sweep", cfg, "--theories", "nngp", "--out", tmp_path / "s.json"],
                           capsys)
    assert_one_line_error(rc, out, err, "sweep.chi needs at least one value")
    assert not (tmp_path / "s.json").exists()


def test_export_takes_chi_N_as_compare_does(tmp_path, capsys):
    """`msa compare --chi N` worked; `msa export --chi N` was refused by argparse."""
    pytest.importorskip("matplotlib")
    session = ROOT / "sessions" / "pair-mean-field.json"        # χ = N = 100
    rc, out, err = run_cli(["export", session, "--chi", "N", "--figure", "spectrum",
                            "--out", tmp_path], capsys)
    assert rc == 0 and out.strip().endswith(".png"), (out, err)
    rc, out, err = run_cli(["export", session, "--chi", "zz"], capsys)
    assert rc == 2 and "'zz' is not a number, 'N' or 'mean-field'" in err
