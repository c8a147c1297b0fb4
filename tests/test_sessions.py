"""Sessions: round trip, migration, bad files, atomic writes, kill -9 mid-sweep,
resume, replay --rerun and compare (issue: sessions and the headless CLI)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.cli import main
from msa_engine.config import load_config
from msa_engine.sessions import (SCHEMA_VERSION, Session, load_session, save_session,
                                 session_dir)
from msa_engine.sweep import run_sweep

from .conftest import run_and_kill_9

SMALL = """
[data]
task = "ising"
d = 30
P = 20
P_test = 40
seed = 1
[network]
activation = "linear"
N = 100
g_w = 1.5
g_a = 0.8
kappa = 0.1
chi = 1.0
"""


@pytest.fixture
def cfg_path(tmp_path):
    p = tmp_path / "ising.toml"
    p.write_text(SMALL)
    return p


def small_session(cfg_path, chis=(1, 10, "N")):
    cfg = load_config(cfg_path)
    s = Session.new(cfg.resolved, name="t")
    run_sweep(s, list(chis), autosave=False)
    return s


def test_round_trip_keeps_everything(tmp_path, cfg_path):
    s = small_session(cfg_path)
    s.notes = "ran on Friday; χ=N looks converged"
    s.doc["future_field"] = {"kept": [1, 2, 3]}
    s.entries[0]["unknown_entry_field"] = "also kept"
    path = save_session(s, tmp_path / "s.json")
    back = load_session(path)
    assert back.doc == json.loads(path.read_text())
    assert back.doc["future_field"] == {"kept": [1, 2, 3]}
    assert back.entries[0]["unknown_entry_field"] == "also kept"
    assert back.notes == s.notes
    assert len(back.entries) == 15
    # problem regenerates bit for bit (checksum verified inside)
    np.testing.assert_array_equal(back.data().X_train, s.data().X_train)
    for e in back.entries:
        assert e["log"], "every entry keeps its convergence log"
        assert all("time" in r for r in e["log"])
    assert back.doc["versions"]["numpy"] == np.__version__
    # saving again changes nothing but the modification time
    path2 = save_session(back, tmp_path / "s2.json")
    a, b = json.loads(path.read_text()), json.loads(path2.read_text())
    a.pop("modified"), b.pop("modified")
    assert a == b


def test_user_data_is_stored_inline(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 3)), rng.standard_normal(12)
    np.savez(tmp_path / "d.npz", X_train=X[:8], y_train=y[:8], X_test=X[8:], y_test=y[8:])
    (tmp_path / "c.toml").write_text('[data]\ntask = "npz"\npath = "d.npz"\n[network]\nN = 10\n')
    s = Session.new(load_config(tmp_path / "c.toml").resolved)
    save_session(s, tmp_path / "s.json")
    (tmp_path / "d.npz").unlink()           # the session does not need the file any more
    back = load_session(tmp_path / "s.json")
    np.testing.assert_array_equal(back.data().X_test, X[8:])


def test_checksum_detects_changed_data(tmp_path, cfg_path):
    s = small_session(cfg_path, chis=(1,))
    save_session(s, tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    doc["config"]["data"]["seed"] = 2
    (tmp_path / "s.json").write_text(json.dumps(doc))
    with pytest.raises(msa.MSAError, match="checksum mismatch"):
        load_session(tmp_path / "s.json").data()


def test_migration_from_schema_1(tmp_path, cfg_path):
    s = small_session(cfg_path, chis=(1,))
    doc = s.to_dict()
    v1 = {k: v for k, v in doc.items() if k not in ("config", "entries")}
    v1["schema_version"] = 1
    v1["problem"] = doc["config"]
    v1["results"] = [{**{k: v for k, v in e.items() if k != "kind"},
                      "simulation": e["kind"] == "simulation"} for e in doc["entries"]]
    (tmp_path / "old.json").write_text(json.dumps(v1))
    back = load_session(tmp_path / "old.json")
    assert back.doc["schema_version"] == SCHEMA_VERSION
    assert [e["kind"] for e in back.entries] == [e["kind"] for e in doc["entries"]]
    assert back.config == doc["config"]


@pytest.mark.parametrize("mangle,msg", [
    (lambda t: t[: len(t) // 2], "truncated or corrupted"),
    (lambda t: t.replace('"entries"', '"entries" ]', 1), "truncated or corrupted"),
    (lambda t: "\x00\xff garbage", "truncated or corrupted"),
    (lambda t: t.replace(f'"schema_version": {SCHEMA_VERSION}', '"schema_version": 99'),
     "newer than this msa-workbench supports"),
    (lambda t: t.replace('"msa-workbench-session"', '"something-else"'), "is not an msa-workbench session"),
    (lambda t: json.dumps({**json.loads(t), "entries": [{"kind": "theory"}]}), "].name is missing"),
])
def test_bad_session_files_give_one_line_and_nonzero_exit(tmp_path, cfg_path, capsys, mangle, msg):
    s = small_session(cfg_path, chis=(1,))
    path = save_session(s, tmp_path / "s.json")
    path.write_text(mangle(path.read_text()))
    with pytest.raises(msa.MSAError, match=msg):
        load_session(path)
    for cmd in (["replay", str(path)], ["compare", str(path), str(path)]):
        rc = main(cmd)
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and err.startswith("msa: error:") and msg in err


def test_binary_garbage_file(tmp_path, capsys):
    p = tmp_path / "x.json"
    p.write_bytes(os.urandom(300))
    assert main(["replay", str(p)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_session_dir_prefers_local_sessions_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "msa-workbench" in str(session_dir())
    (tmp_path / "sessions").mkdir()
    assert session_dir() == tmp_path / "sessions"


def test_atomic_save_leaves_old_file_on_failure(tmp_path, cfg_path):
    s = small_session(cfg_path, chis=(1,))
    path = save_session(s, tmp_path / "s.json")
    before = path.read_bytes()
    s.doc["bad"] = object()           # not serialisable: the write fails before replacing
    with pytest.raises(TypeError):
        save_session(s, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ising.toml", "s.json"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["ising.toml", "s.json"]


def test_read_only_directory_is_a_clear_error(tmp_path, cfg_path):
    if os.geteuid() == 0:
        # root ignores permission bits; simulate the full/readonly disk with a file
        # standing where the folder should be
        blocker = tmp_path / "ro"
        blocker.write_text("not a folder")
        target = blocker / "s.json"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "s.json"
    s = small_session(cfg_path, chis=(1,))
    with pytest.raises(msa.MSAError, match="cannot"):
        save_session(s, target)


BIG = SMALL.replace("P = 20", "P = 150").replace("d = 30", "d = 80")


def _sweep_cmd(cfg, out, *extra):
    return [sys.executable, "-m", "msa_engine", "sweep", str(cfg), "--chi",
            "1,2,4,8,16,32,64,N", "--width", "200,400,800,1600", "--out", str(out), *extra]


def test_kill_9_mid_sweep_leaves_loadable_session_and_resume_completes(tmp_path):
    cfg = tmp_path / "big.toml"
    cfg.write_text(BIG)
    out = tmp_path / "killed.json"
    def ready():
        if not out.exists():
            return False
        try:
            return len(load_session(out).entries) >= 10
        except msa.MSAError:
            pytest.fail("autosaved session was not loadable mid-sweep")
    run_and_kill_9(_sweep_cmd(cfg, out), ready, timeout=120)
    partial = load_session(out)
    assert 10 <= len(partial.entries) < 160
    assert all(e["status"] == "ok" and e["summary"] for e in partial.entries)
    assert not partial.sweep["completed"]
    # resume, and compare with an uninterrupted run: bit for bit
    r = subprocess.run([sys.executable, "-m", "msa_engine", "sweep", "--resume", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    resumed = load_session(out)
    assert resumed.sweep["completed"] and len(resumed.entries) == 160
    full_path = tmp_path / "full.json"
    r = subprocess.run(_sweep_cmd(cfg, full_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    full = load_session(full_path)
    key = lambda e: (e["kind"], e["name"], e["N"], e["chi"])
    a = {key(e): e["summary"] for e in resumed.entries}
    b = {key(e): e["summary"] for e in full.entries}
    assert a.keys() == b.keys()
    for k in a:
        assert a[k]["test_mean"] == b[k]["test_mean"], k
        assert a[k]["Q"] == b[k]["Q"], k


def test_concurrent_writers_never_corrupt(tmp_path, cfg_path):
    code = f"""
