"""Rich rendering of problems and results for the human-readable CLI output."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from ..results import TheoryResult


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # the reader went away (`msa replay S | head -1`): rich would exit with status 1;
        # the command line stops quietly with 0, as for a JSON line (msa_engine/cli.py)
        self.quiet = True
        raise BrokenPipeError


def console() -> Console:
    c = _Console(highlight=False)
    if c.width < 60:
        # COLUMNS=0 printed nothing at all, COLUMNS=20 every number as "…": tables wrap
        # (or a terminal cuts them) at 80, which is still readable
        c = _Console(highlight=False, width=80)
    return c


def esc(value) -> str:
    """``value`` as text that rich prints as written: names, notes, paths and messages
    come from users, and a ``[/]`` in one stopped a command with a MarkupError
    traceback (``res[final].json`` printed as ``res.json``)."""
    from rich.markup import escape
    return escape(str(value))


def fmt(v, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def print_problem(cfg) -> None:
    net, data = cfg.problem.network, cfg.problem.data
    c = console()
    c.print(f"[bold]problem[/] {esc(cfg.path or '')}")
    c.print(f"  data: task={data.spec.get('task')} d={data.d} P={data.P} "
            f"P_test={data.P_test} seed={data.spec.get('seed', '—')}")
    c.print(f"  network: {net.activation} N={net.N} g_w={net.g_w:g} g_a={net.g_a:g} "
            f"kappa={net.kappa:g} chi={net.chi:g} (gamma={net.gamma:.3g})")
    table = {**({"seed": cfg.theory_seed} if cfg.theory_seed is not None else {}),
             **(cfg.theory_options or {})}
    if table:   # what the Monte Carlo theories run with, where it is not the default
        c.print("  theory: " + " ".join(f"{k}={v}" for k, v in table.items()))


def results_table(results: list, title: str = "theories") -> Table:
    """One row per theory or simulation; fits 80 columns."""
    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
              caption="train/test: discrepancy ⟨(y−f̄)²⟩; var: predictive variance; "
                      "λ_top, ovl: Σ_W outlier and its teacher overlap")
    for col in ("theory", "train", "test", "var", "Q", "log Z", "λ_top", "ovl", "time"):
        t.add_column(col, justify="right" if col != "theory" else "left", no_wrap=True)
    for r in results:
        ws = r.weight_cov_summary
        t.add_row(r.theory, fmt(r.train_discrepancy, 3), fmt(r.test_discrepancy, 3),
                  fmt(r.test_variance, 3), fmt(r.Q, 3), fmt(r.log_evidence, 5),
                  fmt(ws.top_eigenvalue, 3), fmt(ws.teacher_overlap, 3), f"{r.wall_time:.2f}s")
    return t


def print_point_problems(c: Console, entries, mark: str = "unconverged") -> None:
    """A line for each failed point and each simulation that has not converged (its
    numbers are in the session, their error bars unreliable), with the reason."""
    from ..results import convergence_message
    for e in entries:
        where = f"{esc(e['name'])} N={e['N']} chi={e['chi']:g}"
        if e.get("status") != "ok":
            c.print(f"  [red]failed[/] {where}: {esc(e.get('error') or '?')}")
        elif (message := convergence_message(e.get("summary") or {})) is not None:
            c.print(f"  [yellow]{mark}[/] {where}: {esc(message)}")


def print_results(results: list[TheoryResult]) -> None:
    console().print(results_table(results))
