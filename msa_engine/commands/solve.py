"""``msa solve CONFIG --theory T [--seed S] [--json]``."""

from __future__ import annotations

import argparse

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
    p.add_argument("--seed", type=int, default=None, help="Monte Carlo seed (recorded)")
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
    names = list(THEORIES) if args.theory == "all" else [check_theory(args.theory)]
    if args.theory == "all":
        names = list(available_theories(cfg.problem.network.activation))
    if args.json and len(names) > 1:
        results = [solve(cfg.problem, n, seed=args.seed) for n in names]
        print_json({"version": __version__, "seed": args.seed, "config": cfg.resolved,
                    "results": [result_json(r, cfg.resolved) for r in results]})
        return 0
    if args.json:
        print_json(result_json(solve(cfg.problem, names[0], seed=args.seed), cfg.resolved))
        return 0
    from .render import print_problem, print_results
    print_problem(cfg)
    results = []
    for n in names:
        results.append(solve(cfg.problem, n, seed=args.seed))
    print_results(results)
    return 0
