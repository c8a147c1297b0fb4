"""Reading sessions back: side-by-side comparison, error against the exact
reference, simulation-against-theory z-scores, and reproduction checks."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from itertools import groupby

import numpy as np

from .errors import MSAError
from .results import convergence_message
from .sessions import Session, _chi_key
from .theory import available_theories, solve


def _rms(a, b) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(a, float) - np.asarray(b, float)))))


def main_point(session: Session, chi: float | None = None, N: int | None = None):
    net = session.config["network"]
    return (_chi_key(chi if chi is not None else net["chi"]), int(N if N is not None else net["N"]))


def point_summaries(session: Session, chi: float, N: int, recompute: bool = False) -> dict:
    """{"theories": {name: summary}, "simulations": {name: summary}} at one point.

    With ``recompute`` every available theory is solved afresh from the
    session's problem instead of read from the file.
    """
    theories, sims = {}, {}
    if recompute:
        pb = session.problem(chi=chi, N=N)
        stored = {e["name"]: e for e in session.find("theory", chi=chi, N=N)}
        for name in available_theories(pb.network.activation):
            # with the seed and [theory] options the stored entry ran with, as replay
            # --rerun does: a Monte Carlo saddle's numbers depend on them
            e = stored.get(name, {})
            theories[name] = solve(pb, name, seed=e.get("seed"),
                                   options=e.get("options")).to_json_dict()
    else:
        for e in session.find("theory", chi=chi, N=N):
            theories[e["name"]] = e["summary"]
    for e in session.find("simulation", chi=chi, N=N):
        sims[e["name"]] = e["summary"]
    return {"theories": theories, "simulations": sims}


def z_scores(sim: dict, theory: dict, which: str = "test") -> dict:
    """z of a theory's mean predictor against a simulation's, using the simulation's
    standard errors plus the theory's own Monte Carlo error where it has one."""
    m, se = np.asarray(sim[f"{which}_mean"]), np.asarray(sim[f"{which}_mean_se"])
    t = np.asarray(theory[f"{which}_mean"])
    tse = np.asarray(theory.get(f"{which}_mean_se") or np.zeros_like(t))
    z = (m - t) / np.sqrt(se ** 2 + tse ** 2)
    return {"max_abs_z": float(np.max(np.abs(z))), "mean_z2": float(np.mean(z ** 2))}


def compare(sessions: list[Session], chi: float | str | None = None, N: int | None = None,
            recompute: bool = False) -> dict:
    """The comparison table of ``msa compare`` as a JSON-ready dict: each session at
    ``chi`` (``"N"``: its mean field) and width ``N``, by default its own."""
    out = []
    for s in sessions:
        width = N if N is not None else int(s.config["network"]["N"])
        c, n = main_point(s, float(width) if chi == "N" else chi, N)
        pts = point_summaries(s, c, n, recompute)
        if not pts["theories"] and not pts["simulations"]:
            have = sorted({(e["chi"], e["N"]) for e in s.find()})
            where = ", ".join(f"({x:g}, {m})" for x, m in have[:8]) + \
                (", …" if len(have) > 8 else "")
            raise MSAError(f"session {s.name!r} has no results at chi = {c:g}, N = {n}; "
                           f"it has (chi, N) = {where or 'none'}: choose with --chi and "
                           "--width")
        th = pts["theories"]
        exact = th.get("exact")
        rows = {}
        for name, summ in th.items():
            r = {k: summ.get(k) for k in ("train_discrepancy", "test_discrepancy", "Q",
                                          "test_variance", "weight_cov_top_eigenvalue",
                                          "weight_cov_excess", "weight_cov_teacher_overlap")}
            if exact is not None:
                r["train_error_vs_exact"] = _rms(summ["train_mean"], exact["train_mean"])
                r["test_error_vs_exact"] = _rms(summ["test_mean"], exact["test_mean"])
            rows[name] = r
        sims = {}
        for name, summ in pts["simulations"].items():
            sims[name] = {k: summ.get(k) for k in ("train_discrepancy", "test_discrepancy",
                                                   "rhat_max", "ess_min",
                                                   "weight_cov_top_eigenvalue",
                                                   "weight_cov_top_eigenvalue_se")}
            sims[name]["warning"] = convergence_message(summ)
            sims[name]["converged"] = sims[name]["warning"] is None
            sims[name]["z_test"] = {t: z_scores(summ, ts, "test") for t, ts in th.items()}
            sims[name]["z_train"] = {t: z_scores(summ, ts, "train") for t, ts in th.items()}
        net = s.config["network"]
        out.append({"name": s.name, "path": str(s.path) if s.path else None, "chi": c, "N": n,
                    "gamma": 1.0 + (math.log(c) / math.log(n) if n > 1 else 0.0),
                    "activation": net["activation"], "theories": rows, "simulations": sims,
                    "recomputed": recompute})
    return {"sessions": out, "highlights": highlights(out)}