import sys
from msa_engine.config import load_config
from msa_engine.sessions import Session, save_session
from msa_engine.sweep import run_sweep
cfg = load_config({str(cfg_path)!r})
s = Session.new(cfg.resolved, name=sys.argv[1])
run_sweep(s, [1, 10], theories=["nngp", "rescaling"], autosave=False)
for i in range(40):
    s.notes = sys.argv[1] + str(i)
    save_session(s, {str(tmp_path / 'shared.json')!r})
    save_session(s, {str(tmp_path)!r} + '/own-' + sys.argv[1] + '.json')
"""
    procs = [subprocess.Popen([sys.executable, "-c", code, f"w{i}"]) for i in range(3)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    shared = load_session(tmp_path / "shared.json")     # one writer's complete file
    assert shared.notes in {f"w{i}39" for i in range(3)}
    for i in range(3):
        assert load_session(tmp_path / f"own-w{i}.json").notes == f"w{i}39"
    assert not list(tmp_path.glob(".*.tmp"))


def test_replay_prints_plot_and_log_summary(tmp_path, cfg_path, capsys):
    s = small_session(cfg_path, chis=(1, 3, 10, 30, "N"))
    path = save_session(s, tmp_path / "s.json")
    assert main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Test discrepancy vs χ (Fig. 2)" in out and "convergence log:" in out
    assert main(["replay", str(path), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert len(obj["rows"]) == 25 and obj["log_summary"]["theory_iterations"] > 0


def test_replay_rerun_detects_a_tampered_number(tmp_path, cfg_path, capsys):
    s = small_session(cfg_path, chis=(1, 10))
    path = save_session(s, tmp_path / "s.json")
    assert main(["replay", str(path), "--rerun", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)["rerun"]
    assert rep["reproduced"] and all(e["max_rel_diff"] <= 1e-12 for e in rep["entries"])
    doc = json.loads(path.read_text())
    tm = doc["entries"][3]["summary"]["test_mean"]
    tm[int(np.argmax(np.abs(tm)))] *= 1 + 1e-9
    path.write_text(json.dumps(doc))
    assert main(["replay", str(path), "--rerun"]) == 1
    out = capsys.readouterr().out
    assert "NOT reproduced" in out
    # said in words, not as the report's raw dict
    assert "of its scale (allowed 1e-12)" in out and "{" not in out.split("NOT reproduced")[1]


def test_rerun_compares_each_quantity_at_its_own_scale():
    """Reproduction is judged relative to an array's largest magnitude: a 5e-15
    difference in an entry 1000 times smaller than the rest (another machine's BLAS
    rounding) is reproduced; 1e-9 of the array's scale, or a NaN on one side, is not."""
    from msa_engine.analysis import _max_rel
    a = np.array([3.6, -0.0041, 1.2])
    assert _max_rel(a, a + [0.0, 5e-15, 0.0]) == pytest.approx(5e-15 / 3.6)
    assert _max_rel(a, a * (1 + np.array([0.0, 0.0, 1e-9]))) > 1e-12 * 100
    assert _max_rel(a, np.array([3.6, np.nan, 1.2])) == math.inf
    assert _max_rel(np.array([np.nan]), np.array([np.nan])) == 0.0
    # NaN pairs and equal infinities agree; rounding elsewhere is judged at the finite scale
    assert _max_rel(np.array([np.nan, 2.0, np.inf]),
                    np.array([np.nan, 2.0 + 4e-15, np.inf])) == pytest.approx(2e-15)
    assert _max_rel(np.array([np.inf, 1.0]), np.array([-np.inf, 1.0])) == math.inf
    assert _max_rel(2.0, 2.0 * (1 + 1e-11)) == pytest.approx(1e-11, rel=1e-3)
    assert _max_rel(None, None) == 0.0 and _max_rel(None, 1.0) == math.inf
    assert _max_rel(np.zeros(2), np.zeros(3)) == math.inf


