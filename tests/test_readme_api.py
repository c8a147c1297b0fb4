"""The README's Python API example runs as written (a user's first headless script):
extracted from the README at test time, so that the text and the engine cannot drift
apart unnoticed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_the_readme_python_api_example_runs_and_agrees_with_the_exact_posterior(tmp_path):
    code = _python_blocks("Python API")[0]
    assert "msa.simulate(" in code
    # the example's last line prints the largest |z| of the simulation against exact
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-1]
    zmax = float(last.split()[-1])
    # 40 test points of one simulation: |z| ≤ 4 fails by chance with p ≈ 0.0025
    assert zmax < 4.0, last
