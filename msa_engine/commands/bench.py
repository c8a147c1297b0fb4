"""``msa bench [--quick] [--json] [--markdown]``: the performance benchmarks of issue 7.

The measurements live in the ``benchmarks`` package (installed with the workbench):
``benchmarks.harness`` (DGEMM, timers, records), ``benchmarks.bench_samplers`` (Langevin
throughput against NumPy and PyTorch), ``benchmarks.bench_theory`` (theory solve times,
time to equal accuracy, cost exponents) and ``benchmarks.bench_startup`` (cold and warm
start).  Every comparison runs side by side in this one process (startup in fresh
subprocesses) and is reported as a ratio, so that a loaded machine moves the absolute
times more than the ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
import warnings

from .. import jit
from ..errors import MSAError, MSAWarning

# The non-linear tree level (issue 6) is not a section: its benchmark
# (python -m benchmarks.bench_nonlinear) takes minutes of Monte Carlo even with --quick.
SECTIONS = ("dgemm", "samplers", "theory", "accuracy", "scaling", "startup")
DEFAULT_SECTIONS = SECTIONS


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="performance benchmarks: samplers, theories, startup (side by side)",
        description="Measure the engine side by side with NumPy and PyTorch baselines and "
                    "against this machine's DGEMM rate; print a table, JSON or Markdown.")
    p.add_argument("--quick", action="store_true",
                   help="small and medium sizes, fewer repeats (about 2 minutes)")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    p.add_argument("--markdown", action="store_true",
                   help="print the README's Performance table (Markdown)")
    p.add_argument("--only", default=None, metavar="SECTIONS",
                   help=f"comma-separated subset of {', '.join(SECTIONS)} "
                        f"(default: all)")
    p.add_argument("--sizes", default=None, metavar="P,P,…",
                   help="training-set sizes P for the theory section (default 100,500,2000; "
                        "--quick 100,500)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per measurement (median reported; default 3, --quick 2)")
    p.add_argument("--from-json", default=None, metavar="FILE",
                   help="print a saved 'msa bench --json' report (table or --markdown) "
                        "instead of measuring")
    p.add_argument("--dgemm-n", type=int, default=2048, help=argparse.SUPPRESS)  # tests
    p.set_defaults(func=run)


def _parse_sections(text: str | None) -> tuple[str, ...]:
    if text is None:
        return DEFAULT_SECTIONS
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SECTIONS]
    if bad or not names:
        raise MSAError(f"--only must name sections among {', '.join(SECTIONS)} "
                       f"(got {text!r})")
    return tuple(s for s in SECTIONS if s in names)


def _parse_sizes(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    out = []
    for item in text.split(","):
        try:
            P = int(item.strip())
        except ValueError:
            P = 0
        if P < 10:
            raise MSAError(f"--sizes values must be integers >= 10 (got {item.strip()!r})")
        out.append(P)
    return tuple(out)


def machine_info() -> dict:
    from benchmarks.harness import cpu_count
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem = round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:  # pragma: no cover - non-Linux
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    import numpy
    return {"cores": cpu_count(), "memory_gib": mem, "cpu": cpu, "load_average": load,
            "python": platform.python_version(), "numpy": numpy.__version__,
            "platform": platform.platform(), **_numba_target()}


def _numba_target() -> dict:
    """What numba compiles the kernels for, and which form of the ziggurat's fast path
    that chose (``rng_numba._lookup_apart``): the generator's speed depends on both."""
    try:
        import llvmlite.binding as ll
        from numba.core import config
        from msa_engine.sampling.rng_numba import LOOKUP_APART
        name = config.CPU_NAME or ll.get_host_cpu_name()
        if config.CPU_FEATURES is not None:
            name += " (features from NUMBA_CPU_FEATURES)"
        return {"numba_target": name,
                "ziggurat_lookup": "apart" if LOOKUP_APART else "in the SIMD loop"}
    except Exception:  # pragma: no cover - a numba without these: leave them out
        return {}


def _note(msg: str) -> None:
    # on a terminal the progress line (_progress, no newline) is cleared first, so that
    # the note starts a line of its own
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    jit.stderr_note(msg)


