"""A recurrent direction over a sequence on the GPU: the CUDA twins of ``minis2s.nn.rnn.direction_forward``
and ``direction_backward``. They run the reference's own time loop (``direction_forward.reference``) on
a cell whose step is fused: an LSTM or GRU step's gate maths in one CUDA launch each way, where the
reference's array code takes a dozen (the equations are written in ``minis2s.nn.rnn_cells``). The
recurrent product h W_hh^T and the backward dgh W_hh stay with cuBLAS. One thread per (row, unit);
``one`` is a 1 of the arrays' dtype, so that float32 arithmetic stays float32 on the device. A plain
RNN's step is the reference's.
"""
import math

from numba import cuda

from minis2s import backend
from minis2s.nn.rnn_cells import CELLS, GRUStepCache, LSTMStepCache

from . import grid, stream_of


@cuda.jit
def _lstm_forward(a, xw, b, c, one, gates, c_next, tanh_c, h_next):
    row, j = cuda.grid(2)
    hidden = c.shape[1]
    if row < c.shape[0] and j < hidden:
        half = one / (one + one)
        i = half * (one + math.tanh(half * ((xw[row, j] + a[row, j]) + b[j])))
        f = half * (one + math.tanh(half * ((xw[row, hidden + j] + a[row, hidden + j]) + b[hidden + j])))
        g = math.tanh((xw[row, 2 * hidden + j] + a[row, 2 * hidden + j]) + b[2 * hidden + j])
        o = half * (one + math.tanh(half * ((xw[row, 3 * hidden + j] + a[row, 3 * hidden + j]) + b[3 * hidden + j])))
        cn = f * c[row, j] + i * g
        tc = math.tanh(cn)
        gates[0, row, j] = i
        gates[1, row, j] = f
        gates[2, row, j] = g
        gates[3, row, j] = o
        c_next[row, j] = cn
        tanh_c[row, j] = tc
        h_next[row, j] = o * tc


def lstm_step_forward(xw, h, c, W_hh, b_hh):
    """xw (B, 4H), h, c (B, H) -> h', c', LSTMStepCache (the gates: one contiguous (4, B, H) array)."""
    xp = backend.array_module(h)
    batch, hidden = h.shape
    a = h @ W_hh.T                                                   # cuBLAS
    gates = xp.empty((4, batch, hidden), dtype=h.dtype)
    c_next, tanh_c, h_next = xp.empty_like(c), xp.empty_like(c), xp.empty_like(c)
    _lstm_forward[grid(batch, hidden), (16, 16), stream_of(h)](a, xw, b_hh, c, h.dtype.type(1), gates, c_next,
                                                               tanh_c, h_next)
    return h_next, c_next, LSTMStepCache(c, gates[0], gates[1], gates[2], gates[3], tanh_c, W_hh)


@cuda.jit
def _lstm_backward(dh_next, dc_next, c, i_, f_, g_, o_, tanh_c, one, da, dc):
    row, j = cuda.grid(2)
    hidden = c.shape[1]
    if row < c.shape[0] and j < hidden:
        i, f, g, o, tc = i_[row, j], f_[row, j], g_[row, j], o_[row, j], tanh_c[row, j]
        dh = dh_next[row, j]
        dc_total = dc_next[row, j] + dh * o * (one - tc * tc)
        da[row, j] = dc_total * g * i * (one - i)
        da[row, hidden + j] = dc_total * c[row, j] * f * (one - f)
        da[row, 2 * hidden + j] = dc_total * i * (one - g * g)
        da[row, 3 * hidden + j] = dh * tc * o * (one - o)
        dc[row, j] = dc_total * f


def lstm_step_backward(dh_next, dc_next, cache):
    """dh_next, dc_next (B, H) -> dxw (B, 4H), dgh (B, 4H) (the same array), dh (B, H), dc (B, H)."""
    xp = backend.array_module(dh_next)
    batch, hidden = cache.c.shape
    da = xp.empty((batch, 4 * hidden), dtype=cache.c.dtype)
    dc = xp.empty_like(cache.c)
    _lstm_backward[grid(batch, hidden), (16, 16), stream_of(dh_next)](
        dh_next, dc_next, cache.c, cache.i, cache.f, cache.g, cache.o, cache.tanh_c_next, cache.c.dtype.type(1),
        da, dc)
    return da, da, da @ cache.W_hh, dc


