"""``msa simulate CONFIG [--sampler S] [--method M] [--chains C] [--steps S] ... [--json]``.

Runs the Langevin ground truth of THEORY §7 for the problem in CONFIG.  The
config may carry a ``[simulation]`` table with the same keys (sampler, method,
chains, steps, burn_in, thin, step_size, seed, chunk); flags override it.  With
``--json`` one object with the keys of ``msa solve --json`` plus the simulation's
diagnostics is printed; otherwise a rich table, with a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from ..config import load_config
from ..errors import Cancelled, MSAError
from ..theory.options import integral
from .solve import result_json

SIM_KEYS = {"sampler": str, "method": str, "chains": int, "steps": int, "burn_in": int,
            "thin": int, "step_size": float, "seed": int, "chunk": int}
DEFAULTS = {"sampler": "marginal", "method": "mala", "chains": 4, "steps": 2000,
            "burn_in": 500, "thin": 1, "step_size": None, "seed": 0, "chunk": 200}


def register(sub) -> None:
    p = sub.add_parser("simulate", help="Langevin simulation of the finite network (ground truth)",
                       description="Sample the posterior of the network in CONFIG by Langevin "
                       "dynamics and print the same observables as `msa solve`, with "
                       "Monte Carlo error bars and convergence diagnostics.")
    p.add_argument("config", nargs="?", help="TOML config; omitted: the bundled default")
    p.add_argument("--sampler", choices=["full", "marginal"], default=None,
                   help="marginal: the read-out a integrated out (default); full: Langevin "
                   "on (W, a)")
    p.add_argument("--method", choices=["mala", "ula"], default=None,
                   help="Metropolis-adjusted (default) or unadjusted Langevin")
    p.add_argument("--chains", type=int, default=None, help="independent chains (default: [simulation] chains, else 4)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per chain after burn-in (default: [simulation] steps, else 2000)")
    p.add_argument("--burn-in", dest="burn_in", type=int, default=None,
                   help="burn-in steps, also used to adapt the step size (default: [simulation] "
                   "burn_in, else 500)")
    p.add_argument("--thin", type=int, default=None, help="measure every THIN-th step")
    p.add_argument("--step-size", dest="step_size", type=float, default=None,
                   help="fixed whitened step size (default: adapted during burn-in)")
    p.add_argument("--seed", type=int, default=None, help="Monte Carlo seed (default 0)")
    p.add_argument("--checkpoint", default=None, help="write the chain state here between chunks (the first, the last, "
                   "on a stop, and in between at most 5%% of the run's time)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--traces", default=None, help="export the post-burn-in traces to this .npz")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --traces file, or --checkpoint file without --resume")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.set_defaults(func=run)


def check_output_path(path: str, flag: str, replace: bool) -> None:
    """Refuse, before the run, an output file the run could not write at its end (a
    finished run was thrown away when ``--traces`` named a missing folder) or one that
    exists (``--checkpoint s.json`` turned a session into a zip archive), unless
    ``replace``."""
    import os
    import tempfile
    p = Path(path).expanduser()
    if p.is_dir():
        raise MSAError(f"{flag} {path} is a folder")
    if p.exists() and not replace:
        raise MSAError(f"{flag} {path} exists: give --force to replace it, or choose another "
                       "path")
    if not p.parent.is_dir():
        what = "is not a folder" if p.parent.exists() else "does not exist"
        raise MSAError(f"{flag} {path}: {str(p.parent)!r} {what}")
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".check")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise MSAError(f"{flag} {path}: cannot write in {str(p.parent)!r}: "
                       f"{exc.strerror or exc}") from None


def simulation_options(cfg_raw: dict, args: argparse.Namespace) -> dict:
    """Merge defaults, the config's ``[simulation]`` table and the CLI flags (in that order)."""
    table = cfg_raw.get("simulation", {}) or {}
    if not isinstance(table, dict):
        raise MSAError("[simulation] must be a table")
    unknown = set(table) - set(SIM_KEYS)
    if unknown:
        raise MSAError(f"simulation: unknown key(s) {', '.join(sorted(unknown))}")
    opts = dict(DEFAULTS)
    for key, typ in SIM_KEYS.items():
        if key in table:
            v = table[key]
            if typ is int:
                n = integral(v)
                if n is None:
                    raise MSAError(f"simulation.{key} must be an integer (got {v!r})")
                v = n
            if typ is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise MSAError(f"simulation.{key} must be a number (got {v!r})")
            if typ is str and not isinstance(v, str):
                raise MSAError(f"simulation.{key} must be a string (got {v!r})")
            opts[key] = v
    for key in SIM_KEYS:
        v = getattr(args, key, None)
        if v is not None:
            opts[key] = v
    return opts


