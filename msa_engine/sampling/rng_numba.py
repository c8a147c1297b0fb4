"""Per-chain random streams drawn inside the numba kernels (issue 7).

Drawing the Gaussian increments with numpy and handing them to the kernel cost more
than the whole linear Langevin step: one normal per coordinate per step, written to
memory and read back.  Here every chain owns its own stream, seeded from the run's
``SeedSequence`` and checkpointed with the run, and the kernels draw from it.  A
chain's stream does not depend on the other chains, so results do not depend on how
chains are split between threads, and a resumed run replays an uninterrupted one
bit for bit.

Normals: the 256-layer ziggurat of Marsaglia & Tsang (2000) in the 64-bit form numpy
uses (``random_standard_normal``): same tables, same tests.  :func:`normal` is that
algorithm on one stream; fed numpy's bits it returns numpy's numbers exactly
(tested).

Lane streams (``STATE_WORDS`` uint64 a chain, the kernels' default).  Drawing the
``N·d`` normals of a step was most of a small linear Langevin step (issue 7).  A
chain's stream is :data:`LANES` independent xoshiro256++ states (Blackman & Vigna
2021) plus an auxiliary one.  A block of normals takes one word per normal from the
lanes in turn (word ``i`` from lane ``i mod LANES``), so that the generator and the
ziggurat's fast path run as SIMD loops; the ~1% of words the fast test rejects are
completed, in order, with uniforms (and, when the wedge test fails too, a fresh
normal) from the auxiliary stream, which also gives the Metropolis uniforms.  Every
number is an exact ziggurat normal; only the assignment of random words differs from
:func:`normal` (tested against a plain-numpy re-implementation, and statistically).
Measured: ~3 ns a normal, against 11 ns one at a time and ~15 ns for numpy's
``standard_normal``, on the 2-core development machine; 4–5 ns on its later Ice Lake
host, whose fast path needs its table lookups kept out of the SIMD loop
(:func:`_lookup_apart`).

A ``(4,)`` state is one xoshiro256++ stream drawn word by word (the streams of
checkpoint version 2, which stay resumable); ``state`` arrays of any other length
are a test hook: ``state[0]`` is a cursor into the raw 64-bit words ``state[1:]``
(e.g. numpy's ``random_raw``).
"""

from __future__ import annotations

import math

import numpy as np
from ..jit import njit

_R = 3.6541528853610087963519472518        # start of the tail of the 256-layer ziggurat
_INV_R = 0.27366123732975827203338247596
_U8 = np.uint64(8)
_U1 = np.uint64(1)
_U11 = np.uint64(11)
_U17 = np.uint64(17)
_U23 = np.uint64(23)
_U45 = np.uint64(45)
_UFF = np.uint64(0xFF)
_M52 = np.uint64(0x000FFFFFFFFFFFFF)
_TO_DOUBLE = 1.0 / 9007199254740992.0      # 2⁻⁵³
_U58 = np.uint64(58)
_U63 = np.uint64(63)
_EXP52 = np.uint64(0x4330000000000000)    # the bits of 2⁵² as a double
_TWO52 = 4503599627370496.0               # 2⁵²


def _ziggurat_tables():
    """``ki``, ``wi``, ``fi`` of numpy's 64-bit normal ziggurat (256 layers, 52-bit
    mantissa), by Marsaglia & Tsang's recursion from the tail start ``r`` and the
    common layer area ``v = r e^{-r²/2} + √(π/2) erfc(r/√2)`` (these agree with
    numpy's hard-coded tables to a few units in the last place)."""
    m1 = 2.0 ** 52
    dn = _R
    tn = dn
    vn = dn * math.exp(-0.5 * dn * dn) + math.sqrt(0.5 * math.pi) * math.erfc(dn / math.sqrt(2.0))
    ki = np.zeros(256, dtype=np.uint64)
    wi = np.zeros(256)
    fi = np.zeros(256)
    q = vn / math.exp(-0.5 * dn * dn)
    ki[0] = np.uint64(int((dn / q) * m1))
    ki[1] = np.uint64(0)
    wi[0] = q / m1
    wi[255] = dn / m1
    fi[0] = 1.0
    fi[255] = math.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        ki[i + 1] = np.uint64(int((dn / tn) * m1))
        tn = dn
        fi[i] = math.exp(-0.5 * dn * dn)
        wi[i] = dn / m1
    return ki, wi, fi


