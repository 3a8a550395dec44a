"""The recurrent kernels: fast twins of ``minis2s.nn.rnn``'s ``direction_forward`` and ``direction_backward``
(one direction of a layer over a whole sequence), and the row functions of a step's gate maths that they
and the decoder's loop (decoder.py) share.

The reference runs a direction as T Python round trips, each a dozen NumPy calls over (B, H) memory with
their own temporaries. Here one Numba call runs the whole time loop each way, the masks included; the
equations are those of ``rnn_cells.py`` and ``rnn.py``, and every kernel has a parity test against them.
(One step's cell on its own, as scheduled sampling runs it, is the reference's: it has no twin.)
"""
from typing import NamedTuple

import numba
import numpy

from . import blas
from .blas import gemm
from .scalar import tanh_of


# ----------------------------------------------------------------------------- whole sequences
#
# The twins of ``minis2s.nn.rnn.direction_forward`` / ``direction_backward``: one Numba call runs a
# direction's whole time loop, the masks included, instead of one Python round trip (and a dozen
# NumPy calls) per step. Each step's recurrent product h W_hh^T goes through BLAS from inside Numba
# (NumPy's own OpenBLAS, called through ctypes: blas.py says why not SciPy's); the input side was hoisted
# into one product before the loop, and the weight gradients are one product each after it, exactly
# as in the reference (nn/rnn.py's add_weight_grads). The gate maths of a step runs row by row (below).
#
# tanh inside these loops: Numba's scalar ``math.tanh`` is not vectorised (llvmlite has no SVML since
# LLVM 20), so in float32 a step uses ``tanh_of`` (scalar.py), a rational approximation LLVM vectorises
# (0.36 ns an element against 2.7 ns for NumPy's tanh, error at most 3e-7); in float64 it is math.tanh.


class SequenceCache(NamedTuple):
    """What a whole-sequence forward keeps for its backward (it travels in DirectionCache.step_caches)."""
    cell: str
    gates: object         # (T, B, G*H): LSTM [i, f, g, o], GRU [r, z, n]; RNN (T, B, H) each step's act(a)
    c_prev: object        # LSTM (T, B, H) the cell state entering each step; else None
    tanh_c: object        # LSTM (T, B, H) tanh(c'); else None
    gh_n: object          # GRU (T, B, H) W_hn h + b_hn, before the reset gate scales it; else None
    W_hh: object


# The forward kernels take the recurrent matrix transposed, W_hh^T (H, G*H) contiguous (``transposed``: one
# copy, then BLAS's plain product at every step). Each kernel takes ``one``, a 1 of the arrays' dtype,
# so that its constants keep that dtype (a Python 1 or 0.5 would turn float32 arithmetic into float64).
# h (and c) enter as the initial state and leave as the final one; dh (and dc) enter as the gradient of
# the final state and leave as that of the first.

# The loops run row by row over short 1-D views, each loop touching few arrays and with no branch
# inside: that is what lets LLVM vectorise them (measured: an LSTM step's gate maths at B = 32,
# H = 128 went from 100 to 29 us when its one loop over j became these). ``error_model="numpy"``
# drops Python's ZeroDivisionError check, whose branch alone kept the rational tanh scalar.
_KERNEL = dict(cache=True, fastmath=True, error_model="numpy")


@numba.njit(**_KERNEL)
def _rnn_sequence_forward(xw, W_hh_t, b_hh, mask, relu, one, h, out, h_prev, h_new):
    steps, batch, hidden = xw.shape
    zero = one - one
    a = numpy.empty((batch, hidden), dtype=xw.dtype)
    for t in range(steps):
        h_prev[t] = h
        gemm(False, h, W_hh_t, zero, a)                            # a = h W_hh^T, through BLAS
        for row in range(batch):
            x, ar, new = xw[t, row], a[row], h_new[t, row]
            if relu:
                for j in range(hidden):
                    new[j] = max((x[j] + ar[j]) + b_hh[j], zero)
            else:
                for j in range(hidden):
                    new[j] = tanh_of((x[j] + ar[j]) + b_hh[j])
            _emit(mask[t, row], new, out[t, row], h[row], zero)


