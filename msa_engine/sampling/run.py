"""The chunked simulation driver: :func:`simulate`, :class:`ChunkRecord`, :class:`SimulationResult`.

A run advances ``chains`` independent chains for ``burn_in + steps`` Langevin
steps in chunks of ``chunk`` steps (THEORY §7).  Between chunks — never inside
one — the driver reports a :class:`ChunkRecord` to the callback, writes the
checkpoint (when due, :class:`_CheckpointWriter`), and honours cancellation.  The
random numbers all derive from one ``SeedSequence(seed)``: a numpy generator for the
initial state, and one stream per chain drawn inside the kernels (W noise, a noise,
Metropolis uniform, :mod:`.rng_numba`), each consumed strictly in order, so a
run is a pure function of its seed, does not depend on the number of threads,
and a resumed run replays the uninterrupted one bit for bit.

Error bars are honest: every ``*_se`` is ``sd/√ESS`` with the ESS of Vehtari et
al. (2021) computed from the stored traces (:mod:`msa_engine.diagnostics`), and
the discrepancies' errors come from the trace of their linearisation, so that
the correlations between output points are accounted for.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .. import diagnostics as diag
from ..errors import Cancelled, MSAError, MSAWarning
from ..kernels import nngp_kernel
from ..pacing import WritePacer
from ..problem import Problem, check_problem
from ..resources import check_simulation
from ..threads import run_split, usable_cores
from ..results import ESS_OK, RHAT_OK, TheoryResult, convergence_message
from . import kernels_numba as kn
from .langevin import METHODS, TARGET_ACCEPTANCE, FullSampler
from .marginal import MarginalSampler
from .rng_numba import seed_states

SAMPLERS = {"marginal": MarginalSampler, "full": FullSampler}
CHECKPOINT_VERSION = 3          # 2: one random stream per chain; 3: lane streams (issue 7)
RESUMABLE_VERSIONS = (2, 3)     # a version-2 run resumes on its single-state streams
ADAPT_RATE = 0.1            # Robbins-Monro gain on log h per step during burn-in
N_BATCHES = 10              # batches per chain for the batch-means error of Σ_W
TRACE_BUDGET = 2 ** 30      # bytes of stored traces before we ask for thinning
DIAG_SERIES = 32            # output points per set used for the per-chunk R̂/ESS
DIAG_DRAWS = 512            # draws per chain (evenly strided) for the per-chunk R̂/ESS
DIAG_GROWTH = 0.1           # per-chunk R̂/ESS again once the trace grew by this fraction
DIAG_MIN_NEW = 50           # … and by at least this many draws
DIAG_BATCH = 1 << 21        # draws (all chains) per batch of series for R̂/ESS
BLAS_THREADS_FLOPS = 2e8    # matmul flops per chain-step above which BLAS gets spare cores


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ChunkRecord:
    """Progress after one chunk: what a progress bar or a live plot needs.

    ``steps_done``/``steps_total`` count sampler steps (each advances every chain)
    including burn-in; statistics are NaN until four post-burn-in draws exist.
    ``acceptance`` is the mean Metropolis acceptance probability over the chunk.
    """

    stage: str
    chi: float
    steps_done: int
    steps_total: int
    train_discrepancy: float
    train_discrepancy_se: float
    test_discrepancy: float
    test_discrepancy_se: float
    rhat_max: float
    ess_min: float
    acceptance: float
    step_size: float
    steps_per_second: float
    eta_seconds: float
    burn_in: bool = False
    energy: float = float("nan")
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, eq=False, repr=False)     # TheoryResult's summary repr
class SimulationResult(TheoryResult):
    """A simulation's estimates, shaped like a :class:`TheoryResult` (it is one), so
    that every caller can treat theories and simulations alike.

    ``train_mean_se``/``test_mean_se`` are Monte Carlo standard errors from the
    ESS.  ``Q = ⟨χ|a|²⟩`` (Rao-Blackwellised).  ``log`` holds the
    :class:`ChunkRecord` of every chunk; ``traces`` the stored post-burn-in traces
    (``chains × draws × …``) for :meth:`export_traces`.
    """

    sampler: str = "marginal"
    method: str = "mala"
    chains: int = 0
    steps: int = 0
    burn_in: int = 0
    thin: int = 1
    step_size: float = float("nan")
    acceptance: float = float("nan")
    rhat_max: float = float("nan")
    ess_min: float = float("nan")
    steps_per_second: float = float("nan")
    weight_cov_top_eigenvalue_se: float = float("nan")
    train_discrepancy_se: float = float("nan")
    test_discrepancy_se: float = float("nan")
    Q_se: float = float("nan")
    autocorr_times: dict = field(default_factory=dict)
    traces: dict = field(default_factory=dict, repr=False)

    def _repr_extra(self) -> list:
        return [f"test_discrepancy_se={self.test_discrepancy_se:.3g}",
                f"sampler={self.sampler!r}", f"method={self.method!r}",
                f"chains={self.chains}", f"steps={self.steps}", f"step_size={self.step_size:.3g}",
                f"acceptance={self.acceptance:.3g}", f"rhat_max={self.rhat_max:.4g}",
                f"ess_min={self.ess_min:.0f}"]

    @property
    def train_discrepancy_corrected(self) -> float:
        """``mean (y − f̂)²`` overestimates by the mean ``se²``; this subtracts it."""
        return self.train_discrepancy - float(np.mean(np.square(self.train_mean_se)))

    @property
    def test_discrepancy_corrected(self) -> float:
        return self.test_discrepancy - float(np.mean(np.square(self.test_mean_se)))

    def to_json_dict(self) -> dict:
        out = super().to_json_dict()
        out.update({
            "rhat_max": self.rhat_max, "ess_min": self.ess_min,
            "steps_per_second": self.steps_per_second,
            "weight_cov_top_eigenvalue_se": self.weight_cov_top_eigenvalue_se,
            "train_discrepancy_se": self.train_discrepancy_se,
            "test_discrepancy_se": self.test_discrepancy_se,
            "train_discrepancy_corrected": self.train_discrepancy_corrected,
            "test_discrepancy_corrected": self.test_discrepancy_corrected,
            "Q_se": self.Q_se, "acceptance": self.acceptance, "step_size": self.step_size,
            "sampler": self.sampler, "method": self.method, "chains": self.chains,
            "steps": self.steps, "burn_in": self.burn_in, "thin": self.thin,
            "autocorr_times": dict(self.autocorr_times),
        })
        return out

    def export_traces(self, path: str | os.PathLike) -> None:
        """Write the post-burn-in traces (``chains × draws × …``) to an ``.npz``."""
        try:
            with open(path, "wb") as fh:
                np.savez(fh, **self.traces)
        except OSError as exc:
            raise MSAError(f"cannot write traces to {str(path)!r}: {exc.strerror or exc}") from None

    def to_inference_data(self):
        """The traces as an ArviZ ``InferenceData``/``DataTree`` (needs ``arviz``)."""
        try:
            import arviz as az  # noqa: PLC0415 - optional
        except ImportError:
            raise MSAError("exporting to InferenceData needs arviz (pip install arviz)") from None
        return az.from_dict({"posterior": dict(self.traces)})


# --------------------------------------------------------------------------- helpers
def _check_int(name: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise MSAError(f"{name} must be an integer >= {minimum} (got {v!r})")
    if v < minimum:
        raise MSAError(f"{name} must be an integer >= {minimum} (got {v!r})")
    return int(v)


def _fingerprint(problem: Problem) -> str:
    h = hashlib.sha256()
    d = problem.data
    for arr in (d.X_train, d.y_train, d.X_test, d.y_test):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(json.dumps(problem.network.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _initial_log_step(problem: Problem, ndim: int) -> float:
    """A stable starting step in whitened units: the data curvature of the read-out
    is ``λ_max(K₀)/κ`` (THEORY §7), and MALA's optimal step shrinks like ``n^{-1/3}``."""
    net, data = problem.network, problem.data
    K0 = net.g_a * nngp_kernel(net.activation, data.X_train, g_w=net.g_w)
    lam = float(np.linalg.eigvalsh(K0)[-1])
    with np.errstate(over="ignore"):
        ratio = lam / net.kappa
    if not math.isfinite(ratio):     # κ = 1e-320: a math domain error escaped here
        raise MSAError(f"κ = {net.kappa:g} is too small against the kernel's scale "
                       f"({lam:.3g}) to choose a step size: give a step size or a larger κ")
    return math.log(1.0 / (1.0 + ratio) / ndim ** (1.0 / 3.0))


