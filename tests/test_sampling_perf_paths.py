"""The fast paths of the samplers (issue 7): the benchmark baselines compute the same
energies and gradients as the engine's reference, results do not depend on how the
chains are split between threads, two simulations may run at once from two Python
threads, and the per-chunk diagnostics look at a bounded number of draws."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from numba import njit

import msa_engine as msa
from benchmarks.baselines import NumpyMALA, TorchMALA, torch_available
from msa_engine.sampling import kernels_numba as kn
from msa_engine.sampling import reference as ref
from msa_engine.sampling import rng_numba as rn
from msa_engine.sampling import simulate
from msa_engine.sampling.marginal import woodbury_constants
from msa_engine.sampling.run import DIAG_DRAWS, _strided

from .conftest import G_A, G_W, linear_problem


def _tiny(act):
    data = msa.make_data({"task": "hermite" if act != "linear" else "linear", "d": 5, "P": 6,
                          "P_test": 4, "seed": 3})
    return msa.Problem(data, msa.Network.make(act, N=7, g_w=G_W, g_a=G_A, kappa=0.2, chi=3.0))


@pytest.mark.parametrize("structured", [True, False])
@pytest.mark.parametrize("sampler", ["full", "marginal"])
@pytest.mark.parametrize("act", ["linear", "erf"])
def test_numpy_baseline_is_the_same_computation(sampler, act, structured):
    p = _tiny(act)
    net, data = p.network, p.data
    b = NumpyMALA(sampler, act, data.X_train, data.y_train, net.N, net.g_w, net.g_a,
                  net.kappa, net.chi, chains=3, seed=1, structured=structured)
    # P > d here: the structured linear baselines take the engine's shortcuts
    assert (b.wood is not None) == (structured and sampler == "marginal" and act == "linear")
    assert b.linear_full == (structured and sampler == "full" and act == "linear")
    args = (data.X_train, data.y_train, act, net.g_w, net.g_a, net.kappa, net.chi)
    E, gW, ga = b.energy_grad(b.W, b.a)
    if sampler == "full":
        Er, gWr, gar = ref.full_energy_grad(b.W, b.a, *args)
        np.testing.assert_allclose(ga, gar, rtol=1e-10, atol=1e-12)
    else:
        Er, gWr = ref.marginal_energy_grad(b.W, *args)
    np.testing.assert_allclose(E, Er, rtol=1e-11)
    np.testing.assert_allclose(gW, gWr, rtol=1e-10, atol=1e-12)
    # and the engine's kernels, chain by chain
    kargs = (data.X_train, data.y_train, kn.act_code(act), net.g_w, net.g_a, net.kappa, net.chi)
    for c in range(3):
        if sampler == "full":
            Ek, gWk, gak = kn.full_energy_grad(b.W[c], b.a[c], *kargs)
            np.testing.assert_allclose(gak, ga[c], rtol=1e-10, atol=1e-12)
        else:
            Ek, gWk = kn.marginal_energy_grad(b.W[c], *kargs)
        assert Ek == pytest.approx(E[c], rel=1e-11)
        np.testing.assert_allclose(gWk, gW[c], rtol=1e-10, atol=1e-12)
    # the baseline's MALA moves: a few steps stay finite and accept some proposals
    b.run(20, 0.01)
    assert np.all(np.isfinite(b.E)) and b.accepted.sum() > 0


@pytest.mark.skipif(not torch_available(), reason="torch (the optional bench extra) is "
                                                  "not installed")
@pytest.mark.parametrize("sampler", ["full", "marginal"])
def test_torch_baseline_is_the_same_computation(sampler):
    p = _tiny("erf")
    net, data = p.network, p.data
    t = TorchMALA(sampler, "erf", data.X_train, data.y_train, net.N, net.g_w, net.g_a,
                  net.kappa, net.chi, chains=2, seed=1)
    W, a = t.W.numpy(), t.a.numpy()
    args = (data.X_train, data.y_train, "erf", net.g_w, net.g_a, net.kappa, net.chi)
    if sampler == "full":
        Er, gWr, gar = ref.full_energy_grad(W, a, *args)
        np.testing.assert_allclose(t.ga.numpy(), gar, rtol=1e-9, atol=1e-12)
    else:
        Er, gWr = ref.marginal_energy_grad(W, *args)
    np.testing.assert_allclose(t.E.numpy(), Er, rtol=1e-10)
    np.testing.assert_allclose(t.gW.numpy(), gWr, rtol=1e-9, atol=1e-12)


def _ill_conditioned(P, d, log10_cond, rng):
    """``X (P,d)`` with ``cond(XᵀX) = 10**log10_cond`` and a noisy linear ``y``."""
    U = np.linalg.qr(rng.standard_normal((P, d)))[0]
    V = np.linalg.qr(rng.standard_normal((d, d)))[0]
    X = U @ np.diag(np.sqrt(P) * np.logspace(0, -log10_cond / 2, d)) @ V.T
    y = X @ rng.standard_normal(d) / np.sqrt(d) + 0.1 * rng.standard_normal(P)
    return np.ascontiguousarray(X), y


def _woodbury_case(P, d, cond, seed):
    """``(X, y)``: the linear task's data, or with ``cond(XᵀX) = 10**cond`` and noise."""
    if cond is None:
        data = msa.make_data({"task": "linear", "d": d, "P": P, "P_test": 4, "seed": seed})
        return np.ascontiguousarray(data.X_train), np.ascontiguousarray(data.y_train)
    return _ill_conditioned(P, d, cond, np.random.default_rng(seed))