@numba.njit(**_KERNEL)
def _emit(keep, new, out, state, zero):
    """out_t = m ? new : 0;  s_t = m ? new : s_t-1  (one row)."""
    if keep:
        for j in range(new.shape[0]):
            out[j] = new[j]
            state[j] = new[j]
    else:
        for j in range(new.shape[0]):
            out[j] = zero


@numba.njit(**_KERNEL)
def _rnn_sequence_backward(dout, mask, h_new, W_hh, relu, one, dh, da_all):
    steps, batch, hidden = h_new.shape
    zero = one - one
    for t in range(steps - 1, -1, -1):
        da = da_all[t]
        for row in range(batch):
            d, y, do, dar = dh[row], h_new[t, row], dout[t, row], da[row]
            if not mask[t, row]:                                     # nothing reaches a padded step;
                for j in range(hidden):                              # dh passes through unchanged
                    dar[j] = zero
                continue
            if relu:
                for j in range(hidden):
                    dar[j] = (d[j] + do[j]) if y[j] > zero else zero
            else:
                for j in range(hidden):
                    dar[j] = (d[j] + do[j]) * (one - y[j] * y[j])
            for j in range(hidden):
                d[j] = zero                                          # s_t = m ? new : old
        gemm(False, da, W_hh, one, dh)                               # dh += da W_hh


# One row (sentence) of one step, shared by the sequence kernels here and the decoder's (decoder.py).

@numba.njit(**_KERNEL)
def lstm_row(x, ar, b_hh, g, cr, tc, c_new, one):
    """x, ar (4H,) the row's xw and h W_hh^T, cr (H,) its c -> g (4H,) = [i, f, g, o], c_new = f c + i g,
    tc = tanh(c_new). c_new must not be cr (a separate array lets LLVM vectorise the loop).

    One pass over j computes unit j's four gates and its c': 2.5 times faster at H = 512 than a pass per
    gate block followed by one for c' (the loop stays in registers and runs on SIMD lanes)."""
    hidden = cr.shape[0]
    half = one / (one + one)
    for j in range(hidden):                                          # sigma(a) = (1 + tanh(a/2)) / 2
        i = half * (one + tanh_of(half * ((x[j] + ar[j]) + b_hh[j])))
        f = half * (one + tanh_of(half * ((x[hidden + j] + ar[hidden + j]) + b_hh[hidden + j])))
        gg = tanh_of((x[2 * hidden + j] + ar[2 * hidden + j]) + b_hh[2 * hidden + j])
        o = half * (one + tanh_of(half * ((x[3 * hidden + j] + ar[3 * hidden + j]) + b_hh[3 * hidden + j])))
        g[j], g[hidden + j], g[2 * hidden + j], g[3 * hidden + j] = i, f, gg, o
        c_next = f * cr[j] + i * gg                                  # c' = f c + i g
        c_new[j] = c_next
        tc[j] = tanh_of(c_next)


@numba.njit(**_KERNEL)
def lstm_row_backward(do, d_h, d_c, g, c, tc, dar, one):
    """The gradient reaching h' (d_h + do) and c' (d_c) -> da (4H,) into dar; d_c <- that of c, d_h <- 0."""
    hidden = c.shape[0]
    zero = one - one
    for j in range(hidden):
        dhj = d_h[j] + do[j]
        i, f, gg, o, tcj = g[j], g[hidden + j], g[2 * hidden + j], g[3 * hidden + j], tc[j]
        dc_total = d_c[j] + dhj * o * (one - tcj * tcj)
        dar[j] = dc_total * gg * i * (one - i)
        dar[hidden + j] = dc_total * c[j] * f * (one - f)
        dar[2 * hidden + j] = dc_total * i * (one - gg * gg)
        dar[3 * hidden + j] = dhj * tcj * o * (one - o)
        d_c[j] = dc_total * f
        d_h[j] = zero


