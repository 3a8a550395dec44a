"""Beam search's selection in one launch, one block per sentence: for kernels/beam.py's search on a GPU.

Reference, for each sentence b with beams j = 0..k-1 and words v:

    candidates[b, j*V + v] = scores[b, j] + logp[b*k + j, v]
    best = the k largest candidates, in decreasing order

Array code (kernels/beam.py: top_k) materialises the (B, k*V) candidates and sorts a partition of
them; here nothing of that
size is written. Each thread of sentence b's block strides over the words of every live beam and keeps
its own k best in registers (an insertion into a sorted list: a candidate that does not beat the
thread's k-th best, nearly all of them, costs one comparison); the threads' lists then meet in shared
memory and one thread merges them. Order: higher score first, and of equal scores the lower index
first, as in the CPU twin (kernels/decode.py); -inf candidates (forbidden words) are never chosen, and
where fewer than k are finite the rest are -inf with index j, as there. Beams of more than ``MAX_K``
take the array code.
"""
import math

from numba import cuda, float64, int64

from minis2s import backend

from .. import beam
from . import stream_of

THREADS = 64
MAX_K = 16


@cuda.jit(device=True)
def _insert(value, index, k, top_scores, top_indices):
    """Put (value, index) into the sorted k best (top_scores, top_indices) if it belongs there."""
    last = k - 1
    if value < top_scores[last] or (value == top_scores[last] and index >= top_indices[last]):
        return
    position = last
    while position > 0 and (value > top_scores[position - 1]
                            or (value == top_scores[position - 1] and index < top_indices[position - 1])):
        top_scores[position] = top_scores[position - 1]
        top_indices[position] = top_indices[position - 1]
        position -= 1
    top_scores[position] = value
    top_indices[position] = index


@cuda.jit
def _top_k(scores, logp, best, best_scores):
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    k = scores.shape[1]
    vocab = logp.shape[1]
    mine_scores = cuda.local.array(MAX_K, float64)
    mine_indices = cuda.local.array(MAX_K, int64)
    for j in range(k):
        mine_scores[j] = -math.inf
        mine_indices[j] = j                                  # valid indices even where nothing is finite
    for j in range(k):
        base = scores[b, j]
        if base == -math.inf:                                # a beam not (or no longer) alive
            continue
        row = b * k + j
        for v in range(tid, vocab, THREADS):
            value = base + float64(logp[row, v])
            if value != -math.inf:
                _insert(value, j * vocab + v, k, mine_scores, mine_indices)
    shared_scores = cuda.shared.array((THREADS, MAX_K), float64)
    shared_indices = cuda.shared.array((THREADS, MAX_K), int64)
    for j in range(k):
        shared_scores[tid, j] = mine_scores[j]
        shared_indices[tid, j] = mine_indices[j]
    cuda.syncthreads()
    if tid == 0:                                             # the threads' lists merged: THREADS * k candidates
        for t in range(1, THREADS):
            for j in range(k):
                value = shared_scores[t, j]
                if value != -math.inf:
                    _insert(value, shared_indices[t, j], k, mine_scores, mine_indices)
        for j in range(k):
            best[b, j] = mine_indices[j]
            best_scores[b, j] = mine_scores[j]


def top_k(scores, logp):
    """scores (B, k) float64, logp (B*k, V) -> best (B, k) indices j*V + v, best_scores (B, k),
    best first; on the device, nothing copied to the host (beams of more than ``MAX_K``: the array code)."""
    size, k = scores.shape
    if k > MAX_K:
        return beam.top_k(scores, logp)
    xp = backend.array_module(logp)
    best = xp.empty((size, k), dtype=xp.int64)
    best_scores = xp.empty((size, k), dtype=xp.float64)
    if size:
        _top_k[size, THREADS, stream_of(logp)](xp.ascontiguousarray(scores), xp.ascontiguousarray(logp),
                                               best, best_scores)
    return best, best_scores


def beam_search(*args, **kwargs):
    """The twin of ``minis2s.decode.beam_search`` on CuPy arrays: kernels/beam.py's batched search (array
    code), its selection the kernel above."""
    return beam.beam_search(*args, select=top_k, **kwargs)
