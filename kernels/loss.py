"""Fused softmax cross-entropy and its gradient: the fast twin of ``minis2s.loss.softmax_cross_entropy``.

Reference equations (loss.py), per real token row a (V,) with target y, weight w and smoothing e:

    loss = log sum_v exp(a_v - max a) - (1 - e)(a_y - max a) - e mean_v (a_v - max a)
    dlogits = w (softmax(a) - (1 - e) onehot(y) - e / V)            (0 on padded rows)

The reference makes five passes over the (T*B, V) logits, each with its own temporary; at the
``base`` size (1,920 x 8,000, 61 MB) that is memory traffic, not arithmetic. Here one parallel loop
takes a row at a time, and the row (32 KB at V = 8,000) stays in the core's cache between its
passes: the maximum, then exp(a_v - max) written into the gradient and summed, then the scaling
(rows in parallel from ``PARALLEL_FROM`` elements on).
The logits are read from memory once and the gradient written once; in the output layer's twin
(``projected_cross_entropy``) the same pass adds the bias to the logits and sums the bias's gradient
(a block of rows per thread, each its own sums), and BLAS adds dW = dlogits^T o straight into its
array: no separate passes over the (N, V) arrays for b and db, no (V, H) temporary for dW. The exponential is
``scalar.exp_of``, which LLVM vectorises in float32 (NumPy's exp here: 2.3 ns an element, exp_of: 0.36).
"""
import math

import numba
import numpy

from minis2s.nn.layers import length_mask

from . import blas
from .rnn import _KERNEL
from .scalar import exp_of, max_of


PARALLEL_FROM = 2 ** 20     # elements: below it the rows run in one thread (measured: 640 x 1,000 rows
                            # 0.61 ms in one thread, 0.67 ms in parallel; 1,920 x 8,000: 15.2 and 8.0 ms)


@numba.njit(**_KERNEL)
def _row(a, bias, target, weight, smoothing, one, out):
    """One real token's row a (V,) -> its gradient into out (V,); returns its loss. A non-empty bias (V,)
    is added to a first (the output layer's, while the row is in cache)."""
    vocab = a.shape[0]
    zero = one - one
    if bias.shape[0]:
        for v in range(vocab):
            a[v] += bias[v]
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
def _padded_row(out, one):
    for v in range(out.shape[0]):                            # exactly zero, whatever the logits hold
        out[v] = one - one


@numba.njit(**_KERNEL)
def _row_range(logits, bias, targets, mask, weight, smoothing, one, dlogits, token_loss, dbias, first, last):
    """Rows first..last-1; a non-empty dbias (V,) float64 adds up their gradient rows (the bias's gradient,
    while each row is in cache)."""
    for n in range(first, last):
        if mask[n]:
            token_loss[n] = _row(logits[n], bias, targets[n], weight[n], smoothing, one, dlogits[n])
            row = dlogits[n]
            for v in range(dbias.shape[0]):
                dbias[v] += row[v]
        else:
            _padded_row(dlogits[n], one)
            token_loss[n] = 0.0


@numba.njit(**_KERNEL)
def _rows(logits, bias, targets, mask, weight, smoothing, one, dlogits, token_loss, dbias_parts):
    _row_range(logits, bias, targets, mask, weight, smoothing, one, dlogits, token_loss, dbias_parts[0], 0,
               logits.shape[0])


@numba.njit(parallel=True, **_KERNEL)
def _rows_parallel(logits, bias, targets, mask, weight, smoothing, one, dlogits, token_loss, dbias_parts):
    parts, rows = dbias_parts.shape[0], logits.shape[0]      # a block of rows a part, each its own db sums
    for p in numba.prange(parts):
        _row_range(logits, bias, targets, mask, weight, smoothing, one, dlogits, token_loss, dbias_parts[p],
                   p * rows // parts, (p + 1) * rows // parts)


def cross_entropy_rows(logits, targets, mask, weight, label_smoothing, bias=None):
    """logits (N, V), targets (N,), mask (N,) bool, weight (N,) -> token_loss (N,) float64, dlogits (N, V),
    dbias; with a bias (V,), the logits are logits + bias (added in place) and dbias = sum_n dlogits (V,)
    float64, else None."""
    dlogits = numpy.empty_like(logits)
    token_loss = numpy.empty(logits.shape[0])
    parallel = logits.size >= PARALLEL_FROM
    parts = numba.get_num_threads() if parallel else 1
    dbias_parts = numpy.zeros((parts, 0 if bias is None else logits.shape[1]))
    no_bias = numpy.empty(0, dtype=logits.dtype)
    run = _rows_parallel if parallel else _rows
    run(logits, no_bias if bias is None else bias.astype(logits.dtype, copy=False), targets, mask,
        weight.astype(logits.dtype), float(label_smoothing), logits.dtype.type(1), dlogits, token_loss, dbias_parts)
    return token_loss, dlogits, None if bias is None else dbias_parts.sum(axis=0)


def softmax_cross_entropy(logits, targets, mask, weight, label_smoothing=0.0):
    """The twin of ``minis2s.loss.softmax_cross_entropy``: logits (T, B, V), targets, mask, weight (T, B)
    -> token_loss (T, B), dlogits (T, B, V)."""
    steps, batch, vocab = logits.shape
    token_loss, dlogits, _ = cross_entropy_rows(numpy.ascontiguousarray(logits).reshape(-1, vocab),
                                                targets.reshape(-1), mask.reshape(-1), weight.reshape(-1),
                                                label_smoothing)
    return token_loss.reshape(steps, batch).astype(logits.dtype), dlogits.reshape(logits.shape)


def projected_cross_entropy(outputs, weight, bias, targets, lengths, label_smoothing, dweight, dbias):
    """The twin of ``minis2s.loss.projected_cross_entropy``: the projection, the loss and the projection's
    backward over the real target tokens only. A padded position's dlogits row is exactly zero in the
    reference, so it adds nothing to dW, db or do: its logits are never computed here, and the output
    layer's three (rows, H) x (H, V) products shrink with the padding. (Training's batches are bucketed by
    target length, so they hold little target padding; the benchmark's none.)"""
    steps, batch, hidden = outputs.shape
    dtype = outputs.dtype
    real = numpy.flatnonzero(length_mask(lengths, steps).reshape(-1))    # the real tokens' rows t*B + b
    count = max(real.size, 1)
    every = real.size == steps * batch                                    # no padding: no gather, no scatter
    o = outputs.reshape(-1, hidden) if every else outputs.reshape(-1, hidden)[real]    # (N, H) real tokens
    logits = o @ weight.T                                                  # (N, V)
    token_loss, dlogits, summed = cross_entropy_rows(      # + b, and db summed, in the rows' pass
        logits, targets.reshape(-1)[real], numpy.ones(real.size, dtype=bool), numpy.full(real.size, 1.0 / count),
        label_smoothing, bias)
    loss = token_loss.astype(dtype).sum() / numpy.asarray(count)           # the reference's mean, a 0-d float64
    blas.add_at(dlogits, o, dweight)                                       # dW += dlogits^T o
    if dbias is not None:
        dbias += summed.astype(dtype)
    do = dlogits @ weight                                                  # (N, H)
    if every:
        return loss, do.reshape(outputs.shape)
    doutputs = numpy.zeros((steps * batch, hidden), dtype=dtype)
    doutputs[real] = do
    return loss, doutputs.reshape(outputs.shape)
