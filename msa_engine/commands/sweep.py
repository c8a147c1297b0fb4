"""``msa sweep CONFIG --chi 1,3,10,N [--width ...] [--theories ...] [--simulate] --out PATH``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config
from ..errors import MSAError
from ..executors import make_executor
from ..sessions import Session, load_session, save_session, session_file
from ..sweep import DEFAULT_THEORIES, SweepMeter, SweepProgress, parse_chis, run_sweep
from ..theory import available_theories, check_theory
from ..theory.options import check_integer
from .simulate import simulation_options


def _int_list(text: str, flag: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MSAError(f"{flag} must be a comma-separated list of integers (got {text!r})") from None
    if not vals or any(v < 1 for v in vals):
        raise MSAError(f"{flag} values must be integers >= 1 (got {text!r})")
    return vals


def _recorded(spec, args, path) -> tuple:
    """The recorded sweep's grid, theories, options and seed, checked before anything is
    written: a hand-edited spec (``widths: [0]``) ran, and its failure entries with
    ``N = 0`` made the session unloadable."""
    if not isinstance(spec, dict):
        raise MSAError(f"{path}: its recorded sweep is not a table; start a new sweep")
    try:
        chis = parse_chis(spec.get("chis") or args.chi or DEFAULT_CHIS)
        widths = spec.get("widths")
        if widths is not None:
            if not isinstance(widths, list):
                raise MSAError(f"widths must be a list (got {widths!r})")
            widths = [check_integer("widths", w, 1) for w in widths]
        theories = spec.get("theories") or DEFAULT_THEORIES
        if not isinstance(theories, (list, tuple)):
            raise MSAError(f"theories must be a list (got {theories!r})")
        theories = [check_theory(t) for t in theories]
        simulate = spec.get("simulate", False)
        if not isinstance(simulate, bool):
            raise MSAError(f"simulate must be true or false (got {simulate!r})")
        opts = spec.get("sim_options") or {}
        theory_opts = spec.get("theory_options") or {}
        for name, table in (("sim_options", opts), ("theory_options", theory_opts)):
            if not isinstance(table, dict):
                raise MSAError(f"{name} must be a table (got {table!r})")
        seed = check_integer("seed", spec.get("seed", args.seed or 0), 0)
    except MSAError as exc:
        raise MSAError(f"{path}: its recorded sweep is malformed: {exc}") from None
    return chis, widths, theories, simulate, opts, seed, theory_opts


def register(sub) -> None:
    p = sub.add_parser("sweep", help="sweep theories (and simulations) across chi",
                       description="Anneal through a chi grid (THEORY §4), optionally simulating "
                       "at each point; saves the session incrementally.")
    p.add_argument("config", nargs="?", help="TOML config (omit with --resume)")
    p.add_argument("--chi", default=None,
                   help="comma-separated chi values; 'N' means chi = N (default: the config's "
                   "[sweep] chi, else 1,3,10,30,100)")
    p.add_argument("--width", help="comma-separated widths N (default: [sweep] width, else the "
                   "config's N)")
    p.add_argument("--theories", default=None,
                   help="comma-separated theories (default: [sweep] theories, else all available)")
    p.add_argument("--simulate", action=argparse.BooleanOptionalAction, default=None,
                   help="also run a simulation at each point (default: [sweep] simulate)")
    p.add_argument("--sampler", default=None, help="full or marginal (default: config or marginal)")
    p.add_argument("--chains", type=int, default=None,
                   help="chains per simulation (default: [simulation] chains, else 4)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per chain after burn-in (default: [simulation] steps, else 2000)")
    p.add_argument("--burn-in", type=int, default=None,
                   help="burn-in steps (default: [simulation] burn_in, else 500)")
    p.add_argument("--seed", type=int, default=None,
                   help="base Monte Carlo seed, per-point seeds derive from it (default: [sweep] "
                   "seed, else 0)")
    p.add_argument("--out", help="session file to write (default: sessions dir / NAME.json)")
    p.add_argument("--resume", metavar="SESSION", help="continue an interrupted sweep session")
    p.add_argument("--name", help="session name")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out session (default: refuse it)")
    ex = p.add_argument_group("execution (default: a local process pool, one worker per core)")
    ex.add_argument("--workers", type=int, default=None,
                    help="local pool size; 1 runs in this process with live solver output")
    ex.add_argument("--dask", metavar="local[:WORKERS]",
                    help="run on a Dask LocalCluster (needs the distributed extra)")
    ex.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                    help="run on a running Dask scheduler (e.g. a SLURM cluster via dask-jobqueue)")
    ex.add_argument("--retries", type=int, default=2,
                    help="retries of a task whose worker is lost (default 2)")
    p.add_argument("--json", action="store_true", help="print the session summary as JSON")
    p.set_defaults(func=run)


DEFAULT_CHIS = "1,3,10,30,100"
SWEEP_KEYS = ("chi", "width", "theories", "simulate", "seed")


def _csv(value, key: str) -> str:
    """A ``[sweep]`` list value as the flag's comma-separated text."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float))
                                       and not isinstance(v, bool) for v in value):
        return ",".join(str(v) for v in value)
    raise MSAError(f"sweep.{key} must be a list or a comma-separated string (got {value!r})")