@numba.njit(**_KERNEL)
def gru_row(x, ghr, b_hh, g, ghn, hr, new, one):
    """x (3H,) the row's xw, ghr (3H,) its h W_hh^T (+ b_hh, in place), hr (H,) its h -> g (3H,) = [r, z, n],
    ghn = W_hn h + b_hn, new = h' (new must not be hr). One pass over j, unit by unit, as in lstm_row."""
    hidden = hr.shape[0]
    half = one / (one + one)
    for j in range(hidden):
        gr = ghr[j] + b_hh[j]                                        # gh = h W_hh^T + b_hh
        gz = ghr[hidden + j] + b_hh[hidden + j]
        gn = ghr[2 * hidden + j] + b_hh[2 * hidden + j]
        ghr[j], ghr[hidden + j], ghr[2 * hidden + j] = gr, gz, gn
        r = half * (one + tanh_of(half * (x[j] + gr)))               # r, z = sigma(xw + gh)
        z = half * (one + tanh_of(half * (x[hidden + j] + gz)))
        n = tanh_of(x[2 * hidden + j] + r * gn)                      # n = tanh(xw_n + r gh_n)
        g[j], g[hidden + j], g[2 * hidden + j] = r, z, n
        ghn[j] = gn
        new[j] = (one - z) * n + z * hr[j]                           # h' = (1 - z) n + z h


@numba.njit(**_KERNEL)
def gru_row_backward(do, d_h, g, ghn, hp, dx, dg, one):
    """The gradient reaching h' (d_h + do) -> dxw into dx, dgh into dg (3H,); d_h <- its direct path d z
    (the caller adds dgh W_hh)."""
    hidden = hp.shape[0]
    for j in range(hidden):
        d = d_h[j] + do[j]
        r, z, n = g[j], g[hidden + j], g[2 * hidden + j]
        da_n = d * (one - z) * (one - n * n)
        da_r = da_n * ghn[j] * r * (one - r)
        da_z = d * (hp[j] - n) * z * (one - z)
        dx[j] = da_r
        dx[hidden + j] = da_z
        dx[2 * hidden + j] = da_n
        dg[j] = da_r
        dg[hidden + j] = da_z
        dg[2 * hidden + j] = da_n * r
        d_h[j] = d * z


@numba.njit(**_KERNEL)
def _lstm_sequence_forward(xw, W_hh_t, b_hh, mask, one, h, c, out, h_prev, c_prev, gates, tanh_c):
    steps, batch, four = xw.shape
    hidden = four // 4
    zero = one - one
    a = numpy.empty((batch, four), dtype=xw.dtype)
    c_new = numpy.empty(hidden, dtype=xw.dtype)
    for t in range(steps):
        h_prev[t] = h
        c_prev[t] = c
        gemm(False, h, W_hh_t, zero, a)
        for row in range(batch):
            g, cr, tc, new = gates[t, row], c[row], tanh_c[t, row], out[t, row]
            lstm_row(xw[t, row], a[row], b_hh, g, cr, tc, c_new, one)
            if mask[t, row]:
                for j in range(hidden):
                    cr[j] = c_new[j]
                    new[j] = g[3 * hidden + j] * tc[j]                           # h' = o tanh(c')
                    h[row, j] = new[j]
            else:
                for j in range(hidden):
                    new[j] = zero


@numba.njit(**_KERNEL)
def _lstm_sequence_backward(dout, mask, gates, c_prev, tanh_c, W_hh, one, dh, dc, da_all):
    steps, batch, four = gates.shape
    zero = one - one
    for t in range(steps - 1, -1, -1):
        da = da_all[t]
        for row in range(batch):
            dar = da[row]
            if not mask[t, row]:                                     # a padded step: nothing reaches it,
                for j in range(four):                                # dh and dc pass through unchanged
                    dar[j] = zero
                continue
            lstm_row_backward(dout[t, row], dh[row], dc[row], gates[t, row], c_prev[t, row], tanh_c[t, row],
                              dar, one)
        gemm(False, da, W_hh, one, dh)                               # dh += da W_hh


@numba.njit(**_KERNEL)
def _gru_sequence_forward(xw, W_hh_t, b_hh, mask, one, h, out, h_prev, gates, gh_n):
    steps, batch, three = xw.shape
    hidden = three // 3
    zero = one - one
    gh = numpy.empty((batch, three), dtype=xw.dtype)
    new = numpy.empty(hidden, dtype=xw.dtype)
    for t in range(steps):
        h_prev[t] = h
        gemm(False, h, W_hh_t, zero, gh)
        for row in range(batch):
            gru_row(xw[t, row], gh[row], b_hh, gates[t, row], gh_n[t, row], h[row], new, one)
            _emit(mask[t, row], new, out[t, row], h[row], zero)