def run(args: argparse.Namespace) -> int:
    from ..cli import print_json

    sections = _parse_sections(args.only)
    sizes = _parse_sizes(args.sizes)
    if args.repeats is not None and args.repeats < 1:
        raise MSAError(f"--repeats must be an integer >= 1 (got {args.repeats})")
    if args.dgemm_n < 16:
        raise MSAError(f"--dgemm-n must be an integer >= 16 (got {args.dgemm_n})")
    if args.json and args.markdown:
        raise MSAError("--json and --markdown are exclusive")
    repeats = args.repeats or (2 if args.quick else 3)
    progress = _progress if sys.stderr.isatty() else None
    if args.from_json is not None:
        report = _load_report(args.from_json)
    else:
        # a first-compile notice (msa_engine/jit.py) during the in-process sections goes
        # through _note, past the progress line
        token = jit.push_reporter(_note)
        try:
            with warnings.catch_warnings():
                # the timed simulations are seconds long on purpose: that they have not
                # converged is not news (it printed a warning line per run)
                warnings.filterwarnings("ignore", message="simulation at chi",
                                        category=MSAWarning)
                report = collect(sections, args.quick, repeats, sizes, progress,
                                 dgemm_n=args.dgemm_n)
        finally:
            jit.remove_reporter(token)
    try:
        report["targets"] = target_verdicts(report)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        if args.from_json is None:
            raise
        raise MSAError(f"{args.from_json} is not a complete 'msa bench --json' report "
                       f"({type(exc).__name__}: {exc})") from None
    if args.json:
        print_json(report)
        return 0
    try:        # a saved report may lack fields that the table needs: one line, not a traceback
        text = markdown(report) if args.markdown else None
        if text is None:
            print_report(report)
        else:
            sys.stdout.write(text)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if args.from_json is None:
            raise
        raise MSAError(f"{args.from_json} is not a complete 'msa bench --json' report "
                       f"({type(exc).__name__}: {exc})") from None
    return 0


def _load_report(path: str) -> dict:
    import json
    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except OSError as exc:
        raise MSAError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise MSAError(f"{path} is not JSON ({exc})") from None
    if not (isinstance(report, dict) and isinstance(report.get("records"), list)
            and isinstance(report.get("machine"), dict)
            and isinstance(report.get("dgemm_gflops"), (int, float))
            and all(isinstance(r, dict) and isinstance(r.get("name"), str) and "size" in r
                    and isinstance(r.get("ours_s"), (int, float, type(None)))
                    for r in report["records"])):
        raise MSAError(f"{path} is not an 'msa bench --json' report")
    report.setdefault("quick", False)
    report.setdefault("total_s", float("nan"))
    return report


def _progress(msg: str) -> None:
    sys.stderr.write(f"\r\033[K… {msg}")
    sys.stderr.flush()


def collect(sections, quick: bool, repeats: int, sizes=None, progress=None,
            dgemm_n: int = 2048) -> dict:
    """Run the sections; return the ``--json`` object."""
    try:
        from benchmarks import harness
    except ImportError as exc:  # pragma: no cover - a broken install
        raise MSAError(f"the benchmarks package is not installed ({exc})") from None
    t_start = time.perf_counter()
    report = {"dgemm_gflops": None, "records": [], "machine": machine_info(),
              "quick": bool(quick), "sections": list(sections), "notes": []}

    def note(msg):
        report["notes"].append(msg)
        _note(msg)

    if progress:
        progress("DGEMM")
    dg = harness.dgemm_measure(dgemm_n, repeats=max(3, repeats))
    report["dgemm_gflops"] = dg["gflops"]
    report["dgemm"] = dg
    if "dgemm" in sections:
        report["records"].append(harness.record(
            "dgemm/numpy-matmul", f"n={dg['n']}", 2.0 * dg["n"] ** 3 / (dg["gflops"] * 1e9),
            None, None, dg["gflops"], threads=dg["threads"], frac_of_dgemm=1.0))
    if "samplers" in sections:
        if importlib.util.find_spec("torch") is None:
            note("torch is not installed (pip install '.[bench]'): PyTorch comparisons "
                 "skipped (torch_s null)")
        try:
            from benchmarks.bench_samplers import sampler_records
        except ImportError:
            note("benchmarks.bench_samplers.sampler_records is not available: "
                 "sampler section skipped")
        else:
            report["records"].extend(sampler_records(quick, dg["gflops"], repeats=repeats,
                                                     progress=progress))
    exponents = {}
    if "theory" in sections:
        from benchmarks import bench_theory
        recs = bench_theory.theory_records(quick, repeats=repeats, sizes=sizes,
                                           progress=progress)
        report["records"].extend(recs)
        exponents.update(bench_theory.theory_exponents(recs))
    if "accuracy" in sections:
        from benchmarks import bench_theory
        report["records"].append(bench_theory.accuracy_record(quick, progress=progress))
    if "scaling" in sections:
        from benchmarks import bench_theory
        exponents.update(bench_theory.sampler_exponents(quick, progress=progress))
    report["exponents"] = exponents
    if "startup" in sections:
        from benchmarks import bench_startup
        if progress:
            progress("cold and warm start (subprocesses)")
        st = bench_startup.measure(repeat=1 if quick else repeats)
        report["startup"] = st
        for key, val in st.items():
            report["records"].append(harness.record(f"startup/{key.removesuffix('_s')}",
                                                    "default", val))
    if progress:
        sys.stderr.write("\r\033[K")
    report["total_s"] = time.perf_counter() - t_start
    try:
        report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    return report


