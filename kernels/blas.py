"""NumPy's own BLAS, callable from inside Numba kernels: ``gemm(trans_b, a, b, beta, c)``.

The whole-sequence recurrent kernels (rnn.py) need a matrix product per time step from inside their
Numba loop. Numba's ``numpy.dot`` would hand it to SciPy's BLAS: a second OpenBLAS with a second pool of
threads, which on a 2-core machine fights NumPy's pool (measured: a `small` training step 32 ms with one
BLAS thread, 117 ms with the two pools of two threads each). So the kernels call the very library NumPy
uses, found beside NumPy (its wheels bundle OpenBLAS as ``scipy_openblas64_``), through ctypes, which
Numba calls without leaving compiled code:

    c <- a b^T + beta c   (trans_b)        c <- a b + beta c   (not trans_b)     a, b, c C-contiguous
    c <- a^T b + beta c   (gemm_at: a weight gradient added into its array)

``available`` is False where NumPy's BLAS cannot be found this way (a NumPy built against another
library); the whole-sequence kernels then give way to the reference path.
"""
import ctypes
import glob
import os

import llvmlite.binding as llvm
import numba
import numpy
from numba import types
from numba.extending import overload

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _find():
    """(address of sgemm, address of dgemm, integer type) of NumPy's bundled OpenBLAS, or None."""
    root = os.path.dirname(numpy.__file__)
    candidates = []
    for folder in (root + ".libs", os.path.join(root, ".dylibs")):
        candidates += sorted(glob.glob(os.path.join(folder, "*openblas*")))
    for path in candidates:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, integer in (("scipy_cblas_", "64_", types.int64), ("cblas_", "64_", types.int64),
                                        ("scipy_cblas_", "", types.int32), ("cblas_", "", types.int32)):
            try:
                functions = [getattr(library, f"{prefix}{name}gemm{suffix}") for name in "sd"]
            except AttributeError:
                continue
            return [ctypes.cast(f, ctypes.c_void_p).value for f in functions] + [integer]
    return None


def _declare(name, address, real, integer):
    """The C function at ``address`` as a Numba external function named ``name``: the compiled kernels
    refer to it by name, so Numba can cache them (a ctypes pointer in a kernel would stop that)."""
    llvm.add_symbol(name, address)
    return types.ExternalFunction(name, types.void(
        types.int32, types.int32, types.int32, integer, integer, integer,      # order, trans a, trans b, m, n, k
        real, types.intp, integer, types.intp, integer,                        # alpha, a, lda, b, ldb
        real, types.intp, integer))                                            # beta, c, ldc


_found = _find()
available = _found is not None
if available:
    _sgemm = _declare("minis2s_numpy_sgemm", _found[0], types.float32, _found[2])
    _dgemm = _declare("minis2s_numpy_dgemm", _found[1], types.float64, _found[2])


def gemm_at(a, b, beta, c):
    """c <- a^T b + beta c (a (K, M), b (K, N), c (M, N), C-contiguous); inside Numba kernels only."""
    c[...] = a.T @ b + beta * c


@overload(gemm_at)
def _gemm_at(a, b, beta, c):
    single = a.dtype == types.float32
    blas = _sgemm if single else _dgemm
    one = numpy.float32(1) if single else 1.0

    def call(a, b, beta, c):
        k, m = a.shape
        n = c.shape[1]
        blas(_ROW_MAJOR, _TRANS, _NO_TRANS, m, n, k, one, a.ctypes.data, m, b.ctypes.data, n, beta, c.ctypes.data, n)
    return call


def gemm(trans_b, a, b, beta, c):
    """c <- a b^T + beta c (trans_b) or a b + beta c; inside Numba kernels only."""
    c[...] = (a @ (b.T if trans_b else b)) + beta * c


@overload(gemm)
def _gemm(trans_b, a, b, beta, c):
    single = a.dtype == types.float32
    blas = _sgemm if single else _dgemm
    one = numpy.float32(1) if single else 1.0

    def call(trans_b, a, b, beta, c):
        m, k = a.shape
        n = c.shape[1]
        blas(_ROW_MAJOR, _NO_TRANS, _TRANS if trans_b else _NO_TRANS, m, n, k, one,
             a.ctypes.data, k, b.ctypes.data, b.shape[1], beta, c.ctypes.data, n)
    return call


@numba.njit(cache=True)
def _add_at(a, b, c):
    gemm_at(a, b, c.dtype.type(1), c)


def add_at(a, b, c):
    """c += a^T b (a (K, M), b (K, N), c (M, N)) from Python, BLAS adding into c itself (beta = 1): no (M, N)
    temporary and no second pass to add it (a weight gradient: the output layer's 8,000 x 512 dW at the
    base size, 3 ms a step). NumPy's product where BLAS cannot be called so (contiguity, dtypes)."""
    if available and c.flags.c_contiguous and a.flags.c_contiguous and b.flags.c_contiguous \
            and a.dtype == b.dtype == c.dtype and a.dtype in (numpy.float32, numpy.float64):
        _add_at(a, b, c)
    else:
        c += a.T @ b
