"""Special functions for the numba kernels, written so that LLVM vectorises them.

erf and its derivative are most of an erf network's cost, in the tilted-measure sampler
(THEORY §6) as in Langevin on the network (THEORY §7): ``P·N`` of them per step.  libm's
``erf`` and ``exp`` are scalar calls (numba uses Intel's SVML vector versions only where
that library is installed), so a loop over them does not vectorise.  Tested against scipy
and numpy in tests/test_nonlinear_tilted.py.
"""

from __future__ import annotations

import math

import numpy as np
from .jit import njit

# erf.  libm's erf cost 23 ns a call, most of an erf chain-step; the
# sampler needs exp(−h²) anyway (for erf'), and erf(h) = 1 − exp(−h²)·erfcx(h).  Below
# |h| = 1.5 erf(h)/h is a polynomial in h², above it erfcx(1.5/t)/t a polynomial in
# t = 1.5/|h| ∈ (0, 1]: Chebyshev least-squares fits (degrees 16 and 20) to scipy's erf
# and erfcx, converted to Horner form.  Largest error on |h| ≤ 30: 1.7e-15
# (tests/test_nonlinear_tilted.py checks it against scipy on a dense grid).
_ERF_SPLIT = 1.5
_ERF_SMALL = np.array([
    2.820307519024235e-13, -5.0628412322135e-12, 4.140534652513056e-11,
    -2.0672048228309405e-10, 7.482865714593384e-10, -2.74196964907159e-09,
    1.7356344308988868e-08, -1.6683343804711917e-07, 1.6491478853320373e-06,
    -1.4927659251967012e-05, 0.00012055433407794227, -0.0008548330611520769,
    0.00522397771379741, -0.026866170659258986, 0.11283791671087331,
    -0.3761263890318967, 1.1283791670955137])
_ERFCX_LARGE = np.array([
    0.021650074202402926, -0.22855456851112552, 1.1138811677306082,
    -3.3134435101414494, 6.690268136855283, -9.61710902819366,
    9.983401576068893, -7.346737730138738, 3.5479266215024348,
    -0.8508179860468079, -0.05541222255136846, -0.0022300380850470702,
    0.09113993432154399, 0.0014780846329324193, -0.06214081933749654,
    2.18174194802339e-05, 0.0557211138818197, 4.667062087707345e-08,
    -0.08358364286398418, 6.15414825383052e-12, 0.3761263890318304])


# exp(−h²) for the same pass, written out so that the pass vectorises (numba has no
# vector exp here: without Intel's SVML every math.exp is a scalar libm call, and with it
# the erf pass ran at 16–24 ns an element, two thirds of a d = 50 chain-step).
# exp(x) = 2^k·exp(r), x = k ln 2 + r, |r| ≤ ln2/2 (Cody–Waite split of ln 2), exp(r) by
# its Taylor polynomial of degree 13 (truncation < 4e-18); k is rounded by adding
# 1.5·2^52, whose low bits then hold it, and 2^k is built from those bits in a second,
# integer pass (AVX2 has no packed double → int64 conversion).  Largest relative error
# against numpy's exp where h² ≤ 700: 2.2e-16.  x is clamped at −700: for h² > 700 the
# value is exp(−700) ≈ 1e−304 in place of the true one (< 1e−304, 0 beyond h² ≈ 745),
# which only enters erf' and 1 − e·t·p, where it is negligible.
_INV_LN2 = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_ROUND = 6755399441055744.0            # 1.5·2^52
_ROUND_BITS = 0x4338000000000000
_EXP_TAYLOR = np.array([1.0 / math.factorial(k) for k in range(13, -1, -1)])


@njit(cache=True, nogil=True)
def erf_gauss_row(h, phi, gauss, kbits):  # pragma: no cover - numba
    """``phi[a] = erf(h[a])``, ``gauss[a] = exp(−h[a]²)`` for a contiguous vector ``h``
    (``kbits``: int64 scratch of the same size), in three branch-free passes that LLVM
    vectorises: 8 against 16–24 ns an element for a scalar libm exp and a branch.
    Both erf polynomials (see the note above the coefficients) are evaluated and one is
    selected; NaN stays NaN.  ``h`` must not share memory with ``phi``, ``gauss`` or
    ``kbits`` (the first pass writes scratch into ``phi`` and ``gauss``, the last reads
    ``h`` again)."""
    n = h.size
    for a in range(n):                # exp(r) and the rounded k (phi holds k + 1.5·2^52)
        x = max(-h[a] * h[a], -700.0)
        y = x * _INV_LN2 + _ROUND
        k = y - _ROUND
        r = (x - k * _LN2_HI) - k * _LN2_LO
        p = _EXP_TAYLOR[0]
        for i in range(1, _EXP_TAYLOR.size):
            p = p * r + _EXP_TAYLOR[i]
        gauss[a] = p
        phi[a] = y
    yb = phi.view(np.int64)
    for a in range(n):                # 2^k: biased exponent bits
        kbits[a] = (yb[a] - _ROUND_BITS + 1023) << 52
    scale = kbits.view(np.float64)
    for a in range(n):
        e = gauss[a] * scale[a]
        hh = h[a]
        aa = abs(hh)
        u = hh * hh
        ps = _ERF_SMALL[0]
        for i in range(1, _ERF_SMALL.size):
            ps = ps * u + _ERF_SMALL[i]
        t = _ERF_SPLIT / max(aa, _ERF_SPLIT)
        pl = _ERFCX_LARGE[0]
        for i in range(1, _ERFCX_LARGE.size):
            pl = pl * t + _ERFCX_LARGE[i]
        r = aa * ps if aa < _ERF_SPLIT else 1.0 - e * t * pl
        phi[a] = r if hh >= 0.0 else (-r if hh < 0.0 else hh)
        gauss[a] = e
