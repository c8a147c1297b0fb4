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

    def one(name: str) -> TheoryResult:
        return solve(cfg.problem, name, seed=seed, options=cfg.theory_options)

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
    print_results([one(n) for n in names])
    return 0
