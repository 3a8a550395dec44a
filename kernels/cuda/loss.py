"""Softmax cross-entropy and its gradient in one launch, one block per row: the twin of
``minis2s.loss.softmax_cross_entropy``. Per row a (V,) with target y, weight w, smoothing e:

    shifted = a - max a,   log Z = log sum_v exp(shifted_v)
    loss    = -(1 - e) (shifted_y - log Z) - e mean_v (shifted_v - log Z)
    dlogits = w (exp(shifted - log Z) - (1 - e) onehot(y) - e / V)        (0 on padded rows)

The block's threads stride over the vocabulary; the max, the sum of exponentials and the sum of the
shifted logits are tree reductions in shared memory (sums in float64). Nothing of (T*B, V) is written
but the gradient.
"""
import math

import numpy
from numba import cuda, float64

from minis2s import backend

from . import stream_of

THREADS = 128


@cuda.jit
def _rows(logits, targets, mask, weight, smoothing, token_loss, dlogits):
    row = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    vocab = logits.shape[1]
    top = cuda.shared.array(THREADS, float64)
    total = cuda.shared.array(THREADS, float64)
    shifted_sum = cuda.shared.array(THREADS, float64)
    if not mask[row]:                                        # a padded row: exactly zero, whatever its logits
        for v in range(tid, vocab, THREADS):
            dlogits[row, v] = 0
        if tid == 0:
            token_loss[row] = 0
        return
    best = -math.inf
    for v in range(tid, vocab, THREADS):
        best = max(best, float64(logits[row, v]))
    top[tid] = best
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if tid < step:
            top[tid] = max(top[tid], top[tid + step])
        cuda.syncthreads()
        step //= 2
    peak = top[0]
    acc, acc_shifted = 0.0, 0.0
    for v in range(tid, vocab, THREADS):
        s = float64(logits[row, v]) - peak
        acc += math.exp(s)
        acc_shifted += s
    total[tid] = acc
    shifted_sum[tid] = acc_shifted
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if tid < step:
            total[tid] += total[tid + step]
            shifted_sum[tid] += shifted_sum[tid + step]
        cuda.syncthreads()
        step //= 2
    log_norm = math.log(total[0])
    target = targets[row]
    w = float64(weight[row])
    for v in range(tid, vocab, THREADS):
        p = math.exp(float64(logits[row, v]) - peak - log_norm)
        d = p - smoothing / vocab
        if v == target:
            d -= 1.0 - smoothing
        dlogits[row, v] = w * d
    if tid == 0:
        loss = -(1.0 - smoothing) * ((float64(logits[row, target]) - peak) - log_norm)
        if smoothing > 0.0:
            loss -= smoothing * (shifted_sum[0] / vocab - log_norm)
        token_loss[row] = loss


def softmax_cross_entropy(logits, targets, mask, weight, label_smoothing=0.0):
    """logits (T, B, V), targets, mask, weight (T, B) -> token_loss (T, B), dlogits (T, B, V)."""
    xp = backend.array_module(logits)
    steps, batch, vocab = logits.shape
    rows = steps * batch
    flat = xp.ascontiguousarray(logits).reshape(rows, vocab)
    token_loss = xp.empty(rows, dtype=logits.dtype)
    dlogits = xp.empty((rows, vocab), dtype=logits.dtype)
    _rows[rows, THREADS, stream_of(logits)](flat, xp.ascontiguousarray(targets).reshape(rows),
                                            xp.ascontiguousarray(mask).reshape(rows),
                                            xp.ascontiguousarray(weight).reshape(rows),
                                            numpy.float64(label_smoothing), token_loss, dlogits)
    return token_loss.reshape(steps, batch), dlogits.reshape(logits.shape)
