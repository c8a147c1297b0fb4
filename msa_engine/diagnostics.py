"""Convergence diagnostics for Markov chains: split-R̂, bulk/tail ESS, MCSE (THEORY §7).

THEORY §7 asks for several independent chains judged by rank-normalised split-R̂
and bulk/tail effective sample sizes (Vehtari, Gelman, Simpson, Carpenter, Bürkner
2021, "Rank-normalization, folding, and localization"), applied to the outputs and
to slow collective modes.  The estimators follow that paper literally, with the
same conventions as ArviZ (Blom offset 3/8 for the rank back-transform; Geyer's
initial positive then monotone sequence; ``τ̂ ≥ 1/log10(S)``), so that the values
agree with ``arviz_stats`` to rounding (tested in ``tests/test_diagnostics.py``).
We keep our own small implementation rather than calling ArviZ because the
sampler needs these numbers after every chunk for hundreds of series at once:
everything here is vectorised over trailing axes, and the Geyer truncation runs
in a numba kernel.

Arrays have shape ``(chains, draws, *rest)``; every function returns an array of
shape ``rest`` (a float for 2-D input).
"""

from __future__ import annotations

import math

import numpy as np
from .jit import njit
from scipy.special import ndtri

__all__ = ["rhat", "ess", "ess_bulk", "ess_tail", "ess_mean", "mcse_mean", "rhat_ess",
           "autocorr_time", "mcse_and_autocorr_time", "pooled_autocorr_time", "split_chains",
           "z_scale"]