KI, WI, FI = _ziggurat_tables()
KI_F = KI.astype(np.float64)       # exact (< 2⁵³): the fast test compares doubles
LANES = 16                         # xoshiro256++ lanes per chain (one SIMD-friendly row)
BLOCK_ROWS = 512                   # rows drawn, used and completed at a time (64 KiB of
                                   # words, still in cache when read back; issue 7)
STATE_WORDS = 4 * LANES + 4        # the lanes' states, then the auxiliary stream's


@njit(cache=True, nogil=True)
def _rotl(x, k):  # pragma: no cover - numba
    return (x << k) | (x >> (np.uint64(64) - k))


@njit(cache=True, nogil=True)
def _step(x0, x1, x2, x3):  # pragma: no cover - numba
    """One xoshiro256++ step on the state words: ``(output, x0', x1', x2', x3')``."""
    out = _rotl(x0 + x3, _U23) + x0
    t = x1 << _U17
    x2 ^= x0
    x3 ^= x1
    x1 ^= x2
    x0 ^= x3
    x2 ^= t
    return out, x0, x1, x2, _rotl(x3, _U45)


@njit(cache=True, nogil=True)
def next_u64(s):  # pragma: no cover - numba
    """Next 64-bit word of the stream ``s`` (xoshiro256++; see the module docstring
    for the raw-words test hook)."""
    if s.shape[0] != 4:
        i = np.int64(s[0]) + 1
        s[0] = np.uint64(i)
        return s[i]
    out, s[0], s[1], s[2], s[3] = _step(s[0], s[1], s[2], s[3])
    return out


@njit(cache=True, nogil=True)
def next_double(s):  # pragma: no cover - numba
    """Uniform on ``[0, 1)`` with 53 random bits."""
    return np.float64(next_u64(s) >> _U11) * _TO_DOUBLE


@njit(cache=True, nogil=True)
def _decode(r):  # pragma: no cover - numba
    """Word ``r`` as the ziggurat reads it: layer ``idx`` (8 bits), then a sign bit and
    the 52-bit ``rabs``; returns ``(idx, rabs, x)`` with the signed candidate ``x``."""
    idx = np.int64(r & _UFF)
    r = r >> _U8
    rabs = (r >> _U1) & _M52
    x = np.float64(np.int64(rabs)) * WI[idx]     # via int64: the unsigned one is slower
    if (r & _U1) == _U1:
        x = -x
    return idx, rabs, x


@njit(cache=True, nogil=True)
def normal(s):  # pragma: no cover - numba
    """Standard normal by the ziggurat (numpy's ``random_standard_normal``)."""
    while True:
        idx, rabs, x = _decode(next_u64(s))
        if rabs < KI[idx]:
            return x
        if idx == 0:
            while True:
                xx = -_INV_R * math.log1p(-next_double(s))
                yy = -math.log1p(-next_double(s))
                if yy + yy > xx * xx:
                    if ((rabs >> _U8) & _U1) == _U1:
                        return -(_R + xx)
                    return _R + xx
        else:
            if (FI[idx - 1] - FI[idx]) * next_double(s) + FI[idx] < math.exp(-0.5 * x * x):
                return x


