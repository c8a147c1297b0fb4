"""Hand-edited session files (the CLI review of 2026-11-30, left over at stop 30): every
field a command reads is checked when the file is loaded and a wrong one is named by its
path, in one line, instead of an "unexpected TypeError" from whichever command met it
first (msa_engine/session_schema.py).  Plus the input edges fixed with it: empty
arguments, integer-valued floats, npz split keys, csv messages, the [simulation] table
of a sweep that does not simulate, and plot axes at the ends of the double range."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

import msa_engine as msa
from msa_engine.cli import main
from msa_engine.plots import _Axis
from msa_engine.sessions import load_session

from .test_reliability import NETWORK_ONLY, _cfg, assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "sessions" / "pair-standard.json"       # theories and a simulation
DOC = json.loads(BUNDLED.read_text())
N_TRAIN = len(DOC["entries"][0]["summary"]["train_mean"])
N_TEST = len(DOC["entries"][0]["summary"]["test_mean"])
SIM = next(i for i, e in enumerate(DOC["entries"]) if e["kind"] == "simulation")
DELETE = object()


def _edited(tmp_path, path, value):
    doc = copy.deepcopy(DOC)
    node = doc
    for k in path[:-1]:
        node = node[k]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    p = tmp_path / "edited.json"
    p.write_text(json.dumps(doc))
    return p


# (path in the document, value, the message's field and expectation); each of these
# ended in "unexpected …" in replay, compare or export before the check (the review's
# list and a fuzz of every field of this session with nine kinds of wrong value or a
# deletion)
CASES = [
    (("config", "data"), DELETE, "config.data is missing"),
    (("config", "network", "N"), DELETE, "config.network.N is missing"),
    (("config", "network", "N"), "x", "config.network: N must be an integer >= 1 (got 'x')"),
    (("config", "network", "chi"), None, "config.network.chi: expected a positive number, got null"),
    (("config", "network", "activation"), DELETE, "config.network.activation is missing"),
    (("config", "data", "task"), 5, "config.data.task: expected a string, got 5"),
    (("sweep",), [1, "a"], "sweep: expected a table, got a list of 2"),
    (("sweep",), True, "sweep: expected a table, got true"),
    (("name",), 5, "name: expected a string, got 5"),
    (("entries", 0, "log"), 5, "entries[0].log: expected a list of records, got 5"),
    (("entries", 0, "log", 0), "x", "entries[0].log[0]: expected a table, got a string"),
    (("entries", 0, "summary"), {}, "entries[0].summary.train_mean is missing"),
    (("entries", 0, "summary", "test_mean"), "x",
     f"entries[0].summary.test_mean: expected a list of {N_TEST} numbers, got a string"),
    (("entries", 0, "summary", "test_mean"), [1.0, 2.0],
     f"entries[0].summary.test_mean: expected a list of {N_TEST} numbers, got a list of 2"),
    (("entries", 0, "summary", "train_mean_se"), DELETE,
     "entries[0].summary.train_mean_se is missing"),
    (("entries", 0, "summary", "train_mean"), ["a"] * N_TRAIN,
     "entries[0].summary.train_mean[0]: expected a number, got a string"),
    (("entries", 0, "summary", "residual"), "x",
     "entries[0].summary.residual: expected a number or null, got a string"),
    (("entries", SIM, "summary", "rhat_max"), {},
     f"entries[{SIM}].summary.rhat_max: expected a number or null, got a table"),
    (("entries", 0, "summary", "converged"), "yes",
     "entries[0].summary.converged: expected true or false, got a string"),
    (("entries", 0, "chi"), -1, "entries[0].chi: expected a positive number, got -1"),
    (("entries", 0, "N"), 2.5, "entries[0].N: expected an integer >= 1, got 2.5"),
    (("entries", 0, "kind"), "guess", "entries[0].kind: expected 'theory' or 'simulation'"),
    (("entries", 0, "status"), "maybe", "entries[0].status: expected 'ok' or 'failed'"),
    (("entries",), {}, "entries: expected a list, got a table"),
]


@pytest.mark.parametrize("path,value,message", CASES,
                         ids=[".".join(map(str, c[0])) + "=" + repr(c[1])[:12] for c in CASES])
def test_a_hand_edited_field_is_named_in_one_line_by_every_command(tmp_path, capsys, path,
                                                                   value, message):
    p = _edited(tmp_path, path, DELETE if value is DELETE else value)
    with pytest.raises(msa.MSAError, match="malformed session: ") as info:
        load_session(p)
    assert message in str(info.value)
    for cmd in (["replay", p], ["replay", "--json", p], ["compare", p, BUNDLED],
                ["export", "--format", "csv", "--out", tmp_path, p]):
        assert_one_line_error(*run_cli(cmd, capsys), message)


def test_what_a_session_may_hold_still_loads(tmp_path):
    """Nulls where the code writes them (no log-evidence, a non-finite value), unknown
    keys of a newer version, a failed entry without a summary, numbers at the ends of
    the double range."""
    doc = copy.deepcopy(DOC)
    s = doc["entries"][0]["summary"]
    s["log_evidence"] = None
    s["train_mean"][0] = None
    s["from_a_newer_version"] = {"anything": [1, "x"]}
    doc["entries"][0]["chi"] = 1e308               # the χ plot's axis stays finite
    doc["entries"].append({"kind": "theory", "name": "one-loop", "chi": 3.0, "N": 100,
                           "status": "failed", "error": "did not converge", "summary": None,
                           "log": []})
    doc["a_newer_field"] = 1
    p = tmp_path / "ok.json"
    p.write_text(json.dumps(doc))
    assert len(load_session(p).entries) == len(DOC["entries"]) + 1
    assert main(["replay", str(p)]) == 0


@pytest.mark.parametrize("values", [[1e308, 1.0], [-1e308, 1e308], [5e-324, 1e-300]])
@pytest.mark.parametrize("log", [True, False])
def test_plot_axes_stay_finite_at_the_ends_of_the_double_range(values, log):
    axis = _Axis(values, log)
    assert np.isfinite([axis.lo, axis.hi]).all() and axis.lo < axis.hi
    assert axis.ticks(5) and all(np.isfinite(axis.ticks(5)))


# --------------------------------------------------------------------------- CLI input
@pytest.mark.parametrize("args,message", [
    (["export", "--out", "", "--format", "csv", str(BUNDLED)], "--out is empty"),
    (["replay", ""], "session is empty"),
    (["compare", str(BUNDLED), "  "], "sessions is empty"),
    (["simulate", "--traces", ""], "--traces is empty"),
    (["sweep", "--resume", ""], "--resume is empty"),
])
def test_an_empty_argument_is_an_error_not_the_default(tmp_path, capsys, monkeypatch, args,
                                                       message):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(*run_cli(args, capsys), message)
    assert list(tmp_path.iterdir()) == []          # nothing written (export wrote into .)


def test_integer_settings_accept_integer_valued_floats_alike(tmp_path):
    """TOML reads ``N = 100.0`` and ``steps = 1e3`` as floats: N was refused while
    ``P = 2e1`` was accepted; now every integer setting takes an integer value."""
    cfg = msa.config.config_from_dict({"data": {"task": "linear", "d": 5.0, "P": 2e1,
                                                "P_test": 4},
                                       "network": {"N": 100.0}})
    assert cfg.problem.network.N == 100 and type(cfg.problem.network.N) is int
    assert cfg.problem.data.X_train.shape == (20, 5)
    with pytest.raises(msa.MSAError, match=r"N must be an integer >= 1 \(got 100\.5\)"):
        msa.config.config_from_dict({"network": {"N": 100.5}})
    with pytest.raises(msa.MSAError, match=r"data\.P must be an integer \(got 1e\+308\)"):
        msa.make_data({"task": "linear", "P": 1e308})
    with pytest.raises(msa.MSAError, match=r"data\.P is too large"):
        msa.make_data({"task": "linear", "P": 10 ** 400})


def test_simulation_table_integers_as_floats(tmp_path, capsys):
    p = _cfg(tmp_path, "[data]\ntask = 'linear'\nd = 4\nP = 6\nP_test = 3\n"
             "[network]\nN = 10.0\n[simulation]\nchains = 2.0\nsteps = 4e1\nburn_in = 1e1\n")
    rc, out, err = run_cli(["simulate", p, "--json"], capsys)
    assert rc == 0, err
    res = json.loads(out)
    assert (res["chains"], res["steps"], res["burn_in"]) == (2, 40, 10)


def test_npz_data_refuse_the_csv_split_keys(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", X_train=np.eye(3), y_train=np.ones(3), X_test=np.eye(3)[:2],
             y_test=np.ones(2))
    for key, value in (("test_fraction", "0.3"), ("seed", "3"), ("target", "'y'")):
        p = _cfg(tmp_path, f"[data]\ntask = 'npz'\npath = 'd.npz'\n{key} = {value}\n"
                 + NETWORK_ONLY)
        assert_one_line_error(*run_cli(["solve", p], capsys),
                              f"data: unknown key(s) for task 'npz': {key} (an .npz archive "
                              "holds its own train/test split)")


@pytest.mark.parametrize("text,message", [
    ("a;b;c\n1;2;3\n4;5;6\n", "need at least one feature column and a target column; the "
                              "rows hold ';': msa reads comma-separated values"),
    ("a\tb\tc\n1\t2\t3\n", "the rows hold '\\t'"),
    ("a,b,c\n1,2,3\n4,5,6\n7,8\n", "data row 3 has 2 columns, the first 3"),
    ("a,b,c\n1,2,3\n4,x5,6\n", "data row 2, column 2: 'x5' is not a number"),
    ("1,2,3\n4,5,6\n7,8,nope\n", "data row 3, column 3: 'nope' is not a number"),
])
def test_csv_messages_say_where(tmp_path, capsys, text, message):
    (tmp_path / "d.csv").write_text(text)
    p = _cfg(tmp_path, "[data]\ntask = 'csv'\npath = 'd.csv'\n" + NETWORK_ONLY)
    assert_one_line_error(*run_cli(["solve", p], capsys), message)


def test_a_sweep_checks_the_simulation_table_without_simulate(tmp_path, capsys):
    p = _cfg(tmp_path, "[data]\ntask = 'linear'\nd = 4\nP = 6\nP_test = 3\n"
             "[network]\nN = 10\n[simulation]\nbogus = 1\n")
    out = tmp_path / "s.json"
    assert_one_line_error(*run_cli(["sweep", p, "--chi", "1", "--out", out], capsys),
                          "simulation: unknown key(s) bogus")
    assert not out.exists()


def test_the_workbench_form_of_npz_data_has_no_split_fields(tmp_path):
    """The Setup panel showed test fraction, seed, target and test file for npz data,
    which changed nothing; a session saved then (its spec holds them) still opens and
    validates."""
    from msa_tui import model

    np.savez(tmp_path / "d.npz", X_train=np.eye(3), y_train=np.ones(3), X_test=np.eye(3)[:2],
             y_test=np.ones(2))
    assert model.data_keys("npz") == ["path"]
    assert "test_fraction" in model.data_keys("csv")
    config = {"data": {"task": "npz", "path": str(tmp_path / "d.npz"), "test_fraction": 0.5,
                       "seed": 0, "standardize": False},
              "network": {"activation": "linear", "N": 10, "g_w": 1.0, "g_a": 1.0,
                          "kappa": 0.1, "chi": 1.0}}
    form = model.FormState.from_config(config)
    assert "test_fraction" not in form.data and "test_fraction" not in form.data_extra
    checked = model.validate(form)
    assert checked.ok, checked.errors
    assert checked.problem.data.X_train.shape == (3, 3)