def highlights(cols: list[dict]) -> list[str]:
    """Sentences that state where the regimes differ, from the numbers."""
    lines = []
    for col in cols:
        for name, sim in col["simulations"].items():
            if sim.get("warning"):
                # its z-scores measure how far the chains still were from equilibrium
                lines.append(f"{col['name']}: {name} at χ={col['chi']:g}, N={col['N']} is "
                             f"{sim['warning']}; its z-scores against the theories test nothing")
        th = col["theories"]
        if "exact" not in th:
            continue
        errs = {k: v["test_error_vs_exact"] for k, v in th.items() if k != "exact"}
        if not errs:
            continue
        best = min(errs, key=errs.get)
        regime = ("mean-field" if abs(col["gamma"] - 2) < 1e-9 else
                  "standard" if abs(col["chi"] - 1) < 1e-12 else f"γ={col['gamma']:.2f}")
        msg = f"{col['name']} ({regime}, χ={col['chi']:g}, N={col['N']}): closest to exact is {best}"
        if "tree" in errs and "nngp" in errs and errs["nngp"] > 0:
            msg += f"; tree error / NNGP error = {errs['tree'] / errs['nngp']:.3g}"
        lines.append(msg)
    return lines


# ---------------------------------------------------------------------------
# reproduction (msa replay --rerun)
# ---------------------------------------------------------------------------

THEORY_KEYS = ("train_mean", "test_mean", "train_discrepancy", "test_discrepancy",
               "test_variance", "Q", "log_evidence", "weight_cov_top_eigenvalue")