# --------------------------------------------------------------------------- output
def _fmt_t(x) -> str:
    if x is None:
        return "–"
    if x >= 86400:
        return f"{x / 86400:.1f}d"
    if x >= 3600:
        return f"{x / 3600:.1f}h"
    if x >= 60:
        return f"{x / 60:.1f}min"
    if x >= 1.0:
        return f"{x:.2f}s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f}ms"
    return f"{x * 1e6:.1f}µs"


def _fmt_x(x) -> str:
    return "–" if x is None else f"{x:.1f}×"


def _fmt_g(x) -> str:
    return "–" if x is None else f"{x:.1f}"


def _rows(report: dict):
    dg = report.get("dgemm_gflops")
    for r in report["records"]:
        frac = r.get("frac_of_dgemm")
        if frac is None and r.get("gflops") is not None and dg:
            frac = r["gflops"] / dg
        yield (r["name"], str(r["size"]), _fmt_t(r["ours_s"]), _fmt_t(r.get("numpy_s")),
               _fmt_t(r.get("torch_s")), _fmt_x(r.get("speedup_vs_numpy")),
               _fmt_x(r.get("speedup_vs_torch")), _fmt_g(r.get("gflops")),
               "–" if frac is None else f"{100 * frac:.0f}%")


LEGEND = ("times are medians: langevin rows per chain-step (one MALA step of one chain), "
          "theory rows per msa.solve (kernel, eigendecomposition, annealing, observables), "
          "startup rows from process start; vs = reference time / our time, side by side "
          "in one run; GFLOP/s counts the matmul FLOPs a step needs")

HEADERS = ("benchmark", "size", "ours", "numpy", "torch", "vs numpy", "vs torch",
           "GFLOP/s", "of DGEMM")


def _machine_line(report: dict) -> str:
    m = report["machine"]
    dg = report.get("dgemm") or {}
    load, end = m.get("load_average"), m.get("load_average_end")
    threads = dg.get("threads", "?")
    loads = f"load average {load[0] if load else '?'} at start"
    if end:
        loads += f", {end[0]} at the end"
    return (f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, no GPU used; "
            f"DGEMM {report['dgemm_gflops']:.1f} GFLOP/s on {threads} "
            f"thread{'' if threads == 1 else 's'} (numpy {dg.get('n', 2048)}² matmul); {loads}; "
            f"Python {m['python']}, numpy {m['numpy']}"
            + (f"; numba compiles for {m['numba_target']} (ziggurat layers looked up "
               f"{m['ziggurat_lookup']})" if m.get("numba_target") else ""))


def _extras_lines(report: dict) -> list[str]:
    lines = []
    for name, ex in report.get("exponents", {}).items():
        parts = [f"{k} {v:.2f}" for k, v in ex.items() if k in ("P", "N", "d") and v is not None]
        if parts:
            lines.append(f"cost exponent of {name}: " + ", ".join(parts))
    for r in report["records"]:
        if r.get("floor_s") is not None:
            ff = r.get("floor_frac_of_dgemm")
            lines.append(
                f"least time of {r['name']} {r['size']} on this BLAS (its S = WᵀW and W·A "
                f"products alone, {_fmt_t(r['floor_gram_s'])} + "
                f"{_fmt_t(r['floor_product_s'])}, plus its normals on every core): "
                f"{_fmt_t(r['floor_s'])}, {r['floor_gflops']:.1f} GFLOP/s"
                + ("" if ff is None else f" = {100 * ff:.0f}% of DGEMM")
                + f"; ours takes {r['ours_s'] / r['floor_s']:.2f}× that")
        if r["name"].startswith("accuracy/"):
            lines.append(
                f"time to equal accuracy ({r['size']}): one loop {_fmt_t(r['ours_s'])} (rms "
                f"error vs exact {r['one_loop_rms_error_vs_exact']:.2g}); Langevin needs "
                f"~{_fmt_t(r['langevin_s_to_theory_error'])} to reach that standard error "
                f"({r['theory_speedup_at_theory_error']:.3g}× slower) and "
                f"~{_fmt_t(r['langevin_s_to_1pct_std_y'])} to reach 1% of std(y) "
                f"({r['theory_speedup_at_1pct_std_y']:.3g}×)")
    return lines