def _linear_se(x: np.ndarray, w: np.ndarray) -> float:
    """MCSE of ``Σ_α w_α x_α`` from its trace: delta-method error bars that keep the
    correlations between output points (``x`` is ``chains × draws × P``)."""
    return float(diag.mcse_mean(x @ w))


def _discrepancy(x: np.ndarray, y: np.ndarray):
    """``mean (y − f̄)²`` and its delta-method standard error from the trace ``x``."""
    fbar = x.mean(axis=(0, 1))
    D = float(np.mean((y - fbar) ** 2))
    if x.shape[1] < 4:
        return D, float("nan")
    return D, _linear_se(x, 2.0 * (fbar - y) / y.size)


def _subset(n: int, k: int = DIAG_SERIES) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


def workspace_doubles(P: int, N: int, d: int, sampler: str, chains: int,
                      woodbury: bool = False, linear: bool = False) -> int:
    """Doubles of the samplers' per-chain scratch (an upper bound; ``woodbury``: the
    marginal sampler's ``d×d`` path; ``linear``: a linear φ, whose full step keeps no
    ``P×N`` buffers) — for the memory guard of :mod:`msa_engine.resources`."""
    if sampler == "full":
        pn = 0 if linear else 3 * P * N        # Φ double-buffered, φ'
        return chains * (2 * N * d + 2 * N + pn + P + 2 * d + 3)
    if woodbury:
        return chains * (2 * N * d + 5 * d * d + 2 * d + 8)
    return chains * (2 * N * d + 4 * P * N + 4 * P * P + 2 * P)