# (P, d, log10 cond(XᵀX)): d = 60 takes LAPACK's SPD inverse; 10⁷ is just inside
# woodbury_applies' limit (10⁸), with noise in y so that |y − Πy|² is not 0
WOODBURY_CASES = [(12, 5, None), (40, 9, None), (150, 60, None), (120, 40, 7)]


@pytest.mark.parametrize("chi", [1.0, 40.0])
@pytest.mark.parametrize("P,d,cond", WOODBURY_CASES)
def test_woodbury_marginal_energy_matches_the_direct_one(P, d, cond, chi):
    # linear φ, P > d: the d×d Woodbury form (M = (XᵀX)⁻¹ + (c/κ)WᵀW) against the P×P
    # one of THEORY §7, which agrees with 40-digit arithmetic to ≈ 3e-16 on these cases.
    # M is about as ill-conditioned as XᵀX, so the Woodbury form's error grows like
    # ε·cond(XᵀX): measured ≤ 4e-14 (energy) / 1e-12 (gradient) up to cond 10⁴, 6e-12 /
    # 1e-10 at 10⁷ (the T = I + (c/κ)L_bᵀSL_b form it replaced: 3e-13 / 3e-13); the
    # tolerances are 1e-11 / 1e-9 where XᵀX is well conditioned, 1e-10 / 1e-8 at 10⁷
    X, y = _woodbury_case(P, d, cond, 2)
    rng = np.random.default_rng(P)
    consts = woodbury_constants(X, y, "linear")
    assert consts[2][0] == 1.0
    rel_e, rel_g = (1e-11, 1e-9) if cond is None else (1e-10, 1e-8)
    for N in (3, 17):
        W = rng.standard_normal((N, d)) * 0.8
        args = (G_W, G_A, 0.15, chi)
        E1, g1 = kn.marginal_energy_grad(W, X, y, None, *args)
        E2, g2 = kn.marginal_energy_grad_wood(W, X, *consts, *args)
        assert E2 == pytest.approx(E1, rel=rel_e, abs=1e-11)
        np.testing.assert_allclose(g2, g1, rtol=rel_g, atol=rel_g * 1e-2 * np.abs(g1).max())
    # not used where it does not apply
    assert woodbury_constants(X[:d], y[:d], "linear")[2][0] == 0.0
    assert woodbury_constants(X, y, "erf")[2][0] == 0.0


@pytest.mark.parametrize("P,d,cond", WOODBURY_CASES)
def test_woodbury_observables_match_the_direct_ones(P, d, cond):
    # what a kept draw measures on the Woodbury path (from the step's S, M⁻¹, v) against
    # the P×P computation of observe(): train and test means, test variance, Q, u·S·u/N
    X, y = _woodbury_case(P, d, cond, 5)
    rng = np.random.default_rng(d)
    Xs = rng.standard_normal((7, d))
    u = rng.standard_normal(d)
    consts = woodbury_constants(X, y, "linear")
    g_a, kappa, chi = G_A, 0.15, 3.0
    tol = 1e-10 if cond is None else 1e-8
    for N in (3, 17):
        W = rng.standard_normal((N, d)) * 0.8
        S, Mi, v = np.empty((d, d)), np.empty((d, d)), np.empty(d)
        kn._wood_core(W, *consts, P, G_W, g_a, kappa, chi, S, Mi, v, np.empty((N, d)), W,
                      1.0, 0.0)
        outs = []
        for fn, pre in ((kn.observe_wood, (W, S, Mi, v, X, Xs)), (kn.observe, (W, X, Xs, y))):
            ftr, fte, vte = np.zeros(P), np.zeros(7), np.zeros(7)
            rest = (u, g_a, kappa, chi) if fn is kn.observe_wood else (u, None, g_a, kappa, chi)
            Q, sl = fn(*pre, *rest, ftr, fte, vte, np.zeros((P, P)), np.zeros((d, d)))
            outs.append((ftr, fte, vte, Q, sl))
        # the test variance is the prior one less the part the data explain, a small
        # difference of two large numbers: both forms (and the P×P one) are off by
        # ≈ 1e-8 of it at d = 60 against 40-digit arithmetic, ≈ 1e-16 of the prior one;
        # Q is g_a plus such a difference, so both are compared on their prior's scale
        prior = g_a / N * np.einsum("ij,jk,ik->i", Xs, W.T @ W, Xs) / chi
        for a, b, scale in zip(*outs, (None, None, prior, g_a, None)):
            atol = tol * np.max(np.abs(b if scale is None else scale))
            np.testing.assert_allclose(a, b, rtol=tol if scale is None else 0, atol=atol)


