"""The masked softmax over the source and the context, and their backward, one block per sentence:
the twins of ``minis2s.nn.attention.softmax_context`` / ``softmax_context_backward``.

    alpha_s = exp(score_s - max) / sum_s' exp(score_s' - max)     over real positions (0 elsewhere)
    ctx     = sum_s alpha_s K_s
  backward
    dalpha_s = K_s . dctx,   dK_s += alpha_s dctx,   dscore_s = alpha_s (dalpha_s - sum_s' alpha_s' dalpha_s')

Block b's threads stride over the source positions for the softmax and over the memory features for
the context; the reductions over the source go through shared memory (at most MAX_SOURCE positions).
"""
import math

from numba import cuda, float64

from minis2s import backend

from . import stream_of

THREADS = 64
MAX_SOURCE = 512


@cuda.jit
def _forward(scores, mask, memory, weights, ctx):
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    source, size = scores.shape[0], memory.shape[2]
    shifted = cuda.shared.array(MAX_SOURCE, float64)
    if tid == 0:                                     # S is short: one thread takes the max and the sum
        top = -math.inf
        for s in range(source):
            if mask[s, b]:
                top = max(top, float64(scores[s, b]))
        total = 0.0
        for s in range(source):
            shifted[s] = math.exp(float64(scores[s, b]) - top) if mask[s, b] else 0.0
            total += shifted[s]
        for s in range(source):
            shifted[s] /= total
    cuda.syncthreads()
    for s in range(tid, source, THREADS):
        weights[s, b] = shifted[s]
    for m in range(tid, size, THREADS):
        acc = 0.0
        for s in range(source):
            acc += shifted[s] * memory[s, b, m]
        ctx[b, m] = acc


def softmax_context(scores, mask, memory):
    """scores (S, B), mask (S, B), memory (S, B, M) -> weights (S, B), ctx (B, M)."""
    xp = backend.array_module(scores)
    source, batch = scores.shape
    if source > MAX_SOURCE:
        from minis2s.nn.attention import softmax_context as reference
        return reference.reference(scores, mask, memory)
    weights = xp.empty_like(scores)
    ctx = xp.empty((batch, memory.shape[2]), dtype=memory.dtype)
    _forward[batch, THREADS, stream_of(scores)](scores, mask, memory, weights, ctx)
    return weights, ctx


@cuda.jit
def _backward(dctx, weights, memory, dmemory, dscores):
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    source, size = weights.shape[0], memory.shape[2]
    dweights = cuda.shared.array(MAX_SOURCE, float64)
    for s in range(tid, source, THREADS):
        acc = 0.0
        for m in range(size):
            acc += memory[s, b, m] * dctx[b, m]               # dalpha_s = K_s . dctx
            dmemory[s, b, m] += weights[s, b] * dctx[b, m]    # dK_s += alpha_s dctx
        dweights[s] = acc
    cuda.syncthreads()
    if tid == 0:
        total = 0.0
        for s in range(source):
            total += weights[s, b] * dweights[s]
        for s in range(source):
            dscores[s, b] = weights[s, b] * (dweights[s] - total)


def softmax_context_backward(dctx, weights, memory, dmemory):
    """dctx (B, M) -> dscores (S, B); adds dK_s = alpha_s dctx into dmemory (S, B, M)."""
    xp = backend.array_module(dctx)
    source, batch = weights.shape
    if source > MAX_SOURCE:
        from minis2s.nn.attention import softmax_context_backward as reference
        return reference.reference(dctx, weights, memory, dmemory)
    dscores = xp.empty_like(weights)
    _backward[batch, THREADS, stream_of(dctx)](dctx, weights, memory, dmemory, dscores)
    return dscores