def _strided(m: int, k: int = DIAG_DRAWS) -> slice:
    """Every ``⌈m/k⌉``-th of ``m`` draws: at most ``k`` of them.  Progress records use
    this so that the cost of a chunk's R̂/ESS does not grow with the trace (issue 7);
    the final result uses every draw."""
    return slice(0, m, max(1, -(-m // k)))


def _rhat_ess(series: list[np.ndarray], threads: int | None = None) -> tuple[float, float]:
    """Max split-R̂ and min bulk/tail ESS over a list of ``chains × draws (× k)`` arrays
    (of equal chains and draws).  :func:`diag.rhat_ess` works series by series, so the
    series are cut into equal column ranges, the same number for each of ``threads``
    threads (default one per core; numpy's sorts and FFTs and our kernels release the
    GIL), of at most about :data:`DIAG_BATCH` draws in flight all threads together (the
    final result's temporaries are several times their size): fewer threads when one
    column each would exceed that.  Neither the cut nor the threads change a number
    (tested)."""
    if series[0].shape[1] < 4:
        return float("nan"), float("nan")
    C, m = series[0].shape[:2]
    parts = [s.reshape(C, m, -1) for s in series]
    starts = np.cumsum([0] + [a.shape[2] for a in parts])
    K = int(starts[-1])
    if K == 0:
        return float("nan"), float("nan")
    threads = usable_cores() if threads is None else int(threads)
    threads = max(1, min(threads, K, DIAG_BATCH // (C * m)))          # memory
    ranges = -(-K // max(1, DIAG_BATCH // (C * m * threads)))
    ranges = min(K, -(-ranges // threads) * threads)             # a whole number per thread
    cuts = [round(i * K / ranges) for i in range(ranges + 1)]

    def job(_, cols):
        pieces = [a[:, :, max(cols.start - o, 0):min(cols.stop - o, a.shape[2])]
                  for a, o in zip(parts, starts[:-1])
                  if o < cols.stop and o + a.shape[2] > cols.start]
        rb, eb, et = diag.rhat_ess(pieces[0] if len(pieces) == 1
                                   else np.concatenate(pieces, axis=2))
        return np.ravel(rb), np.concatenate([np.ravel(eb), np.ravel(et)])

    out = run_split(job, [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])], blas=None,
                    threads=threads)
    r = np.concatenate([o[0] for o in out])
    e = np.concatenate([o[1] for o in out])
    rmax = float(np.nanmax(r)) if np.any(np.isfinite(r)) else float("nan")
    return rmax, float(np.nanmin(e))


# --------------------------------------------------------------------------- the run
class _Run:
    """All state of one simulation; everything in ``ARRAYS`` is checkpointed."""

    ARRAYS = ("log_h", "lh_stats", "acc", "acc_burn", "tr_ftr", "tr_fte", "tr_Q", "tr_E",
              "tr_slow", "vte", "Kacc", "SWb", "rng")

    def __init__(self, problem, sampler, chains, steps, burn_in, thin, method, step_size,
                 seed, chunk, threads=None):
        self.problem, self.chains, self.steps = problem, chains, steps
        self.threads = min(chains, usable_cores() if threads is None else threads)
        # spare threads go to BLAS only on request (threads > chains): on a loaded
        # machine two OpenBLAS threads made the large marginal step 7× slower
        self.threads_requested = threads if threads is not None else 1
        # the R̂/ESS split their series between as many threads as asked for (a sweep's
        # workers ask for one each), else one per core, whatever the number of chains
        self.diag_threads = usable_cores() if threads is None else threads
        self._diag, self._diag_m = None, -1
        self.prior_log: list = []   # chunk records of a checkpoint's run before the resume
        self.burn_in, self.thin, self.method, self.seed = burn_in, thin, method, seed
        self.chunk = chunk
        self.step_size = step_size
        self.sampler = SAMPLERS[sampler](problem)
        data = problem.data
        self.X = np.array(data.X_train, dtype=float)
        self.Xs = np.array(data.X_test, dtype=float)
        self.y = np.array(data.y_train, dtype=float)
        u = self.X.T @ self.y
        if not np.any(u):
            u = np.eye(data.d)[0]
        self.u_slow = u / np.linalg.norm(u)
        self.m_total = steps // thin
        self.nbatch = max(1, min(N_BATCHES, self.m_total))
        C, P, Ps, d = chains, data.P, data.P_test, data.d
        kacc = 0 if getattr(self.sampler, "uses_woodbury", False) else P * P   # see Kacc
        need = 8 * C * self.m_total * (P + Ps + 3) + 8 * C * (self.nbatch * d * d + kacc)
        if need > TRACE_BUDGET:
            raise MSAError(f"the traces would need {need / 2**30:.1f} GiB; "
                           f"thin the chains (thin > {thin}) or run fewer steps")
        self.total = burn_in + steps
        self.adaptive = step_size is None
        self.log_h = np.array([math.log(step_size) if step_size is not None
                               else _initial_log_step(problem, self.sampler.ndim)])
        self.lh_stats = np.zeros(2)
        self.acc = np.zeros(C)
        self.acc_burn = np.zeros(C)
        self.tr_ftr = np.zeros((C, self.m_total, P))
        self.tr_fte = np.zeros((C, self.m_total, Ps))
        self.tr_Q = np.zeros((C, self.m_total))
        self.tr_E = np.zeros((C, self.m_total))
        self.tr_slow = np.zeros((C, self.m_total))
        self.vte = np.zeros((C, Ps))
        # ⟨K⟩ is accumulated per draw (P² each) except on the Woodbury path, which
        # recovers it from Σ_W at the end (see result()): no C·P² array there
        self.Kacc = np.zeros((C, 0, 0) if getattr(self.sampler, "uses_woodbury", False)
                             else (C, P, P))
        self.SWb = np.zeros((C, self.nbatch, d, d))
        # one random stream per chain (rng_numba), drawn inside the kernels: a chain's
        # numbers do not depend on how the chains are split between threads
        ss = np.random.SeedSequence(seed)
        s_init, s_chains = ss.spawn(2)
        g_init = np.random.Generator(np.random.PCG64(s_init))
        self.rng = seed_states(s_chains, C)
        self.state = self.sampler.init_state(g_init, C)
        self.e_max = np.abs(self.state["E"]) + 1e3 * self.sampler.ndim + 1e6
        self.steps_done = 0
        self.elapsed_before = 0.0
        self.meta = {"version": CHECKPOINT_VERSION, "sampler": sampler, "method": method,
                     "chains": C, "steps": steps, "burn_in": burn_in, "thin": thin,
                     "step_size": step_size, "seed": seed, "problem": _fingerprint(problem)}

    # -- checkpoints ------------------------------------------------------------
    def save(self, path: Path, elapsed: float, log: tuple = ()) -> None:
        # the chunk records so far travel with the state, so that a resumed run's
        # result.log is the whole run's (it held only the chunks after the resume)
        meta = dict(self.meta, steps_done=self.steps_done, elapsed=elapsed,
                    log=[r.to_dict() for r in log])
        arrays = {k: getattr(self, k) for k in self.ARRAYS}
        arrays.update({f"state_{k}": v for k, v in self.state.items()})
        arrays["e_max"] = self.e_max
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            # a failed or interrupted (Ctrl-C) write leaves the last checkpoint as it was
            # and no half-written temp file beside it
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise MSAError(f"cannot write checkpoint {str(path)!r}: "
                               f"{exc.strerror or exc}") from None
            raise

    def load(self, path: Path) -> None:
        try:
            if path.is_file() and not zipfile.is_zipfile(path):
                # numpy would say it "contains pickled data", which misleads
                raise ValueError("not an .npz checkpoint (as msa simulate --checkpoint "
                                 "writes)")
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in z.files if k != "meta"}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise MSAError(f"cannot read checkpoint {str(path)!r}: {exc}") from None
        if not isinstance(meta, dict):
            raise MSAError(f"cannot read checkpoint {str(path)!r}: malformed metadata")
        version = meta.get("version")
        if version not in RESUMABLE_VERSIONS:
            raise MSAError(f"checkpoint {str(path)!r} was written in an older format "
                           f"(version {version!r}; this version reads "
                           f"{', '.join(map(str, RESUMABLE_VERSIONS))}); run again without "
                           "--resume")
        mine = {k: self.meta[k] for k in self.meta if k != "version"}
        theirs = {k: meta.get(k) for k in mine}
        if mine != theirs:
            diff = ", ".join(f"{k}: {theirs[k]!r} != {mine[k]!r}" for k in mine
                             if mine[k] != theirs[k])
            raise MSAError(f"checkpoint {str(path)!r} belongs to a different run ({diff})")
        try:
            for k in self.ARRAYS:
                a = arrays[k]
                if k == "rng" and version == 2:
                    # single xoshiro states (C, 4): the kernels draw from them word by
                    # word, exactly as the run that wrote them did
                    if a.shape != (self.chains, 4):
                        raise ValueError(f"rng has shape {a.shape}")
                    self.rng = np.ascontiguousarray(a, dtype=np.uint64)
                    self.meta["version"] = 2      # later checkpoints keep that layout
                    continue
                if k == "Kacc" and self.Kacc.size == 0:
                    continue        # not accumulated on this path (older files carry one)
                getattr(self, k)[...] = a
            for k in self.state:
                self.state[k][...] = arrays[f"state_{k}"]
            self.e_max[...] = arrays["e_max"]
            self.steps_done = int(meta["steps_done"])
            if not 0 <= self.steps_done <= self.total or meta["steps_done"] != self.steps_done:
                # a hand-edited count (-100 resumed silently; 1e9 failed in a reshape)
                raise ValueError(f"steps_done {meta['steps_done']!r} outside 0…{self.total}")
            if not np.all(np.isfinite(self.log_h)):
                raise ValueError("its step size is not finite")
            self.elapsed_before = float(meta.get("elapsed", 0.0))
            # (checkpoints written before the records travelled with them have none)
            self.prior_log = [ChunkRecord(**r) for r in meta.get("log", [])]
            # rebuild the sampler's caches (not checkpointed) from the loaded state,
            # keeping the checkpointed energies and gradients themselves
            kept = {k: v.copy() for k, v in self.state.items()}
            self.sampler.refresh(self.state)
            for k, v in kept.items():
                self.state[k][...] = v
        except (KeyError, ValueError, TypeError) as exc:
            raise MSAError(f"checkpoint {str(path)!r} is incomplete or corrupted ({exc})") from None

    # -- stepping -----------------------------------------------------------------
    def advance(self, end: int) -> None:
        """Advance every chain to global step ``end``: one kernel call per adaptation
        phase (the burn-in halves, then the rest), the chains split between threads
        once the step size is frozen."""
        if end > self.total:        # the kernels would write traces past their end
            raise ValueError(f"cannot advance to step {end} of a {self.total}-step run")
        net = self.problem.network
        C = self.chains
        half = self.burn_in // 2
        mala = self.method == "mala"
        status = np.zeros(3, dtype=np.int64)
        while self.steps_done < end:
            status[:] = 0
            pos = self.steps_done
            nxt = end
            for b in (half, self.burn_in):
                if pos < b < nxt:
                    nxt = b
            adapt = self.adaptive and pos < self.burn_in
            common = (self.log_h, self.lh_stats, None, self.X, self.Xs, self.y,
                      self.u_slow, kn.act_code(net.activation), float(net.g_w),
                      float(net.g_a), float(net.kappa), float(net.chi), mala, adapt,
                      adapt and pos >= half, TARGET_ACCEPTANCE[self.method], ADAPT_RATE,
                      self.e_max, None, int(self.burn_in), int(self.thin),
                      int(self.m_total), int(self.nbatch))
            if adapt:
                groups = [slice(0, C)]       # the adaptation couples the chains
            else:
                cuts = np.linspace(0, C, self.threads + 1).round().astype(int)
                groups = [slice(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]
            try:
                self._run_groups(groups, pos, nxt, common, status)
            except np.linalg.LinAlgError:
                # the marginal sampler's Cholesky of K + κI (a step of 1e200, χ = 1e12
                # at N = 100): a traceback, where the full sampler said "diverged"
                raise MSAError(
                    f"simulation diverged within steps {pos + 1}–{nxt}: K + κI lost its "
                    f"positive definiteness (the weights ran off, or κ is tiny against "
                    f"K); use a smaller step size (now {math.exp(self.log_h[0]):.3g}, e.g. "
                    f"--step-size {math.exp(self.log_h[0]) / 4:.2g}) or check χ, κ and "
                    "the data's scale") from None
            if status[0] != kn.OK:
                what = ("produced NaN or inf" if status[0] == kn.NONFINITE
                        else "exploded (energy above its divergence threshold)")
                raise MSAError(
                    f"simulation diverged at step {int(status[2]) + 1} (chain {int(status[1])}): "
                    f"the energy {what}; use a smaller step size "
                    f"(now {math.exp(self.log_h[0]):.3g}, e.g. --step-size "
                    f"{math.exp(self.log_h[0]) / 4:.2g})")
            self.steps_done = nxt
            if nxt == self.burn_in:
                if self.adaptive and self.lh_stats[1] > 0:
                    self.log_h[0] = self.lh_stats[0] / self.lh_stats[1]
                self.acc_burn[...] = self.acc

    def _blas_threads(self, groups: int = 1) -> int:
        """BLAS threads for each of ``groups`` chain groups running at once: the
        requested threads beyond one per group (``threads > chains``; the BLAS
        setting is process-wide, so every group gets the same share) when the step's
        matrix products are big enough to profit, else one (OpenBLAS threads slow
        small products down)."""
        share = self.threads_requested // max(1, groups)
        if share < 2:
            return 1
        d, P, N = self.problem.data.d, self.problem.data.P, self.problem.network.N
        flops = 4.0 * P * N * (d if self.sampler.name == "full" else max(d, P))
        if self.sampler.name == "full" and self.problem.network.activation == "linear":
            flops = 4.0 * (P + N) * d          # the linear full step has no big product
        if self.sampler.name == "marginal" and getattr(self.sampler, "uses_woodbury", False):
            flops = 4.0 * N * d * d            # d×d products only
        return share if flops >= BLAS_THREADS_FLOPS else 1

    def _run_groups(self, groups, pos, nxt, common, status) -> None:
        """Advance the chain groups from step ``pos`` to ``nxt``, each in its own Python
        thread (the kernels release the GIL).  The chains are independent while the
        step size is frozen and every chain has its own random stream, so the result
        does not depend on the number of threads."""
        tail = (self.tr_ftr, self.tr_fte, self.tr_Q, self.tr_E, self.tr_slow, self.vte,
                self.Kacc, self.SWb)
        statuses = [np.zeros(3, dtype=np.int64) for _ in groups]

        def job(i, sl):
            st = {k: v[sl] for k, v in self.state.items()}
            tl = tuple(a[sl] for a in tail) + (statuses[i],)
            com = (common[:2] + (self.acc[sl],) + common[3:17] + (self.e_max[sl], int(pos))
                   + common[19:])
            self.sampler.advance(st, self.rng[sl], nxt - pos, com, tl, sl)

        run_split(job, groups, blas=self._blas_threads(len(groups)))
        bad = [(int(st[2]), int(st[1]) + sl.start, int(st[0]))
               for st, sl in zip(statuses, groups) if st[0] != kn.OK]
        if bad:
            step, chain, code = min(bad)
            status[:] = (code, chain, step)

    @property
    def m_done(self) -> int:
        return max(0, self.steps_done - self.burn_in) // self.thin

    # -- estimates -----------------------------------------------------------------
    def record(self, acc_before: np.ndarray, n_chunk: int, rate: float) -> ChunkRecord:
        m = self.m_done
        y, ys = self.y, np.asarray(self.problem.data.y_test)
        ftr, fte = self.tr_ftr[:, :m], self.tr_fte[:, :m]
        # Progress figures must not cost more per chunk as the trace grows (issue 7:
        # 12000 steps in chunks of 100 took 114 s against 15 s in chunks of 1000).
        # The discrepancies use every draw (a mean, O(draws·P)); their errors and the
        # R̂/ESS use at most DIAG_DRAWS evenly strided draws per chain; and R̂/ESS are
        # recomputed only once the trace has grown by DIAG_GROWTH since they last
        # were (at least DIAG_MIN_NEW draws; always on the last chunk): O(log draws)
        # recomputations in all, at draw counts that do not depend on the machine's
        # speed: two runs with one seed and chunk size report the same figures.
        # result() recomputes everything from every draw.
        sub = _strided(m)
        if m >= 1:
            Dtr = float(np.mean((y - ftr.mean(axis=(0, 1))) ** 2))
            Dte = float(np.mean((ys - fte.mean(axis=(0, 1))) ** 2))
            Dtr_se = _discrepancy(ftr[:, sub], y)[1]
            Dte_se = _discrepancy(fte[:, sub], ys)[1]
        else:
            Dtr = Dtr_se = Dte = Dte_se = float("nan")
        if (self.steps_done >= self.total or self._diag is None
                or m >= self._diag_m + max(DIAG_MIN_NEW, int(DIAG_GROWTH * self._diag_m))):
            self._diag = _rhat_ess([ftr[:, sub][:, :, _subset(y.size)],
                                    fte[:, sub][:, :, _subset(ys.size)],
                                    self.tr_Q[:, sub], self.tr_E[:, sub], self.tr_slow[:, sub]],
                                   self.diag_threads)
            self._diag_m = m
        rh, es = self._diag
        acc = float(np.sum(self.acc - acc_before) / (self.chains * max(1, n_chunk)))
        left = self.total - self.steps_done
        return ChunkRecord(
            stage="simulate", chi=float(self.problem.network.chi),
            steps_done=self.steps_done, steps_total=self.total,
            train_discrepancy=Dtr, train_discrepancy_se=Dtr_se,
            test_discrepancy=Dte, test_discrepancy_se=Dte_se, rhat_max=rh, ess_min=es,
            acceptance=acc, step_size=float(math.exp(self.log_h[0])),
            steps_per_second=rate, eta_seconds=left / rate if rate > 0 else float("nan"),
            burn_in=self.steps_done <= self.burn_in,
            energy=float(np.mean(self.state["E"])))

    def result(self, log: tuple, wall: float, rate: float) -> SimulationResult:
        m = self.m_done
        if m < 4:
            raise MSAError(f"too few draws to estimate anything ({m}); "
                           "run more steps after burn-in (steps >= 4*thin)")
        net, data = self.problem.network, self.problem.data
        C = self.chains
        ftr, fte = self.tr_ftr[:, :m], self.tr_fte[:, :m]
        Q, E, slow = self.tr_Q[:, :m], self.tr_E[:, :m], self.tr_slow[:, :m]
        train_mean, test_mean = ftr.mean(axis=(0, 1)), fte.mean(axis=(0, 1))
        (train_se, tau_tr), test_se = diag.mcse_and_autocorr_time(ftr), diag.mcse_mean(fte)
        Q_se, tau_Q = diag.mcse_and_autocorr_time(Q)
        n = C * m
        cond_var = self.vte.sum(axis=0) / n
        var = cond_var + fte.reshape(n, -1).var(axis=0, ddof=1)
        Sigma_W = self.SWb.sum(axis=(0, 1)) / n
        if getattr(self.sampler, "uses_woodbury", False):
            # the Woodbury path does not accumulate K (P² a draw): K = (g_a/N) X WᵀW Xᵀ
            # is linear in WᵀW, whose sum SWb holds (divided by N)
            mean_K = net.g_a * (self.X @ self.SWb.sum(axis=(0, 1)) @ self.X.T) / n
        else:
            mean_K = self.Kacc.sum(axis=0) / n
        tbar = (self.y - train_mean) / net.kappa
        # batch means for the top eigenvalue: the first-order change of λ_top is vᵀ δΣ v
        counts = np.bincount((np.arange(m) * self.nbatch) // self.m_total,
                             minlength=self.nbatch)
        v = np.linalg.eigh(0.5 * (Sigma_W + Sigma_W.T))[1][:, -1]
        full = counts > 0
        lam_b = np.einsum("i,cbij,j->cb", v, self.SWb[:, full], v) / counts[full]
        lam_se = float(lam_b.std(ddof=1) / math.sqrt(lam_b.size)) if lam_b.size > 1 else math.nan
        _, Dtr_se = _discrepancy(ftr, self.y)
        _, Dte_se = _discrepancy(fte, np.asarray(data.y_test))
        rh, es = _rhat_ess([ftr, fte, Q, E, slow], self.diag_threads)
        acc = float(np.sum(self.acc - self.acc_burn) / (C * max(1, self.steps)))
        taus = {"energy": float(diag.autocorr_time(E)), "Q": float(tau_Q),
                "weight_cov_slow_mode": float(diag.autocorr_time(slow)),
                "train_mean_max": float(np.nanmax(tau_tr))}
        traces = {"train_mean": ftr.copy(), "test_mean": fte.copy(), "Q": Q.copy(),
                  "energy": E.copy(), "weight_cov_slow_mode": slow.copy()}
        converged = bool(np.isfinite(rh) and rh < RHAT_OK and es >= ESS_OK)
        return SimulationResult(
            theory=self.sampler.theory, problem=self.problem, train_mean=train_mean,
            test_mean=test_mean, test_predictive_variance=var, weight_cov=Sigma_W,
            mean_kernel=mean_K, tbar=tbar, Q=float(Q.mean()), log_evidence=None,
            train_mean_se=np.asarray(train_se), test_mean_se=np.asarray(test_se),
            converged=converged, residual=float(rh - 1.0) if np.isfinite(rh) else math.nan,
            log=log, wall_time=wall, seed=self.seed,
            sampler=self.sampler.name, method=self.method, chains=C, steps=self.steps,
            burn_in=self.burn_in, thin=self.thin, step_size=float(math.exp(self.log_h[0])),
            acceptance=acc, rhat_max=rh, ess_min=es, steps_per_second=rate,
            weight_cov_top_eigenvalue_se=lam_se, train_discrepancy_se=Dtr_se,
            test_discrepancy_se=Dte_se, Q_se=float(Q_se),
            autocorr_times=taus, traces=traces)


def _checked(sampler, method, chains, steps, burn_in, thin, step_size, seed, chunk,
             threads) -> dict:
    """:func:`simulate`'s run arguments, checked (one-line :class:`MSAError`) and
    normalised."""
    if sampler not in SAMPLERS:
        raise MSAError(f"sampler must be one of {', '.join(SAMPLERS)} (got {sampler!r})")
    if method not in METHODS:
        raise MSAError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    out = {"sampler": sampler, "method": method}
    for name, v, least in (("chains", chains, 1), ("steps", steps, 1), ("burn_in", burn_in, 0),
                           ("thin", thin, 1), ("seed", seed, 0), ("chunk", chunk, 1)):
        out[name] = _check_int(name, v, least)
    out["threads"] = None if threads is None else _check_int("threads", threads, 1)
    if step_size is not None:
        try:
            step_size = float(step_size)
        except (TypeError, ValueError):
            raise MSAError(f"step_size must be a positive number (got {step_size!r})") from None
        if not math.isfinite(step_size) or step_size <= 0:
            raise MSAError(f"step_size must be a positive number (got {step_size!r})")
    out["step_size"] = step_size
    return out


RUN_OPTIONS = ("sampler", "method", "chains", "steps", "burn_in", "thin", "step_size", "seed",
               "chunk", "threads")


def check_simulation_options(options: dict) -> dict:
    """The keyword arguments of :func:`simulate` that a sweep or a config passes on
    (``sampler``, ``chains``, ``steps``, …), checked as :func:`simulate` checks them,
    so that a sweep refuses bad ones before it runs anything; returns them normalised
    (only the keys given)."""
    unknown = sorted(set(options) - set(RUN_OPTIONS))
    if unknown:
        raise MSAError(f"simulation: unknown key(s) {', '.join(unknown)} "
                       f"(known: {', '.join(RUN_OPTIONS)})")
    defaults = {k: p.default for k, p in inspect.signature(simulate).parameters.items()
                if k in RUN_OPTIONS}
    checked = _checked(**{**defaults, **options})
    return {k: checked[k] for k in options}


class _CheckpointWriter:
    """When a run writes its checkpoint: after its first chunk (so that a file exists at
    once), after its last, before a cancellation, and otherwise as :class:`WritePacer`
    allows (5% of the run's time: a fraction of a second apart for a small checkpoint,
    seconds for one with large traces; it holds the whole run's, allocated up
    front — 82 MB for 4 chains × 40 000 steps of the bundled problem, whose run took
    53 s instead of 15 when that was written after each of its 200 chunks).  A run
    killed without warning (kill -9, preemption) resumes from the last write: it loses
    at most that long of stepping, and the resumed run is bit for bit the uninterrupted
    one."""

    def __init__(self, run, path, t0: float):
        self.run, self.path, self.t0 = run, path, t0
        self.pacer = WritePacer()
        self.written_at = run.steps_done      # at the last write (or where it resumed)

    def after_chunk(self, log: list, final: bool) -> None:
        if self.path is not None and (final or self.pacer.due()):
            self.now(log)

    def now(self, log: list) -> None:
        if self.path is None or self.written_at == self.run.steps_done:
            return
        self.pacer.write(self.run.save, self.path,
                         self.run.elapsed_before + time.perf_counter() - self.t0, tuple(log))
        self.written_at = self.run.steps_done


def simulate(problem: Problem, sampler: str = "marginal", chains: int = 4, steps: int = 2000,
             burn_in: int = 500, thin: int = 1, method: str = "mala",
             step_size: float | None = None, seed: int = 0, chunk: int = 200,
             callback: Optional[Callable[[ChunkRecord], Any]] = None, cancel=None,
             checkpoint: str | os.PathLike | None = None, resume: bool = False,
             threads: int | None = None, warn_unconverged: bool = True) -> SimulationResult:
    """Sample the posterior of THEORY §1 by Langevin dynamics and estimate its observables.

    Parameters
    ----------
    sampler : {"marginal", "full"}
        ``"marginal"`` samples ``W`` with ``a`` integrated out (Rao-Blackwellised,
        THEORY §7, the default); ``"full"`` samples ``(W, a)``.
    chains, steps, burn_in, thin : int
        ``steps`` post-burn-in steps per chain; every ``thin``-th is measured.
    method : {"mala", "ula"}
    step_size : float or None
        Whitened step ``h``; ``None`` adapts it during burn-in to an acceptance target
        and freezes it afterwards.
    seed : int
        Monte Carlo seed (independent of the data seed).
    chunk : int
        Steps between callbacks, cancellation checks and checkpoints.
    callback : callable(ChunkRecord), optional
        May raise :class:`msa_engine.Cancelled` to stop.
    cancel : threading.Event, optional
        Checked between chunks; when set, :class:`Cancelled` is raised (after the
        checkpoint is written).
    checkpoint, resume
        ``.npz`` path written atomically after the first chunk, the last, before a
        cancellation, and in between once twenty times the last write's duration has
        passed (at most 5% of the run's time: a fraction of a second apart for a small
        checkpoint, seconds for one with large traces; :class:`_CheckpointWriter`);
        with ``resume`` a run continues from it (bit for bit equal to an uninterrupted run).
    threads : int, optional
        Python threads the chains are split between once the step size is frozen
        (default: one per available core, at most one per chain).  Every chain has
        its own random stream, so the result does not depend on the split.  Given
        explicitly and larger than ``chains``, the spare threads go to BLAS for big
        matrix products (off by default: on a loaded machine OpenBLAS threads cost
        more than they gain).
    warn_unconverged : bool
        Warn (:class:`MSAWarning`) when the chains have not converged — R̂ ≥ 1.05 or an
        ESS below 100 for some output, a single chain (no R̂), or hardly any proposal
        accepted (:func:`msa_engine.results.convergence_problems`); the result then
        has ``converged = False`` and its error bars are not to be trusted.  Callers
        that report it themselves (a sweep, the workbench, whose worker threads would
        race over Python's process-wide warning filters) pass ``False``.

    Raises :class:`MSAError` on bad arguments and on divergence (naming the step).
    """
    check_problem(problem)
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise MSAError(f"cancel must be a threading.Event (got {type(cancel).__name__})")
    if callback is not None and not callable(callback):
        raise MSAError(f"callback must be callable (got {type(callback).__name__})")
    if not isinstance(warn_unconverged, bool):
        raise MSAError(f"warn_unconverged must be True or False (got {warn_unconverged!r})")
    opts = _checked(sampler, method, chains, steps, burn_in, thin, step_size, seed, chunk,
                    threads)
    sampler, method, chains, steps, burn_in, thin = (opts[k] for k in (
        "sampler", "method", "chains", "steps", "burn_in", "thin"))
    step_size, seed, chunk, threads = (opts[k] for k in ("step_size", "seed", "chunk",
                                                          "threads"))
    if resume and checkpoint is None:
        raise MSAError("resume needs a checkpoint path")

    check_simulation(problem, sampler, chains, steps, thin)   # before allocating (issue 8)
    run = _Run(problem, sampler, chains, steps, burn_in, thin, method, step_size, seed, chunk,
               threads)
    path = Path(checkpoint).expanduser() if checkpoint is not None else None
    if resume and path is not None and path.exists():
        run.load(path)
    t0 = time.perf_counter()
    start_steps = run.steps_done
    log: list[ChunkRecord] = list(run.prior_log)
    writer = _CheckpointWriter(run, path, t0)
    while run.steps_done < run.total:
        if cancel is not None and cancel.is_set():
            writer.now(log)        # (set since the check after the last chunk)
            raise Cancelled("simulation cancelled")
        acc_before = run.acc.copy()
        begin = run.steps_done
        end = min(begin + chunk, run.total)
        run.advance(end)
        elapsed = time.perf_counter() - t0
        rate = (run.steps_done - start_steps) / elapsed if elapsed > 0 else float("nan")
        rec = run.record(acc_before, end - begin, rate)
        log.append(rec)
        writer.after_chunk(log, final=run.steps_done >= run.total)
        try:
            if callback is not None:
                callback(rec)
            if cancel is not None and cancel.is_set():
                raise Cancelled("simulation cancelled")
        except BaseException:
            # a cancelled run (or one whose callback failed, or Ctrl-C while it ran)
            # resumes from where it stopped: the state is whole between chunks.  Within
            # a chunk it is not, and an interruption there loses the steps since the
            # last write (a few seconds at most, see _CheckpointWriter)
            writer.now(log)
            raise
    elapsed = time.perf_counter() - t0
    rate = (run.steps_done - start_steps) / elapsed if elapsed > 0 and run.steps_done > start_steps \
        else float("nan")
    res = run.result(tuple(log), run.elapsed_before + elapsed, rate)
    message = convergence_message(res) if warn_unconverged else None
    if message is not None:
        # as PyMC and ArviZ do: the numbers come back (a short look is legitimate), but
        # their error bars assume mixed chains, and a caller's script should hear it
        net = problem.network
        warnings.warn(f"simulation at chi = {net.chi:.6g}, N = {net.N}: {message}",
                      MSAWarning, stacklevel=2)
    return res