@pytest.mark.parametrize("n", [0, 5, 16, 47, 3000])
def test_reverse_term_alone_is_the_one_summed_with_the_gradient_pass(n):
    # the Woodbury step's gradient comes whole from its N×d product, so it sums the
    # reverse MALA term in a pass of its own: the same lanes and order as the pass that
    # also scales the gradient (g ← 1·g + 0·x leaves g as it is), so the same bits
    rng = np.random.default_rng(n)
    x, xc, g = (rng.standard_normal(n) for _ in range(3))
    s, h = 0.7, 0.013
    want = kn._scale_add_sq(g.copy(), 1.0, x, 0.0, xc, s, h)[1]
    assert kn._reverse_sq(x, xc, g, s, h) == want
    if n:
        z = (xc - x) / s + 0.5 * h * s * g
        assert want == pytest.approx(float(z @ z), rel=1e-13)
    assert kn._reverse_sq(x, xc, g, s, 0.0) == 0.0


@pytest.mark.parametrize("sampler,act", [("marginal", "erf"), ("full", "linear"),
                                         ("marginal", "linear"), ("full", "erf")])
def test_result_does_not_depend_on_thread_count(sampler, act):
    p = _tiny(act)
    kw = dict(sampler=sampler, chains=3, steps=60, burn_in=20, seed=7, chunk=25)
    one = simulate(p, threads=1, **kw)
    two = simulate(p, threads=2, **kw)
    three = simulate(p, threads=3, **kw)
    for r in (two, three):
        for k in one.traces:
            assert np.array_equal(one.traces[k], r.traces[k]), k
        assert np.array_equal(one.weight_cov, r.weight_cov)
        assert np.array_equal(one.test_predictive_variance, r.test_predictive_variance)
        assert one.acceptance == r.acceptance and one.step_size == r.step_size


def test_two_simulations_at_once_from_two_threads():
    # the TUI may run two simulations (or a solve and a simulation) at once: the
    # kernels are nogil without a threading layer, so this must be safe and give
    # the very results of running them one after the other
    p = linear_problem(N=30, chi=2.0, d=8, P=10, P_test=6)
    kws = [dict(sampler="marginal", seed=1), dict(sampler="full", seed=2)]
    common = dict(chains=3, steps=80, burn_in=20, chunk=20, threads=2)
    alone = [simulate(p, **kw, **common) for kw in kws]
    together = [None, None]

    def work(i):
        together[i] = simulate(p, **kws[i], **common)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for a, b in zip(alone, together):
        assert b is not None
        for k in a.traces:
            assert np.array_equal(a.traces[k], b.traces[k]), k


def test_progress_records_do_not_depend_on_timing(monkeypatch):
    """Per-chunk R̂/ESS are recomputed at draw counts fixed by the run (not by the wall
    clock), so two runs with one seed and chunk size report identical progress, even
    when one of them is slowed down."""
    import time as _time

    p = _tiny("erf")
    kw = dict(sampler="marginal", chains=2, steps=600, burn_in=40, seed=3, chunk=20)

    def progress(slow):
        recs = []
        if slow:
            real = _time.perf_counter
            ticks = iter(range(10 ** 9))
            monkeypatch.setattr(_time, "perf_counter", lambda: real() + 5.0 * next(ticks))
        simulate(p, callback=recs.append, **kw)
        monkeypatch.undo()
        return [(r.steps_done, r.rhat_max, r.ess_min) for r in recs]

    a, b = progress(False), progress(True)
    assert a == b or all(x[:1] == y[:1] and np.allclose(x[1:], y[1:], equal_nan=True)
                         for x, y in zip(a, b))
    assert len(a) == 32
    # refreshed more than once, but not on every chunk
    changes = sum(1 for x, y in zip(a, a[1:]) if x[1:] != y[1:])
    assert 3 <= changes < len(a) - 1