@cuda.jit
def _gru_forward(xw, gh, h, one, gates, n_out, gh_n, h_next):
    row, j = cuda.grid(2)
    hidden = h.shape[1]
    if row < h.shape[0] and j < hidden:
        half = one / (one + one)
        r = half * (one + math.tanh(half * (xw[row, j] + gh[row, j])))
        z = half * (one + math.tanh(half * (xw[row, hidden + j] + gh[row, hidden + j])))
        n = math.tanh(xw[row, 2 * hidden + j] + r * gh[row, 2 * hidden + j])
        gates[0, row, j] = r
        gates[1, row, j] = z
        n_out[row, j] = n
        gh_n[row, j] = gh[row, 2 * hidden + j]
        h_next[row, j] = (one - z) * n + z * h[row, j]


def gru_step_forward(xw, h, W_hh, b_hh):
    """xw (B, 3H), h (B, H) -> h', GRUStepCache."""
    xp = backend.array_module(h)
    batch, hidden = h.shape
    gh = h @ W_hh.T + b_hh                                           # cuBLAS, then the bias
    gates = xp.empty((2, batch, hidden), dtype=h.dtype)
    n, gh_n, h_next = xp.empty_like(h), xp.empty_like(h), xp.empty_like(h)
    _gru_forward[grid(batch, hidden), (16, 16), stream_of(h)](xw, gh, h, h.dtype.type(1), gates, n, gh_n, h_next)
    return h_next, GRUStepCache(h, gates[0], gates[1], n, gh_n, W_hh)


@cuda.jit
def _gru_backward(dh_next, h, r_, z_, n_, gh_n, one, dxw, dgh, dh_direct):
    row, j = cuda.grid(2)
    hidden = h.shape[1]
    if row < h.shape[0] and j < hidden:
        d, r, z, n = dh_next[row, j], r_[row, j], z_[row, j], n_[row, j]
        da_n = d * (one - z) * (one - n * n)
        da_r = da_n * gh_n[row, j] * r * (one - r)
        da_z = d * (h[row, j] - n) * z * (one - z)
        dxw[row, j] = da_r
        dxw[row, hidden + j] = da_z
        dxw[row, 2 * hidden + j] = da_n
        dgh[row, j] = da_r
        dgh[row, hidden + j] = da_z
        dgh[row, 2 * hidden + j] = da_n * r
        dh_direct[row, j] = d * z


def gru_step_backward(dh_next, cache):
    """dh_next (B, H) -> dxw (B, 3H), dgh (B, 3H), dh (B, H)."""
    xp = backend.array_module(dh_next)
    batch, hidden = cache.h.shape
    dxw = xp.empty((batch, 3 * hidden), dtype=cache.h.dtype)
    dgh, dh = xp.empty_like(dxw), xp.empty_like(cache.h)
    _gru_backward[grid(batch, hidden), (16, 16), stream_of(dh_next)](
        dh_next, cache.h, cache.r, cache.z, cache.n, cache.gh_n, cache.h.dtype.type(1), dxw, dgh, dh)
    dh += dgh @ cache.W_hh
    return dxw, dgh, dh


# ----------------------------------------------------------------------------- the twins

def _fused(cell, step_forward, step_backward):
    """The book's Cell (its name, gates, state size) with its step on a fused pair, whose state travels as
    separate arrays: step_forward(xw, *state, W_hh, b_hh) -> (*new_state, cache),
    step_backward(*dnew_state, cache) -> (dxw, dgh, *dstate)."""
    def forward(xw, state, W_hh, b_hh):
        *new_state, cache = step_forward(xw, *state, W_hh, b_hh)
        return tuple(new_state), cache

    def backward(dstate, cache):
        dxw, dgh, *dprevious = step_backward(*dstate, cache)
        return dxw, dgh, tuple(dprevious)

    return cell._replace(forward=forward, backward=backward)


FUSED = {name: _fused(CELLS[name], *steps) for name, steps in
         (("lstm", (lstm_step_forward, lstm_step_backward)), ("gru", (gru_step_forward, gru_step_backward)))}


def direction_forward(cell, x, state, W_ih, b_ih, W_hh, b_hh, mask):
    """The twin of ``minis2s.nn.rnn.direction_forward``: the reference's loop, each step one launch."""
    from minis2s.nn.rnn import direction_forward as book
    return book.reference(FUSED.get(cell.name, cell), x, state, W_ih, b_ih, W_hh, b_hh, mask)


def direction_backward(cell, dout, dstate, cache, W_ih, grads):
    """The twin of ``minis2s.nn.rnn.direction_backward`` (its forward must have been this file's)."""
    from minis2s.nn.rnn import direction_backward as book
    return book.reference(FUSED.get(cell.name, cell), dout, dstate, cache, W_ih, grads)
