"""Reliability (issue 8): bad input, numerical failure, crash safety, resource guard.

Every row of the README's "Reliability" table is a test here (or in
tests/test_sessions.py / tests/test_fuzz.py, named in the table).  Bad inputs go
through the real CLI (``main([...])``, and a few through a subprocess to prove
that no traceback escapes): one line ``msa: error: …`` naming the field and the
problem, exit code 2.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import msa_engine as msa
from msa_engine import config as msa_config, resources
from msa_engine.cli import main
from msa_engine.sessions import Session, load_session, save_session
from msa_engine.sweep import run_sweep

from .conftest import run_and_kill_9

CONFIG = """
[data]
task = "linear"
d = 5
P = 8
P_test = 6
seed = 1

[network]
activation = "linear"
N = 20
g_w = 1.5
g_a = 0.8
kappa = 0.1
chi = 2.0
"""

NETWORK_ONLY = CONFIG[CONFIG.index("[network]"):]


def _npz(path: Path, **arrays) -> Path:
    base = {"X_train": np.ones((3, 2)) * [[1, 2]], "y_train": np.ones(3),
            "X_test": np.ones((2, 2)), "y_test": np.ones(2)}
    base.update(arrays)
    base = {k: v for k, v in base.items() if v is not None}
    np.savez(path, **base)
    return path


def _cfg(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _data_cfg(tmp_path: Path, data_table: str) -> Path:
    return _cfg(tmp_path, data_table + "\n" + NETWORK_ONLY)


def run_cli(args, capsys):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_one_line_error(rc, out, err, msg):
    assert rc == 2, (rc, err)
    assert out == ""
    assert err.startswith("msa: error: ") and err.count("\n") == 1, err
    assert msg in err, err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- bad inputs
def _edit(old, new):
    return lambda tmp: _cfg(tmp, CONFIG.replace(old, new))


def _npz_case(**arrays):
    def make(tmp):
        _npz(tmp / "d.npz", **arrays)
        return _data_cfg(tmp, '[data]\ntask = "npz"\npath = "d.npz"')
    return make


def _csv_case(train: str, test: str | None = None):
    def make(tmp):
        (tmp / "train.csv").write_text(train)
        extra = ""
        if test is not None:
            (tmp / "test.csv").write_text(test)
            extra = '\ntest_path = "test.csv"'
        return _data_cfg(tmp, '[data]\ntask = "csv"\npath = "train.csv"' + extra)
    return make


def _raw_file(name: str, content: bytes, task: str = "npz"):
    def make(tmp):
        (tmp / name).write_bytes(content)
        return _data_cfg(tmp, f'[data]\ntask = "{task}"\npath = "{name}"')
    return make


def _npy_file(tmp):
    np.save(tmp / "d.npy", np.zeros((3, 2)))
    return _data_cfg(tmp, '[data]\ntask = "npz"\npath = "d.npy"')


# (id, config maker, extra CLI args, the message in the one error line)
BAD_CONFIGS = [
    ("nan-in-data", _npz_case(X_train=np.array([[1.0, np.nan]] * 3)), "X_train contains NaN or inf"),
    ("inf-in-data", _csv_case("x,y\n1,inf\n2,3\n4,5\n6,7\n"), "contains NaN or inf"),
    ("X-vs-y-rows", _npz_case(y_train=np.ones(2)), "X_train has 3 rows but y_train has 2 entries"),
    ("train-vs-test-dims", _npz_case(X_test=np.ones((2, 3))), "X_test has 3 features but X_train has 2"),
    ("train-vs-test-dims-csv", _csv_case("1,2,3\n4,5,6\n", "1,2\n3,4\n"),
     "X_test has 1 features but X_train has 2"),
    ("teacher-length", _npz_case(teacher=np.ones(5)), "teacher has length 5 but the inputs have d = 2"),
    ("empty-data", _npz_case(X_train=np.zeros((0, 2)), y_train=np.zeros(0)), "X_train is empty"),
    ("empty-csv", _csv_case("x,y\n"), "no data rows"),
    ("complex-data", _npz_case(X_train=np.ones((3, 2)) * (1 + 1j)), "X_train must be real"),
    ("non-numeric-csv", _csv_case("1,2\nabc,3\n"), "data row 2, column 1: 'abc' is not a number"),
    ("N<1", _edit("N = 20", "N = 0"), "N must be an integer >= 1 (got 0)"),
    ("N-not-integer", _edit("N = 20", "N = 2.5"), "N must be an integer >= 1 (got 2.5)"),
    ("kappa<0", _edit("kappa = 0.1", "kappa = -0.1"), "kappa must be > 0 (got -0.1)"),
    ("kappa=0", _edit("kappa = 0.1", "kappa = 0.0"), "kappa must be > 0 (got 0.0)"),
    ("kappa-nan", _edit("kappa = 0.1", "kappa = nan"), "kappa must be > 0 (got nan)"),
    ("kappa-not-a-number", _edit("kappa = 0.1", 'kappa = "small"'),
     "kappa must be a number (got 'small')"),
    ("chi<=0", _edit("chi = 2.0", "chi = -1.0"), "chi must be > 0 (got -1.0)"),
    ("chi-inf", _edit("chi = 2.0", "chi = inf"), "chi must be > 0 (got inf)"),
    ("gamma-out-of-range", _edit("chi = 2.0", "gamma = 3.0"), "gamma must lie in [1, 2] (got 3.0)"),
    ("g_w<=0", _edit("g_w = 1.5", "g_w = 0.0"), "g_w must be > 0 (got 0.0)"),
    ("g_a<=0", _edit("g_a = 0.8", "g_a = -2.0"), "g_a must be > 0 (got -2.0)"),
    ("unknown-activation", _edit('activation = "linear"', 'activation = "tanh"'),
     "activation must be one of linear, erf, relu (got 'tanh')"),
    ("unknown-task", _edit('task = "linear"', 'task = "mnist"'),
     "data.task must be one of linear, ising, hermite, xor, npz, csv (got 'mnist')"),
    ("unknown-network-key", _edit("kappa = 0.1", "kappa = 0.1\nkapa = 0.2"),
     "network: unknown key(s) kapa"),
    ("unknown-data-key", _edit("seed = 1", "seed = 1\nsede = 2"),
     "data: unknown key(s) for task 'linear': sede"),
    ("data.P<1", _edit("P = 8", "P = 0"), "data.P must be >= 1 (got 0)"),
    ("missing-data-file", lambda tmp: _data_cfg(tmp, '[data]\ntask = "npz"\npath = "gone.npz"'),
     "data.path: no such file"),
    ("corrupt-npz", _raw_file("d.npz", b"PK\x03\x04" + b"\x00" * 40), "cannot read"),
    ("npy-not-npz", _npy_file, "not an .npz archive"),
    ("csv-not-utf8", _raw_file("d.csv", b"\xff\xfe\x00\x81 garbage", task="csv"), "cannot read"),
    ("toml-syntax", _edit("seed = 1", "seed = "), "TOML syntax error"),
    ("kappa-bool", _edit("kappa = 0.1", "kappa = true"), "kappa must be a number (got True)"),
    ("kappa-text", _edit("kappa = 0.1", 'kappa = "0.1"'), "kappa must be a number (got '0.1')"),
    ("toml-bad-table", _edit("[network]", "[netwrk]"), "config: unknown table(s) netwrk"),
    ("simulation-table-type", lambda tmp: _cfg(tmp, CONFIG + '\n[simulation]\nchains = "4"\n'),
     "simulation.chains must be an integer (got '4')"),
    # the [theory] table is read when the config loads: every command refuses it
    ("theory-unknown-key", lambda tmp: _cfg(tmp, CONFIG + "\n[theory]\nchainz = 64\n"),
     "theory: unknown key(s) chainz"),
    ("theory-type", lambda tmp: _cfg(tmp, CONFIG + '\n[theory]\nchains = "64"\n'),
     "theory.chains must be an integer >= 1 (got '64')"),
    ("theory-groups", lambda tmp: _cfg(tmp, CONFIG + "\n[theory]\nchains = 100\n"),
     "theory: chains (100) must be a multiple of groups (16)"),
    ("theory-range", lambda tmp: _cfg(tmp, CONFIG + "\n[theory]\ndamping = 1.5\n"),
     "theory.damping must be a number in (0, 1] (got 1.5)"),
    ("theory-seed", lambda tmp: _cfg(tmp, CONFIG + "\n[theory]\nseed = -1\n"),
     "theory.seed must be an integer >= 0 (got -1)"),
]


@pytest.mark.parametrize("make,msg", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_and_data_files_are_one_line_exit_2(tmp_path, capsys, make, msg):
    cfg = make(tmp_path)
    cmds = [["solve", cfg, "--json"], ["simulate", cfg, "--steps", "8", "--json"]]
    for cmd in cmds[1:] if msg.startswith("simulation.") else cmds:   # solve ignores [simulation]
        rc, out, err = run_cli(cmd, capsys)
        assert_one_line_error(rc, out, err, msg)


def test_missing_and_unreadable_config_files(tmp_path, capsys):
    rc, out, err = run_cli(["solve", tmp_path / "nope.toml", "--json"], capsys)
    assert_one_line_error(rc, out, err, "no such config file")
    rc, out, err = run_cli(["solve", tmp_path, "--json"], capsys)       # a folder
    assert_one_line_error(rc, out, err, "cannot read config")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"[network]\nactivation = \"\xe9\"\n")
    rc, out, err = run_cli(["solve", bad, "--json"], capsys)
    assert_one_line_error(rc, out, err, "cannot read config")


BAD_ARGS = [
    ("unknown-theory", ["solve", "{cfg}", "--theory", "magic"],
     "theory must be one of nngp, rescaling, tree, one-loop, exact (got 'magic')"),
    ("theory-not-for-activation", ["solve", "{erf}", "--theory", "exact", "--json"],
     "theory 'exact' exists only for linear networks (got activation 'erf')"),
    ("chains<1", ["simulate", "{cfg}", "--chains", "0", "--json"],
     "chains must be an integer >= 1 (got 0)"),
    ("steps-not-int", ["simulate", "{cfg}", "--steps", "abc"], "argument --steps: invalid int value"),
    ("step-size<=0", ["simulate", "{cfg}", "--step-size", "-1", "--json"],
     "step_size must be a positive number (got -1.0)"),
    ("unknown-sampler", ["simulate", "{cfg}", "--sampler", "gibbs"], "argument --sampler: invalid choice"),
    ("resume-without-checkpoint", ["simulate", "{cfg}", "--resume", "--json"],
     "resume needs a checkpoint path"),
    ("sweep-chi<=0", ["sweep", "{cfg}", "--chi", "1,-3", "--out", "{tmp}/s.json"],
     "--chi values must be finite numbers > 0 (got '-3')"),
    ("sweep-width<1", ["sweep", "{cfg}", "--chi", "1", "--width", "0", "--out", "{tmp}/s.json"],
     "--width values must be integers >= 1 (got '0')"),
    ("sweep-unknown-theory", ["sweep", "{cfg}", "--chi", "1", "--theories", "magic",
                              "--out", "{tmp}/s.json"], "theory must be one of"),
    # a sweep refuses its simulation options before it writes or runs anything
    ("sweep-sim-sampler", ["sweep", "{cfg}", "--chi", "1", "--theories", "nngp", "--simulate",
                           "--sampler", "hmc", "--out", "{tmp}/s.json"],
     "sampler must be one of marginal, full (got 'hmc')"),
    ("sweep-sim-steps<1", ["sweep", "{cfg}", "--chi", "1", "--theories", "nngp", "--simulate",
                           "--steps", "-5", "--out", "{tmp}/s.json"],
     "steps must be an integer >= 1 (got -5)"),
    ("sweep-empty-chi", ["sweep", "{cfg}", "--chi", "", "--out", "{tmp}/s.json"],
     "--chi is empty"),
    ("sweep-empty-theories", ["sweep", "{cfg}", "--theories", ",", "--out", "{tmp}/s.json"],
     "--theories needs at least one theory"),
    ("sweep-retries<0", ["sweep", "{cfg}", "--chi", "1", "--retries", "-1",
                         "--out", "{tmp}/s.json"], "--retries must be an integer >= 0 (got -1)"),
    ("sweep-theory-not-for-activation", ["sweep", "{erf}", "--chi", "1", "--theories",
                                         "nngp,exact", "--out", "{tmp}/s.json"],
     "theory 'exact' exists only for linear networks (got activation 'erf')"),
    ("solve-seed<0", ["solve", "{erf}", "--theory", "tree", "--seed", "-1", "--json"],
     "seed must be an integer >= 0 (got -1)"),
    ("solve-linear-seed<0", ["solve", "{cfg}", "--theory", "nngp", "--seed", "-1", "--json"],
     "seed must be an integer >= 0 (got -1)"),
    ("unknown-command", ["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    ("missing-session", ["replay", "{tmp}/none.json"], "no such session file"),
    # before the screen opens (it opened the bundled default behind a passing toast)
    ("tui-missing-session", ["tui", "{tmp}/none.json"], "no such session file"),
]


@pytest.mark.parametrize("args,msg", [c[1:] for c in BAD_ARGS], ids=[c[0] for c in BAD_ARGS])
def test_bad_cli_arguments_are_one_line_exit_2(tmp_path, capsys, args, msg):
    cfg = _cfg(tmp_path, CONFIG)
    erf = _cfg(tmp_path, CONFIG.replace('activation = "linear"', 'activation = "erf"'), "erf.toml")
    args = [a.format(cfg=cfg, erf=erf, tmp=tmp_path) for a in args]
    rc, out, err = run_cli(args, capsys)
    assert rc == 2 and err.startswith("msa: error: ") and err.count("\n") == 1, err
    assert msg in err and "Traceback" not in err
    assert not (tmp_path / "s.json").exists()


def _subprocess(args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "msa_engine", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_bad_inputs_in_a_real_process_print_no_traceback(tmp_path):
    cfg = _cfg(tmp_path, CONFIG.replace("kappa = 0.1", "kappa = -0.1"))
    r = _subprocess(["solve", cfg, "--json"])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "msa: error: kappa must be > 0 (got -0.1)\n"
    _npz(tmp_path / "d.npz", X_train=np.array([[np.inf, 1.0]] * 3))
    cfg = _data_cfg(tmp_path, '[data]\ntask = "npz"\npath = "d.npz"')
    r = _subprocess(["simulate", cfg, "--json"])
    assert r.returncode == 2 and r.stderr == "msa: error: X_train contains NaN or inf\n"


# --------------------------------------------------------------------------- numerical failure
def _dup_problem(kappa, theory_activation="linear"):
    X = np.vstack([np.eye(3)[:2]] * 3)          # six rows, two distinct inputs
    y = np.arange(6.0)                          # inconsistent targets at equal inputs
    data = msa.Data(X, y, X[:2], y[:2])
    return msa.Problem(data, msa.Network.make(theory_activation, N=10, kappa=kappa))


@pytest.mark.parametrize("theory", ["nngp", "rescaling", "tree", "one-loop", "exact"])
def test_singular_kernel_with_tiny_kappa_is_a_clear_error(theory):
    # before issue 8 this returned Q = 3.4e8 (rescaling, exact) or a negative Q
    # (tree) marked converged, and κ = 1e-300 raised LinAlgError
    for kappa in (1e-12, 1e-300):
        with pytest.raises(msa.MSAError, match=r"the kernel is singular \(4 of 6 eigenvalues .*"
                           r"duplicate or collinear inputs.*use kappa >= [0-9.]+e-0[67]"):
            msa.solve(_dup_problem(kappa), theory)
    # a κ that resolves the duplicates is accepted, and gives finite numbers
    res = msa.solve(_dup_problem(1e-4), theory)
    assert np.all(np.isfinite(res.test_mean)) and np.isfinite(res.Q)


def test_singular_kernel_is_not_refused_when_kappa_is_large_enough():
    # P > d makes every linear kernel singular; an ordinary κ is fine
    data = msa.make_data({"task": "ising", "d": 10, "P": 80, "P_test": 10, "seed": 3})
    for theory in ("rescaling", "tree", "exact"):
        pb = msa.Problem(data, msa.Network.make("linear", N=50, kappa=0.01, chi="mean-field"))
        assert np.isfinite(msa.solve(pb, theory).Q)


def test_singular_kernel_via_cli(tmp_path, capsys):
    X = np.vstack([np.eye(3)[:2]] * 3)
    _npz(tmp_path / "dup.npz", X_train=X, y_train=np.arange(6.0), X_test=X[:2], y_test=[0.0, 1.0])
    cfg = _cfg(tmp_path, '[data]\ntask = "npz"\npath = "dup.npz"\n'
               + NETWORK_ONLY.replace("kappa = 0.1", "kappa = 1e-12"))
    rc, out, err = run_cli(["solve", cfg, "--theory", "exact", "--json"], capsys)
    assert_one_line_error(rc, out, err, "the kernel is singular")


def test_kernel_overflow_never_returns_nan():
    # regression: x ~ 1e300 made the kernel inf and nngp returned NaN test means
    # marked converged
    data = msa.make_data({"task": "xor", "mu": 1e300})
    pb = msa.Problem(data, msa.Network.make("relu", N=10))
    with pytest.raises(msa.MSAError, match="the NNGP kernel overflowed"):
        msa.solve(pb, "nngp")


def test_a_nan_result_is_never_returned(monkeypatch):
    # fault injection: a theory that returns NaN is stopped at the boundary
    from dataclasses import replace
    from msa_engine import theory as th
    pb = msa.Problem(msa.make_data({"task": "linear", "d": 5, "P": 8, "P_test": 4}),
                     msa.Network.make("linear", N=20))
    real = th.THEORIES["nngp"]
    monkeypatch.setitem(th.THEORIES, "nngp", lambda p, **kw: replace(
        real(p, **kw), test_mean=np.full(4, np.nan)))
    with pytest.raises(msa.MSAError, match=r"nngp produced NaN or inf \(test_mean\) at chi = 1"):
        msa.solve(pb, "nngp")
    real_tree = th.THEORIES["tree"]
    monkeypatch.setitem(th.THEORIES, "tree", lambda p, **kw: replace(real_tree(p, **kw), Q=np.inf))
    with pytest.raises(msa.MSAError, match=r"tree produced NaN or inf \(Q\)"):
        msa.solve(pb, "tree")


def test_singular_linear_system_is_an_msa_error(monkeypatch):
    from msa_engine import theory as th
    pb = msa.Problem(msa.make_data({"task": "linear", "d": 5, "P": 8, "P_test": 4}),
                     msa.Network.make("linear", N=20))

    def singular(*a, **k):
        raise np.linalg.LinAlgError("Singular matrix")
    monkeypatch.setitem(th.THEORIES, "tree", singular)
    monkeypatch.setitem(th.THEORIES, "exact", singular)
    with pytest.raises(msa.MSAError, match="tree failed at chi = 1: singular linear system"):
        msa.solve(pb, "tree")
    with pytest.raises(msa.MSAError, match="exact: singular linear system"):
        msa.solve(pb, "exact")


def test_non_convergence_reports_residual_chi_and_fix():
    # a real case: the one loop at N < P
    data = msa.make_data({"task": "linear", "d": 30, "P": 20, "P_test": 10, "seed": 1})
    pb = msa.Problem(data, msa.Network.make("linear", N=5, g_w=1.5, g_a=0.8, kappa=0.1, chi=5.0))
    with pytest.raises(msa.MSAError, match=r"one-loop did not converge at chi = 5 \(residual "
                       r"[0-9.e+-]+\); .*use rescaling .* or exact"):
        msa.solve(pb, "one-loop")


def test_tree_non_convergence_suggests_a_finer_grid(monkeypatch):
    # fault injection: the tree solver stops short of convergence at chi = 4
    from dataclasses import replace
    from msa_engine import theory as th
    pb = msa.Problem(msa.make_data({"task": "linear", "d": 5, "P": 8, "P_test": 4}),
                     msa.Network.make("linear", N=20, chi=16.0))
    real = th.THEORIES["tree"]

    def stalls(p, **kw):
        res = real(p, **kw)
        return replace(res, converged=False, residual=0.37) if p.network.chi >= 4 else res
    monkeypatch.setitem(th.THEORIES, "tree", stalls)
    with pytest.raises(msa.MSAError, match=r"tree did not converge at chi = 4 \(residual 0\.37\); "
                       r"use a finer annealing grid"):
        msa.solve(pb, "tree")


def test_indefinite_tilted_precision_is_reported_with_chi():
    data = msa.make_data({"task": "linear", "d": 5, "P": 8, "P_test": 4, "seed": 1})
    pb = msa.Problem(data, msa.Network.make("linear", N=20, chi=20.0))
    with pytest.raises(msa.MSAError, match=r"one-loop failed at chi = 20: the tilted precision is "
                       r"not positive definite .*anneal with a finer chi grid"):
        msa.anneal(pb, "one-loop", [20.0], tbar0=np.full(8, 100.0))


def test_sampler_divergence_names_the_step(tmp_path, capsys):
    cfg = _cfg(tmp_path, CONFIG)
    rc, out, err = run_cli(["simulate", cfg, "--method", "ula", "--step-size", "1e4",
                            "--steps", "50", "--burn-in", "0", "--json"], capsys)
    assert_one_line_error(rc, out, err, "simulation diverged at step 1 (chain 0)")
    assert "use a smaller step size" in err


# --------------------------------------------------------------------------- crash safety
SIM_CONFIG = CONFIG.replace("d = 5", "d = 10").replace("P = 8", "P = 20").replace(
    "N = 20", "N = 50") + "\n[simulation]\nchains = 4\nsteps = 20000\nburn_in = 1000\nchunk = 500\n"
# (20 000 steps, a few seconds: the checkpoint is written between the first and the last
# chunk once twenty times a write's duration has passed, so a run of 6000 steps, < 1 s,
# could skip from its first chunk to its last, and the kill below come too late)


def _checkpoint_steps(path: Path) -> int | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return int(json.loads(str(z["meta"]))["steps_done"])
    except Exception:       # noqa: BLE001 - a reader may race the writer's rename
        return None


def test_kill_9_mid_simulation_checkpoint_loads_and_resume_completes(tmp_path):
    cfg = _cfg(tmp_path, SIM_CONFIG)
    ck = tmp_path / "run.npz"
    cmd = [sys.executable, "-m", "msa_engine", "simulate", str(cfg), "--checkpoint", str(ck),
           "--json"]
    def ready():
        done = _checkpoint_steps(ck) if ck.exists() else None
        return done is not None and done >= 2000
    proc = run_and_kill_9(cmd, ready, poll=0.02)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _checkpoint_steps(ck)
    assert killed_at is not None and 2000 <= killed_at < 21000      # the last autosave loads
    r = _subprocess(["simulate", cfg, "--checkpoint", ck, "--resume", "--json"], timeout=300)
    assert r.returncode == 0, r.stderr
    resumed = json.loads(r.stdout)
    assert _checkpoint_steps(ck) == 21000
    r = _subprocess(["simulate", cfg, "--json"], timeout=300)
    assert r.returncode == 0, r.stderr
    full = json.loads(r.stdout)
    assert resumed["test_mean"] == full["test_mean"]        # bit for bit
    assert resumed["Q"] == full["Q"] and resumed["test_mean_se"] == full["test_mean_se"]


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_ends_the_run_between_chunks_with_its_checkpoint_written(tmp_path, sig,
                                                                                code):
    """A scheduler's SIGTERM (its notice before preemption) or a first Ctrl-C stops
    `msa simulate --checkpoint` at the end of its chunk, once the checkpoint holds it:
    paced writes would otherwise lose the steps since the last one."""
    import time
    cfg = _cfg(tmp_path, SIM_CONFIG)
    ck = tmp_path / "run.npz"
    proc = subprocess.Popen([sys.executable, "-m", "msa_engine", "simulate", str(cfg),
                             "--checkpoint", str(ck), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not (_checkpoint_steps(ck) or 0) >= 1500:
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be stopped"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert out == "" and "holds the run: continue it with --resume" in err, err
    stopped = _checkpoint_steps(ck)
    assert stopped % 500 == 0 and 1500 < stopped < 21000   # a later chunk than the wait's
    r = _subprocess(["simulate", cfg, "--checkpoint", ck, "--resume", "--json"], timeout=300)
    assert r.returncode == 0, r.stderr
    full = _subprocess(["simulate", cfg, "--json"], timeout=300)
    assert json.loads(r.stdout)["test_mean"] == json.loads(full.stdout)["test_mean"]


def test_sigterm_stops_a_sweep_as_ctrl_c_does(tmp_path):
    """A scheduler's SIGTERM killed `msa sweep` where it stood (points completed since
    the last paced autosave lost); now it stops as a Ctrl-C does: the session is
    written with what completed, exit 143."""
    import time
    from msa_engine.sessions import load_session
    cfg = _cfg(tmp_path, SIM_CONFIG.replace("steps = 20000", "steps = 200000"))
    out = tmp_path / "sw.json"
    proc = subprocess.Popen([sys.executable, "-m", "msa_engine", "sweep", str(cfg), "--chi",
                             "1,2,3,4", "--theories", "exact", "--simulate", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180

        def points():
            try:
                return len(load_session(out).entries)
            except Exception:       # noqa: BLE001 - not written yet
                return 0

        while time.time() < deadline and points() < 4:      # the exact chain is in
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep finished before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and err.rstrip().endswith("msa: terminated (SIGTERM)"), err
    back = load_session(out)
    assert len(back.entries) >= 4 and not back.sweep.get("completed")


def test_corrupted_checkpoint_is_a_clear_error(tmp_path, capsys):
    cfg = _cfg(tmp_path, CONFIG)
    ck = tmp_path / "ck.npz"
    args = ["simulate", cfg, "--steps", "40", "--burn-in", "10", "--checkpoint", ck, "--json"]
    assert run_cli(args, capsys)[0] == 0
    good = ck.read_bytes()
    for bad in (good[: len(good) // 2], b"\x00" * 100, b"PK\x03\x04" + os.urandom(200)):
        ck.write_bytes(bad)
        rc, out, err = run_cli(args + ["--resume"], capsys)
        assert_one_line_error(rc, out, err, "checkpoint")
    ck.write_bytes(b"not a zip archive at all\n")       # numpy spoke of "pickled data"
    rc, out, err = run_cli(args + ["--resume"], capsys)
    assert_one_line_error(rc, out, err, "not an .npz checkpoint")
    # a checkpoint of another run is refused, naming the difference
    ck.write_bytes(good)
    rc, out, err = run_cli(["simulate", cfg, "--steps", "40", "--burn-in", "10", "--seed", "3",
                            "--checkpoint", ck, "--resume", "--json"], capsys)
    assert_one_line_error(rc, out, err, "belongs to a different run (seed: 0 != 3)")


def test_unwritable_paths_are_clear_errors(tmp_path, capsys):
    """A full or read-only disk, simulated by a regular file standing where the folder
    should be (tests run as root, where permission bits do not stop writes)."""
    cfg = _cfg(tmp_path, CONFIG)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    rc, out, err = run_cli(["simulate", cfg, "--steps", "20", "--burn-in", "5",
                            "--checkpoint", blocker / "ck.npz", "--json"], capsys)
    assert_one_line_error(rc, out, err, "blocker' is not a folder")
    rc, out, err = run_cli(["simulate", cfg, "--steps", "20", "--burn-in", "5",
                            "--traces", blocker / "t.npz", "--json"], capsys)
    assert_one_line_error(rc, out, err, "blocker' is not a folder")
    rc, out, err = run_cli(["sweep", cfg, "--chi", "1,2", "--theories", "nngp",
                            "--out", blocker / "s.json", "--json"], capsys)
    assert_one_line_error(rc, out, err, "cannot create folder")


def test_no_space_left_keeps_the_previous_session_and_checkpoint(tmp_path, monkeypatch):
    """ENOSPC injected at fsync (the point where a full disk reports itself)."""
    cfg = msa_config.load_config(_cfg(tmp_path, CONFIG))
    s = Session.new(cfg.resolved, name="t")
    run_sweep(s, [1.0], theories=["nngp"], autosave=False)
    path = save_session(s, tmp_path / "s.json")
    before = path.read_bytes()
    ck = tmp_path / "ck.npz"
    from msa_engine.sampling import simulate
    simulate(cfg.problem, steps=20, burn_in=5, checkpoint=ck)
    ck_before = ck.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    s.notes = "changed"
    with pytest.raises(msa.MSAError, match="cannot write session .*No space left on device"):
        save_session(s, path)
    with pytest.raises(msa.MSAError, match="cannot write checkpoint .*No space left on device"):
        simulate(cfg.problem, steps=20, burn_in=5, checkpoint=ck)
    monkeypatch.undo()
    assert path.read_bytes() == before and ck.read_bytes() == ck_before
    assert load_session(path).notes == ""
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".s.json")]


# --------------------------------------------------------------------------- resource guard
def _tiny_memory(monkeypatch, size="1M"):
    monkeypatch.setenv(resources.ENV_LIMIT, size)


def test_solve_is_refused_before_allocating(monkeypatch):
    from msa_engine.theory import gp
    pb = msa.Problem(msa.make_data({"task": "linear", "d": 5, "P": 600, "P_test": 40}),
                     msa.Network.make("linear", N=20))
    _tiny_memory(monkeypatch, "1M")

    def must_not_run(*a, **k):
        raise AssertionError("allocated before the resource check")
    monkeypatch.setattr(gp.Spectral, "of", classmethod(must_not_run))
    with pytest.raises(msa.MSAError, match=r"not enough memory: theory 'exact' for P = 600, "
                       r"P_test = 40, d = 5 needs about [0-9.]+ MiB, but only 1\.0 MiB is "
                       r"available \(MSA_MEMORY_LIMIT=1M\); use fewer training or test points"):
        msa.solve(pb, "exact")


def test_huge_problems_are_refused_with_the_real_memory_figure(monkeypatch):
    monkeypatch.delenv(resources.ENV_LIMIT, raising=False)
    avail, source = resources.available_memory()
    if avail is None:
        pytest.skip("no memory figure on this platform")
    # P = 10⁶: the kernel alone is 8 TB
    pb = msa.Problem(msa.make_data({"task": "linear", "d": 1, "P": 1_000_000, "P_test": 1}),
                     msa.Network.make("linear", N=20))
    with pytest.raises(msa.MSAError, match=r"not enough memory: theory 'nngp' .* needs about "
                       r"[0-9.]+ (TiB|PiB), but only .* is available"):
        msa.solve(pb, "nngp")
    # chains·N·d: 10⁴ chains of a 10⁶ × 100 read-in matrix (24 TB)
    from msa_engine.sampling import simulate
    small = msa.Problem(msa.make_data({"task": "linear", "d": 100, "P": 5, "P_test": 5}),
                        msa.Network.make("linear", N=1_000_000))
    with pytest.raises(msa.MSAError, match=r"not enough memory: simulating 10000 chain\(s\) .* "
                       r"use fewer chains"):
        simulate(small, chains=10_000)
    # (P + P*)·d of a generated data set
    with pytest.raises(msa.MSAError, match=r"not enough memory: generating 60 × 1000000000000 "
                       r"inputs"):
        msa.make_data({"task": "linear", "d": 10 ** 12})


def test_sweep_is_refused_before_it_starts(tmp_path, monkeypatch):
    cfg = msa_config.load_config(_cfg(tmp_path, CONFIG))
    s = Session.new(cfg.resolved, name="t")
    out = tmp_path / "s.json"
    _tiny_memory(monkeypatch, "64K")
    with pytest.raises(msa.MSAError, match=r"not enough memory: the sweep's simulation at N = 400"):
        run_sweep(s, [1.0, 2.0], widths=[20, 400], theories=["nngp"], simulate=True,
                  sim_options={"chains": 4, "steps": 100}, path=out)
    assert not out.exists() and s.entries == []


def test_resource_refusal_through_the_cli_in_a_process(tmp_path):
    cfg = _cfg(tmp_path, CONFIG)
    r = _subprocess(["solve", cfg, "--json"], env={resources.ENV_LIMIT: "4K"})
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith("msa: error: not enough memory: theory 'nngp' for P = 8")
    r = _subprocess(["solve", cfg, "--theory", "nngp", "--json"],
                    env={resources.ENV_LIMIT: "off"})
    assert r.returncode == 0, r.stderr


def test_memory_detection_and_its_fallbacks(monkeypatch):
    monkeypatch.delenv(resources.ENV_LIMIT, raising=False)
    monkeypatch.setattr(resources, "_meminfo_available", lambda: 5 * 2 ** 30)
    monkeypatch.setattr(resources, "_cgroup_available", lambda: 2 * 2 ** 30)
    assert resources.available_memory() == (2 * 2 ** 30, "the control group's memory limit")
    monkeypatch.setattr(resources, "_cgroup_available", lambda: None)
    assert resources.available_memory()[0] == 5 * 2 ** 30
    monkeypatch.setattr(resources, "_meminfo_available", lambda: None)
    monkeypatch.setattr(resources, "_sysconf_available", lambda: 3 * 2 ** 30)
    assert resources.available_memory() == (3 * 2 ** 30, "free physical pages (os.sysconf)")
    monkeypatch.setattr(resources, "_sysconf_available", lambda: None)
    assert resources.available_memory() == (None, "undetectable")
    resources.check_memory(10 ** 18, "anything", "")           # nothing known: let it through
    monkeypatch.setenv(resources.ENV_LIMIT, "2G")
    assert resources.available_memory() == (2 * 2 ** 30, "MSA_MEMORY_LIMIT=2G")
    monkeypatch.setenv(resources.ENV_LIMIT, "off")
    assert resources.available_memory()[0] is None
    for bad in ("lots", "-1G", "nanG"):
        monkeypatch.setenv(resources.ENV_LIMIT, bad)
        with pytest.raises(msa.MSAError, match="MSA_MEMORY_LIMIT must be a size such as 8G"):
            resources.available_memory()


def test_real_meminfo_is_parsed():
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo")
    v = resources._meminfo_available()
    assert v is not None and v > 0


def test_estimates_scale_as_documented():
    e = resources.estimate_solve
    assert e(2000, 10, 5, "nngp") / e(1000, 10, 5, "nngp") == pytest.approx(4, rel=0.05)
    assert e(100, 10, 5, "exact") > e(100, 10, 5, "tree") > e(100, 10, 5, "nngp")
    s = resources.estimate_simulation
    big = s(10, 10, 100, 1000, "marginal", 64, 100, 1)
    assert big > s(10, 10, 100, 1000, "marginal", 8, 100, 1)
    assert s(10, 10, 5, 5, "marginal", 4, 10 ** 6, 1) > s(10, 10, 5, 5, "marginal", 4, 10 ** 6, 100)
    # ordinary problems are far below a laptop's memory
    assert e(200, 100, 50, "exact") < 2 ** 28 and s(200, 100, 50, 500, "full", 4, 4000, 1) < 2 ** 30


def test_nonlinear_saddle_counts_its_sample_sets(monkeypatch):
    """The non-linear tree/one-loop hold large sample sets (MCMC draws and two importance
    sets): the guard counts them, so such a solve is refused before it allocates."""
    t = resources.estimate_tilted
    # grows linearly in P + P* (at fixed m = min(P, d))
    assert t(2000, 40, 10) / t(1000, 40, 10) == pytest.approx(2, rel=0.1)
    # measured peak RSS of the erf one loop at d = 10, P = 16, P* = 40: 0.65 GB (interpreter,
    # numpy and numba included); the estimate of the sample sets alone must not be far below
    assert 0.4 * 2 ** 30 < t(16, 40, 10) < 1.0 * 2 ** 30
    pb = msa.Problem(msa.make_data({"task": "hermite", "d": 10, "P": 16, "P_test": 40}),
                     msa.Network.make("erf", N=100))
    _tiny_memory(monkeypatch, "100M")      # enough for the NNGP, not for the tilted sets
    msa.solve(pb, "nngp")
    with pytest.raises(msa.MSAError, match=r"not enough memory: theory 'one-loop' for P = 16"):
        msa.solve(pb, "one-loop")


def test_woodbury_simulation_keeps_no_p_squared_arrays():
    """A linear φ with P > d takes the d×d path (the marginal sampler's step, both
    samplers' observables) and recovers ⟨K⟩ from Σ_W at the end, so it allocates no C·P²
    accumulator, and the memory guard does not charge one; a non-linear φ does."""
    import msa_engine as msa
    from msa_engine.sampling.run import _Run

    data = msa.make_data({"task": "linear", "d": 5, "P": 400, "P_test": 10, "seed": 0})
    prob = msa.Problem(data, msa.Network.make("linear", N=20, g_w=1.0, g_a=1.0, kappa=0.5,
                                              chi=1.0))
    for sampler in ("marginal", "full"):
        run = _Run(prob, sampler, 4, 10, 10, 1, "mala", None, 0, 10)
        assert run.sampler.uses_woodbury and run.Kacc.size == 0
        assert resources._woodbury(prob, sampler)
    erf = msa.Problem(data, msa.Network.make("erf", N=20, g_w=1.0, g_a=1.0, kappa=0.5,
                                             chi=1.0))
    dense = _Run(erf, "full", 4, 10, 10, 1, "mala", None, 0, 10)
    assert dense.Kacc.shape == (4, 400, 400) and not resources._woodbury(erf, "full")
    s = resources.estimate_simulation
    assert s(400, 10, 5, 20, "marginal", 4, 10, 1, True) < 0.3 * s(400, 10, 5, 20, "marginal", 4, 10, 1)
    # the linear full step keeps no P×N buffers either (N = 2000: they would dominate)
    assert (s(400, 10, 5, 2000, "full", 4, 10, 1, True, True)
            < 0.3 * s(400, 10, 5, 2000, "full", 4, 10, 1))
    # the result still carries the mean kernel, from Σ_W
    from msa_engine.sampling import simulate

    for sampler in ("marginal", "full"):
        res = simulate(prob, sampler=sampler, chains=2, steps=40, burn_in=20, seed=1)
        assert res.mean_kernel.shape == (400, 400) and np.all(np.isfinite(res.mean_kernel))