def run(args: argparse.Namespace) -> int:
    from ..cli import print_json
    from ..sampling import simulate

    cfg = load_config(args.config)
    opts = simulation_options(cfg.raw, args)
    if args.traces:
        check_output_path(args.traces, "--traces", args.force)
    if args.checkpoint:
        check_output_path(args.checkpoint, "--checkpoint", args.force or args.resume)
    if args.resume and args.checkpoint and not Path(args.checkpoint).expanduser().exists():
        # a job script re-run after preemption resumes where it can, else starts: say
        # which, so that a mistyped path does not silently throw a run away
        print(f"msa: note: no checkpoint at {args.checkpoint} yet: starting a new run",
              file=sys.stderr)
    kwargs = dict(opts, checkpoint=args.checkpoint, resume=args.resume)
    with _graceful_stop(args.checkpoint) as stop:
        if stop is not None:
            kwargs["cancel"] = stop
        try:
            if args.json:
                res = simulate(cfg.problem, **kwargs)
            else:
                res = _with_progress(cfg, simulate, kwargs)
        except Cancelled:
            if stop is None or not stop.is_set():
                raise
            print(f"msa: stopped between chunks ({stop.why}); {args.checkpoint} holds the "
                  "run: continue it with --resume", file=sys.stderr)
            return 143 if stop.why == "SIGTERM" else 130
    if args.traces:
        res.export_traces(args.traces)
    echo = dict(cfg.resolved, simulation={k: v for k, v in opts.items()})
    if args.json:
        print_json(result_json(res, echo))
        return 0
    from .render import console, print_problem, print_results
    print_problem(cfg)
    print_results([res])
    c = console()
    c.print(f"  {res.sampler}/{res.method}: {res.chains} chains × {res.steps} steps "
            f"(burn-in {res.burn_in}, thin {res.thin}), step {res.step_size:.3g}, "
            f"acceptance {res.acceptance:.2f}, {res.steps_per_second:.0f} steps/s")
    c.print(f"  R̂_max {res.rhat_max:.4f}, ESS_min {res.ess_min:.0f}, "
            f"converged: {res.converged}; train disc {res.train_discrepancy:.5g} "
            f"± {res.train_discrepancy_se:.2g} (corrected {res.train_discrepancy_corrected:.5g}), "
            f"test disc {res.test_discrepancy:.5g} ± {res.test_discrepancy_se:.2g} "
            f"(corrected {res.test_discrepancy_corrected:.5g}); "
            f"λ_top {res.weight_cov_top_eigenvalue:.5g} ± {res.weight_cov_top_eigenvalue_se:.2g}")
    c.print("  " + autocorr_line(res))
    return 0


class _StopEvent(threading.Event):
    why = ""


@contextmanager
def _graceful_stop(checkpoint):
    """With a checkpoint, the first Ctrl-C or a SIGTERM (a scheduler's notice before it
    preempts a job) stops the run at the end of its chunk, after the checkpoint is
    written, instead of losing the steps since the last write (the checkpoint is paced:
    at most 5% of the run's time goes to it, so that can be seconds); a second Ctrl-C
    stops at once.  Yields the event to pass as ``cancel`` (``None`` without a
    checkpoint, or off the main thread, where signals cannot be handled)."""
    if checkpoint is None or threading.current_thread() is not threading.main_thread():
        yield None
        return
    stop = _StopEvent()

    def on_signal(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt          # the second Ctrl-C: at once
        stop.why = signal.Signals(signum).name
        stop.set()
        print(f"msa: {stop.why}: stopping after this chunk, once the checkpoint is written"
              + (" (Ctrl-C again stops at once)" if signum == signal.SIGINT else ""),
              file=sys.stderr)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in old.items():      # (None: set outside Python)
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def autocorr_line(res) -> str:
    """The integrated autocorrelation times of the traced series, in steps (the result
    holds them in measured draws): what sets how many steps a given error bar needs, and
    how sparsely the draws could be measured (``--thin``) at no cost in precision."""
    labels = {"energy": "energy", "Q": "Q", "weight_cov_slow_mode": "Σ_W slow mode",
              "train_mean_max": "train mean (slowest point)"}
    parts = [f"{labels.get(k, k)} {v * res.thin:.3g}" for k, v in res.autocorr_times.items()
             if v == v]
    return "autocorrelation times (steps): " + ", ".join(parts)


def _with_progress(cfg, simulate, kwargs):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]simulate"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("simulate", total=None, info="")

        def callback(rec):
            info = (f"R̂ {rec.rhat_max:.3f} ESS {rec.ess_min:.0f} acc {rec.acceptance:.2f}"
                    if rec.rhat_max == rec.rhat_max else f"burn-in, acc {rec.acceptance:.2f}")
            bar.update(task, total=rec.steps_total, completed=rec.steps_done, info=info)

        return simulate(cfg.problem, callback=callback, **kwargs)
