"""Regenerate the shipped example sessions (sessions/ and the package-data copies).

Run from the repository root:  python examples/make_sessions.py
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "sessions"
PKG = ROOT / "msa_engine" / "data" / "sessions"

RUNS = [
    # (session file, config, chi grid, simulate)
    ("ising-linear-sweep.json", "examples/ising_sweep.toml", "1,3,10,30,N", True),
    ("pair-standard.json", "examples/pair_standard.toml", "1", True),
    ("pair-mean-field.json", "examples/pair_mean_field.toml", "N", True),
    ("hermite-erf-sweep.json", "examples/hermite_erf_sweep.toml", "1,10,N", True),
]


def main(argv=None) -> None:
    """Regenerate every shipped session, or only those named on the command line."""
    only = set((sys.argv[1:] if argv is None else argv))
    OUT.mkdir(exist_ok=True)
    PKG.mkdir(parents=True, exist_ok=True)
    for name, cfg, chis, simulate in RUNS:
        if only and name not in only:
            continue
        target = OUT / name
        target.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "msa_engine", "sweep", str(ROOT / cfg), "--chi", chis,
               "--out", str(target), "--name", Path(name).stem, "--seed", "2025"]
        if simulate:
            cmd.append("--simulate")
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        shutil.copyfile(target, PKG / name)


if __name__ == "__main__":
    main()
