"""The `msa solve` contract (headless CLI)."""

import json
import subprocess
import sys

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.cli import main

KEYS = {"theory", "version", "seed", "config", "train_mean", "test_mean", "train_mean_se",
        "test_mean_se", "train_discrepancy", "test_discrepancy", "test_variance",
        "log_evidence", "Q", "weight_cov_top_eigenvalue"}

CONFIG = """
[data]
task = "linear"
d = 30
P = 20
P_test = 40
seed = 2

[network]
activation = "linear"
N = 200
g_w = 1.5
g_a = 0.8
kappa = 0.1
chi = 10.0
"""


def run_cli(args, capsys):
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("theory", ["nngp", "rescaling", "tree", "one-loop", "exact"])
def test_solve_json_keys(tmp_path, capsys, theory):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    rc, out, err = run_cli(["solve", str(cfg), "--theory", theory, "--seed", "5", "--json"], capsys)
    assert rc == 0, err
    obj = json.loads(out)
    assert KEYS <= set(obj)
    assert obj["theory"] == theory and obj["seed"] == 5 and obj["version"] == msa.__version__
    assert obj["config"]["network"]["chi"] == 10.0 and obj["config"]["data"]["seed"] == 2
    assert len(obj["test_mean"]) == 40 and obj["test_mean_se"] == [0.0] * 40
    # the CLI and the API agree
    pb = msa.Problem(msa.make_data({"task": "linear", "d": 30, "P": 20, "P_test": 40, "seed": 2}),
                     msa.Network.make("linear", 200, 1.5, 0.8, 0.1, chi=10.0))
    np.testing.assert_array_equal(obj["test_mean"], msa.solve(pb, theory).test_mean)
    if theory == "nngp":
        assert obj["Q"] == 0.8
    if theory in ("tree", "one-loop"):
        assert obj["log_evidence"] is None
    # the theory's scalar diagnostics travel with it (JSON-safe, no arrays)
    assert isinstance(obj["diagnostics"], dict)
    assert all(isinstance(v, (bool, int, float, str)) or v is None
               for v in obj["diagnostics"].values())
    if theory == "tree":
        assert obj["diagnostics"]["tilted_residual"] < 1e-8
    if theory == "exact":
        assert obj["diagnostics"]["nodes"] > 0


def test_diagnostics_keep_scalars_only_and_null_non_finite():
    from dataclasses import replace

    pb = msa.Problem(msa.make_data({"task": "linear", "d": 5, "P": 6, "seed": 0}),
                     msa.Network.make("linear", 50, 1.0, 1.0, 0.1, chi=1.0))
    res = replace(msa.solve(pb, "nngp"),
                  extras={"residual_z2": np.float64(1.3), "estimator": "mcmc", "samples": np.int64(7),
                          "steps_converged": np.bool_(True), "bad": float("nan"),
                          "jackknife": np.zeros(3), "_private": 1.0})
    d = res.to_json_dict()["diagnostics"]
    assert d == {"residual_z2": 1.3, "estimator": "mcmc", "samples": 7, "steps_converged": True,
                 "bad": None}
    json.dumps(d, allow_nan=False)


def test_gamma_and_presets_in_config(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.replace("chi = 10.0", "gamma = 1.5"))
    rc, out, _ = run_cli(["solve", str(cfg), "--theory", "nngp", "--json"], capsys)
    assert rc == 0 and json.loads(out)["config"]["network"]["chi"] == pytest.approx(200 ** 0.5)
    cfg.write_text(CONFIG.replace("chi = 10.0", 'chi = "mean-field"'))
    rc, out, _ = run_cli(["solve", str(cfg), "--theory", "nngp", "--json"], capsys)
    assert json.loads(out)["config"]["network"]["chi"] == 200.0


@pytest.mark.parametrize("edit,msg", [
    (("kappa = 0.1", "kappa = -0.1"), "kappa must be > 0 (got -0.1)"),
    (("N = 200", "N = 0"), "N must be an integer >= 1"),
    (('task = "linear"', 'task = "mnist"'), "data.task must be one of"),
    (('activation = "linear"', 'activation = "tanh"'), "activation must be one of"),
    (("chi = 10.0", "chi = 10.0\ngamma = 1.2"), "either chi or gamma"),
    (("[network]", "[netwrk]"), "unknown table"),
    (("seed = 2", "seed = "), "TOML syntax error"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys, edit, msg):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.replace(*edit))
    rc, out, err = run_cli(["solve", str(cfg), "--json"], capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("msa: error: ") and msg in err


def test_missing_file_and_bad_theory(capsys):
    rc, _, err = run_cli(["solve", "/nonexistent/x.toml"], capsys)
    assert rc == 2 and "no such config file" in err and err.count("\n") == 1
    rc, _, err = run_cli(["solve", "--theory", "magic"], capsys)
    assert rc == 2 and "theory must be one of" in err
    rc, _, err = run_cli(["solve", "--seed", "x"], capsys)
    assert rc == 2 and err.count("\n") == 1


def test_default_solve_table_runs_in_a_subprocess():
    # the README's first command: `msa solve` on the bundled default config
    out = subprocess.run([sys.executable, "-m", "msa_engine", "solve"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for theory in ("nngp", "rescaling", "tree", "one-loop", "exact"):
        assert theory in out.stdout
    assert "Traceback" not in out.stderr
