"""Layer norm on the GPU, one block a row: the CUDA twins of ``minis2s.nn.layer_norm.layer_norm_forward`` /
``layer_norm_backward``.

    mu = mean x,  rstd = 1 / sqrt(mean (x - mu)^2 + eps),  n = (x - mu) rstd,  y = w n + b
    dx = rstd (dn - mean dn - n mean (dn n)),  dn = dy w;  dw = sum_rows dy n,  db = sum_rows dy

A block's threads stride over its row; each row sum is a tree reduction in shared memory, in float64
(``layers.block_reduce``).
The parameter gradients dw, db are a second launch, a thread a column summing over the rows in order:
no float atomics, so the result is the same at every run.
"""
import math

from numba import cuda, float64

from minis2s import backend

from . import stream_of
from .layers import THREADS, block_reduce


@cuda.jit
def _norm_forward(x, weight, bias, eps, y, norm, rstd):
    r, tid = cuda.blockIdx.x, cuda.threadIdx.x
    size = x.shape[1]
    shared = cuda.shared.array(THREADS, float64)
    partial = 0.0
    for i in range(tid, size, THREADS):
        partial += x[r, i]
    mu = block_reduce(partial, shared, False) / size
    partial = 0.0
    for i in range(tid, size, THREADS):
        centred = x[r, i] - mu
        partial += centred * centred
    inverse = 1.0 / math.sqrt(block_reduce(partial, shared, False) / size + eps)
    if tid == 0:
        rstd[r] = inverse
    for i in range(tid, size, THREADS):
        n = (x[r, i] - mu) * inverse
        norm[r, i] = n
        y[r, i] = weight[i] * n + bias[i]


def layer_norm_forward(x, weight, bias, eps=1e-5):
    """x (..., E) -> y (..., E), LayerNormCache(norm, rstd (..., 1))."""
    from minis2s.nn.layer_norm import LayerNormCache
    xp = backend.array_module(x)
    rows = xp.ascontiguousarray(x).reshape(-1, x.shape[-1])
    y, norm = xp.empty_like(rows), xp.empty_like(rows)
    rstd = xp.empty(rows.shape[0], dtype=x.dtype)
    _norm_forward[rows.shape[0], THREADS, stream_of(x)](rows, weight, bias, eps, y, norm, rstd)
    return y.reshape(x.shape), LayerNormCache(norm.reshape(x.shape), rstd.reshape(x.shape[:-1] + (1,)))


@cuda.jit
def _norm_backward(dy, norm, rstd, weight, dx):
    r, tid = cuda.blockIdx.x, cuda.threadIdx.x
    size = dy.shape[1]
    shared = cuda.shared.array(THREADS, float64)
    mean_dn, mean_dn_n = 0.0, 0.0
    for i in range(tid, size, THREADS):
        dn = dy[r, i] * weight[i]
        mean_dn += dn
        mean_dn_n += dn * norm[r, i]
    mean_dn = block_reduce(mean_dn, shared, False) / size
    mean_dn_n = block_reduce(mean_dn_n, shared, False) / size
    for i in range(tid, size, THREADS):
        dx[r, i] = rstd[r] * (dy[r, i] * weight[i] - mean_dn - norm[r, i] * mean_dn_n)


@cuda.jit
def _norm_parameter_grads(dy, norm, dweight, dbias):
    i = cuda.grid(1)
    if i < dy.shape[1]:
        dw, db = 0.0, 0.0
        for r in range(dy.shape[0]):
            dw += dy[r, i] * norm[r, i]
            db += dy[r, i]
        dweight[i] += dw
        dbias[i] += db


def layer_norm_backward(dy, cache, weight, dweight, dbias):
    """dy (..., E) -> dx (..., E); adds dw and db into dweight, dbias."""
    xp = backend.array_module(dy)
    size = dy.shape[-1]
    rows = xp.ascontiguousarray(dy).reshape(-1, size)
    norm = xp.ascontiguousarray(cache.norm).reshape(-1, size)
    rstd = xp.ascontiguousarray(cache.rstd).reshape(-1)
    dx = xp.empty_like(rows)
    stream = stream_of(dy)
    _norm_backward[rows.shape[0], THREADS, stream](rows, norm, rstd, weight, dx)
    _norm_parameter_grads[(size + THREADS - 1) // THREADS, THREADS, stream](rows, norm, dweight, dbias)
    return dx.reshape(dy.shape)
