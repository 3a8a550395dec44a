"""log-softmax over the last axis: the fast twin of ``minis2s.nn.layers.log_softmax_forward``; and for
kernels/model.py's decoding step, ``linear_forward`` on a kept W^T and ``embedding_linear_forward``.

    log p_v = a_v - max a - log sum_v' exp(a_v' - max a)

Greedy and beam search take it of every step's (B, V) logits. The reference is four NumPy passes with
two temporaries; here each row is read once from memory and stays in cache for its three passes
(maximum, sum of exponentials, the subtraction), each vectorised (``scalar.max_of``, ``scalar.exp_of``).
Rows run in parallel from 2^20 elements on (``loss.PARALLEL_FROM``; below it a parallel loop's own
cost is more than it saves).
"""
import math

import numba
import numpy

from minis2s import dispatch
from minis2s.nn import layers

from . import blas
from .blas import gemm
from .loss import PARALLEL_FROM
from .rnn import _KERNEL, transposed
from .scalar import exp_of, max_of


@numba.njit(**_KERNEL)
def _log_softmax_row(row, one, result):
    zero = one - one
    top = row[0]
    for v in range(1, row.shape[0]):
        top = max_of(top, row[v])
    total = zero
    for v in range(row.shape[0]):
        total += exp_of(row[v] - top)
    shift = top + row.dtype.type(math.log(total))
    for v in range(row.shape[0]):
        result[v] = row[v] - shift


@numba.njit(**_KERNEL)
def _log_softmax_rows(a, one, out):
    for n in range(a.shape[0]):
        _log_softmax_row(a[n], one, out[n])


@numba.njit(parallel=True, **_KERNEL)
def _log_softmax_rows_parallel(a, one, out):
    for n in numba.prange(a.shape[0]):
        _log_softmax_row(a[n], one, out[n])


def log_softmax_forward(a, axis=-1):
    """The twin: the same arguments and result; other than the last axis of a float array, the reference."""
    from minis2s.nn import layers
    if axis not in (-1, a.ndim - 1) or a.dtype not in (numpy.float32, numpy.float64) or a.size == 0:
        return layers.log_softmax_forward.reference(a, axis)
    rows = numpy.ascontiguousarray(a).reshape(-1, a.shape[-1])
    out = numpy.empty_like(rows)
    run = _log_softmax_rows_parallel if rows.size >= PARALLEL_FROM else _log_softmax_rows
    run(rows, a.dtype.type(1), out)
    return out.reshape(a.shape)


def linear_forward(x, weight, bias=None):
    """``minis2s.nn.layers.linear_forward`` for kernels/model.py's decoding step. Inside a decode
    (``dispatch.constant_weights``) the product runs on a contiguous copy of W^T, made at the first step
    and kept: BLAS's plain x @ W_t is faster than x @ W.T at decoding's few rows (measured, the output
    layer: 32 x 128 by 128 x 1,000 78 -> 53 us; 64 x 512 by 512 x 8,000 3.8 -> 3.1 ms). Elsewhere, where
    the weights change between calls, the reference."""
    if not dispatch.weights_constant():
        return layers.linear_forward(x, weight, bias)
    weight_t = dispatch.derived("transposed", (weight,), lambda: transposed(weight))
    y = x.reshape(-1, x.shape[-1]) @ weight_t
    if bias is not None:
        y += bias
    return y.reshape(x.shape[:-1] + (weight.shape[0],)), layers.LinearCache(x=x)


@numba.njit(**_KERNEL)
def _project_tokens(ids, done, table, weight_t, bias, rows, new, picked, projected, out):
    """out[i] <- rows[ids[i]] (B, out), a row of ``rows`` (V, out) computed the first time its token comes up:
    the new tokens' embeddings gathered into ``picked``, one product with W^T into ``projected`` (BLAS), the
    bias (an empty one: none) added as each row is stored. False, and nothing changed, when an id lies outside
    the table."""
    for i in range(ids.shape[0]):
        if ids[i] < 0 or ids[i] >= done.shape[0]:
            return False
    count = 0
    for i in range(ids.shape[0]):                                    # the distinct tokens not seen before
        token = ids[i]
        if not done[token]:
            done[token] = True
            new[count] = token
            picked[count] = table[token]
            count += 1
    if count:
        zero = table.dtype.type(0)
        gemm(False, picked[:count], weight_t, zero, projected[:count])    # E[new] W^T
        for r in range(count):
            row, made = rows[new[r]], projected[r]
            if bias.shape[0]:
                for j in range(row.shape[0]):
                    row[j] = made[j] + bias[j]
            else:
                row[:] = made
    for i in range(ids.shape[0]):
        out[i] = rows[ids[i]]
    return True


