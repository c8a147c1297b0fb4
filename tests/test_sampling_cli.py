"""The `msa simulate` contract: the keys of `msa solve --json` plus the simulation's extras."""

import json

import numpy as np
import pytest

from msa_engine.cli import main

from .test_cli_solve import KEYS

EXTRAS = {"rhat_max", "ess_min", "steps_per_second", "weight_cov_top_eigenvalue_se",
          "train_discrepancy_corrected", "test_discrepancy_corrected", "acceptance",
          "step_size", "chains", "steps"}

CONFIG = """
[data]
task = "linear"
d = 10
P = 8
P_test = 6
seed = 2

[network]
activation = "linear"
N = 30
g_w = 1.5
g_a = 0.8
kappa = 0.1
chi = 3.0

[simulation]
chains = 3
steps = 300
burn_in = 100
seed = 4
"""


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "sim.toml"
    p.write_text(CONFIG)
    return p


def test_json_keys_and_simulation_table(cfg, capsys):
    assert main(["simulate", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert KEYS | EXTRAS <= set(out)
    assert out["theory"] == "sim-marginal" and out["chains"] == 3 and out["steps"] == 300
    assert out["seed"] == 4 and out["config"]["simulation"]["burn_in"] == 100
    assert all(s > 0 for s in out["train_mean_se"])
    # flags override the table
    assert main(["simulate", str(cfg), "--json", "--sampler", "full", "--chains", "2",
                 "--seed", "5", "--thin", "2"]) == 0
    out2 = json.loads(capsys.readouterr().out)
    assert out2["theory"] == "sim-full" and out2["chains"] == 2 and out2["seed"] == 5


def test_human_output_checkpoint_resume_and_traces(cfg, tmp_path, capsys):
    ck, tr = tmp_path / "ck.npz", tmp_path / "tr.npz"
    assert main(["simulate", str(cfg), "--checkpoint", str(ck), "--traces", str(tr)]) == 0
    text = capsys.readouterr().out
    assert "sim-marginal" in text and "R̂" in text
    assert ck.exists()
    with np.load(tr) as z:
        assert z["train_mean"].shape == (3, 300, 8)
    assert main(["simulate", str(cfg), "--checkpoint", str(ck), "--resume", "--json"]) == 0
    json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("args,msg", [(["--steps", "0"], "steps"),
                                      (["--step-size", "1e6", "--method", "ula",
                                        "--sampler", "full"], "diverged")])
def test_errors_are_one_line(cfg, capsys, args, msg):
    assert main(["simulate", str(cfg), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("msa: error:") and msg in err[0]


def test_bad_simulation_table(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text(CONFIG.replace("chains = 3", "chains = 3\nwalkers = 2"))
    assert main(["simulate", str(p)]) == 2
    assert "walkers" in capsys.readouterr().err