def test_sweep_cli_json_and_bad_arguments(tmp_path, cfg_path, capsys):
    out = tmp_path / "s.json"
    rc = main(["sweep", str(cfg_path), "--chi", "1,10", "--width", "50,100", "--theories",
               "nngp,exact", "--out", str(out), "--json"])
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["entries"] == 8 and obj["failed"] == 0
    for bad, msg in ((["--chi", "1,x"], "--chi"), (["--width", "0"], "--width"),
                     (["--theories", "magic"], "theory must be one of")):
        rc = main(["sweep", str(cfg_path), "--out", str(out), *bad])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and err.count("\n") == 1


def test_failed_points_are_recorded_and_the_rest_kept(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL.replace("P = 20", "P = 150").replace("d = 30", "d = 80"))
    s = Session.new(load_config(cfg).resolved)
    run_sweep(s, [1, 4], widths=[60], theories=["one-loop", "exact"], autosave=False)
    failed = [e for e in s.entries if e["status"] == "failed"]
    assert failed and all("N well above" in e["error"] for e in failed)
    assert len(s.find("theory", "exact")) == 2
    # the chain stopped at χ = 1: the point after it says so, not the failure at χ = 1 as
    # if it were its own
    by_chi = {e["chi"]: e["error"] for e in failed}
    assert by_chi[1.0].startswith("one-loop did not converge at chi = 1")
    assert by_chi[4.0].startswith("not reached: the annealing chain stopped at chi = 1 (")
    # and replay names the failed points
    path = save_session(s, tmp_path / "s.json")
    assert main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "failed one-loop N=60 chi=4: not reached" in " ".join(out.split())


