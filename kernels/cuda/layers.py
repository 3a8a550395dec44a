"""The softmax over the last axis on the GPU, one block a row: the CUDA twins of
``minis2s.nn.layers.softmax_forward`` / ``softmax_backward`` (the Transformer's attention weights).

    y = exp(a - max a) / sum exp(a - max a)      an entry of -inf (a masked position): exactly 0
    da = y (dy - sum dy y)

A block's threads stride over its row; the row's maximum and sums are tree reductions in shared memory,
in float64.
"""
import math

from numba import cuda, float64

from minis2s import backend

from . import stream_of

THREADS = 128


@cuda.jit(device=True)
def block_reduce(value, shared, maximum):
    """The sum (or, with ``maximum``, the largest) of ``value`` over the block's threads, every thread
    getting it: a tree in shared memory, THREADS a power of 2."""
    tid = cuda.threadIdx.x
    shared[tid] = value
    cuda.syncthreads()
    half = THREADS // 2
    while half > 0:
        if tid < half:
            other = shared[tid + half]
            if not maximum:
                shared[tid] += other
            elif other > shared[tid]:
                shared[tid] = other
        cuda.syncthreads()
        half //= 2
    result = shared[0]
    cuda.syncthreads()
    return result


@cuda.jit
def _softmax(a, y):
    r, tid = cuda.blockIdx.x, cuda.threadIdx.x
    size = a.shape[1]
    shared = cuda.shared.array(THREADS, float64)
    top = -math.inf
    for v in range(tid, size, THREADS):
        top = max(top, float64(a[r, v]))
    top = block_reduce(top, shared, True)
    partial = 0.0
    for v in range(tid, size, THREADS):
        e = math.exp(float64(a[r, v]) - top) if a[r, v] != -math.inf else 0.0
        y[r, v] = e
        partial += e
    total = block_reduce(partial, shared, False)
    for v in range(tid, size, THREADS):
        y[r, v] = y[r, v] / total


def softmax_forward(a, axis=-1):
    """softmax over the last axis (other axes: the reference)."""
    from minis2s.nn import layers
    if axis not in (-1, a.ndim - 1) or a.size == 0:
        return layers.softmax_forward.reference(a, axis)
    xp = backend.array_module(a)
    rows = xp.ascontiguousarray(a).reshape(-1, a.shape[-1])
    y = xp.empty_like(rows)
    _softmax[rows.shape[0], THREADS, stream_of(a)](rows, y)
    return y.reshape(a.shape)


@cuda.jit
def _softmax_backward(dy, y, da):
    r, tid = cuda.blockIdx.x, cuda.threadIdx.x
    shared = cuda.shared.array(THREADS, float64)
    partial = 0.0
    for v in range(tid, dy.shape[1], THREADS):
        partial += dy[r, v] * y[r, v]
    dot = block_reduce(partial, shared, False)
    for v in range(tid, dy.shape[1], THREADS):
        da[r, v] = y[r, v] * (dy[r, v] - dot)


def softmax_backward(dy, y, axis=-1):
    """da = y (dy - sum dy y) over the last axis (other axes: the reference)."""
    from minis2s.nn import layers
    if axis not in (-1, y.ndim - 1) or y.size == 0:
        return layers.softmax_backward.reference(dy, y, axis)
    xp = backend.array_module(dy)
    rows, probs = xp.ascontiguousarray(dy).reshape(-1, dy.shape[-1]), xp.ascontiguousarray(y).reshape(-1, y.shape[-1])
    da = xp.empty_like(probs)
    _softmax_backward[rows.shape[0], THREADS, stream_of(dy)](rows, probs, da)
    return da.reshape(y.shape)