@njit(cache=True, nogil=True)
def fill_words(s, words, n):  # pragma: no cover - numba
    """The next ``n`` 64-bit words of stream ``s`` into ``words[:n]``.  The state
    lives in registers for the whole loop, which is most of why drawing a block is
    ~3× faster than word by word (issue 7)."""
    if s.shape[0] != 4:
        for i in range(n):
            words[i] = next_u64(s)
        return
    x0, x1, x2, x3 = s[0], s[1], s[2], s[3]
    for i in range(n):
        words[i], x0, x1, x2, x3 = _step(x0, x1, x2, x3)
    s[0], s[1], s[2], s[3] = x0, x1, x2, x3


@njit(cache=True, nogil=True)
def _take(s, words, pos, n):  # pragma: no cover - numba
    """Word ``pos`` of the stream as seen by :func:`fill_normal`: from the block
    drawn ahead while ``pos < n``, then straight from ``s`` (which the block left
    positioned just after it)."""
    if pos < n:
        return words[pos], pos + 1
    return next_u64(s), pos + 1


@njit(cache=True, nogil=True)
def _take_double(s, words, pos, n):  # pragma: no cover - numba
    r, pos = _take(s, words, pos, n)
    return np.float64(r >> _U11) * _TO_DOUBLE, pos


@njit(cache=True, nogil=True)
def fill_normal(s, out, words):  # pragma: no cover - numba
    """Fill ``out`` (any shape, C order) with standard normals: :func:`draw_normals`
    (``words``: at least :func:`words_needed` ``(out.size)``)."""
    f = out.ravel()
    n = f.size
    if s.shape[0] == STATE_WORDS and n % LANES != 0:
        buf = np.empty(normals_needed(n))
        draw_normals(s, buf, n, words)
        for i in range(n):          # a loop, not f[:] = buf[:n]: see lane_words
            f[i] = buf[i]
    else:
        draw_normals(s, f, n, words)


@njit(cache=True, nogil=True)
def draw_normals(s, f, n, words):  # pragma: no cover - numba
    """``f[:n]`` (``f`` 1-d contiguous) ← ``n`` standard normals from stream ``s``:
    a lane stream (``s.size == STATE_WORDS``, :func:`_draw_lanes`; ``f`` then holds
    :func:`normals_needed` ``(n)``) or a single xoshiro state / raw-word test hook
    (:func:`_draw_scalar_stream`).  ``words`` is ``uint64`` scratch of at least
    :func:`words_needed` ``(n)``."""
    if s.shape[0] == STATE_WORDS:
        _draw_lanes(s, f, n, words)
    else:
        _draw_scalar_stream(s, f, n, words)


@njit(cache=True, nogil=True)
def _draw_scalar_stream(s, f, n, words):  # pragma: no cover - numba
    """``f[:n]`` ← ``n`` standard normals from one xoshiro state (or the raw-word hook),
    exactly the numbers (and words consumed) of calling :func:`normal` ``n`` times.
    ``words`` is ``uint64`` scratch of at least ``n``.

    Every normal consumes at least one word, so the ``out.size`` words drawn ahead
    in one block are always all used; the rare rejections (~1%) read on, past the
    block, from ``s`` itself.  Scanning a block with a well-predicted fast path is
    what makes this ~3× faster than :func:`normal` per element."""
    fill_words(s, words, n)
    pos = 0
    i = 0
    while i < n:
        # fast path over the block: one word, one accepted normal (~99% of words)
        while pos < n:
            x, ok = fast_normal(words[pos])
            if not ok:
                break
            f[i] = x
            i += 1
            pos += 1
        if i >= n:
            break
        # one normal the general way, reading on past the block if needed
        r, pos = _take(s, words, pos, n)
        idx, rabs, x = _decode(r)
        if rabs < KI[idx]:
            f[i] = x
            i += 1
            continue
        if idx == 0:
            while True:
                u1, pos = _take_double(s, words, pos, n)
                u2, pos = _take_double(s, words, pos, n)
                xx = -_INV_R * math.log1p(-u1)
                yy = -math.log1p(-u2)
                if yy + yy > xx * xx:
                    break
            f[i] = -(_R + xx) if ((rabs >> _U8) & _U1) == _U1 else _R + xx
            i += 1
            continue
        u1, pos = _take_double(s, words, pos, n)
        if (FI[idx - 1] - FI[idx]) * u1 + FI[idx] < math.exp(-0.5 * x * x):
            f[i] = x
            i += 1