ERF = """
[data]
task = "hermite"
d = 10
P = 16
P_test = 20
seed = 0
[network]
activation = "erf"
N = 100
g_w = 1.5
g_a = 0.8
kappa = 0.05
chi = 1.0
"""


@pytest.mark.slow
def test_sweep_seed_reaches_the_monte_carlo_of_non_linear_saddles(tmp_path):
    """`msa sweep --seed S` seeds the tilted-measure chains of the non-linear tree level
    (before: always seed 0), each entry records its seed, and replay --rerun uses it."""
    from msa_engine.analysis import rerun
    from msa_engine.sweep import point_seed
    cfg = tmp_path / "erf.toml"
    cfg.write_text(ERF)
    resolved = load_config(cfg).resolved
    runs = {}
    for seed in (1, 2):
        s = Session.new(resolved, name=f"seed{seed}")
        run_sweep(s, [1], theories=["tree"], autosave=False, seed=seed)
        (e,) = s.find("theory", "tree")
        assert e["status"] == "ok" and e["seed"] == point_seed(seed, 100, 1.0)
        runs[seed] = (s, e)
    s1, e1 = runs[1]
    # the first point of a chain is a fresh solve with the point's seed, bit for bit
    direct = msa.solve(s1.problem(chi=1.0), "tree", seed=e1["seed"]).to_json_dict()
    assert np.array_equal(direct["test_mean"], e1["summary"]["test_mean"])
    # another base seed: other Monte Carlo numbers, equal within their error bars
    a, b = e1["summary"], runs[2][1]["summary"]
    assert not np.array_equal(a["test_mean"], b["test_mean"])
    z = (np.subtract(a["test_mean"], b["test_mean"])
         / np.hypot(a["test_mean_se"], b["test_mean_se"]))
    assert np.max(np.abs(z)) < 4.5
    rep = rerun(s1)
    assert rep["reproduced"], rep["entries"]


def test_one_name_is_one_file_name_in_the_cli_and_the_workbench(tmp_path, monkeypatch):
    """``msa sweep --name`` and the workbench's save-as had a sanitising rule each
    (``a  b`` was ``a--b.json`` from the CLI and ``a-b.json`` from the workbench)."""
    from msa_engine.sessions import session_file
    from msa_tui import model
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sessions").mkdir()
    for name, stem in (("a  b", "a-b"), ("sub/dir", "sub-dir"), ("run [/w bias]", "run-w-bias"),
                       ("/tmp/x", "tmp-x"), (" . ", "session"), ("χ-sweep_2.1", "χ-sweep_2.1")):
        assert session_file(name).name == f"{stem}.json"
        assert model.named_target(tmp_path / "sessions", name).name == f"{stem}.json"