def test_progress_diagnostics_use_a_bounded_subset():
    for m in (1, 7, DIAG_DRAWS, DIAG_DRAWS + 1, 12000, 10 ** 6):
        idx = np.arange(m)[_strided(m)]
        assert 1 <= idx.size <= DIAG_DRAWS and idx[0] == 0
        assert idx.size >= min(m, DIAG_DRAWS // 2)          # not needlessly sparse
        assert np.all(np.diff(idx) == idx[1] - idx[0]) if idx.size > 1 else True


def test_ziggurat_fed_numpys_bits_gives_numpys_normals():
    # the kernels' normal generator is numpy's algorithm: fed the same 64-bit words
    # (PCG64's raw output) it returns numpy's numbers and consumes as many words
    n = 100_000
    words = np.random.PCG64(2024).random_raw(3 * n)
    s = np.empty(words.size + 1, dtype=np.uint64)
    s[0] = 0
    s[1:] = words
    out = np.empty(n)
    s_scalar = s.copy()
    rn.fill_normal(s, out, np.empty(n, dtype=np.uint64))
    g = np.random.Generator(np.random.PCG64(2024))
    expect = g.standard_normal(n)
    np.testing.assert_allclose(out, expect, rtol=1e-13, atol=0)
    bg = np.random.PCG64(2024)
    bg.advance(int(s[0]))
    assert bg.state == g.bit_generator.state
    assert np.any(np.abs(expect) > rn._R)        # the tail branch was exercised
    # the word-at-a-time form gives the same numbers and consumes as many words
    ref = np.empty(n)
    rn.fill_normal_scalar(s_scalar, ref)
    assert np.array_equal(ref, out) and s_scalar[0] == s[0]


def test_block_normals_equal_one_at_a_time_on_xoshiro_streams():
    # the block form draws n words ahead and reads on past them on rejections: the
    # stream state afterwards and every number must equal n calls of normal()
    st = rn.seed_scalar_states(np.random.SeedSequence(11), 3)
    for n in (1, 2, 7, 100, 3001, 200_000):
        a, b = st[0].copy(), st[0].copy()
        out, ref = np.empty(n), np.empty(n)
        rn.fill_normal(a, out, np.empty(n, dtype=np.uint64))
        rn.fill_normal_scalar(b, ref)
        assert np.array_equal(out, ref) and np.array_equal(a, b), n
        st[0] = a
    assert np.any(np.abs(ref) > rn._R)


@njit
def _fast_and_decoded(words):
    """``fast_normal`` and the ziggurat's own decoding (``_decode``, its fast test) of
    every word, as bit patterns."""
    out = np.empty((words.size, 4), dtype=np.uint64)
    for i in range(words.size):
        x, ok = rn.fast_normal(words[i])
        idx, rabs, y = rn._decode(words[i])
        out[i, 0] = np.uint64(np.float64(x).view(np.uint64))
        out[i, 1] = np.uint64(np.float64(y).view(np.uint64))
        out[i, 2] = np.uint64(ok)
        out[i, 3] = np.uint64(rabs < rn.KI[idx])
    return out


@njit
def _fast_by_rows(words):
    """The fast path with each row's layers looked up first (``row_tables``, then
    ``fast_normal_at``: the kernels' path on AVX-512 targets), as bit patterns."""
    L = rn.LANES
    out = np.empty((words.size, 2), dtype=np.uint64)
    t = np.empty((2, L))
    for b in range(words.size // L):
        rn.row_tables(words, b * L, t)
        for j in range(L):
            x, ok = rn.fast_normal_at(words[b * L + j], t[0, j], t[1, j])
            out[b * L + j, 0] = np.uint64(np.float64(x).view(np.uint64))
            out[b * L + j, 1] = np.uint64(ok)
    return out


def test_fast_path_decodes_every_word_as_the_ziggurat_does():
    """The fast path's SIMD-friendly arithmetic (the mantissa trick, the sign by XOR,
    the test on doubles) gives bit for bit the candidate and the verdict of the
    ziggurat's integer decoding: on random words, on rabs = 0 with either sign, and
    on both sides of every layer's threshold (rabs = KI − 1, KI, KI + 1)."""
    rng = np.random.default_rng(5)
    layer = np.arange(256, dtype=np.uint64)
    edges = []
    for delta in (-1, 0, 1):
        rabs = np.clip(rn.KI.astype(np.int64) + delta, 0, 2**52 - 1).astype(np.uint64)
        for sign in (0, 1):
            edges.append(layer | (np.uint64(sign) << np.uint64(8)) | (rabs << np.uint64(9)))
    for sign in (0, 1):       # rabs = 0, i.e. ±0.0, and the largest rabs
        edges.append(layer | (np.uint64(sign) << np.uint64(8)))
        edges.append(layer | (np.uint64(sign) << np.uint64(8))
                     | (np.uint64(2**52 - 1) << np.uint64(9)))
    words = np.concatenate(edges + [rng.integers(0, 2**64, 200_000, dtype=np.uint64)])
    words = np.concatenate([words, np.zeros(-words.size % rn.LANES, dtype=np.uint64)])
    got = _fast_and_decoded(words)
    assert np.array_equal(got[:, 0], got[:, 1])
    assert np.array_equal(got[:, 2], got[:, 3])
    by_rows = _fast_by_rows(words)          # the layers looked up a row at a time
    assert np.array_equal(by_rows[:, 0], got[:, 0]) and np.array_equal(by_rows[:, 1], got[:, 2])
    assert 0 < got[:, 2].sum() < words.size and np.any(got[:, 0] == np.uint64(1) << np.uint64(63))


def _xoshiro_np(st):
    """One xoshiro256++ step on numpy uint64 arrays ``st (4, lanes)`` (in place)."""
    def rotl(x, k):
        return (x << np.uint64(k)) | (x >> np.uint64(64 - k))
    s0, s1, s2, s3 = st
    out = rotl(s0 + s3, 23) + s0
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    st[3] = rotl(s3, 45)
    return out


def _lane_words_np(st, n):
    """The first ``n`` words of the lane stream ``st`` (word i from lane i mod 16, whole
    rows drawn) by plain numpy, and the lanes' states ``(4, 16)`` after them."""
    L = rn.LANES
    lanes = st[:4 * L].reshape(4, L).copy()
    rows = [_xoshiro_np(lanes) for _ in range(-(-n // L))]
    words = np.concatenate(rows) if rows else np.empty(0, dtype=np.uint64)
    return words[:n], lanes


def test_lane_words_match_plain_xoshiro_lanes_for_every_row_count():
    """The lane words, drawn four rows a pass plus the remaining rows one by one, are
    the lanes' xoshiro256++ outputs row after row, and leave the states where that
    does, for 0 to 9 rows (no full pass, passes with 0 to 3 rows left)."""
    L = rn.LANES
    st = rn.seed_states(np.random.SeedSequence(4), 1)[0]
    for nb in range(10):
        mine = st.copy()
        words = np.zeros(nb * L + 1, dtype=np.uint64)
        rn.lane_words(mine, words, nb)
        expect, lanes = _lane_words_np(st, nb * L)
        assert np.array_equal(words[:nb * L], expect), nb
        assert words[nb * L] == 0                              # nothing written past
        assert np.array_equal(mine[:4 * L].reshape(4, L), lanes), nb
        assert np.array_equal(mine[4 * L:], st[4 * L:]), nb    # auxiliary stream untouched


def test_lane_stream_matches_a_plain_numpy_implementation():
    """The SIMD lane stream, re-implemented with numpy arrays from its description:
    word i from lane i mod 16 (xoshiro256++), numpy's ziggurat fast path on it, the
    rejected words completed in order from the auxiliary stream (wedge/tail tests with
    its uniforms, a fresh ziggurat normal when the wedge test fails)."""
    L = rn.LANES
    st = rn.seed_states(np.random.SeedSequence(21), 1)[0]
    for n in (5, 16, 3000, 50_001):
        mine = st.copy()
        out = np.empty(n)
        rn.fill_normal(mine, out, np.empty(rn.words_needed(n), dtype=np.uint64))
        # reference
        words, lanes = _lane_words_np(st, n)
        aux = st[4 * L:].copy()
        idx = (words & np.uint64(0xFF)).astype(np.int64)
        r = words >> np.uint64(8)
        rabs = (r >> np.uint64(1)) & np.uint64(0x000FFFFFFFFFFFFF)
        x = rabs.astype(np.float64) * rn.WI[idx]
        x = np.where((r & np.uint64(1)) == 1, -x, x)
        ok = rabs < rn.KI[idx]
        ref = x.copy()
        for i in np.flatnonzero(~ok):
            if idx[i] == 0:
                while True:
                    xx = -rn._INV_R * np.log1p(-rn.next_double(aux))
                    yy = -np.log1p(-rn.next_double(aux))
                    if yy + yy > xx * xx:
                        break
                ref[i] = -(rn._R + xx) if (int(rabs[i]) >> 8) & 1 else rn._R + xx
            elif ((rn.FI[idx[i] - 1] - rn.FI[idx[i]]) * rn.next_double(aux) + rn.FI[idx[i]]
                  < np.exp(-0.5 * x[i] ** 2)):
                ref[i] = x[i]
            else:
                ref[i] = rn.normal(aux)
        np.testing.assert_allclose(out, ref, rtol=1e-14, atol=0)
        assert np.array_equal(mine[:4 * L].reshape(4, L), lanes) and np.array_equal(mine[4 * L:], aux)
        st = mine
    assert (~ok).sum() > 100 and np.any(idx[~ok] == 0)   # both slow branches exercised


def test_chain_streams_are_standard_normal_and_independent():
    st = rn.seed_states(np.random.SeedSequence(5), 2)
    assert not np.array_equal(st[0], st[1])
    n = 1_000_000
    z = np.empty((2, n))
    wb = np.empty(rn.words_needed(n), dtype=np.uint64)
    rn.fill_normal(st[0], z[0], wb)
    rn.fill_normal(st[1], z[1], wb)
    x = z[0]
    # z-scores of the moments and of tail/central probabilities (fixed seed)
    from scipy import stats
    checks = [(x.mean(), 0.0, 1.0), ((x ** 2).mean(), 1.0, np.sqrt(2.0)),
              ((x ** 3).mean(), 0.0, np.sqrt(15.0)), ((x ** 4).mean(), 3.0, np.sqrt(96.0))]
    for p_lo in (rn._R, 2.0, 1.0):
        p = 2 * stats.norm.sf(p_lo)
        checks.append(((np.abs(x) > p_lo).mean(), p, np.sqrt(p * (1 - p))))
    for est, mu, sd in checks:
        assert abs(est - mu) / (sd / np.sqrt(n)) < 5.0, (est, mu)
    r = np.corrcoef(z[0], z[1])[0, 1]
    assert abs(r) * np.sqrt(n) < 5.0
    assert stats.kstest(x[:200_000], "norm").pvalue > 1e-4
    # the 16 lanes: no lane differs from the others (mean and variance per lane)
    lanes = x[: n - n % rn.LANES].reshape(-1, rn.LANES)
    m = lanes.shape[0]
    assert np.all(np.abs(lanes.mean(axis=0)) * np.sqrt(m) < 5.0)
    assert np.all(np.abs(lanes.var(axis=0) - 1.0) / np.sqrt(2.0 / m) < 5.0)
    # neighbouring words (different lanes, and one lane's successive words) uncorrelated
    for lag in (1, rn.LANES):
        assert abs(np.corrcoef(x[:-lag], x[lag:])[0, 1]) * np.sqrt(n) < 5.0
    # uniforms for the Metropolis test: mean 1/2, variance 1/12
    s = st[0].copy()
    u = np.array([rn.uniform(s) for _ in range(20000)])
    assert abs(u.mean() - 0.5) / np.sqrt(1 / 12 / u.size) < 5 and 0.0 <= u.min() and u.max() < 1.0


@pytest.mark.parametrize("sampler,act", [("marginal", "erf"), ("full", "linear")])
def test_version_2_checkpoints_resume_on_their_single_streams(tmp_path, sampler, act):
    """A run checkpointed before the lane streams (format 2, one xoshiro state a chain)
    resumes exactly as it would have continued; format 1 is refused in one line."""
    import json as _json

    from msa_engine.errors import MSAError
    from msa_engine.sampling.run import _Run

    p = _tiny(act)
    args = (p, sampler, 3, 60, 20, 1, "mala", None, 5, 10)

    def legacy():
        r = _Run(*args)
        r.rng = rn.seed_scalar_states(np.random.SeedSequence(99), 3)
        r.meta["version"] = 2
        return r

    ref = legacy()
    ref.advance(30)
    path = tmp_path / "ck.npz"
    ref.save(path, 1.0)
    ref.advance(80)
    back = _Run(*args)
    back.load(path)
    assert back.rng.shape == (3, 4) and back.meta["version"] == 2
    back.advance(80)
    assert np.array_equal(back.state["W"], ref.state["W"])
    assert np.array_equal(back.tr_fte, ref.tr_fte)
    # and a fresh run uses the lane streams, giving different (equally valid) numbers
    fresh = _Run(*args)
    assert fresh.rng.shape == (3, rn.STATE_WORDS)
    # format 1: refused with a clear message
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = _json.loads(str(arrays.pop("meta")))
    meta["version"] = 1
    old = tmp_path / "v1.npz"
    np.savez(old, meta=np.array(_json.dumps(meta)), **arrays)
    with pytest.raises(MSAError, match="older format"):
        _Run(*args).load(old)


def test_spare_threads_go_to_blas_in_every_chain_group():
    """``threads > chains``: the threads beyond one per chain group become BLAS threads,
    also when the chains run in several groups at once (BLAS's setting is process-wide,
    so each group gets an equal share); small products keep one BLAS thread."""
    from msa_engine.sampling.run import _Run

    big = msa.Problem(msa.make_data({"task": "linear", "d": 100, "P": 200, "P_test": 10,
                                     "seed": 0}),
                      msa.Network.make("erf", N=2000, g_w=G_W, g_a=G_A, kappa=0.1, chi=1.0))
    run = _Run(big, "marginal", 2, 10, 10, 1, "mala", 1e-3, 0, 10, threads=4)
    assert run.threads == 2
    assert run._blas_threads(1) == 4 and run._blas_threads(2) == 2
    assert _Run(big, "marginal", 2, 10, 10, 1, "mala", 1e-3, 0, 10, threads=3)._blas_threads(2) == 1
    assert _Run(big, "marginal", 2, 10, 10, 1, "mala", 1e-3, 0, 10)._blas_threads(1) == 1
    small = _Run(_tiny("erf"), "marginal", 2, 10, 10, 1, "mala", 1e-3, 0, 10, threads=4)
    assert small._blas_threads(2) == 1


def test_kernels_run_with_one_blas_thread_when_numpy_was_imported_first():
    """A user script that imports numpy before msa_engine gets OpenBLAS's default of
    one thread per core; the sampler's chain threads must not multiply with them."""
    code = (
        "import numpy as np\n"
        "from threadpoolctl import threadpool_info\n"
        "import msa_engine as msa\n"
        "from msa_engine.threads import blas_limit\n"
        "import scipy.linalg.cython_blas  # numba's BLAS, loaded by any kernel call\n"
        "before = [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "with blas_limit(1):\n"
        "    inside = [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "after = [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "print(before, inside, after)\n"
        "assert len(inside) == len(before) and all(n == 1 for n in inside)\n"
        "assert after == before\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_fused_lane_proposal_equals_drawing_the_normals_first():
    """The samplers' proposal on a lane stream draws and uses its normals in one pass;
    it must give p = x − drift·g + scale·ξ and |ξ|² with the very numbers of
    draw_normals, and leave the stream where draw_normals leaves it."""
    rng = np.random.default_rng(3)
    # 8192 words: exactly one block of rows; 8193, 40 001: a partial row after whole blocks
    for n in (3, 16, 3000, 3001, 8192, 8193, 40_000, 40_001):
        st = rn.seed_states(np.random.SeedSequence(n), 1)[0]
        x, g = rng.standard_normal(n), rng.standard_normal(n)
        a, b = st.copy(), st.copy()
        p = np.empty(n)
        zb = np.empty(rn.normals_needed(n) + rn.LANES)
        wb = np.empty(rn.words_needed(n), dtype=np.uint64)
        xi2 = kn._propose_rng(x, g, p, 0.03, 0.7, a, zb, wb)
        z = np.empty(rn.normals_needed(n))
        rn.draw_normals(b, z, n, np.empty(rn.words_needed(n), dtype=np.uint64))
        z = z[:n]
        assert np.array_equal(a, b)
        np.testing.assert_array_equal(p, (x - 0.03 * g) + 0.7 * z)
        assert xi2 == pytest.approx(float(z @ z), rel=1e-13)
        # |ξ|² bit for bit as the kernels have always summed it (a reordering would
        # change the Metropolis ratios, so that saved runs no longer replay): per lane
        # over the rows (fast-path normals only), the lanes in order, then the completed
        # (rejected) words' ξ² in order
        L = rn.LANES
        words = _lane_words_np(st, n)[0]
        rabs = (words >> np.uint64(9)) & np.uint64(0x000FFFFFFFFFFFFF)
        ok = rabs < rn.KI[(words & np.uint64(0xFF)).astype(np.int64)]
        zf = np.zeros(-(-n // L) * L)
        zf[:n] = np.where(ok, z, 0.0)
        acc = np.zeros(L)
        for row in zf.reshape(-1, L):
            acc += row * row
        expect = 0.0
        for v in acc:
            expect += v
        for i in np.flatnonzero(~ok):
            expect += z[i] * z[i]
        assert xi2 == expect, n
    with pytest.raises(ValueError, match="scratch too small"):   # refused, not overrun
        kn._propose_rng(x, g, p, 0.03, 0.7, st.copy(), np.empty(n), wb)
    # a single xoshiro state (4 words) read as a lane stream would be read past its end
    single = rn.seed_scalar_states(np.random.SeedSequence(1), 1)[0]
    with pytest.raises(ValueError, match="not a lane stream"):
        kn._propose_rng(x, g, p, 0.03, 0.7, single, zb, wb)
    assert kn.scalar_streams(st[None]) is None and kn.scalar_streams(single[None]) is True


_BOTH_LOOKUPS = """
import hashlib, numpy as np
from msa_engine.sampling import kernels_numba as kn, rng_numba as rn
h = hashlib.sha256()
for n in (100, 3000, 8193, 40001):
    st = rn.seed_states(np.random.SeedSequence(n), 1)[0]
    z = np.empty(rn.normals_needed(n))
    rn.draw_normals(st, z, n, np.empty(rn.words_needed(n), dtype=np.uint64))
    x = np.linspace(-1.0, 1.0, n)
    p = np.empty(n)
    xi2 = kn._propose_rng(x, x[::-1].copy(), p, 0.03, 0.7, st,
                          np.empty(rn.normals_needed(n) + rn.LANES),
                          np.empty(rn.words_needed(n), dtype=np.uint64))
    for a in (z[:n], p, np.array([xi2]), st):
        h.update(a.tobytes())
print(rn.LOOKUP_APART, h.hexdigest())
"""


def test_both_table_lookups_draw_the_same_numbers(tmp_path):
    """The fast path looks its ziggurat layers up apart from the SIMD loop on AVX-512
    targets (``rng_numba._lookup_apart``: gathers there are slow) and inside it
    elsewhere.  Compiled both ways — for this host, and for it without AVX-512 — the
    normals, a fused proposal, its ``|ξ|²`` and the streams' states after them agree bit
    for bit, so a session replays alike on either kind of machine."""
    import llvmlite.binding as ll
    features = ll.get_host_cpu_features().flatten()
    if "+avx512f" not in features.split(","):
        pytest.skip("only a host with AVX-512 compiles both lookups (the other path "
                    "would need instructions this CPU lacks)")
    without = ",".join("-" + f[1:] if f.startswith("+avx512") else f
                       for f in features.split(","))
    outs = []
    for i, extra in enumerate(({}, {"NUMBA_CPU_FEATURES": without})):
        env = {k: v for k, v in os.environ.items()       # the host's target, then it
               if k not in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME", "NUMBA_ENABLE_AVX")}
        env.update(NUMBA_CACHE_DIR=str(tmp_path / f"cache{i}"), **extra)
        out = subprocess.run([sys.executable, "-c", _BOTH_LOOKUPS], capture_output=True,
                             text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        outs.append(out.stdout.split())
    assert [o[0] for o in outs] == ["True", "False"]
    assert outs[0][1] == outs[1][1]


@pytest.mark.parametrize("apart", [True, False])
def test_both_lookup_branches_of_the_block_kernels(monkeypatch, apart):
    """On any host: the block kernels run as plain Python (their ``py_func``, calling the
    compiled helpers) with either value of ``LOOKUP_APART`` give the compiled kernels'
    numbers and leave the stream alike — whole rows, a partial last row, a rejection."""
    monkeypatch.setattr(rn, "LOOKUP_APART", apart)
    monkeypatch.setattr(kn, "LOOKUP_APART", apart)
    rng = np.random.default_rng(7)
    for n in (40, 100):
        st = rn.seed_states(np.random.SeedSequence(n + 1), 1)[0]
        a, b = st.copy(), st.copy()
        f1, f2 = np.empty(rn.normals_needed(n)), np.empty(rn.normals_needed(n))
        rn._draw_block(a, f1, n, np.zeros(rn.words_needed(n), dtype=np.uint64))
        rn._draw_block.py_func(b, f2, n, np.zeros(rn.words_needed(n), dtype=np.uint64))
        assert np.array_equal(f1[:n], f2[:n]) and np.array_equal(a, b), n
        x, g = rng.standard_normal(n), rng.standard_normal(n)
        outs = []
        for kernel in (kn._propose_block, kn._propose_block.py_func):
            s, p = st.copy(), np.empty(n)
            acc = np.zeros(rn.LANES + n)
            nrej = kernel(x, g, p, 0.03, 0.7, s, acc,
                          np.zeros(rn.words_needed(n), dtype=np.uint64), np.int64(0))
            outs.append((p, acc[:rn.LANES + nrej], s))
        for u, v in zip(*outs):
            assert np.array_equal(u, v), n
        assert outs[0][1].size > rn.LANES or n == 40     # n = 100 completes a rejected word


def test_sampler_kernels_take_a_linear_activation_as_none():
    """Linear φ is ``None`` in the kernels (its own paths, pruned by type); the int 0
    would take the general paths, which read ``P×N`` buffers a linear workspace lacks,
    so the samplers' kernels refuse it."""
    assert kn.act_code("linear") is None
    assert (kn.act_code("erf"), kn.act_code("relu")) == (1, 2)
    for ok in (None, 1, 2):
        kn._check_code(ok)
    with pytest.raises(ValueError, match="code None"):
        kn._check_code(0)


@pytest.mark.parametrize("n", [1, 2, 5, 20, 33, kn.SMALL_SPD - 1, kn.SMALL_SPD, 60, 200])
def test_spd_inverse_and_log_determinant_match_lapack(n):
    """The written-out small SPD inverse (rows of L⁻¹ by axpys, then L⁻ᵀL⁻¹) and the
    LAPACK path above :data:`SMALL_SPD` against numpy: log det, inverse, exact
    symmetry; a matrix that is not positive definite is refused."""
    rng = np.random.default_rng(n)
    B = rng.standard_normal((n, n + 3))
    A = B @ B.T / n + 0.05 * np.eye(n)
    out = np.empty((n, n))
    logdet = kn._logdet_and_inverse(A, out)
    sign, ref_logdet = np.linalg.slogdet(A)
    assert sign > 0 and abs(logdet - ref_logdet) <= 1e-12 * max(1.0, abs(ref_logdet))
    Ainv = np.linalg.inv(A)
    assert np.max(np.abs(out - Ainv)) <= 1e-12 * np.linalg.cond(A) * np.max(np.abs(Ainv))
    assert np.array_equal(out, out.T)
    if n > 1:
        bad = A.copy()
        bad[-1, -1] = -1.0
        with pytest.raises(np.linalg.LinAlgError):
            kn._logdet_and_inverse(bad, out)
