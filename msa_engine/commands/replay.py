"""``msa replay SESSION [--rerun] [--json]``: print a saved session headless."""

from __future__ import annotations

import argparse
from ..sessions import load_session


def register(sub) -> None:
    p = sub.add_parser("replay", help="print a saved session; --rerun recomputes it",
                       description="Print a session's parameters, results, the discrepancy "
                       "against chi and its convergence log; --rerun checks reproduction.")
    p.add_argument("session")
    p.add_argument("--rerun", action="store_true",
                   help="recompute everything and report whether the numbers are reproduced")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def log_summary(session) -> dict:
    out = {"theory_iterations": 0, "sampler_chunks": 0, "entries": len(session.entries),
           "failed": sum(e.get("status") != "ok" for e in session.entries),
           "worst_final_residual": 0.0, "max_rhat": None}
    for e in session.entries:
        log = e.get("log") or []
        if e["kind"] == "theory":
            out["theory_iterations"] += len(log)
            res = (e.get("summary") or {}).get("residual") or 0.0
            out["worst_final_residual"] = max(out["worst_final_residual"], res)
        else:
            out["sampler_chunks"] += len(log)
            r = (e.get("summary") or {}).get("rhat_max")
            if r is not None:
                out["max_rhat"] = r if out["max_rhat"] is None else max(out["max_rhat"], r)
    return out


def discrepancy_plot(session, which: str = "test", width: int = 78, height: int = 18):
    """The paper's Fig. 2 for this session, drawn as the TUI draws it."""
    from ..figures import fig2
    from ..plots import render
    return render(fig2([("", session.entries)], which), width, height)


def run(args: argparse.Namespace) -> int:
    from ..cli import print_json
    session = load_session(args.session)
    report = None
    if args.rerun:
        from ..analysis import rerun
        report = rerun(session)
    if args.json:
        out = {"name": session.name, "path": str(session.path), "config": session.config,
               "notes": session.notes, "versions": session.doc.get("versions"),
               "sweep": session.sweep, "rows": session.sweep_rows(),
               "log_summary": log_summary(session)}
        if report is not None:
            out["rerun"] = report
        print_json(out)
        return 0 if report is None or report["reproduced"] else 1
    from rich.table import Table
    from rich import box
    from .render import console, esc, fmt, print_point_problems
    c = console()
    net, data = session.config["network"], session.config["data"]
    c.print(f"[bold]{esc(session.name)}[/]  ({esc(session.path)})")
    c.print(esc(f"  data: {', '.join(f'{k}={v}' for k, v in data.items() if k != 'path')}"))
    c.print(esc(f"  network: {', '.join(f'{k}={v}' for k, v in net.items())}"))
    vers = session.doc.get("versions") or {}
    c.print(f"  made with msa-workbench {vers.get('msa_workbench', '?')}, numpy {vers.get('numpy', '?')}, "
            f"numba {vers.get('numba', '?')}; modified {session.doc.get('modified', '?')}")
    if session.notes:
        c.print(f"  notes: {esc(session.notes)}")
    topts = (session.sweep or {}).get("theory_options")
    if topts:
        c.print(esc(f"  theory options: {', '.join(f'{k}={v}' for k, v in topts.items())}"))
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("result", "N", "χ", "train disc", "test disc", "±se", "Q", "λ_top"):
        t.add_column(col, justify="left" if col == "result" else "right", no_wrap=True)
    for r in session.sweep_rows():
        # a simulation whose chains had not mixed is marked, and said why below
        t.add_row(r["name"] + ("" if r["converged"] else " *"), str(r["N"]), fmt(r["chi"], 4),
                  fmt(r["train_discrepancy"], 4),
                  fmt(r["test_discrepancy"], 4),
                  fmt(r["test_discrepancy_se"], 2) if r["test_discrepancy_se"] else "",
                  fmt(r["Q"], 4), fmt(r["weight_cov_top_eigenvalue"], 4))
    c.print(t)
    if len({r["chi"] for r in session.sweep_rows()}) > 1:
        c.print(discrepancy_plot(session, width=min(c.width, 100)))
    ls = log_summary(session)
    c.print(f"convergence log: {ls['theory_iterations']} solver iterations, "
            f"{ls['sampler_chunks']} sampler chunks, {ls['failed']} failed points, "
            f"worst final residual {ls['worst_final_residual']:.2g}"
            + (f", max R̂ {ls['max_rhat']:.3f}" if ls["max_rhat"] is not None else ""))
    print_point_problems(c, session.entries, mark="*")   # failed or unconverged, and why
    if report is not None:
        bad = [r for r in report["entries"] if not r["reproduced"]]
        n = len(report["entries"])
        if report["reproduced"]:
            c.print(f"[green]rerun: all {n} entries reproduced[/] (theories to "
                    f"{report['rtol']:g} relative; simulations bit for bit or within error bars)")
        else:
            c.print(f"[red]rerun: {len(bad)} of {n} entries NOT reproduced[/]")
            for r in bad:
                c.print(esc(f"  {r['name']} N={r['N']} chi={r['chi']:g}: {_why(r, report['rtol'])}"))
        return 0 if report["reproduced"] else 1
    return 0


def _why(r: dict, rtol: float) -> str:
    """What did not reproduce, in words (the report's dict was printed raw)."""
    if "detail" in r:
        return r["detail"]
    if "max_rel_diff" in r:
        return f"differs by {r['max_rel_diff']:.3g} of its scale (allowed {rtol:g})"
    return (f"not bit for bit, and |z| up to {r.get('max_abs_z', float('nan')):.3g} "
            "(allowed 4.5)")
