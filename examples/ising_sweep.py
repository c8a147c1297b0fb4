"""The Ising sweep of examples/ising_sweep.toml through the Python API.

Equivalent to
    msa sweep examples/ising_sweep.toml --chi 1,3,10,30,N --simulate --out OUT
Run:  python examples/ising_sweep.py [OUT.json]
"""

import sys
from pathlib import Path

from msa_engine.config import load_config
from msa_engine.sessions import Session, save_session
from msa_engine.sweep import SweepProgress, run_sweep

HERE = Path(__file__).parent


def main(out: str = "ising-linear-sweep.json") -> None:
    cfg = load_config(HERE / "ising_sweep.toml")
    session = Session.new(cfg.resolved, name="ising-linear-sweep",
                          notes="Linear network on the Ising task, chi = 1 ... N: the paper's "
                                "Fig. 2 analogue (examples/ising_sweep.toml).")

    def progress(rec):
        if isinstance(rec, SweepProgress):
            print(f"[{rec.done}/{rec.total}] {rec.label}", file=sys.stderr)

    run_sweep(session, [1, 3, 10, 30, "N"], simulate=True,
              sim_options=cfg.resolved["simulation"], callback=progress, path=out)
    print(save_session(session, out))


if __name__ == "__main__":
    main(*sys.argv[1:])
