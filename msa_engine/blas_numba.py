"""BLAS and LAPACK routines that numba does not expose, callable from ``@njit`` kernels.

numba's ``np.dot`` calls ``dgemm`` from scipy's BLAS, which does not know that ``AᵀA``
is symmetric: a Gram matrix costs twice the multiply-adds it needs.  Its
``np.linalg.inv`` of an SPD matrix is an LU inverse (≈ 2n³ FLOPs) on top of the
Cholesky factor the samplers need anyway for log det (n³/3), where the Cholesky inverse
(``potri``) needs ≈ 2n³/3.  Here are those two, from the same library numba uses:

- :func:`gram_rows` ``out = α A Aᵀ`` and :func:`gram_cols` ``out = α AᵀA`` (``dsyrk``),
- :func:`spd_inverse` ``out = A⁻¹`` and ``log det A`` (``dpotrf`` + ``dpotri``).

How.  ``scipy.linalg.cython_blas`` / ``cython_lapack`` export their functions as
capsules (the Fortran ABI: every argument by pointer, 32-bit integers, no hidden string
lengths); numba itself takes ``dgemm`` from there.  Their addresses are registered with
LLVM under fixed names at import, and the kernels call them as external symbols, so that
the kernels stay ``cache=True``: a cached kernel is linked by name when it is loaded, in
a process that has imported this module (a ``ctypes`` function object would bake the
address into the code, and numba refuses to cache that).  Arguments are passed as
``x.ctypes`` (a ``void*`` that holds a reference to its array): passed as the integer
``x.ctypes.data``, the address was an array's last use, and numba freed the small scratch
arrays before the routine read them (seen in the LLVM IR; with glibc's malloc perturbed,
``dsyrk`` then refused its first argument — tests/test_blas_numba.py runs that check).
All arrays passed must be C-contiguous (checked).

numba's cache is keyed on each function's own source file: a kernel elsewhere that calls
these keeps its cached code when only this file changes.  A change here must come with a
content change in the calling modules (``sampling/kernels_numba.py``), or users' caches
must be cleared.
"""

from __future__ import annotations

import math

import llvmlite.binding as _llvm
import numpy as np
from numba import types
from numba.extending import get_cython_function_address

from .jit import njit

_PREFIX = "msa_engine_"


def _external(module: str, name: str, nargs: int):
    symbol = _PREFIX + name
    _llvm.add_symbol(symbol, get_cython_function_address(module, name))
    return types.ExternalFunction(symbol, types.void(*([types.voidptr] * nargs)))


# dsyrk(uplo, trans, n, k, alpha, a, lda, beta, c, ldc)
_dsyrk = _external("scipy.linalg.cython_blas", "dsyrk", 10)
# dpotrf(uplo, n, a, lda, info), dpotri(uplo, n, a, lda, info)
_dpotrf = _external("scipy.linalg.cython_lapack", "dpotrf", 5)
_dpotri = _external("scipy.linalg.cython_lapack", "dpotri", 5)


@njit(cache=True, nogil=True)
def _syrk(A, out, alpha, rows):  # pragma: no cover - numba
    """``out = α A Aᵀ`` (``rows``) or ``α AᵀA``, both triangles written.

    A C-contiguous ``(m, k)`` array is, to Fortran, the column-major ``Aᵀ`` with
    leading dimension ``k``; ``syrk`` fills Fortran's upper triangle of ``out``, which
    is the lower triangle of the C array, and the loop below mirrors it."""
    if not (A.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("gram: arrays must be C-contiguous")
    m, k = A.shape
    n = m if rows else k
    if out.shape[0] != n or out.shape[1] != n:
        raise ValueError("gram: out has the wrong shape")
    if n == 0:
        return
    if (k if rows else m) == 0:
        out[:, :] = 0.0
        return
    chars = np.empty(2, dtype=np.uint8)
    chars[0] = 85                       # 'U'
    chars[1] = 84 if rows else 78       # 'T': (Aᶠ)ᵀAᶠ = A Aᵀ;  'N': Aᶠ(Aᶠ)ᵀ = AᵀA
    ints = np.empty(4, dtype=np.int32)
    ints[0] = n
    ints[1] = k if rows else m          # the summed dimension
    ints[2] = k                         # Fortran's leading dimension of A
    ints[3] = n
    scal = np.empty(2)
    scal[0] = alpha
    scal[1] = 0.0
    _dsyrk(chars[0:].ctypes, chars[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes,
           scal[0:].ctypes, A.ctypes, ints[2:].ctypes, scal[1:].ctypes, out.ctypes,
           ints[3:].ctypes)
    for i in range(n):
        for j in range(i):
            out[j, i] = out[i, j]


@njit(cache=True, nogil=True)
def gram_rows(A, out, alpha):  # pragma: no cover - numba
    """``out = α A Aᵀ`` for ``A`` of shape ``(n, k)``: the inner products of its rows,
    exactly symmetric, at half the multiply-adds of ``np.dot(A, A.T)``."""
    _syrk(A, out, alpha, True)


@njit(cache=True, nogil=True)
def gram_cols(A, out, alpha):  # pragma: no cover - numba
    """``out = α AᵀA`` for ``A`` of shape ``(k, n)``: the inner products of its columns."""
    _syrk(A, out, alpha, False)


@njit(cache=True, nogil=True)
def spd_inverse(A, out):  # pragma: no cover - numba
    """``out = A⁻¹`` (exactly symmetric) for a symmetric positive-definite ``A``; returns
    ``log det A``.  Cholesky (``dpotrf``) then its inverse (``dpotri``), in ``out``;
    ``A`` is left alone.  Raises ``LinAlgError`` when ``A`` holds a NaN or an infinity, or
    is not positive definite, as ``np.linalg.cholesky`` does (LAPACK itself would pass a
    NaN through, and read one triangle only: the C upper one, Fortran's lower)."""
    if not out.flags.c_contiguous:
        raise ValueError("spd_inverse: out must be C-contiguous")
    n = A.shape[0]
    if A.shape[1] != n or out.shape[0] != n or out.shape[1] != n:
        raise ValueError("spd_inverse: A and out must be square and of one size")
    if n == 0:
        return 0.0
    for i in range(n):
        for j in range(n):
            v = A[i, j]
            if not math.isfinite(v):
                raise np.linalg.LinAlgError("Array must not contain infs or NaNs")
            out[i, j] = v
    uplo = np.empty(1, dtype=np.uint8)
    uplo[0] = 76                        # 'L'
    ints = np.empty(3, dtype=np.int32)  # n, lda, info
    ints[0] = n
    ints[1] = n
    ints[2] = 0
    _dpotrf(uplo.ctypes, ints[0:].ctypes, out.ctypes, ints[1:].ctypes, ints[2:].ctypes)
    if ints[2] != 0:
        raise np.linalg.LinAlgError("Matrix is not positive definite.")
    logdet = 0.0
    for i in range(n):
        logdet += 2.0 * math.log(out[i, i])
    _dpotri(uplo.ctypes, ints[0:].ctypes, out.ctypes, ints[1:].ctypes, ints[2:].ctypes)
    if ints[2] != 0:      # a zero diagonal of the factor: singular after all
        raise np.linalg.LinAlgError("Matrix is not positive definite.")
    for i in range(n):
        for j in range(i):
            out[i, j] = out[j, i]
    return logdet