@njit(cache=True, nogil=True)
def fill_normal_scalar(s, out):  # pragma: no cover - numba
    """:func:`fill_normal` one :func:`normal` call at a time (the reference the
    block form is tested against)."""
    f = out.ravel()
    for i in range(f.size):
        f[i] = normal(s)


@njit(cache=True, nogil=True)
def lane_words(s, words, nb):  # pragma: no cover - numba
    """``nb`` rows of :data:`LANES` words, ``words[b·LANES + j]`` from lane ``j``.  The
    lanes are independent xoshiro256++ states, so the loop over lanes is vectorised
    (SIMD) by LLVM (the states are copied to a local array so that it can see they do
    not alias the output); on the development machine that took ~1.2 ns a word,
    against ~1.6 ns for one state stepped in registers (:func:`fill_words`).  Four
    rows per pass keep a lane's state in registers for four steps: one load and store
    of the state per four words instead of per word, whose stores bounded the loop
    (2.0 against 2.4 ns a word on a first-generation EPYC, issue 7)."""
    L = LANES
    st = s[:4 * L].copy().reshape(4, L)
    w2 = words[:nb * L].reshape(nb, L)
    b = 0
    while b + 4 <= nb:
        for j in range(L):
            o0, x0, x1, x2, x3 = _step(st[0, j], st[1, j], st[2, j], st[3, j])
            o1, x0, x1, x2, x3 = _step(x0, x1, x2, x3)
            o2, x0, x1, x2, x3 = _step(x0, x1, x2, x3)
            o3, x0, x1, x2, x3 = _step(x0, x1, x2, x3)
            w2[b, j] = o0
            w2[b + 1, j] = o1
            w2[b + 2, j] = o2
            w2[b + 3, j] = o3
            st[0, j], st[1, j], st[2, j], st[3, j] = x0, x1, x2, x3
        b += 4
    for r in range(b, nb):          # the last nb mod 4 rows
        for j in range(L):
            w2[r, j], st[0, j], st[1, j], st[2, j], st[3, j] = _step(st[0, j], st[1, j],
                                                                     st[2, j], st[3, j])
    # a loop, not s[:4 * L] = st.ravel(): numba compiles an array-to-array slice
    # assignment with a shape check whose error message took 3.5 s of the first
    # simulation's compilation (issue 7: cold start)
    for k in range(4):
        for j in range(L):
            s[k * L + j] = st[k, j]


@njit(cache=True, nogil=True)
def finish_rejected(a, r):  # pragma: no cover - numba
    """The ziggurat after its fast test rejected word ``r`` (numpy's algorithm): the
    tail or wedge test with uniforms from the auxiliary stream ``a``; when the wedge
    test fails too, the algorithm starts afresh, i.e. an independent normal from
    ``a``.  So every output has exactly the ziggurat's (standard normal) law."""
    idx, rabs, x = _decode(r)
    if idx == 0:
        while True:
            xx = -_INV_R * math.log1p(-next_double(a))
            yy = -math.log1p(-next_double(a))
            if yy + yy > xx * xx:
                return -(_R + xx) if ((rabs >> _U8) & _U1) == _U1 else _R + xx
    if (FI[idx - 1] - FI[idx]) * next_double(a) + FI[idx] < math.exp(-0.5 * x * x):
        return x
    return normal(a)


