"""Fused softmax cross-entropy and its gradient: the fast twin of ``minis2s.loss.cross_entropy``.

Reference equations (loss.py), per real token row a (V,) with target y, weight w and smoothing e:

    loss = log sum_v exp(a_v - max a) - (1 - e)(a_y - max a) - e mean_v (a_v - max a)
    dlogits = w (softmax(a) - (1 - e) onehot(y) - e / V)            (0 on padded rows)

The reductions over the vocabulary (row max, row sum) and the exp stay with NumPy, whose loops are
vectorised (Numba's are not, without fastmath, and a strict-order sum of 8,000 terms costs more
than NumPy's pairwise one). What is fused is the rest: one parallel Numba pass takes each row's loss
from its target logit and normaliser, and turns the exponentials, in place, into the gradient
(scale, subtract the smoothed one-hot, zero the padded rows), where the reference needs five.
"""
import math

import numba
import numpy


@numba.njit(parallel=True, cache=True)
def _finish(probs, total, logits, top, targets, mask, weight, mean_shifted, smoothing, token_loss):
    rows, vocab = probs.shape
    for n in numba.prange(rows):
        if not mask[n]:
            for v in range(vocab):
                probs[n, v] = 0.0
            token_loss[n] = 0.0
            continue
        log_norm = math.log(total[n])                        # log sum_v exp(a_v - max a)
        loss = -(1.0 - smoothing) * ((logits[n, targets[n]] - top[n]) - log_norm)
        if smoothing > 0.0:
            loss -= smoothing * (mean_shifted[n] - log_norm)
        token_loss[n] = loss
        scale = weight[n] / total[n]
        floor = weight[n] * (smoothing / vocab)
        for v in range(vocab):
            probs[n, v] = probs[n, v] * scale - floor
        probs[n, targets[n]] -= weight[n] * (1.0 - smoothing)


def cross_entropy_rows(logits, targets, mask, weight, label_smoothing):
    """logits (N, V), targets (N,), mask (N,) bool, weight (N,) -> token_loss (N,) float64, dlogits (N, V)."""
    rows = logits.shape[0]
    top = logits.max(axis=1, keepdims=True)
    probs = numpy.subtract(logits, top)                        # a - max a
    mean_shifted = probs.mean(axis=1) if label_smoothing > 0.0 else numpy.zeros(rows)
    numpy.exp(probs, out=probs)
    total = probs.sum(axis=1)
    token_loss = numpy.empty(rows)
    _finish(probs, total, logits, top[:, 0], targets, mask, weight, mean_shifted, float(label_smoothing),
            token_loss)
    return token_loss, probs


def softmax_cross_entropy(logits, targets, mask, weight, label_smoothing=0.0):
    """The twin of ``minis2s.loss.softmax_cross_entropy``: logits (T, B, V), targets, mask, weight (T, B)
    -> token_loss (T, B), dlogits (T, B, V)."""
    steps, batch, vocab = logits.shape
    token_loss, dlogits = cross_entropy_rows(numpy.ascontiguousarray(logits).reshape(-1, vocab), targets.reshape(-1),
                                             mask.reshape(-1), weight.reshape(-1), label_smoothing)
    return token_loss.reshape(steps, batch).astype(logits.dtype), dlogits.reshape(logits.shape)
