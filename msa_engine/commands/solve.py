"""``msa solve CONFIG --theory T [--seed S] [--json]``."""

from __future__ import annotations

import argparse
import time

from .. import __version__
from ..config import load_config
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
    if args.json and len(names) > 1:
        results = [one(n) for n in names]
        print_json({"version": __version__, "seed": seed, "config": cfg.resolved,
                    "results": [result_json(r, cfg.resolved) for r in results]})
        return 0
    if args.json:
        print_json(result_json(one(names[0]), cfg.resolved))
        return 0
    from .render import print_problem, print_results
    print_problem(cfg)
    print_results(_with_status(names, one))
    return 0


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