def _lookup_apart() -> bool:
    """Whether the kernels look up a row's ziggurat tables in a loop of their own
    (:func:`row_tables`) instead of inside the SIMD fast-path loop: on targets with
    AVX-512, as numba compiles for them (``NUMBA_CPU_FEATURES`` if set — so
    ``NUMBA_CPU_NAME=generic`` alone means none — else the host's features as numba
    reads them, ``NUMBA_ENABLE_AVX`` applied; the features numba keys its cache on).

    There LLVM vectorises the lookups ``WI[idx]``, ``KI_F[idx]`` as gathers, and the
    microcode against Gather Data Sampling ("Downfall", 2023) made gathers slow on the
    Intel server cores of 2017–2021: on the Ice Lake development host the fast path
    took 4.9–5.4 ns a word with them, 1.4 ns with the lookups apart (LLVM compiles
    that loop to scalar loads), the same numbers bit for bit (issue 7).  On AVX2
    targets LLVM does not gather, and the fused loop is the faster (1.2–1.35 against
    1.5–1.8 ns a word compiled for ``haswell`` / ``znver1`` on the same host).  Either
    way the numbers are the same; a wrong guess costs speed only."""
    try:
        from numba.core import config  # noqa: PLC0415
        if config.CPU_FEATURES is not None:
            features = config.CPU_FEATURES
        else:
            from numba.core.codegen import get_host_cpu_features  # noqa: PLC0415
            features = get_host_cpu_features()
    except Exception:  # pragma: no cover - LLVM cannot read this CPU: numba uses ''
        return False
    state = False
    for item in features.split(","):      # the last mention wins, as for LLVM
        item = item.strip()
        if item[1:] == "avx512f" and item[:1] in "+-":
            state = item[0] == "+"
    return state


LOOKUP_APART = _lookup_apart()


@njit(cache=True, nogil=True)
def row_tables(words, base, t):  # pragma: no cover - numba
    """``t[0, j]``, ``t[1, j]`` ← ``WI``, ``KI_F`` at the layer of word ``base + j``,
    ``j <`` :data:`LANES`: the lookups of :func:`fast_normal_at` for one row, as
    scalar loads (see :func:`_lookup_apart`)."""
    for j in range(LANES):
        idx = np.int64(words[base + j] & _UFF)
        t[0, j] = WI[idx]
        t[1, j] = KI_F[idx]


@njit(cache=True, nogil=True)
def fast_normal(r):  # pragma: no cover - numba
    """:func:`fast_normal_at` with the word's layer looked up here."""
    idx = np.int64(r & _UFF)
    return fast_normal_at(r, WI[idx], KI_F[idx])


@njit(cache=True, nogil=True)
def fast_normal_at(r, w, k):  # pragma: no cover - numba
    """The ziggurat's fast path on word ``r``: ``(x, accepted)``, branch-free (a
    random sign branch mispredicts half the time), so that loops over words vectorise.

    Every step is a SIMD instruction on AVX2, which has no 64-bit integer to double
    conversion: ``rabs`` (< 2⁵²) becomes a double exactly by putting it in the
    mantissa of 2⁵² and subtracting 2⁵²; the sign bit is XORed into the product; the
    test compares doubles, exact as both sides are integers below 2⁵³.  The same
    numbers as :func:`_decode` (tested); a conversion through int64 compiled to one
    scalar instruction per word, 3.5 against 2.5 ns a word on a first-generation
    EPYC (issue 7).  ``w``, ``k``: ``WI`` and ``KI_F`` at the word's layer (its low
    8 bits)."""
    r = r >> _U8
    rabs = np.uint64(((r >> _U1) & _M52) | _EXP52).view(np.float64) - _TWO52
    ax = np.uint64(np.float64(rabs * w).view(np.uint64) ^ ((r & _U1) << _U63))
    return ax.view(np.float64), rabs < k


