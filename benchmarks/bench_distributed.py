"""Speed-up of a 16-point simulation sweep with 2 workers against 1 (local process
pool and Dask LocalCluster), on the same problem and seeds.

Not a test: ``python -m benchmarks.bench_distributed [--steps 3000]``.  On a machine
with 2 cores the ideal speed-up is 2; worker start-up (spawned interpreters
importing numba and loading its cache) is included, as a user would see it.
"""

from __future__ import annotations

import argparse
import json
import time

from msa_engine.config import config_from_dict
from msa_engine.executors import DaskExecutor, LocalPoolExecutor, SerialExecutor
from msa_engine.sessions import Session
from msa_engine.sweep import run_sweep

CONFIG = {"data": {"task": "ising", "d": 30, "P": 20, "P_test": 40, "seed": 1},
          "network": {"activation": "linear", "N": 100, "g_w": 1.5, "g_a": 0.8,
                      "kappa": 0.1, "chi": 1.0}}
CHIS = [1, 1.5, 2, 3, 4, 6, 8, 11, 16, 22, 30, 40, 55, 70, 85, 100]   # 16 points


def timed(executor, steps: int) -> float:
    s = Session.new(config_from_dict(CONFIG).resolved)
    t0 = time.perf_counter()
    run_sweep(s, CHIS, theories=[], simulate=True, autosave=False, executor=executor,
              sim_options={"sampler": "marginal", "chains": 4, "steps": steps, "burn_in": 500})
    dt = time.perf_counter() - t0
    assert len(s.find("simulation")) == len(CHIS)
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    timed(SerialExecutor(), 50)                        # warm the numba cache
    rec = {"points": len(CHIS), "steps": args.steps}
    rec["serial_s"] = timed(SerialExecutor(), args.steps)
    rec["pool1_s"] = timed(LocalPoolExecutor(1), args.steps)
    rec["pool2_s"] = timed(LocalPoolExecutor(2), args.steps)
    dask = DaskExecutor("local:2")
    try:
        rec["dask2_s"] = timed(dask, args.steps)
    finally:
        dask.close()
    rec["speedup_pool2_vs_pool1"] = rec["pool1_s"] / rec["pool2_s"]
    rec["speedup_pool2_vs_serial"] = rec["serial_s"] / rec["pool2_s"]
    rec["speedup_dask2_vs_serial"] = rec["serial_s"] / rec["dask2_s"]
    if args.json:
        print(json.dumps(rec))
    else:
        for k, v in rec.items():
            print(f"{k:26s} {v:8.3f}" if isinstance(v, float) else f"{k:26s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