def test_a_simulation_that_never_mixed_is_flagged_wherever_its_numbers_appear(
        tmp_path, cfg_path, capsys):
    """A step size of 5 accepts no proposal: the run returns numbers with error bars that
    mean nothing.  It warns once, with advice that fits (not "run more steps"), and its
    row is starred in replay, its z-scores in compare, and its CSV row says so."""
    cfg = load_config(cfg_path)
    s = Session.new(cfg.resolved, name="t")
    s.add_result(msa.solve(cfg.problem, "exact"))
    with pytest.warns(msa.MSAWarning, match=r"simulation at chi = 1, N = 100: not converged "
                      r"\(R̂_max .* ≥ 1\.05, ESS_min \d+ < 100, acceptance 0: the step size "
                      r"is too large\).*use a smaller step size"):
        bad = msa.simulate(cfg.problem, step_size=5.0, burn_in=0, steps=200, chains=2, seed=1)
    assert not bad.converged and bad.acceptance < 0.01
    s.add_result(bad)
    path = save_session(s, tmp_path / "s.json")
    assert {r["name"]: r["converged"] for r in load_session(path).sweep_rows()} == \
        {"exact": True, "sim-marginal": False}

    assert main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sim-marginal *" in out and "exact *" not in out
    assert "* sim-marginal N=100 chi=1: not converged (R̂_max" in " ".join(out.split())

    other = save_session(Session.new(cfg.resolved, name="u"), tmp_path / "u.json")
    s2 = load_session(other)
    s2.add_result(msa.solve(cfg.problem, "exact"))
    good = msa.simulate(cfg.problem, steps=2000, burn_in=500, chains=4, seed=2)
    assert good.converged, (good.rhat_max, good.ess_min)     # no warning: see below
    s2.add_result(good)
    save_session(s2, other)
    assert main(["compare", str(path), str(other), "--json"]) == 0
    cols = json.loads(capsys.readouterr().out)
    sims = [c["simulations"]["sim-marginal"] for c in cols["sessions"]]
    assert [x["converged"] for x in sims] == [False, True]
    assert sims[0]["warning"].startswith("not converged (") and sims[1]["warning"] is None
    assert sum("z-scores against the theories test nothing" in h
               for h in cols["highlights"]) == 1
    assert main(["compare", str(path), str(other)]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines()
               if "sim-marginal vs exact" in ln)
    assert row.split("max|z|")[1].split()[1:] == ["*", row.split()[-1]]   # starred in t only

    assert main(["export", str(path), "--format", "csv", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    lines = (tmp_path / "t-results.csv").read_text().splitlines()
    assert lines[0].endswith(",converged")
    assert sorted(ln.rsplit(",", 1)[1] for ln in lines[1:]) == ["False", "True"]


def test_a_converged_simulation_does_not_warn(cfg_path):
    import warnings
    cfg = load_config(cfg_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", msa.MSAWarning)
        res = msa.simulate(cfg.problem, steps=2000, burn_in=500, chains=4, seed=2)
    assert res.converged and msa.results.convergence_problems(res) == []


def test_a_sweep_names_its_unconverged_simulations(tmp_path, cfg_path, capsys):
    """Its simulations do not warn one by one (in pool workers such warnings are
    silenced, in the serial run they came before a second list): the summary names each
    unconverged point, once."""
    cfg_path.write_text(SMALL + "[simulation]\nsteps = 40\nburn_in = 20\nchains = 2\n")
    out = tmp_path / "sw.json"
    assert main(["sweep", str(cfg_path), "--chi", "1,N", "--theories", "exact", "--simulate",
                 "--out", str(out)]) == 0
    out, err = capsys.readouterr()
    text = " ".join(out.split())
    for chi in (1, 100):
        assert text.count(f"unconverged sim-marginal N=100 chi={chi}: not converged (") == 1
    assert "unconverged exact" not in text and "not converged" not in err