@njit(cache=True, nogil=True)
def _draw_lanes(s, f, n, words):  # pragma: no cover - numba
    """``f[:n]`` ← ``n`` standard normals from the lane stream ``s`` (module
    docstring).  ``f`` must hold :func:`normals_needed` ``(n)`` (the last row is
    computed whole) and ``words`` :func:`words_needed` ``(min(n, BLOCK_ROWS·LANES))``.

    Drawn in blocks of :data:`BLOCK_ROWS` rows (:func:`_draw_block`), so that a
    block's words are still in cache when they are used and completed; the streams are
    consumed in the same order whatever the blocks."""
    for i0 in range(0, n, BLOCK_ROWS * LANES):
        _draw_block(s, f[i0:], min(n - i0, BLOCK_ROWS * LANES), words)


@njit(cache=True, nogil=True)
def _draw_block(s, f, n, words):  # pragma: no cover - numba
    """One block of :func:`_draw_lanes`: one SIMD loop applies the ziggurat's fast path
    to every word, leaving 0 where its test rejects the word (~1.5%) and recording each
    row's rejections as a bit mask in the tail of ``words``; :func:`complete_rejected`
    then fills those in, in increasing order of ``i``."""
    L = LANES
    nb = (n + L - 1) // L
    lane_words(s, words, nb)
    if LOOKUP_APART:            # a constant: numba prunes the other branches
        t = np.empty((2, L))
    for b in range(nb):
        if LOOKUP_APART:
            row_tables(words, b * L, t)
        mask = np.uint64(0)
        for j in range(L):
            i = b * L + j
            if LOOKUP_APART:
                x, ok = fast_normal_at(words[i], t[0, j], t[1, j])
            else:
                x, ok = fast_normal(words[i])
            f[i] = x if ok else 0.0
            mask |= np.uint64(not ok and i < n) << np.uint64(j)
        words[nb * L + b] = mask
    complete_rejected(s, words, nb, f, 1.0, f[:0], 0)    # no ξ² to keep


def _de_bruijn_table():
    """Bit index of ``2ᵏ`` from the top 6 bits of ``2ᵏ · DE_BRUIJN`` (a de Bruijn
    sequence: those 6 bits differ for every ``k``)."""
    t = np.zeros(64, dtype=np.int64)
    for k in range(64):
        t[((1 << k) * int(_DE_BRUIJN) % 2 ** 64) >> 58] = k
    return t


_DE_BRUIJN = np.uint64(0x03F79D71B4CB0A89)
_DE_BRUIJN_INDEX = _de_bruijn_table()


@njit(cache=True, nogil=True)
def lowest_bit_index(low):  # pragma: no cover - numba
    """``k`` for ``low = 2ᵏ`` (one bit set), by the de Bruijn multiplication."""
    return _DE_BRUIJN_INDEX[np.int64((low * _DE_BRUIJN) >> _U58)]


@njit(cache=True, nogil=True)
def complete_rejected(s, words, nb, out, scale, zsq, nrej):  # pragma: no cover - numba
    """Second pass of a lane-stream draw over ``nb`` rows: for every word whose fast
    test failed (bit ``j`` of the mask ``words[nb·LANES + b]`` marks word
    ``b·LANES + j``), in increasing order, complete the normal ``ξ`` from the auxiliary
    stream (:func:`finish_rejected`), add ``scale·ξ`` to ``out`` at that position and,
    unless ``zsq`` is empty, store ``ξ²`` at ``zsq[nrej]``, ``zsq[nrej + 1]``, …;
    returns the new ``nrej``.

    A row's rejections are found lowest bit first by a de Bruijn multiplication, one
    well-predicted step each, instead of testing its 16 bits one by one: on fresh
    random masks (rotating over 128 steps' worth, so that the branch predictor cannot
    learn them), the walk went from 0.40 to 0.22 ns a normal and the pass from 1.45 to
    1.30 on a first-generation EPYC (issue 7)."""
    L = LANES
    a = s[4 * L:4 * L + 4]
    keep = zsq.size > 0
    for b in range(nb):
        mask = words[nb * L + b]
        while mask != 0:            # the rejected words of row b, in order
            low = mask & (~mask + _U1)
            mask ^= low
            i = b * L + lowest_bit_index(low)
            z = finish_rejected(a, words[i])
            if keep:
                zsq[nrej] = z * z
            nrej += 1
            out[i] += scale * z
    return nrej