class _ProjectedTokens:
    """The rows of E W^T + b (V, out), each computed the first time its token comes up while decoding, on the
    W^T that ``linear_forward`` above keeps for the decode."""

    def __init__(self, table, weight, bias):
        self.table = numpy.ascontiguousarray(table)
        self.bias = numpy.zeros(0, dtype=table.dtype) if bias is None else numpy.ascontiguousarray(bias)
        self.weight_t = dispatch.derived("transposed", (weight,), lambda: transposed(weight))
        self.rows = numpy.empty((table.shape[0], weight.shape[0]), dtype=table.dtype)   # pages touched as filled
        self.done = numpy.zeros(table.shape[0], dtype=bool)
        self._grow(0)

    def _grow(self, size):
        """Room for ``size`` new tokens in one call."""
        self.new = numpy.empty(size, dtype=numpy.int64)
        self.picked = numpy.empty((size, self.table.shape[1]), dtype=self.table.dtype)
        self.projected = numpy.empty((size, self.rows.shape[1]), dtype=self.table.dtype)

    def __call__(self, ids):
        """ids (B,) -> (B, out), or None for an id outside the table."""
        if ids.shape[0] > self.new.shape[0]:
            self._grow(ids.shape[0])
        out = numpy.empty((ids.shape[0], self.rows.shape[1]), dtype=self.rows.dtype)
        if not _project_tokens(ids, self.done, self.table, self.weight_t, self.bias, self.rows, self.new,
                               self.picked, self.projected, out):
            return None
        return out


def _embedding_linear(table, ids, weight, bias):
    """The book's E[ids] W^T + b: embedding_forward, then linear_forward."""
    return layers.linear_forward(layers.embedding_forward(table, ids)[0], weight, bias)[0]


TOKEN_TABLE_LIMIT = 1 << 30      # bytes: a larger (V, out) table is not reserved (the reference runs instead)


def embedding_linear_forward(table, ids, weight, bias=None):
    """E[ids] W^T + b (N, out), for kernels/model.py's decoding step (the book's Seq2Seq.step: the embedding,
    then ``Decoder.embedding_projection``). Inside a decode
    (``dispatch.constant_weights``) a token's row E[y] W^T + b is the same at every step and for every
    sentence and beam it comes up in: each is computed once, when its token first comes up, and gathered
    after that. A decode of R rows a step for S steps then projects at most min(V, R S) distinct tokens
    instead of R S rows (beam 5 of 32 sentences over 20 steps at V = 1,000: 3,200 rows, at most 1,000
    of them distinct; a trained model's beams share most of their tokens). The (V, out) table is reserved,
    not filled: only the rows of tokens that come up are touched. A step is one compiled call
    (``_project_tokens``: which tokens are new, their product, the gather), measured against NumPy's
    unique, product and fancy indexing: ``small`` greedy -2 to -4.5%, beam within the noise (-3 to +2%).
    Elsewhere, the reference."""
    vocab, size = table.shape[0], weight.shape[0]
    dtypes = {table.dtype, weight.dtype} | (set() if bias is None else {bias.dtype})
    if not dispatch.weights_constant() or not blas.available or ids.ndim != 1 or ids.dtype.kind not in "iu" \
            or dtypes not in ({numpy.dtype(numpy.float32)}, {numpy.dtype(numpy.float64)}) \
            or vocab * size * table.itemsize > TOKEN_TABLE_LIMIT:
        return _embedding_linear(table, ids, weight, bias)
    projected = dispatch.derived("projected tokens", (table, weight, bias),
                                 lambda: _ProjectedTokens(table, weight, bias))
    out = projected(numpy.asarray(ids, dtype=numpy.int64))
    if out is None:                                                # an id outside the table: the reference says so
        return _embedding_linear(table, ids, weight, bias)
    return out
