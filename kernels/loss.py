"""Fused softmax cross-entropy and its gradient: the fast twin of ``minis2s.loss.softmax_cross_entropy``.

Reference equations (loss.py), per real token row a (V,) with target y, weight w and smoothing e:

    loss = log sum_v exp(a_v - max a) - (1 - e)(a_y - max a) - e mean_v (a_v - max a)
    dlogits = w (softmax(a) - (1 - e) onehot(y) - e / V)            (0 on padded rows)

The reference makes five passes over the (T*B, V) logits, each with its own temporary; at the
``base`` size (1,920 x 8,000, 61 MB) that is memory traffic, not arithmetic. Here one parallel loop
takes a row at a time, and the row (32 KB at V = 8,000) stays in the core's cache between its
passes: the maximum, then exp(a_v - max) written into the gradient and summed, then the scaling
(rows in parallel from ``PARALLEL_FROM`` elements on).
The logits are read from memory once and the gradient written once. The exponential is
``scalar.exp_of``, which LLVM vectorises in float32 (NumPy's exp here: 2.3 ns an element, exp_of: 0.36).
"""
import math

import numba
import numpy

from .rnn import _KERNEL
from .scalar import exp_of, max_of


PARALLEL_FROM = 2 ** 20     # elements: below it the rows run in one thread (measured: 640 x 1,000 rows
                            # 0.61 ms in one thread, 0.67 ms in parallel; 1,920 x 8,000: 15.2 and 8.0 ms)


@numba.njit(**_KERNEL)
def _row(a, target, weight, smoothing, one, out):
    """One real token's row a (V,) -> its gradient into out (V,); returns its loss."""
    vocab = a.shape[0]
    zero = one - one
    top = a[0]
    for v in range(1, vocab):
        top = max_of(top, a[v])                              # max a (vectorised: scalar.py)
    total = zero
    for v in range(vocab):
        e = exp_of(a[v] - top)
        out[v] = e
        total += e                                           # sum_v exp(a_v - max a)
    log_norm = math.log(total)
    loss = -(1.0 - smoothing) * ((a[target] - top) - log_norm)
    if smoothing > 0.0:
        summed = zero
        for v in range(vocab):
            summed += a[v]
        loss -= smoothing * ((summed / vocab - top) - log_norm)          # - e mean_v log p_v
    scale = weight / total
    floor = weight * (smoothing / vocab)
    for v in range(vocab):
        out[v] = out[v] * scale - floor                      # w (p - e / V)
    out[target] -= weight * (1.0 - smoothing)                # - w (1 - e) onehot(y)
    return loss


@numba.njit(**_KERNEL)
def _one_row(logits, targets, mask, weight, smoothing, one, dlogits, token_loss, n):
    if mask[n]:
        token_loss[n] = _row(logits[n], targets[n], weight[n], smoothing, one, dlogits[n])
    else:
        for v in range(dlogits.shape[1]):                    # exactly zero, whatever the logits hold
            dlogits[n, v] = one - one
        token_loss[n] = 0.0


@numba.njit(**_KERNEL)
def _rows(logits, targets, mask, weight, smoothing, one, dlogits, token_loss):
    for n in range(logits.shape[0]):
        _one_row(logits, targets, mask, weight, smoothing, one, dlogits, token_loss, n)


@numba.njit(parallel=True, **_KERNEL)
def _rows_parallel(logits, targets, mask, weight, smoothing, one, dlogits, token_loss):
    for n in numba.prange(logits.shape[0]):
        _one_row(logits, targets, mask, weight, smoothing, one, dlogits, token_loss, n)


def cross_entropy_rows(logits, targets, mask, weight, label_smoothing):
    """logits (N, V), targets (N,), mask (N,) bool, weight (N,) -> token_loss (N,) float64, dlogits (N, V)."""
    dlogits = numpy.empty_like(logits)
    token_loss = numpy.empty(logits.shape[0])
    run = _rows_parallel if logits.size >= PARALLEL_FROM else _rows
    run(logits, targets, mask, weight.astype(logits.dtype), float(label_smoothing), logits.dtype.type(1),
        dlogits, token_loss)
    return token_loss, dlogits


def softmax_cross_entropy(logits, targets, mask, weight, label_smoothing=0.0):
    """The twin of ``minis2s.loss.softmax_cross_entropy``: logits (T, B, V), targets, mask, weight (T, B)
    -> token_loss (T, B), dlogits (T, B, V)."""
    steps, batch, vocab = logits.shape
    token_loss, dlogits = cross_entropy_rows(numpy.ascontiguousarray(logits).reshape(-1, vocab),
                                             targets.reshape(-1), mask.reshape(-1), weight.reshape(-1),
                                             label_smoothing)
    return token_loss.reshape(steps, batch).astype(logits.dtype), dlogits.reshape(logits.shape)
