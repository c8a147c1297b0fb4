"""msa export: figures through matplotlib and the results table as CSV."""

import csv
import sys
from pathlib import Path


from msa_engine.cli import main
from msa_engine.export import FIGURE_NAMES
from msa_engine.sessions import load_session

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "sessions" / "ising-linear-sweep.json"


def test_export_png_svg_and_csv(tmp_path, capsys):
    assert main(["export", str(SWEEP), "--out", str(tmp_path)]) == 0
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == len(FIGURE_NAMES)
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert main(["export", str(SWEEP), "--format", "svg", "--figure", "fig2-test",
                 "--out", str(tmp_path)]) == 0
    svg = (tmp_path / "ising-linear-sweep-fig2-test.svg").read_text()
    assert "<svg" in svg and "Fig. 2" in svg
    assert main(["export", str(SWEEP), "--format", "csv", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "ising-linear-sweep-results.csv")))
    assert len(rows) == len(load_session(SWEEP).sweep_rows())
    assert {r["name"] for r in rows} >= {"exact", "one-loop", "sim-marginal"}


def test_export_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["export", str(SWEEP), "--format", "gif", "--out", str(tmp_path)]) == 2
    assert "--format must be one of" in capsys.readouterr().err
    assert main(["export", str(SWEEP), "--entry", "nope", "--out", str(tmp_path)]) == 2
    assert "no result named 'nope'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # as if not installed
    assert main(["export", str(SWEEP), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and err.count("\n") == 1
