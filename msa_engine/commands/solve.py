"""``msa solve CONFIG --theory T [--seed S] [--json]``."""

from __future__ import annotations

import argparse
import sys
import time

from .. import __version__
from ..config import load_config
from ..errors import MSAError
from ..theory import THEORIES, available_theories, check_theory, solve
from ..results import TheoryResult


def register(sub) -> None:
    p = sub.add_parser("solve", help="compute a theory for a config (default: the bundled one)",
                       description="Compute one theory (or all) for the problem in CONFIG.")
    p.add_argument("config", nargs="?", help="TOML config; omitted: the bundled default")
    p.add_argument("--theory", default="all",
                   help=f"one of {', '.join(THEORIES)}, or 'all' (default: all)")
    p.add_argument("--seed", type=int, default=None,
                   help="Monte Carlo seed (recorded; default: the config's [theory] seed)")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.set_defaults(func=run)


def result_json(res: TheoryResult, config_echo: dict) -> dict:
    out = {"theory": res.theory, "version": __version__, "seed": res.seed,
           "config": config_echo}
    out.update(res.to_json_dict())
    out["theory"] = res.theory
    return out


def run(args: argparse.Namespace) -> int:
    from ..cli import print_json

    cfg = load_config(args.config)
    seed = args.seed if args.seed is not None else cfg.theory_seed

    def one(name: str, callback=None) -> TheoryResult:
        return solve(cfg.problem, name, seed=seed, options=cfg.theory_options,
                     callback=callback)

    names = list(THEORIES) if args.theory == "all" else [check_theory(args.theory)]
    if args.theory == "all":
        names = list(available_theories(cfg.problem.network.activation))
    if len(names) == 1:                  # its failure is the command's (exit 2)
        if args.json:
            print_json(result_json(one(names[0]), cfg.resolved))
            return 0
        return _print_text(cfg, names, one, {})
    # all theories: one that fails (a one loop at N below P) does not take the others
    # with it; it is reported, and the exit status is 1, as for a sweep's failed points
    failed: dict[str, str] = {}

    def kept(name: str, callback=None):
        try:
            return one(name, callback)
        except MSAError as exc:
            failed[name] = str(exc)
            return None

    if args.json:
        results = [r for r in (kept(n) for n in names) if r is not None]
        if not results:        # nothing to show: the command failed, as for one theory
            raise MSAError(next(iter(failed.values())))
        print_json({"version": __version__, "seed": seed, "config": cfg.resolved,
                    "results": [result_json(r, cfg.resolved) for r in results],
                    "failed": [{"theory": n, "error": m} for n, m in failed.items()]})
        return _report_failed(failed)
    return _print_text(cfg, names, kept, failed)


def _print_text(cfg, names: list[str], solver, failed: dict) -> int:
    """The problem, then (with a live status line while they solve) the results table,
    and the theories that failed (``solver`` records them in ``failed``)."""
    from .render import console, print_problem, print_results
    print_problem(cfg)
    results = [r for r in _with_status(names, solver) if r is not None]
    if not results:
        raise MSAError(next(iter(failed.values())))
    print_results(results)
    status = _report_failed(failed)
    if failed:
        console().print(f"{len(failed)} of {len(results) + len(failed)} theories failed: "
                        f"{', '.join(failed)}")
    return status


def _report_failed(failed: dict) -> int:
    """Each failed theory's error on stderr, as the CLI reports errors; the exit status
    (1 when any failed, as for a sweep's failed points)."""
    for m in failed.values():
        print(f"msa: error: {m}", file=sys.stderr)
    return 1 if failed else 0


def _with_status(names: list[str], one) -> list[TheoryResult]:
    """Solve ``names`` in turn with a live status line on stderr (a terminal only): the
    non-linear saddles take minutes at d = 50, and a silent terminal looks hung."""
    from rich.console import Console
    err = Console(stderr=True)
    if not err.is_terminal:
        return [one(n) for n in names]
    results = []
    with err.status("") as status:
        for n in names:
            t0 = time.monotonic()
            status.update(f"[bold]{n}[/]")

            def callback(rec, n=n, t0=t0):
                status.update(f"[bold]{n}[/]: {rec.stage} at χ = {rec.chi:.4g}, iteration "
                              f"{rec.iteration}, residual {rec.residual:.3g} |y| "
                              f"({time.monotonic() - t0:.0f} s)")
            results.append(one(n, callback))
    return results
