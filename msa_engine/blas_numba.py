"""BLAS and LAPACK routines that numba does not expose, callable from ``@njit`` kernels.

numba's ``np.dot`` calls ``dgemm`` from scipy's BLAS, which does not know that ``AᵀA``
is symmetric: a Gram matrix costs twice the multiply-adds it needs.  Its
``np.linalg.inv`` of an SPD matrix is an LU inverse (≈ 2n³ FLOPs) on top of the
Cholesky factor the samplers need anyway for log det (n³/3), where the Cholesky inverse
(``potri``) needs ≈ 2n³/3.  Here are those two, from the same library numba uses:

- :func:`gram_rows` ``out = α A Aᵀ`` and :func:`gram_cols` ``out = α AᵀA`` (``dsyrk``),
- :func:`spd_inverse` ``out = A⁻¹`` and ``log det A`` (``dpotrf`` + ``dpotri``).

How.  ``scipy.linalg.cython_blas`` / ``cython_lapack`` export their functions as
capsules (the Fortran ABI: every argument by pointer, 32-bit integers); numba itself
takes ``dgemm`` from there.  Their addresses are registered with LLVM under fixed
names at import, and the kernels call them as external symbols, so that the kernels
stay ``cache=True``: a cached kernel is linked by name when it is loaded, in a process
that has imported this module (a ``ctypes`` function object would bake the address
into the code, and numba refuses to cache that).  Pointers are passed as ``intp``,
which has a pointer's size and calling convention on every platform numba supports.
All arrays passed must be C-contiguous (checked).
"""

from __future__ import annotations

import ctypes
import math

import llvmlite.binding as _llvm
import numpy as np
import scipy.linalg.cython_blas as _cython_blas
import scipy.linalg.cython_lapack as _cython_lapack
from numba import njit, types

_PREFIX = "msa_engine_"


def _capsule_address(module, name: str) -> int:
    """The address of a Cython-exported function (``module.__pyx_capi__[name]``)."""
    capsule = module.__pyx_capi__[name]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))


def _external(module, name: str, nargs: int):
    symbol = _PREFIX + name
    _llvm.add_symbol(symbol, _capsule_address(module, name))
    return types.ExternalFunction(symbol, types.void(*([types.intp] * nargs)))


# dsyrk(uplo, trans, n, k, alpha, a, lda, beta, c, ldc)
_dsyrk = _external(_cython_blas, "dsyrk", 10)
# dpotrf(uplo, n, a, lda, info), dpotri(uplo, n, a, lda, info)
_dpotrf = _external(_cython_lapack, "dpotrf", 5)
_dpotri = _external(_cython_lapack, "dpotri", 5)


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
    _dsyrk(chars[0:].ctypes.data, chars[1:].ctypes.data, ints[0:].ctypes.data,
           ints[1:].ctypes.data, scal[0:].ctypes.data, A.ctypes.data, ints[2:].ctypes.data,
           scal[1:].ctypes.data, out.ctypes.data, ints[3:].ctypes.data)
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
    ``A`` is left alone.  Raises ``LinAlgError`` when ``A`` is not positive definite, as
    ``np.linalg.cholesky`` does.  (A symmetric C array is its own Fortran transpose, so
    Fortran's lower triangle is the C upper one.)"""
    if not out.flags.c_contiguous:
        raise ValueError("spd_inverse: out must be C-contiguous")
    n = A.shape[0]
    if A.shape[1] != n or out.shape[0] != n or out.shape[1] != n:
        raise ValueError("spd_inverse: A and out must be square and of one size")
    if n == 0:
        return 0.0
    for i in range(n):
        for j in range(n):
            out[i, j] = A[i, j]
    uplo = np.empty(1, dtype=np.uint8)
    uplo[0] = 76                        # 'L'
    ints = np.empty(3, dtype=np.int32)  # n, lda, info
    ints[0] = n
    ints[1] = n
    ints[2] = 0
    _dpotrf(uplo.ctypes.data, ints[0:].ctypes.data, out.ctypes.data, ints[1:].ctypes.data,
            ints[2:].ctypes.data)
    if ints[2] != 0:
        raise np.linalg.LinAlgError("Matrix is not positive definite.")
    logdet = 0.0
    for i in range(n):
        logdet += 2.0 * math.log(out[i, i])
    _dpotri(uplo.ctypes.data, ints[0:].ctypes.data, out.ctypes.data, ints[1:].ctypes.data,
            ints[2:].ctypes.data)
    if ints[2] != 0:      # a zero diagonal of the factor: singular after all
        raise np.linalg.LinAlgError("Matrix is not positive definite.")
    for i in range(n):
        for j in range(i):
            out[i, j] = out[j, i]
    return logdet