@njit(cache=True, nogil=True)
def uniform(s):  # pragma: no cover - numba
    """A uniform on ``[0, 1)`` for the Metropolis test: from the auxiliary stream of a
    lane stream, else from ``s`` itself."""
    if s.shape[0] == STATE_WORDS:
        return next_double(s[4 * LANES:4 * LANES + 4])
    return next_double(s)


def seed_states(seed_sequence: np.random.SeedSequence, chains: int) -> np.ndarray:
    """``(chains, STATE_WORDS)`` lane streams (module docstring) from independent
    children of ``seed_sequence``: :data:`LANES` + 1 xoshiro256++ states per chain,
    none all zero."""
    out = np.empty((chains, STATE_WORDS), dtype=np.uint64)
    for c, child in enumerate(seed_sequence.spawn(chains)):
        st = child.generate_state(STATE_WORDS, np.uint64)
        lanes = st[:4 * LANES].reshape(4, LANES)      # word k of lane j at [k, j]
        for j in range(LANES):
            if not np.any(lanes[:, j]):
                lanes[0, j] = 1
        if not np.any(st[4 * LANES:]):
            st[4 * LANES] = 1
        out[c] = st
    return out


def seed_scalar_states(seed_sequence: np.random.SeedSequence, chains: int) -> np.ndarray:
    """``(chains, 4)`` single xoshiro256++ states (the streams of checkpoint version 2,
    still resumable; and the tests' scalar reference)."""
    out = np.empty((chains, 4), dtype=np.uint64)
    for c, child in enumerate(seed_sequence.spawn(chains)):
        st = child.generate_state(4, np.uint64)
        if not np.any(st):
            st[0] = 1
        out[c] = st
    return out


@njit(cache=True, nogil=True)
def replay(states, steps, n_w, n_a):  # pragma: no cover - numba
    """The numbers the chunk kernels draw from ``states (C, ·)`` (copies are advanced)
    in ``steps`` steps: per chain and step ``n_w`` normals for ``W``, ``n_a`` for ``a``
    (0 for the marginal sampler), then one uniform.  Returns ``(noise_W (C,steps,n_w),
    noise_a (C,steps,n_a), u (C,steps))`` — for replaying a run in plain numpy."""
    C = states.shape[0]
    nw = np.empty((C, steps, n_w))
    na = np.empty((C, steps, n_a))
    u = np.empty((C, steps))
    m = max(n_w, n_a, 1)
    words = np.empty(words_needed(m), dtype=np.uint64)
    buf = np.empty(normals_needed(m))
    for c in range(C):
        s = states[c].copy()
        for k in range(steps):
            draw_normals(s, buf, n_w, words)
            nw[c, k] = buf[:n_w]
            if n_a > 0:
                draw_normals(s, buf, n_a, words)
                na[c, k] = buf[:n_a]
            u[c, k] = uniform(s)
    return nw, na, u


@njit(cache=True, nogil=True)
def words_needed(n):  # pragma: no cover - numba
    """Size of the ``uint64`` scratch :func:`draw_normals` needs for ``n`` normals
    (whole rows of words, then one rejection mask per row)."""
    nb = (n + LANES - 1) // LANES
    return nb * LANES + nb


@njit(cache=True, nogil=True)
def normals_needed(n):  # pragma: no cover - numba
    """Size of the output :func:`draw_normals` writes for ``n`` normals (whole rows;
    the values past ``n`` are scratch)."""
    return ((n + LANES - 1) // LANES) * LANES