@numba.njit(**_KERNEL)
def _gru_sequence_backward(dout, mask, h_prev, gates, gh_n, W_hh, one, dh, dxw_all, dgh_all):
    steps, batch, three = gates.shape
    zero = one - one
    for t in range(steps - 1, -1, -1):
        dxw, dgh = dxw_all[t], dgh_all[t]
        for row in range(batch):
            dx, dg = dxw[row], dgh[row]
            if not mask[t, row]:
                for j in range(three):
                    dx[j] = zero
                    dg[j] = zero
                continue
            gru_row_backward(dout[t, row], dh[row], gates[t, row], gh_n[t, row], h_prev[t, row], dx, dg, one)
        gemm(False, dgh, W_hh, one, dh)                              # dh += dgh W_hh (the direct path is in dh)


@numba.njit(**_KERNEL)
def _transpose_into(a, out):
    """out <- a^T, a tile of 8 x 8 at a time (both arrays' lines of a tile stay in cache)."""
    rows, columns = a.shape
    whole_rows, whole_columns = rows - rows % 8, columns - columns % 8
    for r0 in range(0, whole_rows, 8):
        for c0 in range(0, whole_columns, 8):
            for c in range(8):
                for r in range(8):
                    out[c0 + c, r0 + r] = a[r0 + r, c0 + c]
    for r in range(whole_rows, rows):
        for c in range(columns):
            out[c, r] = a[r, c]
    for r in range(whole_rows):
        for c in range(whole_columns, columns):
            out[c, r] = a[r, c]


def transposed(W):
    """W^T as a C-contiguous copy, taken once before a time loop: the per-step product h W^T then runs as
    BLAS's plain ``h @ W_t`` (no operand transposed), measured 13-30% faster than the transposed form at
    these shapes (B = 32, H = 128, LSTM: 43 -> 34 us; B = 64, H = 512: 0.98 -> 0.77 ms) for the price of
    one copy of W a sequence. The backward's ``dh += da W_hh`` is already of that plain form. The copy
    goes by 8 x 8 tiles: NumPy's ``ascontiguousarray(W.T)`` walks one of the two arrays across its lines
    and took 4.0 ms for a 2,048 x 512 W_hh (0.65 ms here), 21 ms for the 8,000 x 512 output layer (3.7)."""
    out = numpy.empty(W.shape[::-1], dtype=W.dtype)
    _transpose_into(W, out)
    return out


def add_weight_grads(grads, x, h_prev, dxw, dgh):
    """``minis2s.nn.rnn.add_weight_grads`` for the kernels' backward loops (here and decoder.py): the same four
    gradients, BLAS adding dW_ih and dW_hh
    into their arrays (``blas.add_at``: no temporaries), and an LSTM's one bias sum taken once (its dgh is
    its dxw: the reference sums the same (T*B, 4H) array twice)."""
    dW_ih, db_ih, dW_hh, db_hh = grads
    flat_dxw = dxw.reshape(-1, dxw.shape[-1])
    flat_dgh = dgh.reshape(-1, dgh.shape[-1])
    blas.add_at(flat_dxw, numpy.ascontiguousarray(x.reshape(-1, x.shape[-1])), dW_ih)
    summed = flat_dxw.sum(axis=0)
    db_ih += summed
    blas.add_at(flat_dgh, numpy.ascontiguousarray(h_prev.reshape(-1, h_prev.shape[-1])), dW_hh)
    db_hh += summed if dgh is dxw else flat_dgh.sum(axis=0)


