"""Layer norm's forward on the GPU, one block a row: the CUDA twin of
``minis2s.nn.layer_norm.layer_norm_forward``.

    mu = mean x,  rstd = 1 / sqrt(mean (x - mu)^2 + eps),  n = (x - mu) rstd,  y = w n + b

A block's threads stride over its row; each row sum is a tree reduction in shared memory, in float64
(``block_reduce``). The cache is the reference's (n, rstd): the reference backward follows it.
"""
import math

from numba import cuda, float64

from minis2s import backend

from . import stream_of

THREADS = 128


@cuda.jit(device=True)
def block_reduce(value, shared):
    """The sum of ``value`` over the block's threads, every thread getting it: a tree in shared memory,
    THREADS a power of 2."""
    tid = cuda.threadIdx.x
    shared[tid] = value
    cuda.syncthreads()
    half = THREADS // 2
    while half > 0:
        if tid < half:
            shared[tid] += shared[tid + half]
        cuda.syncthreads()
        half //= 2
    result = shared[0]
    cuda.syncthreads()
    return result


@cuda.jit
def _norm_forward(x, weight, bias, eps, y, norm, rstd):
    r, tid = cuda.blockIdx.x, cuda.threadIdx.x
    size = x.shape[1]
    shared = cuda.shared.array(THREADS, float64)
    partial = 0.0
    for i in range(tid, size, THREADS):
        partial += x[r, i]
    mu = block_reduce(partial, shared) / size
    partial = 0.0
    for i in range(tid, size, THREADS):
        centred = x[r, i] - mu
        partial += centred * centred
    inverse = 1.0 / math.sqrt(block_reduce(partial, shared) / size + eps)
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
