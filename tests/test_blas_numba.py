"""The BLAS/LAPACK routines numba lacks (msa_engine.blas_numba) against numpy, from
compiled callers as the kernels use them."""

import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit

from msa_engine import blas_numba as bn
from msa_engine.sampling import kernels_numba as kn


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (20, 100), (100, 20), (257, 64), (4, 0),
                                   (0, 4)])
@pytest.mark.parametrize("alpha", [1.0, -0.37])
def test_gram_rows_and_cols_match_numpy(shape, alpha):
    """``α A Aᵀ`` and ``α AᵀA``: both triangles, exactly symmetric, equal to numpy's
    product to rounding (dsyrk sums in its own order)."""
    rng = np.random.default_rng(sum(shape))
    A = rng.standard_normal(shape)
    m, k = shape
    rows = np.full((m, m), np.nan)
    cols = np.full((k, k), np.nan)
    bn.gram_rows(A, rows, alpha)
    bn.gram_cols(A, cols, alpha)
    for got, ref in ((rows, alpha * (A @ A.T)), (cols, alpha * (A.T @ A))):
        assert np.array_equal(got, got.T)
        scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
        assert np.max(np.abs(got - ref), initial=0.0) <= 1e-13 * scale * max(shape)


def test_gram_refuses_non_contiguous_arrays():
    A = np.ones((4, 6))
    with pytest.raises(ValueError, match="C-contiguous"):
        bn.gram_rows(A[:, ::2], np.empty((4, 4)), 1.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        bn.gram_cols(A, np.empty((12, 12))[::2, ::2], 1.0)
    with pytest.raises(ValueError, match="shape"):
        bn.gram_rows(A, np.empty((6, 6)), 1.0)


@pytest.mark.parametrize("n", [1, 2, 48, 130])
def test_spd_inverse_matches_numpy_and_refuses_indefinite(n):
    rng = np.random.default_rng(n)
    B = rng.standard_normal((n, n + 2))
    A = B @ B.T / n + 0.1 * np.eye(n)
    keep = A.copy()
    out = np.empty((n, n))
    logdet = bn.spd_inverse(A, out)
    assert np.array_equal(A, keep)                       # A is left alone
    assert logdet == pytest.approx(np.linalg.slogdet(A)[1], abs=1e-11)
    Ainv = np.linalg.inv(A)
    assert np.max(np.abs(out - Ainv)) <= 1e-12 * np.linalg.cond(A) * np.max(np.abs(Ainv))
    assert np.array_equal(out, out.T)
    A[n // 2, n // 2] = -1.0
    with pytest.raises(np.linalg.LinAlgError):
        bn.spd_inverse(A, out)


@njit(cache=False, nogil=True)
def _factor_of(Phi, g_a, kappa):
    P = Phi.shape[0]
    K, Ainv = np.empty((P, P)), np.empty((P, P))
    return K, Ainv, kn._factor(Phi, g_a, kappa, K, Ainv)


@pytest.mark.parametrize("P,N", [(20, 100), (60, 40), (300, 200)])
def test_marginal_factor_matches_numpy(P, N):
    """The marginal sampler's K = (g_a/N)ΦΦᵀ, (K+κI)⁻¹ and log det through syrk and
    potri (or the written-out inverse below SMALL_SPD), against numpy."""
    rng = np.random.default_rng(P)
    Phi = rng.standard_normal((P, N))
    K, Ainv, logdet = _factor_of(Phi, 0.8, 0.1)
    Kref = 0.8 / N * Phi @ Phi.T
    A = Kref + 0.1 * np.eye(P)
    np.testing.assert_allclose(K, Kref, rtol=0, atol=1e-13 * np.max(np.abs(Kref)))
    np.testing.assert_allclose(Ainv, np.linalg.inv(A), rtol=1e-9, atol=1e-12)
    assert logdet == pytest.approx(np.linalg.slogdet(A)[1], rel=1e-12)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc tunables")
def test_scratch_arrays_outlive_the_calls_with_malloc_perturbed():
    """The small arrays holding a call's scalars must live until the routine has read
    them.  Passed as the integer ``x.ctypes.data``, numba freed them before the call;
    with glibc's per-thread cache off and freed memory overwritten (MALLOC_PERTURB_),
    ``dsyrk`` then refused its first argument and returned NaN, and ``dpotri`` an SPD
    matrix.  A fresh process, so that the environment reaches malloc; every routine of
    the module (syrk both ways, potrf/potri) and a kernel that calls them."""
    code = textwrap.dedent("""
        import numpy as np
        from msa_engine import blas_numba as bn
        from tests.test_blas_numba import _factor_of
        rng = np.random.default_rng(0)
        for m, k in ((5, 9), (40, 30)):
            A = rng.standard_normal((m, k))
            r, c = np.empty((m, m)), np.empty((k, k))
            bn.gram_rows(A, r, 1.0)
            bn.gram_cols(A, c, 1.0)
            assert np.allclose(r, A @ A.T) and np.allclose(c, A.T @ A), "gram"
        for n in (3, 60):
            B = rng.standard_normal((n, n + 2))
            S = B @ B.T / n + 0.1 * np.eye(n)
            out = np.empty((n, n))
            ld = bn.spd_inverse(S, out)
            assert np.allclose(out, np.linalg.inv(S)), "spd_inverse"
            assert np.isclose(ld, np.linalg.slogdet(S)[1]), "logdet"
        K, Ainv, ld = _factor_of(rng.standard_normal((60, 40)), 0.8, 0.1)
        assert np.all(np.isfinite(K)) and np.all(np.isfinite(Ainv)), "factor"
        print("ok")
    """)
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0",
           "MALLOC_PERTURB_": "165"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def test_spd_inverse_refuses_nan_and_infinity():
    n = 50
    A = np.eye(n)
    for bad in (np.nan, np.inf):
        B = A.copy()
        B[7, 3] = bad
        with pytest.raises(np.linalg.LinAlgError, match="infs or NaNs"):
            bn.spd_inverse(B, np.empty((n, n)))