def target_verdicts(report: dict) -> list[dict]:
    """Issue 7's targets judged on this one report: ``{"target", "measured", "met",
    "note"}`` each (``met`` None where the run lacks what it needs, e.g. PyTorch).  The
    issue asks for medians of repeated runs: one report is one of them.  Where the run
    measured a limit (the noise of the full step, the BLAS floor of the marginal one),
    the note states it, and whether the target lies beyond it."""
    recs = {(r["name"], str(r["size"])): r for r in report["records"]}
    dgemm = report["dgemm_gflops"]
    cores = (report.get("machine") or {}).get("cores") or 1
    out = []

    def add(target, measured, met, note=None):
        out.append({"target": target, "measured": measured, "met": met, "note": note})

    for sampler in ("full", "marginal"):
        r = recs.get((f"langevin/{sampler}/linear", "small"))
        if r is not None:
            for key, ref, want, who in (("speedup_vs_numpy", "numpy_s", 10.0, "NumPy"),
                                        ("speedup_vs_torch", "torch_s", 20.0, "PyTorch")):
                v, noise = r.get(key), r.get("noise_ours_s")
                note = None
                if v is not None and noise:     # what our normals alone would allow
                    note = (f"our normals alone, on all {cores} cores, would be "
                            f"{r[ref] / (noise / cores):.0f}× {who}")
                add(f"small {sampler} linear ≥ {want:g}× {who}",
                    "not run (PyTorch not installed)" if v is None else f"{v:.1f}×",
                    None if v is None else v >= want, note)
    for sampler in ("full", "marginal"):
        r = recs.get((f"langevin/{sampler}/linear", "large"))
        if r is None or not r.get("gflops"):
            continue
        frac = r["gflops"] / dgemm
        note = None
        if r.get("floor_s") and r.get("floor_frac_of_dgemm") is not None:
            ff = r["floor_frac_of_dgemm"]
            note = (f"least time on this BLAS {100 * ff:.0f}% of DGEMM, ours "
                    f"{r['ours_s'] / r['floor_s']:.2f}× it"
                    + ("; 60% lies beyond it: not reachable here" if ff < 0.6 else ""))
        elif r.get("noise_ours_s"):
            bound = r["matmul_flops_per_chain_step"] / (r["noise_ours_s"] / cores) / 1e9 / dgemm
            note = (f"its normals alone, on all {cores} cores, bound it at "
                    f"{100 * bound:.1f}% of DGEMM: not reachable")
        add(f"large {sampler} linear ≥ 60% of DGEMM", f"{100 * frac:.0f}%", frac >= 0.6, note)
    for name in ("exact", "one-loop"):
        r = recs.get((f"theory/{name}", "P=2000"))
        if r is not None:
            add(f"{name} at P = 2000 < 2 s", _fmt_t(r["ours_s"]), r["ours_s"] < 2.0)
    for key, limit, text in (("solve_warm", 2.0, "warm msa solve < 2 s"),
                             ("tui_interactive", 1.5, "TUI interactive < 1.5 s")):
        r = recs.get((f"startup/{key}", "default"))
        if r is not None and r.get("ours_s") is not None:
            add(text, _fmt_t(r["ours_s"]), r["ours_s"] < limit)
    return out


def _verdict(t: dict) -> str:
    return {True: "met", False: "not met", None: "–"}[t["met"]]


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console()
    if not console.is_terminal:
        console = Console(width=132)      # a pipe or a file: no wrapping at 80 columns
    table = Table(title="msa bench" + (" --quick" if report["quick"] else ""),
                  caption=_machine_line(report))
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("benchmark", "size") else "right",
                         no_wrap=True)
    for row in _rows(report):
        table.add_row(*row)
    console.print(table)
    for line in _extras_lines(report):
        console.print(line, highlight=False)
    console.print(f"{LEGEND}; total {report['total_s']:.0f} s", highlight=False)
    if report.get("targets"):
        console.print("targets of issue 7 in this run (the issue judges medians of "
                      "repeated runs):", highlight=False)
        for t in report["targets"]:
            console.print(f"  {_verdict(t):7}  {t['target']}: {t['measured']}"
                          + (f" ({t['note']})" if t["note"] else ""), highlight=False)


def markdown(report: dict) -> str:
    out = [f"Machine: {_machine_line(report)}.", "", f"{LEGEND[0].upper()}{LEGEND[1:]}.", "",
           "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in _rows(report):
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    out.append("")
    out.extend(f"- {line}" for line in _extras_lines(report))
    out.append("")
    if report.get("targets"):
        out += ["| target (issue 7) | this run | | |", "|---|---|---|---|"]
        out += [f"| {t['target']} | {t['measured']} | {_verdict(t)} | {t['note'] or ''} |"
                for t in report["targets"]]
        out.append("")
    return "\n".join(out)
