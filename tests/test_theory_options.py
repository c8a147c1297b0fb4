"""The ``[theory]`` and ``[sweep]`` tables of a config (README, "Config").

``[theory]`` carries the seed and the Monte Carlo knobs of the non-linear tree level and
one loop (theory/options.py).  They must reach every path that computes a theory — the
Python API, ``msa solve``, ``msa sweep`` (and its resume), the session entries, ``msa
replay --rerun`` and the TUI — or a user's setting is silently dropped.  The checks use
results that differ when an option is lost: the reported importance-sampling set size,
and a rerun that must reproduce an entry to 1e-12.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.analysis import rerun
from msa_engine.cli import main
from msa_engine.config import config_from_dict, load_config
from msa_engine.sessions import load_session
from msa_tui import model

# small enough for a 0.2 s non-linear solve: 64 chains, a 4096-sample IS set
THEORY = {"seed": 3, "chains": 64, "is_samples": 4096, "final_draws": 48}
CONFIG = """
[data]
task = "hermite"
d = 6
P = 8
P_test = 10
seed = 0

[network]
activation = "erf"
N = 100
kappa = 0.1
chi = 1.0

[theory]
seed = 3
chains = 64
is_samples = 4096
final_draws = 48
"""


def run_cli(args, capsys):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def cfg_path(tmp_path):
    p = tmp_path / "erf.toml"
    p.write_text(CONFIG)
    return p


def test_theory_table_reaches_solve_from_the_cli_as_from_the_api(cfg_path, capsys):
    cfg = load_config(cfg_path)
    options = {k: v for k, v in THEORY.items() if k != "seed"}
    assert cfg.theory_seed == 3 and cfg.theory_options == options
    rc, out, err = run_cli(["solve", cfg_path, "--theory", "tree", "--json"], capsys)
    assert rc == 0, err
    obj = json.loads(out)
    assert obj["seed"] == 3                                   # the table's seed
    assert obj["diagnostics"]["is_samples"] == 4096           # the table's IS set size
    api = msa.solve(cfg.problem, "tree", seed=3, options=options)
    assert np.array_equal(obj["test_mean"], api.test_mean)    # the same computation
    # --seed overrides the table's seed; the options stay
    rc, out, err = run_cli(["solve", cfg_path, "--theory", "tree", "--seed", "4", "--json"],
                           capsys)
    obj4 = json.loads(out)
    assert obj4["seed"] == 4 and obj4["diagnostics"]["is_samples"] == 4096
    assert not np.array_equal(obj4["test_mean"], api.test_mean)
    # the human-readable output says what the Monte Carlo ran with
    rc, out, err = run_cli(["solve", cfg_path, "--theory", "nngp"], capsys)
    assert rc == 0 and "theory: seed=3 chains=64 is_samples=4096 final_draws=48" in out


def sweep(cfg_path, out, capsys, theories: str):
    """``msa sweep`` over χ = 1, 2 in this process; the saved session."""
    rc, _, err = run_cli(["sweep", cfg_path, "--chi", "1,2", "--theories", theories,
                          "--workers", "1", "--out", out, "--json"], capsys)
    assert rc == 0, err
    return load_session(out)


def test_sweep_records_the_options_and_a_rerun_needs_them(cfg_path, tmp_path, capsys):
    session = sweep(cfg_path, tmp_path / "s.json", capsys, "tree,nngp")
    options = {k: v for k, v in THEORY.items() if k != "seed"}
    assert session.sweep["theory_options"] == options
    trees = session.find("theory", "tree")
    assert len(trees) == 2 and all(e["options"] == options for e in trees)
    assert all(e["summary"]["diagnostics"]["is_samples"] == 4096 for e in trees)
    assert rerun(session)["reproduced"]
    rc, out, err = run_cli(["replay", session.path], capsys)
    assert rc == 0 and "theory options: chains=64, is_samples=4096, final_draws=48" in out
    # without the recorded options the rerun computes something else: the check can fail
    stripped = copy.deepcopy(session)
    for e in stripped.find("theory", "tree"):
        e.pop("options")
    report = rerun(stripped)
    assert not report["reproduced"]
    assert {r["name"] for r in report["entries"] if not r["reproduced"]} == {"tree"}


def test_sweep_resume_keeps_the_options(cfg_path, tmp_path, capsys):
    from msa_engine.sessions import save_session
    out = tmp_path / "s.json"
    session = sweep(cfg_path, out, capsys, "tree")
    done = session.find("theory", "tree", 2.0)[0]
    session.doc["entries"] = [e for e in session.entries if e is not done]
    session.doc["sweep"]["completed"] = False
    save_session(session, out)
    rc, _, err = run_cli(["sweep", "--resume", out, "--workers", "1", "--json"], capsys)
    assert rc == 0, err
    again = load_session(out).find("theory", "tree", 2.0)[0]
    assert again["options"] == done["options"]
    assert np.array_equal(again["summary"]["test_mean"], done["summary"]["test_mean"])


def test_linear_networks_warn_that_monte_carlo_options_change_nothing(tmp_path, capsys):
    p = tmp_path / "lin.toml"
    p.write_text('[data]\ntask = "linear"\nd = 5\nP = 8\nP_test = 6\n\n[network]\nchi = 8.0\n'
                 '\n[theory]\nchains = 64\nanneal_factor = 8.0\n')
    rc, out, err = run_cli(["solve", p, "--theory", "tree", "--json"], capsys)
    assert rc == 0
    assert err.count("\n") == 1 and err.startswith("msa: warning: theory.chains")
    rc, _, err = run_cli(["sweep", p, "--chi", "1", "--theories", "nngp", "--workers", "1",
                          "--out", tmp_path / "s.json", "--json"], capsys)
    assert rc == 0 and err.count("msa: warning: theory.chains") == 1     # once, not twice
    # anneal_factor is not a Monte Carlo knob: the linear χ grid 1 → 8 is one step, not three
    cfg = load_config(p)
    coarse = msa.solve(cfg.problem, "tree", options=cfg.theory_options)
    fine = msa.solve(cfg.problem, "tree")
    assert np.array_equal(json.loads(out)["test_mean"], coarse.test_mean)
    chis = lambda res: sorted({round(r.chi, 9) for r in res.log})  # noqa: E731
    assert chis(coarse) == [1.0, 8.0] and chis(fine) == [1.0, 2.0, 4.0, 8.0]
    np.testing.assert_allclose(coarse.test_mean, fine.test_mean, rtol=1e-8)


def test_sweep_table_gives_the_flags_defaults(tmp_path, capsys):
    p = tmp_path / "lin.toml"
    p.write_text('[data]\ntask = "linear"\nd = 5\nP = 8\nP_test = 6\n\n[network]\nN = 20\n\n'
                 '[sweep]\nchi = "1,N"\ntheories = ["nngp", "exact"]\nseed = 5\n')
    out = tmp_path / "s.json"
    rc, _, err = run_cli(["sweep", p, "--workers", "1", "--out", out, "--json"], capsys)
    assert rc == 0, err
    spec = load_session(out).sweep
    assert spec["chis"] == [1.0, "N"] and spec["theories"] == ["nngp", "exact"]
    assert spec["seed"] == 5 and not spec["simulate"]
    rc, _, err = run_cli(["sweep", p, "--chi", "2", "--theories", "nngp", "--seed", "1",
                          "--workers", "1", "--out", tmp_path / "t.json", "--json"], capsys)
    spec = load_session(tmp_path / "t.json").sweep
    assert spec["chis"] == [2.0] and spec["theories"] == ["nngp"] and spec["seed"] == 1


@pytest.mark.parametrize("table,msg", [
    ('[sweep]\nchis = "1"\n', "sweep: unknown key(s) chis"),
    ("[sweep]\nsimulate = 1\n", "sweep.simulate must be true or false (got 1)"),
    ("[sweep]\nwidth = [0]\n", "sweep.width values must be integers >= 1"),
    ("[sweep]\nseed = -2\n", "sweep.seed must be an integer >= 0 (got -2)"),
])
def test_bad_sweep_tables_are_one_line_errors(tmp_path, capsys, table, msg):
    p = tmp_path / "lin.toml"
    p.write_text('[data]\ntask = "linear"\nd = 5\nP = 8\nP_test = 6\n\n' + table)
    rc, out, err = run_cli(["sweep", p, "--out", tmp_path / "s.json"], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("msa: error: ") and msg in err
    assert not (tmp_path / "s.json").exists()


def test_the_python_api_refuses_unknown_options():
    problem = config_from_dict({"network": {"activation": "erf"}}).problem
    with pytest.raises(msa.MSAError, match="unknown option"):
        msa.solve(problem, "tree", options={"chainz": 64})
    from msa_engine.theory import nonlinear
    with pytest.raises(msa.MSAError, match="unknown option"):
        nonlinear.tree(problem, chainz=64)
    from msa_engine.theory.options import check_options
    for bad in ({"precision": float("inf")}, {"is_inflate": float("nan")},
                {"chains": 64.5}, {"is_qmc": 1}):
        with pytest.raises(msa.MSAError):
            check_options(bad)


def test_tui_form_reads_writes_and_validates_the_theory_table():
    config = {**load_config(None).resolved, "theory": {"seed": 2, "chains": 512,
                                                       "is_qmc": False}}
    form = model.FormState.from_config(config)
    assert form.theory_options == "seed=2 chains=512 is_qmc=false"
    v = model.validate(form)
    assert v.ok and v.theory_seed == 2 and v.theory_options == {"chains": 512, "is_qmc": False}
    assert v.config(form)["theory"] == config["theory"]      # saved with the session
    assert any("theory.chains" in w for w in v.warnings)      # the default config is linear
    for text, msg in [("chains=65", "multiple of groups"), ("chains", "key=value"),
                      ("chainz=64", "unknown key")]:
        form.theory_options = text
        assert msg in model.validate(form).errors[("theory", "options")]
    form.theory_options = ""
    assert "theory" not in model.validate(form).config(form)


def test_rerun_follows_a_chain_continued_with_other_options(cfg_path, tmp_path, capsys):
    """Two sweeps into one session with different [theory] tables: the second continues
    the tree chain from the first's last saddle; a rerun recomputes each run of points
    with its own options, warm-started as it was (before: all with the first's)."""
    from msa_engine.sessions import Session
    from msa_engine.sweep import run_sweep
    cfg = load_config(cfg_path)
    session = Session.new(cfg.resolved, data=cfg.problem.data)
    a, b = cfg.theory_options, {**cfg.theory_options, "chains": 128, "is_samples": 8192}
    run_sweep(session, [1.0, 2.0], theories=["tree"], autosave=False, theory_options=a)
    run_sweep(session, [1.0, 2.0, 4.0], theories=["tree"], autosave=False, theory_options=b)
    opts = [e["options"]["chains"] for e in sorted(session.find("theory", "tree"),
                                                    key=lambda e: e["chi"])]
    assert opts == [64, 64, 128]
    report = rerun(session)
    assert report["reproduced"], report


def test_the_readme_documents_every_theory_key():
    """The README's [theory] table names every option (a new knob must be documented)."""
    import re
    from pathlib import Path
    from msa_engine.theory.options import DEFAULTS
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = text.split("| `[theory]` key")[1].split("\n\n")[0]
    keys = {k for line in table.splitlines()[2:]
            for k in re.findall(r"`([a-z_0-9]+)`", line.split("|")[1])}
    assert keys == set(DEFAULTS) | {"seed"}
