"""Fused attention for the decoder's loop (decoder.py): the masked softmax and context of one step, and its
backward, as loops the decoder's kernels call (not twins: the book's attention step has none).

Reference equations (minis2s/nn/attention.py), per sentence b, over source positions s:

    alpha_s  = exp(score_s - max score) [s real] / sum over real s'      ctx = sum_s alpha_s K_s
    dalpha_s = dctx . K_s     dK_s += alpha_s dctx    dscore_s = alpha_s (dalpha_s - sum_s' alpha_s' dalpha_s')
    bahdanau: dpre_s = dscore_s v (1 - phi_s^2),  dv += sum_s dscore_s phi_s,  dKW_s += dpre_s,
              the gradient of W_q q = sum_s dpre_s

The reference makes a (S, B, M) temporary for every product and a pass for every sum; here each is
one loop that reads the memory once (Bahdanau's backward is fused into decoder.py's loop).
"""
import math

import numba
import numpy


@numba.njit(cache=True)
def softmax_context_into(scores, mask, memory, weights, context):
    steps, batch = scores.shape
    for b in range(batch):
        top = -numpy.inf
        for s in range(steps):
            if mask[s, b] and scores[s, b] > top:
                top = scores[s, b]
        total = 0.0
        for s in range(steps):
            w = math.exp(scores[s, b] - top) if mask[s, b] else 0.0
            weights[s, b] = w
            total += w
        for s in range(steps):
            weights[s, b] = weights[s, b] / total
        for m in range(memory.shape[2]):
            context[b, m] = 0.0
        for s in range(steps):
            w = weights[s, b]
            if w != 0.0:
                for m in range(memory.shape[2]):
                    context[b, m] += w * memory[s, b, m]


@numba.njit(cache=True)
def _dot(x, y):
    """sum_m x[m] y[m] with four running sums, whose additions do not wait on one another."""
    size = x.shape[0]
    a0 = a1 = a2 = a3 = 0.0
    m = 0
    while m + 4 <= size:
        a0 += x[m] * y[m]
        a1 += x[m + 1] * y[m + 1]
        a2 += x[m + 2] * y[m + 2]
        a3 += x[m + 3] * y[m + 3]
        m += 4
    total = (a0 + a1) + (a2 + a3)
    while m < size:
        total += x[m] * y[m]
        m += 1
    return total


@numba.njit(cache=True)
def _context_backward(dcontext, weights, memory, dmemory, dscores):
    steps, batch, size = memory.shape
    for b in range(batch):
        weighted = 0.0                                   # sum_s alpha_s dalpha_s
        for s in range(steps):
            w = weights[s, b]
            for m in range(size):
                dmemory[s, b, m] += w * dcontext[b, m]
            dalpha = _dot(memory[s, b], dcontext[b])
            dscores[s, b] = dalpha
            weighted += w * dalpha
        for s in range(steps):
            dscores[s, b] = weights[s, b] * (dscores[s, b] - weighted)