def _as_series(x) -> tuple[np.ndarray, tuple]:
    """(chains, draws, *rest) -> (S, chains, draws) plus the shape ``rest``."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim < 2:
        raise ValueError("diagnostics need an array of shape (chains, draws, ...)")
    rest = x.shape[2:]
    c, n = x.shape[:2]
    return np.moveaxis(x.reshape(c, n, -1), 2, 0), rest


def _out(values: np.ndarray, rest: tuple):
    values = np.asarray(values, dtype=float).reshape(rest)
    return float(values) if rest == () else values


def split_chains(x: np.ndarray) -> np.ndarray:
    """Split each chain of ``(S, chains, draws)`` into halves (the middle draw of an odd
    chain is dropped), giving ``(S, 2·chains, draws//2)``: split-R̂ then sees trends."""
    half = x.shape[-1] // 2
    return np.concatenate([x[..., :half], x[..., x.shape[-1] - half:]], axis=-2)


@njit(cache=True, nogil=True)
def _blom_by_order(x, order, table, out):  # pragma: no cover - numba
    """Write ``table[i + j + 1]`` at the positions of every run of equal values
    ``order[s, i:j]`` of row ``s`` (sorted order): ``(i + j + 1)/2`` is the run's average
    rank, so ``table`` indexed by twice the rank gives each value its normal score."""
    S, n = x.shape
    for s in range(S):
        i = 0
        while i < n:
            v = x[s, order[s, i]]
            j = i + 1
            while j < n and x[s, order[s, j]] == v:
                j += 1
            z = table[i + j + 1]
            for q in range(i, j):
                out[s, order[s, q]] = z
            i = j


def _blom_table(n: int) -> np.ndarray:
    """``Φ⁻¹((r − 3/8)/(n + 1/4))`` indexed by twice the average rank ``r`` (0 … n+½)."""
    return ndtri((np.arange(2 * n + 2) / 2.0 - 0.375) / (n + 0.25))


def _nan_rows(flat: np.ndarray, out: np.ndarray) -> None:
    """A row holding a NaN is NaN throughout (as ``scipy.stats.rankdata`` propagates it)."""
    bad = np.isnan(flat).any(axis=1)
    if bad.any():
        out[bad] = np.nan


def z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalise each series of ``(S, chains, draws)`` over all its draws pooled:
    ``Φ⁻¹((r − 3/8)/(n + 1/4))`` with average ranks for ties (Vehtari et al. eq. 14);
    a series holding a NaN is NaN throughout (as ``scipy.stats.rankdata`` propagates it).

    The same numbers as ``stats.norm.ppf`` of ``stats.rankdata(…, "average")`` (tested),
    faster: an average rank is a multiple of ½, so ``Φ⁻¹`` is evaluated once per possible
    rank (``2n`` values shared by every series) instead of once per draw, and the sort
    need not be stable (ties get one rank whatever their order), which numpy's default
    sort does 2.5× faster.  Called on every progress record (issue 7: the final R̂/ESS
    of a small 2000-step run took longer than its sampling)."""
    S = x.shape[0]
    flat = np.ascontiguousarray(x.reshape(S, -1), dtype=float)
    out = np.empty_like(flat)
    _blom_by_order(flat, np.argsort(flat, axis=1), _blom_table(flat.shape[1]), out)
    _nan_rows(flat, out)
    return out.reshape(x.shape)


@njit(cache=True, nogil=True)
def _sorted_by_order(x, order, out):  # pragma: no cover - numba
    """``out[s] = x[s, order[s]]`` (each row in sorted order)."""
    S, n = x.shape
    for s in range(S):
        for i in range(n):
            out[s, i] = x[s, order[s, i]]


@njit(cache=True, nogil=True)
def _folded_order(srt, order, med, out):  # pragma: no cover - numba
    """An order sorting ``|x − med|`` row by row, from ``order`` (which sorts ``x``) and
    ``srt`` (``x`` sorted), in O(n) instead of a second sort: the draws below the
    median, taken downwards, and those at or above it, taken upwards, are each sorted
    by ``|x − med|`` (the rounded ``med − x`` and ``x − med`` are monotone in ``x``, and
    ``med − x`` is the rounded ``|x − med|`` of ``x < med``), so merging the two is
    sorting.  Branch-free, reading ``srt`` in sequence."""
    S, n = srt.shape
    for s in range(S):
        m = med[s]
        j = 0
        while j < n and srt[s, j] < m:
            j += 1
        i = j - 1
        k = 0
        while i >= 0 and j < n:
            left = (m - srt[s, i]) <= (srt[s, j] - m)
            out[s, k] = order[s, i] if left else order[s, j]
            i -= np.int64(left)
            j += np.int64(not left)
            k += 1
        while i >= 0:
            out[s, k] = order[s, i]
            i -= 1
            k += 1
        while j < n:
            out[s, k] = order[s, j]
            j += 1
            k += 1


def _rhat_core(x: np.ndarray) -> np.ndarray:
    """Classic (non-split) R̂ of each series of ``(S, chains, draws)``."""
    n = x.shape[-1]
    chain_mean = x.mean(axis=-1)
    chain_var = x.var(axis=-1, ddof=1)
    B = n * chain_mean.var(axis=-1, ddof=1)
    W = chain_var.mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((B / W + n - 1) / n)


def _rhat_split(sp: np.ndarray, z_bulk: np.ndarray) -> np.ndarray:
    """Rank-normalised split-R̂ of split chains ``sp`` whose bulk z-scores are ``z_bulk``:
    the larger of the bulk and the folded (tail) version."""
    bulk = _rhat_core(z_bulk)
    med = np.median(sp.reshape(sp.shape[0], -1), axis=1)[:, None, None]
    tail = _rhat_core(z_scale(np.abs(sp - med)))
    return np.maximum(bulk, tail)


def rhat(x):
    """Rank-normalised split-R̂: max of the bulk and the folded (tail) version.

    Needs at least 2 chains and 4 draws, else NaN.  Values above ~1.01 mean the
    chains have not mixed (Vehtari et al. 2021, §4).
    """
    s, rest = _as_series(x)
    if s.shape[1] < 2 or s.shape[2] < 4:
        return _out(np.full(s.shape[0], np.nan), rest)
    sp = split_chains(s)
    return _out(_rhat_split(sp, z_scale(sp)), rest)


def _fft_length(n: int) -> int:
    """The least even ``m ≥ n`` of the form ``2ᵃ3ᵇ5ᶜ``: pocketfft (numpy's FFT) is as
    fast on these as on powers of two, and the power of two above ``2·draws`` is up to
    twice as long.  Issue 7: a 150 000-step simulation (2 chains, 17 series) spent 4.8 s
    of its 7.3 s in the final R̂/ESS, 3 s of it in FFTs of 2¹⁸ points; at the 150 000
    points this gives they took 0.44 against 0.98 s a batch.  Any ``m ≥ 2n − 1`` gives
    the same (linear) autocovariance; the numbers move by round-off (≈ 4e-16)."""
    best = 1 << max(1, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = 2 * p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _autocov(x: np.ndarray) -> np.ndarray:
    """Biased autocovariance along the last axis by FFT (divides by n, like ArviZ)."""
    n = x.shape[-1]
    m = _fft_length(2 * n - 1)
    xc = x - x.mean(axis=-1, keepdims=True)
    f = np.fft.rfft(xc, n=m, axis=-1)
    return np.fft.irfft(f * np.conjugate(f), n=m, axis=-1)[..., :n] / n


@njit(cache=True, nogil=True)
def _geyer_ess(acov, chain_mean):  # pragma: no cover - numba
    """ESS from autocovariances ``(S, M, n)`` with Geyer's initial positive and
    monotone sequences (Vehtari et al. eq. 10-11), one value per series."""
    S, M, n = acov.shape
    out = np.empty(S)
    for s in range(S):
        mean_var = 0.0
        for c in range(M):
            mean_var += acov[s, c, 0]
        mean_var = mean_var / M * n / (n - 1.0)
        var_plus = mean_var * (n - 1.0) / n
        if M > 1:
            mu = 0.0
            for c in range(M):
                mu += chain_mean[s, c]
            mu /= M
            v = 0.0
            for c in range(M):
                v += (chain_mean[s, c] - mu) ** 2
            var_plus += v / (M - 1)
        rho = np.zeros(n)
        rho[0] = 1.0
        a1 = 0.0
        for c in range(M):
            a1 += acov[s, c, 1]
        rho_even = 1.0
        rho_odd = 1.0 - (mean_var - a1 / M) / var_plus
        rho[1] = rho_odd
        t = 1
        while t < n - 3 and rho_even + rho_odd > 0.0:
            ae = 0.0
            ao = 0.0
            for c in range(M):
                ae += acov[s, c, t + 1]
                ao += acov[s, c, t + 2]
            rho_even = 1.0 - (mean_var - ae / M) / var_plus
            rho_odd = 1.0 - (mean_var - ao / M) / var_plus
            if rho_even + rho_odd >= 0:
                rho[t + 1] = rho_even
                rho[t + 2] = rho_odd
            t += 2
        max_t = t - 2
        if rho_even > 0:
            rho[max_t + 1] = rho_even
        t = 1
        while t <= max_t - 2:
            if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
                rho[t + 1] = (rho[t - 1] + rho[t]) / 2.0
                rho[t + 2] = rho[t + 1]
            t += 2
        total = M * n
        tau = -1.0 + 2.0 * np.sum(rho[: max_t + 1]) + np.sum(rho[max_t + 1: max_t + 2])
        tau = max(tau, 1.0 / math.log10(total))
        bad = False
        for k in range(n):
            if np.isnan(rho[k]):
                bad = True
        out[s] = np.nan if bad else total / tau
    return out


def _ess_core(x: np.ndarray) -> np.ndarray:
    """ESS of each series of ``(S, M, n)`` (chains already split/transformed)."""
    S, M, n = x.shape
    flat = x.reshape(S, -1)
    const = (flat.max(axis=1) - flat.min(axis=1)) < np.finfo(float).resolution
    out = np.full(S, float(M * n))
    idx = np.flatnonzero(~const)
    if idx.size:
        xs = x[idx]
        out[idx] = _geyer_ess(np.ascontiguousarray(_autocov(xs)),
                              np.ascontiguousarray(xs.mean(axis=-1)))
    return out


def ess_mean(x):
    """ESS for the mean (no rank normalisation): the one that sets the MCSE of a mean."""
    s, rest = _as_series(x)
    if s.shape[2] < 4:
        return _out(np.full(s.shape[0], np.nan), rest)
    return _out(_ess_core(split_chains(s)), rest)


def ess_bulk(x):
    """Bulk ESS: ESS of the rank-normalised split chains (Vehtari et al. §3.2)."""
    s, rest = _as_series(x)
    if s.shape[2] < 4:
        return _out(np.full(s.shape[0], np.nan), rest)
    return _out(_ess_core(z_scale(split_chains(s))), rest)


def _tail_quantiles(flat: np.ndarray, prob: float) -> np.ndarray:
    """The quantiles ``prob`` and ``1 − prob`` (in increasing order) of each row of
    ``flat``, shape ``(2, S)``."""
    return np.quantile(flat, sorted((prob, 1.0 - prob)), axis=1)


def _tail_ess(s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Tail ESS of each series of ``(S, chains, draws)`` whose tail quantiles are ``q``
    (:func:`_tail_quantiles`): the smaller ESS of the indicators ``x ≤ q_low`` and
    ``x ≤ q_high`` (both in one batch)."""
    S = s.shape[0]
    ind = (s[None] <= q[:, :, None, None]).astype(float).reshape((2 * S,) + s.shape[1:])
    e = _ess_core(split_chains(ind))
    return np.minimum(e[:S], e[S:])


def _ess_tail_series(s: np.ndarray, prob: float) -> np.ndarray:
    """Tail ESS of each series of ``(S, chains, draws)``."""
    return _tail_ess(s, _tail_quantiles(s.reshape(s.shape[0], -1), prob))


def ess_tail(x, prob: float = 0.05):
    """Tail ESS: the smaller ESS of the indicators ``x ≤ q_prob`` and ``x ≤ q_{1−prob}``."""
    s, rest = _as_series(x)
    if s.shape[2] < 4:
        return _out(np.full(s.shape[0], np.nan), rest)
    return _out(_ess_tail_series(s, prob), rest)


def rhat_ess(x, prob: float = 0.05):
    """``(rhat(x), ess_bulk(x), ess_tail(x, prob))`` computed together, with the same
    numbers (tested).  The sampler asks for all three after every chunk, on a few
    hundred series at once, and for the final result on every draw: issue 7 measured
    this at 60% of a default ``msa simulate``.  So every series of ``x`` goes through
    each step in one batch, and it is sorted once: the split chains' sort gives the bulk
    z-scores, their median, an O(n) merge for the folded (tail) R̂'s ranks
    (:func:`_folded_order`) and, with an even number of draws (the same draws pooled),
    the tail ESS's quantiles."""
    s, rest = _as_series(x)
    if s.shape[2] < 4:
        return tuple(_out(np.full(s.shape[0], np.nan), rest) for _ in range(3))
    sp = split_chains(s)
    S = sp.shape[0]
    flat = np.ascontiguousarray(sp.reshape(S, -1))
    n = flat.shape[1]
    order = np.argsort(flat, axis=1)
    table = _blom_table(n)
    z = np.empty_like(flat)
    _blom_by_order(flat, order, table, z)
    _nan_rows(flat, z)
    srt = np.empty_like(flat)
    _sorted_by_order(flat, order, srt)
    if s.shape[1] >= 2:
        med = np.median(srt, axis=1)
        folded = np.abs(flat - med[:, None])
        forder = np.empty_like(order)
        _folded_order(srt, order, med, forder)
        zf = np.empty_like(flat)
        _blom_by_order(folded, forder, table, zf)
        _nan_rows(folded, zf)
        rh = np.maximum(_rhat_core(z.reshape(sp.shape)), _rhat_core(zf.reshape(sp.shape)))
    else:
        rh = np.full(S, np.nan)
    # the tail ESS's quantiles are of every draw; split chains drop the middle of an odd one
    q = _tail_quantiles(srt if s.shape[2] % 2 == 0 else s.reshape(S, -1), prob)
    return (_out(rh, rest), _out(_ess_core(z.reshape(sp.shape)), rest),
            _out(_tail_ess(s, q), rest))


def ess(x, method: str = "bulk"):
    """ESS by ``method`` in ``{"bulk", "tail", "mean"}``."""
    fn = {"bulk": ess_bulk, "tail": ess_tail, "mean": ess_mean}.get(method)
    if fn is None:
        raise ValueError(f"method must be bulk, tail or mean (got {method!r})")
    return fn(x)


def mcse_mean(x):
    """Monte Carlo standard error of the mean, ``sd/√ESS_mean`` — honest error bars
    from the effective, not the raw, number of draws (issue 3)."""
    return mcse_and_autocorr_time(x)[0]


def autocorr_time(x):
    """Integrated autocorrelation time ``τ = (chains·draws)/ESS_mean`` in units of draws."""
    return mcse_and_autocorr_time(x)[1]


def mcse_and_autocorr_time(x):
    """``(mcse_mean(x), autocorr_time(x))`` from one ESS computation (a simulation's
    result wants both of its train outputs and of Q)."""
    s, rest = _as_series(x)
    flat = s.reshape(s.shape[0], -1)
    sd = flat.std(axis=1, ddof=1)
    e = np.asarray(ess_mean(np.moveaxis(s, 0, 2)), dtype=float).reshape(-1)
    return _out(sd / np.sqrt(e), rest), _out(s.shape[1] * s.shape[2] / e, rest)


def pooled_autocorr_time(x, cutoff: float = 0.05) -> float:
    """Integrated autocorrelation time of one series ``x`` (chains × draws), in draws,
    for setting burn-ins on windows that may be shorter than τ: deviations from the mean
    over *all* chains (chains that sit at different levels count as correlated at every
    lag), ``1 + 2 Σ ρ(lag)`` of the chain-averaged autocorrelation up to the first lag
    where it falls below ``cutoff`` (at most draws/2); 1 for a constant series or fewer
    than four draws.

    Not :func:`autocorr_time` (Geyer's sequences on split chains, the one that sets error
    bars): on windows shorter than τ both are capped by the window, and this one reads
    ~10% longer there.  Used for the non-linear solver's burn-ins at d = 50 (τ ≈ 120 MALA
    steps seen through 96-step windows), it solved seeds 0, 1, 2 where Geyer's solved
    one of the three (the others' saddles drifted off at the target; measured before
    the stage guard of README's non-linear paragraph)."""
    x = np.asarray(x, dtype=float)
    d = x - x.mean()
    v = float(np.mean(d * d))
    n = x.shape[1]
    if v <= 0 or n < 4:
        return 1.0
    tau = 1.0
    for lag in range(1, n // 2):
        r = float(np.mean(d[:, :-lag] * d[:, lag:])) / v
        if r < cutoff:
            break
        tau += 2.0 * r
    return tau
