"""``msa bench``: the JSON schema, the Markdown table and bad options (issue 7).

Tiny configurations only (seconds); nothing here asserts a speed, which is measured by
running ``msa bench`` itself.  The theory records carry the largest difference between
our solvers and the independent NumPy references, which must agree.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.harness import REQUIRED_KEYS, fit_exponent, record
from msa_engine.cli import main

TINY = ["bench", "--only", "theory", "--sizes", "30", "--repeats", "1", "--dgemm-n", "128"]


def test_bench_json_schema_and_references_agree(capsys):
    assert main(TINY + ["--json"]) == 0
    out, err = capsys.readouterr()
    rep = json.loads(out)                          # exactly one JSON object
    assert isinstance(rep["dgemm_gflops"], float) and rep["dgemm_gflops"] > 0
    assert rep["dgemm"]["n"] == 128 and rep["dgemm"]["threads"] >= 1
    assert rep["machine"]["cores"] >= 1
    # what the kernels were compiled for, and the generator's form that it chose
    from msa_engine.sampling.rng_numba import LOOKUP_APART
    assert rep["machine"]["numba_target"]
    assert rep["machine"]["ziggurat_lookup"] == ("apart" if LOOKUP_APART else "in the SIMD loop")
    names = [r["name"] for r in rep["records"]]
    assert names == ["theory/exact", "theory/one-loop", "theory/rescaling"]
    for r in rep["records"]:
        assert set(REQUIRED_KEYS) <= set(r)
        assert r["size"] == "P=30" and r["P"] == 30
        assert r["ours_s"] > 0 and r["numpy_s"] > 0
        assert r["torch_s"] is None and r["speedup_vs_torch"] is None and r["gflops"] is None
        assert r["speedup_vs_numpy"] == pytest.approx(r["numpy_s"] / r["ours_s"])
        # our solver against the plain NumPy/SciPy reference of the same computation
        assert r["max_abs_diff_vs_numpy"] < 1e-8, r
    assert set(rep["exponents"]) == {"theory/exact", "theory/one-loop", "theory/rescaling"}


def test_bench_markdown_table(capsys):
    assert main(TINY + ["--only", "dgemm,theory", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Machine: ")
    assert "| benchmark | size | ours |" in out
    assert "| dgemm/numpy-matmul | n=128 |" in out
    assert "| theory/one-loop | P=30 |" in out


@pytest.mark.parametrize("args,message", [
    (["--only", "frobnicate"], "--only must name sections among dgemm, samplers"),
    (["--only", ""], "--only is empty"),
    (["--sizes", "5"], "--sizes values must be integers >= 10 (got '5')"),
    (["--sizes", "100,x"], "--sizes values must be integers >= 10 (got 'x')"),
    (["--repeats", "0"], "--repeats must be an integer >= 1 (got 0)"),
    (["--json", "--markdown"], "--json and --markdown are exclusive"),
    (["--repeats", "two"], "argument --repeats: invalid int value: 'two'"),
])
def test_bench_bad_options_are_one_line_errors(args, message, capsys):
    assert main(["bench"] + args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("msa: error: ") and message in err and err.count("\n") == 1


def test_bench_from_json_renders_a_saved_report(tmp_path, capsys):
    assert main(TINY + ["--only", "dgemm", "--json"]) == 0
    saved = tmp_path / "bench.json"
    saved.write_text(capsys.readouterr().out)
    assert main(["bench", "--from-json", str(saved), "--markdown"]) == 0
    assert "| dgemm/numpy-matmul | n=128 |" in capsys.readouterr().out
    assert main(["bench", "--from-json", str(saved)]) == 0
    assert "dgemm/numpy-matmul" in capsys.readouterr().out
    for text, message in [("{", "is not JSON"), ("[1]", "is not an 'msa bench --json' report"),
                          ('{"dgemm_gflops": 1.0, "machine": {}, "records": [{"size": 1}]}',
                           "is not an 'msa bench --json' report")]:
        saved.write_text(text)
        assert main(["bench", "--from-json", str(saved)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["bench", "--from-json", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    # well-formed but incomplete (a machine without its fields): one line, no traceback
    saved.write_text('{"dgemm_gflops": 1.0, "machine": {}, "records": []}')
    for extra in ([], ["--markdown"]):
        assert main(["bench", "--from-json", str(saved), *extra]) == 2
        err = capsys.readouterr().err
        assert "is not a complete 'msa bench --json' report" in err and err.count("\n") == 1


def test_bench_in_a_real_process_prints_only_json():
    r = subprocess.run([sys.executable, "-m", "msa_engine"] + TINY + ["--only", "dgemm", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [x["name"] for x in rep["records"]] == ["dgemm/numpy-matmul"]
    assert rep["records"][0]["gflops"] == pytest.approx(rep["dgemm_gflops"])


def test_harness_exponent_and_speedups():
    xs = [10, 20, 40, 80]
    assert fit_exponent(xs, [3e-6 * x ** 3 for x in xs]) == pytest.approx(3.0)
    assert fit_exponent(xs, [0.5] * 4) == pytest.approx(0.0, abs=1e-12)
    assert fit_exponent([10], [1.0]) is None and fit_exponent([10, 10], [1.0, 2.0]) is None
    r = record("x", "small", 0.5, numpy_s=2.0, torch_s=None, gflops=1.0, extra=1)
    assert r["speedup_vs_numpy"] == 4.0 and r["speedup_vs_torch"] is None and r["extra"] == 1
    assert record("x", "s", 0.0, numpy_s=1.0)["speedup_vs_numpy"] is None
    assert record("x", "s", 1.0, numpy_s=math.inf)["speedup_vs_numpy"] is None


def test_stage_times_splits_a_log_by_stage_and_chi():
    """bench_nonlinear's breakdown of a non-linear solve's time (issue 6's cost criterion)."""
    from benchmarks.bench_nonlinear import stage_times
    from msa_engine.results import IterationRecord
    log = [IterationRecord("tree", 1.0, 1, 0.5, time=10.0),
           IterationRecord("tree", 1.0, 2, 0.2, time=12.0),
           IterationRecord("tree", 2.0, 3, 0.4, time=15.0),
           IterationRecord("tree", 1.0, 4, 0.1, time=16.0)]     # back: a retried stage
    parts = stage_times(log, start=9.0, end=20.0)
    assert parts == [("tree", 1.0, 2, 3.0), ("tree", 2.0, 1, 3.0), ("tree", 1.0, 1, 1.0),
                     ("final", 1.0, 0, 4.0)]
    assert sum(p[3] for p in parts) == 20.0 - 9.0
    assert stage_times([], 0.0, 1.0) == []


def _tilted_problem(chi):
    import msa_engine as msa
    data = msa.make_data({"task": "hermite", "d": 4, "P": 6, "P_test": 3, "seed": 2})
    return msa.Problem(data, msa.Network.make("erf", N=10, g_w=1.5, g_a=0.8, kappa=1.0,
                                              chi=chi))


def test_mixing_samplers_are_exact_on_the_prior():
    """bench_tilted.mixing at t̄ = 0: the measure is N(0, I), so the fitted Gaussian is
    (almost) the measure and the elliptical slice sampler draws independent states."""
    from benchmarks.bench_tilted import mixing
    mx = mixing(_tilted_problem(10.0), np.zeros(6), chains=128, warm=500, steps=200,
                ess_iters=120)
    assert mx["independence_acceptance"] > 0.9
    assert mx["ess_evals"] < 1.5 and mx["tau_ess"] < 2.0
    assert mx["s2_mean"] == 0.0 and mx["ess_s2_mean"] == 0.0


def test_mixing_samplers_agree_on_a_tilted_measure():
    """The elliptical slice sampler and MALA sample the same strongly tilted measure
    (c = 0.8): their means of s² agree within their Monte Carlo errors (fixed seed)."""
    from benchmarks.bench_tilted import mixing
    tbar = np.array([1.2, -0.8, 0.5, 1.0, -1.1, 0.7])
    mx = mixing(_tilted_problem(10.0), tbar, chains=256, warm=1000, steps=600,
                ess_iters=300, seed=4)
    assert mx["c"] == pytest.approx(0.8)
    z = (mx["ess_s2_mean"] - mx["s2_mean"]) / math.hypot(mx["s2_se"], mx["ess_s2_se"])
    assert abs(z) < 4, (mx, z)
    assert mx["s2_mean"] > 2.0      # the tilt moved the measure: E_prior s² is smaller
    assert 0.0 <= mx["independence_acceptance"] <= 1.0


def test_woodbury_floor_is_its_blas_products_plus_its_normals_and_is_printed():
    from benchmarks.bench_samplers import matmul_flops, woodbury_floor
    from msa_engine.commands.bench import _extras_lines
    from msa_engine.threads import usable_cores

    d, N = 12, 40
    flops = matmul_flops("marginal", "linear", d, 50, N)
    f = woodbury_floor(d, N, flops, noise_ours_s=2e-6, repeats=1, target=0.005)
    assert f["floor_gram_s"] > 0 and f["floor_product_s"] > 0
    assert f["floor_s"] == pytest.approx(f["floor_gram_s"] + f["floor_product_s"]
                                         + 2e-6 / usable_cores())
    assert f["floor_gflops"] == pytest.approx(flops / f["floor_s"] / 1e9)
    rec = {"name": "langevin/marginal/linear", "size": "large", "ours_s": 2 * f["floor_s"],
           "floor_frac_of_dgemm": 0.5, **f}
    line = [x for x in _extras_lines({"records": [rec]}) if x.startswith("least time")]
    assert len(line) == 1 and "= 50% of DGEMM" in line[0] and "ours takes 2.00× that" in line[0]


def test_startup_times_run_to_the_marker_not_to_the_exit():
    """The TUI's start is timed to the line that says its screen is idle, not to the
    process's exit (its shutdown is not part of a start); a failed run is an error."""
    import os

    from benchmarks.bench_startup import _time

    env = dict(os.environ)
    script = "import time; print('READY', flush=True); time.sleep(3)"
    to_marker = _time([sys.executable, "-c", script], env, "READY")
    to_exit = _time([sys.executable, "-c", script], env)
    assert to_exit - to_marker > 2.0
    with pytest.raises(RuntimeError, match="failed: boom"):
        _time([sys.executable, "-c", "import sys; print('READY'); sys.exit('boom')"],
              env, "READY")
    with pytest.raises(RuntimeError, match="failed"):
        _time([sys.executable, "-c", "print('not it')"], env, "READY")


def test_the_targets_are_judged_on_the_report_with_the_measured_limits(tmp_path, capsys):
    """Each target of issue 7 read off one report, with the limit the run measured
    beside it where there is one; `--from-json` and `--markdown` print them."""
    from msa_engine.commands.bench import target_verdicts

    def rec(name, size, ours, **kw):
        return {"name": name, "size": size, "ours_s": ours, **kw}

    report = {"dgemm_gflops": 100.0, "machine": {"cores": 2}, "records": [
        rec("langevin/full/linear", "small", 8e-6, numpy_s=100e-6, torch_s=None,
            speedup_vs_numpy=12.5, speedup_vs_torch=None, noise_ours_s=10e-6, gflops=1.0),
        rec("langevin/marginal/linear", "small", 20e-6, numpy_s=100e-6, torch_s=300e-6,
            speedup_vs_numpy=5.0, speedup_vs_torch=15.0, noise_ours_s=10e-6, gflops=20.0),
        rec("langevin/full/linear", "large", 4e-3, gflops=1.0, noise_ours_s=4e-3,
            matmul_flops_per_chain_step=4e6),
        rec("langevin/marginal/linear", "large", 15e-3, gflops=30.0, floor_s=10e-3,
            floor_frac_of_dgemm=0.45, floor_gram_s=4e-3, floor_product_s=5e-3,
            floor_gflops=45.0),
        rec("theory/exact", "P=2000", 0.5), rec("theory/one-loop", "P=2000", 2.5),
        rec("startup/solve_warm", "default", 0.2), rec("startup/tui_interactive", "default", 1.6),
    ]}
    got = {t["target"]: t for t in target_verdicts(report)}
    assert [(k, t["measured"], t["met"]) for k, t in got.items()] == [
        ("small full linear ≥ 10× NumPy", "12.5×", True),
        ("small full linear ≥ 20× PyTorch", "not run (PyTorch not installed)", None),
        ("small marginal linear ≥ 10× NumPy", "5.0×", False),
        ("small marginal linear ≥ 20× PyTorch", "15.0×", False),
        ("large full linear ≥ 60% of DGEMM", "1%", False),
        ("large marginal linear ≥ 60% of DGEMM", "30%", False),
        ("exact at P = 2000 < 2 s", "500.0ms", True),
        ("one-loop at P = 2000 < 2 s", "2.50s", False),
        ("warm msa solve < 2 s", "200.0ms", True),
        ("TUI interactive < 1.5 s", "1.60s", False)]
    assert got["small marginal linear ≥ 10× NumPy"]["note"] == \
        "our normals alone, on all 2 cores, would be 20× NumPy"
    assert got["large full linear ≥ 60% of DGEMM"]["note"] == \
        "its normals alone, on all 2 cores, bound it at 2.0% of DGEMM: not reachable"
    assert got["large marginal linear ≥ 60% of DGEMM"]["note"] == \
        "least time on this BLAS 45% of DGEMM, ours 1.50× it; 60% lies beyond it: not reachable here"
    # the report's JSON carries them, and a saved report prints them
    report["machine"].update(cpu="x", memory_gib=1.0, python="3", numpy="2")
    for r in report["records"]:
        r.setdefault("numpy_s", None)
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(report))
    assert main(["bench", "--from-json", str(saved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["targets"] == list(got.values())
    assert main(["bench", "--from-json", str(saved), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| one-loop at P = 2000 < 2 s | 2.50s | not met |  |" in out
    assert main(["bench", "--from-json", str(saved)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "targets of issue 7 in this run" in out and "met exact at P = 2000 < 2 s" in out
