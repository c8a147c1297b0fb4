"""Sweeps across χ (and widths N): the paper's Fig. 2 experiment, generalised.

A sweep is split into independent tasks (THEORY §4, Algorithm 1):

* a **theory chain**: one theory at one width over the whole χ grid, each
  saddle warm-started from the previous χ (so the chain is one task);
* a **simulation**: one sampler run at one (N, χ) point, seeded from the
  grid point itself, never from the worker that runs it.

Tasks are plain dictionaries and return session entries (JSON-ready dicts),
so that any executor can run them.  :func:`run_sweep` runs them in order,
merges each entry into the session as it completes, and autosaves.
Completed points are skipped on resume, and an interrupted chain resumes
from its last completed saddle.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import Cancelled, MSAError
from .pacing import WritePacer
from .problem import Problem
from .results import convergence_message
from .resources import check_sweep
from .sessions import Session, _chi_key, entry_from_result, save_session
from .theory import (ANNEAL_FACTOR, ANNEALED, anneal, available_theories, check_theory,
                     chi_grid, solve)
from .theory.options import check_integer, check_options

DEFAULT_THEORIES = ("nngp", "rescaling", "tree", "one-loop", "exact")


@dataclass(frozen=True)
class SweepProgress:
    """Reported after each completed task point: ``done`` of ``total`` points."""

    done: int
    total: int
    label: str
    time: float = 0.0
    warning: str | None = None      # the point's simulation has not converged: why

    def to_dict(self) -> dict:
        return {"stage": "sweep", "done": self.done, "total": self.total, "label": self.label,
                "time": self.time, "warning": self.warning}


@dataclass(frozen=True)
class TaskProgress:
    """From an executor whose tasks run elsewhere (a local process pool): task ``task``
    (its index in the sweep's plan) has done ``points`` of its points — a running
    simulation's share of its steps, a theory chain's completed χ points — or, with
    ``points`` ``None``, has ended (its entries follow as :class:`SweepProgress`)."""

    task: int
    points: float | None


class SweepMeter:
    """A sweep's progress for a progress bar, in points: the points merged into the
    session (from the :class:`SweepProgress` records) plus what the running tasks have
    done of theirs: the in-process simulation's share of its steps (from its chunk
    records), or a pool's tasks' :class:`TaskProgress`.  A simulation point takes
    minutes where a theory point takes seconds, and counted in whole points the bar
    stood still for all of it.  Feed it every record of :func:`run_sweep`'s callback,
    in order."""

    def __init__(self) -> None:
        self.done, self.total = 0, None
        self._running: dict = {}     # task (None: the one in this process) → its points

    def update(self, rec) -> float | None:
        """The points completed so far, as a float, or ``None`` when ``rec`` says
        nothing new (a solver iteration, or anything before the sweep's size is known)."""
        if isinstance(rec, SweepProgress):
            self.done, self.total = rec.done, rec.total
            self._running.pop(None, None)     # the in-process point is merged now
        elif isinstance(rec, TaskProgress):
            if rec.points is None:
                self._running.pop(rec.task, None)
            else:
                self._running[rec.task] = rec.points
        else:
            steps, steps_total = getattr(rec, "steps_done", None), getattr(rec, "steps_total", None)
            if steps is None or not steps_total:
                return None
            # never a whole point: the point counts once its entry is in the session
            self._running[None] = min(steps / steps_total, 0.999)
        if self.total is None:
            return None
        return min(self.done + sum(self._running.values()), float(self.total))


def parse_chis(text: str | Sequence, name: str = "--chi") -> list:
    """χ values from ``"1,3,10,N"`` (or a sequence of them): numbers, ``standard`` for
    1, or ``N``/``mean-field`` for χ = N; ``name`` is what an error calls them."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = [text]
    if not isinstance(text, str):
        try:
            text = list(text)
        except TypeError:
            raise MSAError(f"{name}: expected χ values, got {text!r}") from None
    items = text.split(",") if isinstance(text, str) else text
    out = []
    for item in items:
        key = str(item).strip().lower()
        if key in ("n", "mean-field", "meanfield"):
            out.append("N")
            continue
        if key == "standard":
            out.append(1.0)
            continue
        try:
            v = float(key)
        except ValueError:
            raise MSAError(f"{name}: {item!r} is not a number, 'N' or 'mean-field'") from None
        if not math.isfinite(v) or v <= 0:
            raise MSAError(f"{name} values must be finite numbers > 0 (got {item!r})")
        out.append(v)
    if not out:
        raise MSAError(f"{name} needs at least one value")
    return out


def resolve_chis(chis: Sequence, N: int) -> list[float]:
    vals = sorted({_chi_key(float(N) if c == "N" else float(c)) for c in chis})
    return vals


def point_seed(base_seed: int, N: int, chi: float) -> int:
    """A seed derived from the grid point alone, so any executor gives the same numbers."""
    ss = np.random.SeedSequence([int(base_seed), int(N), int(round(chi * 1e6))])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def plan_tasks(session: Session, chis: Sequence, widths: Sequence[int] | None,
               theories: Sequence[str], simulate: bool, sim_options: dict | None,
               base_seed: int = 0, theory_options: dict | None = None) -> list[dict]:
    """The list of tasks for a sweep, skipping points the session already holds.
    ``theory_options`` (a ``[theory]`` table) travel with every theory chain."""
    theory_options = check_options(theory_options)
    widths = list(widths) if widths else [int(session.config["network"]["N"])]
    tasks = []
    for N in widths:
        grid = resolve_chis(chis, N)
        for theory in theories:
            todo = [c for c in grid if not session.find("theory", theory, c, N)]
            if not todo:
                continue
            done = [c for c in grid if c not in todo]
            warm = None
            if theory in ANNEALED and done:
                last = max(c for c in done if c < min(todo)) if any(c < min(todo) for c in done) else None
                if last is not None:
                    e = session.find("theory", theory, last, N)[0]
                    warm = {"chi": last, "tbar": e.get("warm_tbar") or e.get("tbar")}
            # every point gets its own seed, as a simulation does: the Monte Carlo of the
            # non-linear saddles (tree, one loop) is then the user's --seed, not 0
            task = {"kind": "theory-chain", "theory": theory, "N": int(N),
                    "chis": todo, "warm": warm,
                    "seeds": [point_seed(base_seed, N, c) for c in todo]}
            if theory_options:
                task["options"] = dict(theory_options)
            tasks.append(task)
        if simulate:
            opts = dict(sim_options or {})
            sampler = opts.get("sampler", "marginal")
            for c in grid:
                if session.find("simulation", f"sim-{sampler}", c, N):
                    continue
                tasks.append({"kind": "simulation", "N": int(N), "chi": c, "options": opts,
                              "seed": point_seed(base_seed, N, c)})
    return tasks


def task_points(task: dict) -> int:
    return len(task["chis"]) if task["kind"] == "theory-chain" else 1


def run_theory_chain(problem: Problem, theory: str, chis: Sequence[float],
                     warm: dict | None = None, callback=None,
                     on_point: Callable[[dict], None] | None = None,
                     cancel: threading.Event | None = None,
                     seeds: Sequence[int | None] | None = None,
                     options: dict | None = None) -> list[dict]:
    """Solve ``theory`` along ``chis`` (ascending), warm-starting annealed saddles.

    Between requested points the tree saddle is annealed on a geometric grid
    of ratio ≤ ``anneal_factor`` (2 by default), exactly as :func:`msa_engine.solve`
    does from χ = 1, so a chain's first point equals a fresh ``solve``.  ``seeds`` (one
    per point, or None) seed the Monte Carlo of non-linear saddles; each entry records
    its seed.  ``options`` (a ``[theory]`` table) are used at every point and recorded
    in each entry, so that a rerun uses them too.
    """
    options = check_options(options)
    factor = options.get("anneal_factor", ANNEAL_FACTOR)
    if seeds is not None and len(seeds) != len(chis):
        raise MSAError(f"run_theory_chain: {len(seeds)} seeds for {len(chis)} points")
    theory = check_theory(theory)
    entries = []
    prev_chi = 1.0 if warm is None else float(warm["chi"])
    tbar = None if warm is None else np.asarray(warm["tbar"], dtype=float)
    for i, chi in enumerate(chis):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        seed = None if seeds is None else seeds[i]
        p = problem.with_chi(chi)
        t0 = time.perf_counter()
        if theory in ANNEALED:
            grid = chi_grid(chi, factor, start=prev_chi)
            if tbar is not None:
                grid = grid[1:] if grid.size > 1 else grid
            path = anneal(problem, "tree", grid, callback, tbar0=tbar, seed=seed,
                          options=options)
            tree_res = path[-1]
            log = sum((r.log for r in path), ())
            if theory == "one-loop":
                res = anneal(problem, "one-loop", [chi], callback, tbar0=tree_res.tbar,
                             seed=seed, options=options)[-1]
                log = log + res.log
            else:
                res = tree_res
            tbar, prev_chi = tree_res.tbar, chi
            extra = {"warm_tbar": tree_res.tbar, "via": "sweep-chain"}
        else:
            res = solve(p, theory, callback=callback, seed=seed, options=options)
            log, extra = res.log, {"via": "solve"}
        from dataclasses import replace
        # the point's seed is recorded for every theory, as msa.solve records it (the
        # linear saddles of an annealed chain came back without it)
        res = replace(res, wall_time=time.perf_counter() - t0,
                      seed=res.seed if res.seed is not None else seed)
        entry = entry_from_result(res, log=log, options=options or None, extra=extra)
        entries.append(entry)
        if on_point:
            on_point(entry)
    return entries


def run_simulation_task(problem: Problem, options: dict, seed: int, callback=None,
                        cancel: threading.Event | None = None,
                        threads: int | None = None) -> dict:
    """One simulation point.  ``threads`` (not recorded: results do not depend on it)
    caps the sampler's threads where a pool already runs one worker per core."""
    from .sampling import simulate
    opts = {k: v for k, v in options.items() if k != "seed"}
    extra = {"threads": threads} if threads is not None and "threads" not in opts else {}
    # (the sweep says which points did not converge: SweepProgress.warning, the summary)
    res = simulate(problem, seed=seed, callback=callback, cancel=cancel, **opts, **extra,
                   warn_unconverged=False)
    return entry_from_result(res, options={**opts, "seed": seed})