def sweep_defaults(table) -> dict:
    """The config's ``[sweep]`` table (defaults for the flags), validated: ``chi``,
    ``width`` and ``theories`` as lists or comma-separated text, ``simulate`` a boolean,
    ``seed`` the base seed."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise MSAError("[sweep] must be a table")
    unknown = sorted(set(table) - set(SWEEP_KEYS))
    if unknown:
        raise MSAError(f"sweep: unknown key(s) {', '.join(unknown)} (known: "
                       f"{', '.join(SWEEP_KEYS)})")
    out = {k: _csv(table[k], k) for k in ("chi", "width", "theories") if k in table}
    if "simulate" in table:
        if not isinstance(table["simulate"], bool):
            raise MSAError(f"sweep.simulate must be true or false (got {table['simulate']!r})")
        out["simulate"] = table["simulate"]
    if "seed" in table:
        out["seed"] = check_integer("sweep.seed", table["seed"], 0)
    return out


def sim_options(args, config_sim: dict) -> dict:
    opts = dict(config_sim or {})
    for key in ("sampler", "chains", "steps", "burn_in"):
        v = getattr(args, key)
        if v is not None:
            opts[key] = v
    opts.setdefault("sampler", "marginal")
    return opts


def run(args: argparse.Namespace) -> int:
    from ..cli import print_json
    if args.resume:
        session = load_session(args.resume)
        spec = session.sweep or {}
        given = [flag for flag, v in (
            ("CONFIG", args.config), ("--chi", args.chi if "chis" in spec else None),
            ("--width", args.width),
            ("--theories", args.theories), ("--simulate", args.simulate),
            ("--sampler", args.sampler), ("--chains", args.chains), ("--steps", args.steps),
            ("--burn-in", args.burn_in), ("--name", args.name),
            ("--seed", args.seed if "seed" in spec else None),
            ("--force", True if args.force and not args.out else None)) if v is not None]
        if given:
            # they would be ignored: the sweep goes on with what its session recorded
            raise MSAError(f"--resume continues the sweep as its session recorded it; "
                           f"drop {', '.join(given)} (or start a new sweep with another --out)")
        chis, widths, theories, simulate, opts, seed, theory_opts = _recorded(
            spec, args, session.path)
        out = Path(args.out) if args.out else session.path
        if (args.out and out.exists() and not args.force
                and out.resolve() != Path(session.path).resolve()):
            raise MSAError(f"{out} exists: the resumed sweep would replace it; give --force "
                           "to replace it, or choose another --out")
    else:
        if not args.config:
            raise MSAError("sweep needs a CONFIG (or --resume SESSION)")
        cfg = load_config(args.config)
        table = sweep_defaults(cfg.raw.get("sweep"))
        # a flag given empty is an error, not the default
        width = args.width if args.width is not None else table.get("width")
        widths = (_int_list(width, "--width" if args.width is not None else "sweep.width")
                  if width is not None else None)
        if args.chi is None and "chi" in table and not table["chi"]:
            # (an empty list silently ran the default grid, above N for a small width)
            raise MSAError("sweep.chi needs at least one value")
        chis = parse_chis(args.chi if args.chi is not None else
                          table.get("chi") or DEFAULT_CHIS)
        names = (args.theories if args.theories is not None else
                 table.get("theories") or ",".join(DEFAULT_THEORIES))
        theories = [t.strip() for t in names.split(",") if t.strip()]
        if not theories:
            raise MSAError("--theories needs at least one theory")
        simulate = args.simulate if args.simulate is not None else table.get("simulate", False)
        seed = args.seed if args.seed is not None else table.get("seed", 0)
        seed = check_integer("--seed" if args.seed is not None else "sweep.seed", seed, 0)
        theory_opts = cfg.theory_options or {}
        # the [simulation] table is checked whether or not this sweep simulates (an
        # unknown key was accepted silently without --simulate); its integers as ints
        table_sim = cfg.raw.get("simulation") or {}
        checked = simulation_options(cfg.raw, argparse.Namespace())
        opts = sim_options(args, {k: checked[k] for k in table_sim})
        # the loaded data: building it again would repeat the config's warnings
        session = Session.new(cfg.resolved, name=args.name or Path(args.config).stem,
                              data=cfg.problem.data)
        # where save_session puts it ("sub/dir", "/tmp/x" or "." as --name wrote elsewhere)
        out = Path(args.out) if args.out else session_file(session.name)
        explicit = args.theories is not None or "theories" in table
        act = cfg.problem.network.activation
        for name in theories:       # bad names are refused before anything is written
            key = check_theory(name)
            if explicit and key not in available_theories(act):
                # asked for by name, it would silently be left out (the default list
                # leaves out what an activation lacks)
                raise MSAError(f"theory {key!r} exists only for linear networks "
                               f"(got activation {act!r})")
        if out.exists() and not args.force:
            # a new sweep writes its session at once: an existing one would be lost
            raise MSAError(f"{out} exists: continue its sweep with --resume {out}, "
                           "replace it with --force, or choose another --out")

    # (run_sweep checks the simulation options and connects a cluster before it writes)
    executor = make_executor(args.workers, args.dask, args.scheduler, args.retries)
    import sys
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    # on stderr, as msa simulate's: stdout holds only the summary (or the JSON)
    with Progress(TextColumn("[bold]sweep[/]"), BarColumn(), TextColumn("{task.fields[points]}"),
                  TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True,
                  disable=args.json or not sys.stderr.isatty()) as progress:
        bar = progress.add_task("", total=None, points="")
        meter = SweepMeter()     # the bar moves within a simulation point too

        def callback(rec):
            completed = meter.update(rec)
            if completed is None:
                return
            progress.update(bar, completed=completed, total=meter.total,
                            points=f"{meter.done}/{meter.total}")
            if isinstance(rec, SweepProgress):
                progress.update(bar, description=rec.label)

        try:
            run_sweep(session, chis, widths, theories, simulate, opts, callback=callback,
                      path=out, seed=seed, executor=executor, theory_options=theory_opts)
        finally:
            if hasattr(executor, "close"):
                executor.close()
    path = save_session(session, out)
    failed = [e for e in session.entries if e.get("status") != "ok"]
    if args.json:
        print_json({"session": str(path), "entries": len(session.entries), "failed": len(failed),
                    "rows": session.sweep_rows()})
    else:
        from .render import console, esc, print_point_problems
        c = console()
        n = len(session.entries)
        c.print(f"saved [bold]{esc(path)}[/] ({n} {'entry' if n == 1 else 'entries'}, "
                f"{len(failed)} failed)")
        print_point_problems(c, session.entries)
    return 1 if failed else 0
