"""The resource guard: estimate a problem's memory before allocating it, and refuse
one that would not fit (issue 8, "Resource guard").

A solve needs P×P kernels and their eigenvectors (plus d×d matrices for the
linear saddle theories and a quadrature grid for the exact posterior); a
simulation needs the chains' state (chains·N·d), Gaussian noise, and the stored
traces (chains·draws·(P + P*)); a generated data set needs (P + P*)·d.  The
estimates below count the large arrays with the temporaries that NumPy makes
along the way; they are meant to be right within a factor of about two, which
is enough to refuse a problem that would otherwise be killed by the operating
system half-way through.

What is available is read from ``/proc/meminfo`` (``MemAvailable``) and, when
the process runs in a control group with a memory limit, from that limit minus
the group's current usage (the smaller wins).  Elsewhere ``os.sysconf`` gives the
free physical pages.  The environment variable ``MSA_MEMORY_LIMIT`` overrides the
detection: a size such as ``8G`` or ``512M`` (or a number of bytes) is taken as
the memory available, and ``off`` disables the guard.  When nothing can be
detected the guard lets every problem through.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from .errors import MSAError

ENV_LIMIT = "MSA_MEMORY_LIMIT"
DOUBLE = 8
# quadrature nodes of the exact posterior at the default half-width (25 widths,
# 40 nodes per width; see theory/exact.py)
EXACT_NODES = 2 * 25 * 40 + 1
_SUFFIX = {"": 1, "B": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
_LINEAR_SADDLE = ("tree", "one-loop", "exact")


def format_bytes(n: float) -> str:
    """``1536 → '1.5 KiB'``; used in every refusal message."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def parse_size(text: str) -> int | None:
    """``'8G' → 8·2³⁰``, ``'off' → None``; anything else raises :class:`MSAError`."""
    t = str(text).strip().upper().replace("IB", "").replace(" ", "")
    if t in ("OFF", "NONE", "0", "NO", "FALSE"):
        return None
    unit = t[-1] if t and t[-1] in _SUFFIX else ""
    try:
        v = float(t[: len(t) - len(unit)] if unit else t)
    except ValueError:
        v = float("nan")
    if not math.isfinite(v) or v <= 0:
        raise MSAError(f"{ENV_LIMIT} must be a size such as 8G or 512M, or 'off' (got {text!r})")
    return int(v * _SUFFIX[unit])


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _cgroup_available() -> int | None:
    """Limit minus usage of the memory control group (v2, else v1), if limited."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_int(limit_file)
        if limit is None or limit >= 2 ** 60:     # "max", or v1's "unlimited" sentinel
            continue
        usage = _read_int(usage_file) or 0
        return max(limit - usage, 0)
    return None


def _sysconf_available() -> int | None:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def available_memory() -> tuple[int | None, str]:
    """``(bytes, source)`` of the memory a new allocation can use; ``(None, why)`` when
    there is no limit to enforce (the guard is off or nothing could be detected)."""
    env = os.environ.get(ENV_LIMIT)
    if env is not None and env.strip():
        size = parse_size(env)
        return (size, f"{ENV_LIMIT}={env.strip()}") if size is not None else (None, f"{ENV_LIMIT}=off")
    found = [(v, src) for v, src in ((_meminfo_available(), "MemAvailable in /proc/meminfo"),
                                     (_cgroup_available(), "the control group's memory limit"))
             if v is not None]
    if found:
        return min(found)
    v = _sysconf_available()
    if v is not None:
        return v, "free physical pages (os.sysconf)"
    return None, "undetectable"


def check_memory(need: int, what: str, advice: str) -> None:
    """Raise :class:`MSAError` when ``need`` bytes exceed the available memory."""
    avail, source = available_memory()
    if avail is not None and need > avail:
        raise MSAError(f"not enough memory: {what} needs about {format_bytes(need)}, but only "
                       f"{format_bytes(avail)} is available ({source}); {advice}")


# --------------------------------------------------------------------------- estimates
def estimate_data(rows: int, d: int) -> int:
    """Bytes to generate ``rows × d`` inputs: the array, its float copy in :class:`Data`
    and the targets."""
    return DOUBLE * (3 * int(rows) * int(d) + 4 * int(rows))


def estimate_solve(P: int, P_test: int, d: int, theory: str) -> int:
    """Bytes for one theory: the P×P kernel, its eigenvectors and eigh's workspace,
    the P*×P test kernel and its rotation (with the kernel's temporaries); the linear
    saddle theories add d×d and P×d matrices, the exact posterior its quadrature grid."""
    P, Ps, d = int(P), int(P_test), int(d)
    n = 6 * P * P + 5 * P * Ps + 4 * (P + Ps)
    if theory in _LINEAR_SADDLE:
        n += 4 * d * d + 3 * P * d + 2 * Ps * d
    if theory == "exact":
        n += 3 * EXACT_NODES * (P + Ps)
    return DOUBLE * n


def estimate_simulation(P: int, P_test: int, d: int, N: int, sampler: str, chains: int,
                        steps: int, thin: int, woodbury: bool = False,
                        linear: bool = False) -> int:
    """Bytes for a simulation: chains·N·d for the state and its gradient, the kernels'
    per-chain scratch, the traces chains·draws·(P + P*) with the copies made for
    the result and its diagnostics, the per-chain accumulators chains·(P² + 10 d²) and
    the per-step temporaries.  ``woodbury``: the ``d×d`` path of a linear φ with ``P > d``,
    which keeps no ``P×P`` accumulator (nor, for the marginal sampler, ``P×P`` scratch);
    ``linear``: a linear φ (the full step keeps no ``P×N`` buffers)."""
    from .sampling.run import N_BATCHES, workspace_doubles   # lazy: run imports this module

    P, Ps, d, N, C = int(P), int(P_test), int(d), int(N), int(chains)
    ndim = N * d + (N if sampler == "full" else 0)
    m = max(int(steps) // max(int(thin), 1), 0)
    nbatch = max(1, min(N_BATCHES, m))
    n = (3 * C * ndim                                  # W (and a), their gradients, init
         + workspace_doubles(P, N, d, sampler, C, woodbury, linear)   # kernels' scratch
         + 3 * C * m * (P + Ps + 3)                    # traces, result copies, diagnostics
         + C * ((0 if woodbury else P * P) + nbatch * d * d + Ps)   # accumulators
         + 4 * N * d + 4 * (P + Ps) * N                # per-step and initial-step
         + (2 if woodbury else 5) * P * P)             # temporaries (⟨K⟩ of the result)
    return DOUBLE * n


# --------------------------------------------------------------------------- guards
def _shape(problem) -> tuple[int, int, int]:
    data = problem.data
    return data.P, data.P_test, data.d


def check_data(rows: int, d: int) -> None:
    check_memory(estimate_data(rows, d), f"generating {rows} × {d} inputs",
                 "use a smaller d, P or P_test")


def estimate_tilted(P: int, P_test: int, d: int, options: dict | None = None) -> int:
    """Bytes for the sample sets of a non-linear ``tree``/``one-loop`` (theory/nonlinear.py):
    the MCMC draws (chains × final draws) and the two Gaussian importance-sampling sets
    (the working set and the fresh one), each sample holding its coordinates twice
    (``m = min(P, d)``) and φ, φ' on the train and test points.  Measured: 0.65 GB peak for
    d = 10, P = 16, P* = 40 (this estimate: 0.6 GB); it grows linearly in P + P*.
    ``options`` (a ``[theory]`` table) change the chains, draws, groups and IS set sizes."""
    from .theory.options import merged_options
    o = merged_options(options)
    P, Ps, d = int(P), int(P_test), int(d)
    m = min(P, d)
    per = 2 * m + 2 * P + 2 * Ps
    n_mc = o["chains"] * o["final_draws"]
    return DOUBLE * (2 * o["is_samples"] * per + n_mc * per + o["groups"] * (P + Ps) * P)


def _solve_need(problem, theory: str, options: dict | None = None) -> int:
    P, Ps, d = _shape(problem)
    need = estimate_solve(P, Ps, d, theory)
    if problem.network.activation != "linear" and theory in ("tree", "one-loop"):
        need += estimate_tilted(P, Ps, d, options)
    return need


def check_solve(problem, theory: str, options: dict | None = None) -> None:
    P, Ps, d = _shape(problem)
    check_memory(_solve_need(problem, theory, options),
                 f"theory {theory!r} for P = {P}, P_test = {Ps}, d = {d}",
                 "use fewer training or test points" +
                 (" (or a smaller d)" if theory in _LINEAR_SADDLE else ""))


def _woodbury(problem, sampler: str) -> bool:
    """Whether the run takes the d×d path: a linear φ with P > d (the marginal sampler's
    step; both samplers' observables, which then keep no P×P accumulator)."""
    if problem.network.activation != "linear":
        return False
    import numpy as np  # noqa: PLC0415

    from .sampling.marginal import woodbury_applies  # noqa: PLC0415 - lazy (scipy)

    return woodbury_applies(np.asarray(problem.data.X_train, dtype=float), "linear")


def check_simulation(problem, sampler: str, chains: int, steps: int, thin: int) -> None:
    P, Ps, d = _shape(problem)
    N = problem.network.N
    check_memory(estimate_simulation(P, Ps, d, N, sampler, chains, steps, thin,
                                     _woodbury(problem, sampler),
                                     problem.network.activation == "linear"),
                 f"simulating {chains} chain(s) × {steps} steps of N = {N}, d = {d}, "
                 f"P = {P}, P_test = {Ps}",
                 "use fewer chains, a smaller N, or thin the traces (thin > 1)")


def _as_int(v, default: int) -> int | None:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        return None          # invalid: simulate() itself reports it at that point
    return v


def check_sweep(problem, widths: Sequence[int] | None, theories: Iterable[str],
                simulate: bool, sim_options: dict | None,
                theory_options: dict | None = None) -> None:
    """Refuse a sweep whose largest point would not fit, before it starts."""
    P, Ps, d = _shape(problem)
    theories = list(theories)
    Ns = [int(n) for n in widths] if widths else [problem.network.N]
    best = (0, "", "")
    for th in theories:
        need = _solve_need(problem, th, theory_options)
        if need > best[0]:
            best = (need, f"the sweep's theory {th!r} for P = {P}, P_test = {Ps}, d = {d}",
                    "use fewer training or test points")
    if simulate:
        opts = dict(sim_options or {})
        chains, steps, thin = (_as_int(opts.get("chains"), 4), _as_int(opts.get("steps"), 2000),
                               _as_int(opts.get("thin"), 1))
        sampler = opts.get("sampler", "marginal")
        if None not in (chains, steps, thin) and min(chains, steps, thin) >= 1:
            wood = _woodbury(problem, sampler)
            for N in Ns:
                need = estimate_simulation(P, Ps, d, N, sampler, chains, steps, thin, wood,
                                           problem.network.activation == "linear")
                if need > best[0]:
                    best = (need, f"the sweep's simulation at N = {N} ({chains} chain(s) × "
                                  f"{steps} steps, d = {d}, P = {P})",
                            "use fewer chains, smaller widths, or thin the traces")
    if best[0]:
        check_memory(*best)