def _max_rel(a, b) -> float:
    """``max|a − b| / max(|a|, |b|)`` over an array: the difference relative to the
    array's scale (norm-wise, ∞-norm; for scalars the plain relative difference).
    Element by element, a test mean of −0.0041 among values up to 3.6 differed by
    1.1e-12 relative (5e-15 absolute, 1.5e-15 of the array's scale) between two
    machines' BLAS: that measures cancellation in one small entry, not reproduction."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else math.inf
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        return math.inf
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if np.any(nan_a != nan_b):            # a NaN on one side only
        return math.inf
    differ = (a != b) & ~nan_a            # equal entries (infinities included) and NaN pairs agree
    if not np.any(differ):
        return 0.0
    ad, bd = a[differ], b[differ]
    if not (np.all(np.isfinite(ad)) and np.all(np.isfinite(bd))):
        return math.inf
    finite = np.isfinite(a) & np.isfinite(b)
    scale = float(max(np.max(np.abs(a[finite])), np.max(np.abs(b[finite]))))
    return float(np.max(np.abs(ad - bd))) / scale


def rerun(session: Session, rtol: float = 1e-12, callback=None) -> dict:
    """Recompute every entry of ``session`` and report whether it is reproduced.

    Theories must agree to ``rtol`` relative to each quantity's scale (:func:`_max_rel`;
    sweep entries are recomputed
    along the same annealing chain).  Simulations must agree bit for bit with
    the same seed, and in any case within error bars (|z| ≤ 4.5).
    """
    from .sweep import run_theory_chain
    report = []
    chains = defaultdict(list)
    for e in session.find("theory"):
        if e.get("via") == "sweep-chain":
            chains[(e["name"], e["N"])].append(e)
        else:
            new = solve(session.problem(chi=e["chi"], N=e["N"]), e["name"],
                        seed=e.get("seed"), options=e.get("options")).to_json_dict()
            report.append(_theory_report(e, new, rtol))
    for (name, N), es in chains.items():
        es.sort(key=lambda e: e["chi"])
        # the chain's points below its first kept one that the session no longer holds as
        # chain points (replaced by a standalone run, e.g. `r` in the TUI, or failed):
        # the kept ones were warm-started through them, so they are recomputed first
        # (with the sweep's point seeds), and not reported
        lead = _missing_chain_start(session, name, N, es[0]["chi"])
        # Along χ, in runs of equal [theory] options: a later sweep with other options
        # (or --resume) continued the chain from the last saddle below its first point,
        # so each run is recomputed warm-started from the run before it.
        warm = None
        for _, run in groupby(es, key=lambda e: json.dumps(e.get("options") or {},
                                                           sort_keys=True)):
            run = list(run)
            chis = [c for c, _ in lead] + [e["chi"] for e in run]
            seeds = [sd for _, sd in lead] + [e.get("seed") for e in run]
            new_entries = run_theory_chain(session.problem(N=N), name, chis,
                                           warm=warm, callback=callback, seeds=seeds,
                                           options=run[0].get("options"))[len(lead):]
            lead = []
            for e, n in zip(run, new_entries):
                report.append(_theory_report(e, n["summary"], rtol))
            last = new_entries[-1]
            warm = {"chi": last["chi"], "tbar": last.get("warm_tbar") or last.get("tbar")}
    for e in session.find("simulation"):
        from .sweep import run_simulation_task
        opts = dict(e.get("options") or {})
        seed = opts.pop("seed", e.get("seed"))
        if seed is None:
            report.append({"kind": "simulation", "name": e["name"], "chi": e["chi"], "N": e["N"],
                           "reproduced": False, "detail": "no seed recorded"})
            continue
        new = run_simulation_task(session.problem(chi=e["chi"], N=e["N"]), opts, seed)["summary"]
        old = e["summary"]
        identical = (np.array_equal(old["test_mean"], new["test_mean"])
                     and np.array_equal(old["train_mean"], new["train_mean"]))
        se = np.sqrt(np.square(old["test_mean_se"]) + np.square(new["test_mean_se"]))
        z = float(np.max(np.abs((np.asarray(old["test_mean"]) - new["test_mean"]) / se)))
        report.append({"kind": "simulation", "name": e["name"], "chi": e["chi"], "N": e["N"],
                       "bit_identical": bool(identical), "max_abs_z": z,
                       "reproduced": bool(identical or z <= 4.5)})
    ok = all(r["reproduced"] for r in report)
    return {"session": session.name, "reproduced": ok, "entries": report, "rtol": rtol}


def _missing_chain_start(session: Session, name: str, N: int, first: float) -> list:
    """``(χ, seed)`` of the sweep's grid points below ``first`` that the session holds
    no chain entry of ``name`` for, when its sweep spec records the grid and base seed."""
    from .sweep import point_seed, resolve_chis
    spec = session.sweep or {}
    if not spec.get("chis") or "seed" not in spec or name not in (spec.get("theories") or ()):
        return []
    # (a failed point is not recomputed: the chain stopped there, and what came after it
    # came from a later, warm-started run)
    held = {_chi_key(e["chi"]) for e in session.find("theory", name, N=N, ok_only=False)
            if e.get("via") == "sweep-chain" or e.get("status") != "ok"}
    return [(c, point_seed(spec["seed"], N, c)) for c in resolve_chis(spec["chis"], N)
            if c < _chi_key(first) and c not in held]


def _theory_report(old_entry: dict, new: dict, rtol: float) -> dict:
    old = old_entry["summary"]
    worst = max(_max_rel(old.get(k), new.get(k)) for k in THEORY_KEYS)
    return {"kind": "theory", "name": old_entry["name"], "chi": old_entry["chi"],
            "N": old_entry["N"], "max_rel_diff": worst, "reproduced": bool(worst <= rtol)}