def execute_task(session: Session, task: dict, callback=None, on_point=None,
                 cancel: threading.Event | None = None,
                 threads: int | None = None) -> list[dict]:
    """Run one task against the session's problem; returns its entries (``threads``: see
    :func:`run_simulation_task`)."""
    base = session.problem(N=task["N"])
    if task["kind"] == "theory-chain":
        return run_theory_chain(base, task["theory"], task["chis"], task.get("warm"),
                                callback, on_point, cancel, seeds=task.get("seeds"),
                                options=task.get("options"))
    entry = run_simulation_task(base.with_chi(task["chi"]), task["options"], task["seed"],
                                callback, cancel, threads)
    if on_point:
        on_point(entry)
    return [entry]


def run_sweep(session: Session, chis: Sequence, widths: Sequence[int] | None = None,
              theories: Iterable[str] = DEFAULT_THEORIES, simulate: bool = False,
              sim_options: dict | None = None, callback=None,
              cancel: threading.Event | None = None, autosave: bool = True,
              path=None, seed: int = 0, autosave_interval: float = 0.5,
              executor=None, theory_options: dict | None = None) -> Session:
    """Run (or resume) a sweep, merging every completed point into ``session``.

    ``callback`` receives solver :class:`IterationRecord` s, sampler chunk
    records and a :class:`SweepProgress` after each point.  With
    ``autosave`` the session is written atomically to ``path`` (or the
    session's own path) after every simulation and between the points of one theory
    chain once ``autosave_interval`` seconds, or twenty times what the last save took,
    have passed (and at the end of every task), so that a killed sweep loses at most
    that much work and a large session does not spend the sweep being rewritten; a
    cancelled or interrupted one (Ctrl-C) loses none.  A failing task is recorded in the
    session with its error, and the other tasks go on.

    ``executor`` runs the tasks (:mod:`msa_engine.executors`): by default in
    this process, in order, with live solver and sampler records; a local
    process pool or Dask stream whole tasks back as they complete.

    ``theory_options`` (a config's ``[theory]`` table without its seed) reach every
    theory point; the sweep spec records them, so that ``--resume`` uses them too.
    """
    # the arguments are checked before the session is touched: χ = 0 or a width of 0
    # ran, recorded failed points with them and autosaved a file that cannot be loaded
    if not isinstance(session, Session):
        raise MSAError(f"run_sweep needs a Session (got {type(session).__name__})")
    chis = parse_chis(chis, "chis")
    if widths is not None:
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
            raise MSAError(f"widths must be a list of integers >= 1 (got {widths!r})")
        widths = [check_integer("widths", w, 1) for w in widths] or None
    seed = check_integer("seed", seed, 0)
    theory_options = check_options(theory_options)
    if simulate:      # refused before anything is written or run, as `msa simulate` does
        from .sampling.run import check_simulation_options
        sim_options = check_simulation_options(dict(sim_options or {}))
    available = available_theories(session.problem().network.activation)
    theories = [t for t in (check_theory(t) for t in theories) if t in available]
    spec = {"chis": [c if c == "N" else float(c) for c in chis],
            "widths": list(widths) if widths else None, "theories": theories,
            "simulate": bool(simulate), "sim_options": dict(sim_options or {}),
            "seed": int(seed), "completed": False}
    if theory_options:
        spec["theory_options"] = dict(theory_options)
    prior = {k: v for k, v in (session.doc.get("sweep") or {}).items()
             if k != "theory_options"}       # this sweep's options, not an earlier one's
    session.doc["sweep"] = {**prior, **spec}
    if path is not None:
        session.path = path
    tasks = plan_tasks(session, chis, widths, theories, simulate, sim_options, seed,
                       theory_options)
    if tasks:   # refuse a sweep whose largest point would not fit, before it starts
        check_sweep(session.problem(), widths, theories, simulate, sim_options,
                    theory_options)
    total = sum(task_points(t) for t in tasks)
    done = 0

    # between forced saves, at least autosave_interval apart and at most 5% of the time:
    # a session of many points is rewritten whole each time
    pacer = WritePacer(min_interval=autosave_interval)
    unsaved = [False]

    def save(force: bool = True):
        if autosave and session.path is not None and (force or pacer.due()):
            pacer.write(save_session, session)
            unsaved[0] = False

    def on_point(entry):
        nonlocal done
        session.add_entry(entry)
        unsaved[0] = True
        done += 1
        save(force=entry["kind"] == "simulation")
        if callback:
            callback(SweepProgress(done, total, f"{entry['name']} N={entry['N']} "
                                   f"χ={entry['chi']:.4g}", time.time(),
                                   convergence_message(entry.get("summary") or {})))

    def task_done(task, entries, error, final=True):
        nonlocal done
        for entry in entries:
            on_point(entry)
        if error is None:
            if final and unsaved[0]:
                save()     # a finished task is on disk before the next one runs long
            return
        kind = "theory" if task["kind"] == "theory-chain" else "simulation"
        name = task.get("theory") or f"sim-{task['options'].get('sampler', 'marginal')}"
        missing = [c for c in (task["chis"] if kind == "theory" else [task["chi"]])
                   if not session.find(kind, name, c, task["N"])]
        for i, c in enumerate(missing):
            # an annealing chain stops at its first failure: the points after it were not
            # computed (each repeated that failure's message, naming another χ)
            why = error if i == 0 else (f"not reached: the annealing chain stopped at "
                                        f"chi = {missing[0]:g} ({error})")
            session.add_failure(kind, name, c, task["N"], why)
            done += 1
        save()

    from .executors import SerialExecutor
    executor = executor or SerialExecutor()
    if hasattr(executor, "connect"):
        executor.connect()      # a cluster that cannot be reached: refused before a write
    session.doc["sweep"]["executor"] = {"kind": executor.name, "workers": executor.workers}
    save()
    try:
        if callback and tasks:   # the size first, so that a bar can show it from the start
            callback(SweepProgress(0, total, "starting", time.time()))
        executor.run(session, tasks, task_done, callback, cancel)
    except BaseException:
        # cancelled, interrupted (Ctrl-C: KeyboardInterrupt) or failed: what completed
        # is written before the exception leaves, throttled points included (a second
        # Ctrl-C does not stop that write)
        from .executors import SigintIgnored
        with SigintIgnored():
            save()
        raise
    session.doc["sweep"]["executor"]["workers"] = executor.workers
    session.doc["sweep"]["completed"] = True
    save()
    return session