def direction_forward(cell, x, state, W_ih, b_ih, W_hh, b_hh, mask):
    """The twin of ``minis2s.nn.rnn.direction_forward``: the same arguments and results; the cache holds
    a SequenceCache where the reference keeps a list of step caches."""
    from minis2s.nn import rnn
    if not blas.available:                                         # no BLAS to call from Numba: the reference
        return rnn.direction_forward.reference(cell, x, state, W_ih, b_ih, W_hh, b_hh, mask)
    steps, batch, _ = x.shape
    hidden = W_hh.shape[1]
    dtype = x.dtype
    xw = x.reshape(steps * batch, -1) @ W_ih.T                  # the input side hoisted: all steps in one product
    xw += b_ih                                                     # (in place: no second (T*B, G*H) array)
    xw = xw.reshape(steps, batch, -1)
    W_hh = numpy.ascontiguousarray(W_hh)
    W_hh_t = transposed(W_hh)
    mask = numpy.ascontiguousarray(mask)
    one = dtype.type(1)
    h = numpy.array(state[0], dtype=dtype, order="C")
    out = numpy.empty((steps, batch, hidden), dtype=dtype)
    h_prev = numpy.empty_like(out)
    if cell.name == "lstm":
        c = numpy.array(state[1], dtype=dtype, order="C")
        c_prev, tanh_c = numpy.empty_like(out), numpy.empty_like(out)
        gates = numpy.empty((steps, batch, 4 * hidden), dtype=dtype)
        _lstm_sequence_forward(xw, W_hh_t, b_hh, mask, one, h, c, out, h_prev, c_prev, gates, tanh_c)
        final, cache = (h, c), SequenceCache("lstm", gates, c_prev, tanh_c, None, W_hh)
    elif cell.name == "gru":
        gh_n = numpy.empty_like(out)
        gates = numpy.empty((steps, batch, 3 * hidden), dtype=dtype)
        _gru_sequence_forward(xw, W_hh_t, b_hh, mask, one, h, out, h_prev, gates, gh_n)
        final, cache = (h,), SequenceCache("gru", gates, None, None, gh_n, W_hh)
    else:
        h_new = numpy.empty_like(out)
        _rnn_sequence_forward(xw, W_hh_t, b_hh, mask, cell.name == "rnn_relu", one, h, out, h_prev, h_new)
        final, cache = (h,), SequenceCache(cell.name, h_new, None, None, None, W_hh)
    return out, final, rnn.DirectionCache(x, h_prev, cache, mask[:, :, None])


def direction_backward(cell, dout, dstate, cache, W_ih, grads):
    """The twin of ``minis2s.nn.rnn.direction_backward`` (its forward must have been this file's)."""
    from minis2s.nn import rnn
    seq = cache.step_caches
    if not isinstance(seq, SequenceCache):                         # the forward ran on the reference path
        return rnn.direction_backward.reference(cell, dout, dstate, cache, W_ih, grads)
    x, h_prev = cache.x, cache.h_prev
    steps, batch, hidden = h_prev.shape
    dtype = x.dtype
    one = dtype.type(1)
    mask = cache.mask[:, :, 0]
    dout = numpy.zeros_like(h_prev) if dout is None else numpy.ascontiguousarray(dout)
    if dstate is None:
        dstate = tuple(numpy.zeros((batch, hidden), dtype=dtype) for _ in range(cell.state_size))
    dh = numpy.array(dstate[0], dtype=dtype, order="C")
    W_hh = numpy.ascontiguousarray(seq.W_hh)
    dxw = numpy.empty((steps, batch, cell.gates * hidden), dtype=dtype)
    if seq.cell == "lstm":
        dc = numpy.array(dstate[1], dtype=dtype, order="C")
        _lstm_sequence_backward(dout, mask, seq.gates, seq.c_prev, seq.tanh_c, W_hh, one, dh, dc, dxw)
        dgh, dfirst = dxw, (dh, dc)
    elif seq.cell == "gru":
        dgh = numpy.empty_like(dxw)
        _gru_sequence_backward(dout, mask, h_prev, seq.gates, seq.gh_n, W_hh, one, dh, dxw, dgh)
        dfirst = (dh,)
    else:
        _rnn_sequence_backward(dout, mask, seq.gates, W_hh, seq.cell == "rnn_relu", one, dh, dxw)
        dgh, dfirst = dxw, (dh,)
    add_weight_grads(grads, x, h_prev, dxw, dgh)                   # after the loop: the weight gradients' products
    return dxw @ W_ih, dfirst
