"""Cold and warm start: time to the first ``msa solve`` result and to an interactive
TUI screen, each in a fresh interpreter (as a user starting the tool).

Not a test: ``python -m benchmarks.bench_startup [--repeat 5]`` (also a section of
``msa bench``).  "Cold" runs with an empty numba cache directory (``NUMBA_CACHE_DIR``
pointed at a new folder), "warm" repeats with it filled.  The TUI is measured from
process start to its first screen being mounted and idle (headless, 120×40), which
includes opening the bundled default session; until 2026-11-29 the time ran to the
process's exit, i.e. it also counted the app's shutdown after that screen.
``python_s`` (a bare interpreter) is the floor under all of them.  The linear
``msa solve`` of the default config needs no numba at all since issue 7 (the engine
imports numba and scipy on first use), so its cold and warm times agree;
``msa simulate`` compiles the samplers when cold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TUI_SCRIPT = r"""
import asyncio, sys
from msa_tui.app import MSAApp

async def main():
    app = MSAApp(autosave=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        print("READY", flush=True)

asyncio.run(main())
"""


def _time(cmd: list[str], env: dict, marker: str | None = None) -> float:
    """Seconds from starting ``cmd`` to its exit or, with ``marker``, to the line of its
    standard output that holds ``marker`` (the process must still exit cleanly).  The
    TUI prints its marker once its first screen is idle; the app's shutdown after it
    (≈ 0.25 s of unmounting on a slow host) is not part of the start."""
    # stderr to a file: a pipe nobody reads while stdout is followed could fill up
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                              env=env) as proc:
            dt = None
            if marker:
                for line in proc.stdout:
                    if marker in line:
                        dt = time.perf_counter() - t0
                        break
            try:
                proc.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise RuntimeError(f"{cmd} timed out") from None
            if not marker:
                dt = time.perf_counter() - t0
        if proc.returncode != 0 or dt is None:
            err.seek(0)
            raise RuntimeError(f"{cmd} failed: {err.read()[-2000:]}")
    return dt


def measure(repeat: int = 3) -> dict:
    cache = tempfile.mkdtemp(prefix="msa-numba-cache-")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    solve = [sys.executable, "-m", "msa_engine", "solve", "--theory", "one-loop", "--json"]
    simulate = [sys.executable, "-m", "msa_engine", "simulate", "--json", "--steps", "200",
                "--burn-in", "100"]
    from msa_engine.config import bundled_config_path
    simulate.insert(4, bundled_config_path())
    tui = [sys.executable, "-c", TUI_SCRIPT]
    rec = {"python_s": statistics.median(_time([sys.executable, "-c", "pass"], env)
                                         for _ in range(3)),
           "solve_cold_s": _time(solve, env), "simulate_cold_s": _time(simulate, env)}
    rec["solve_warm_s"] = statistics.median(_time(solve, env) for _ in range(repeat))
    rec["simulate_warm_s"] = statistics.median(_time(simulate, env) for _ in range(repeat))
    rec["tui_interactive_s"] = statistics.median(_time(tui, env, "READY") for _ in range(repeat))
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rec = measure(args.repeat)
    if args.json:
        print(json.dumps(rec))
    else:
        for k, v in rec.items():
            print(f"{k:20s} {v:7.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
