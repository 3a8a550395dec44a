"""Fused gate maths of the LSTM and GRU steps: the fast twins of ``minis2s.nn.rnn_cells``.

The reference step spends most of its time at small sizes on a dozen separate NumPy calls, each a
pass over (B, H) memory with its own temporary. Here the arithmetic of a step is one or two Numba
loops. The two transcendental functions stay with NumPy: its ``tanh`` is vectorised (about 0.5 ns an
element here) where Numba's scalar ``math.tanh``, with no SVML, costs 16 ns. So a forward step is

    a = xw + h W_hh^T + b_hh                   (NumPy: one BLAS product, the add fused below)
    Numba: a_ifo <- a_ifo / 2                   (sigma(a) = (1 + tanh(a/2)) / 2, as in the reference)
    NumPy: t = tanh(a)                          one call over all gates
    Numba: i, f, o = (1 + t)/2, g = t, c' = f c + i g
    NumPy: tanh(c');   h' = o tanh(c')

and a backward step (no transcendental function) one Numba loop plus the BLAS product dh = da W_hh.
The equations are those of ``rnn_cells.py``; every kernel has a parity test against it.
"""
import numba
import numpy

from minis2s.nn.rnn_cells import GRUStepCache, LSTMStepCache


# ----------------------------------------------------------------------------- LSTM

@numba.njit(cache=True)
def _lstm_pre(a, xw, b, hidden):
    """a <- xw + a + b, the i, f, o columns halved (their sigmoid goes through tanh(a/2))."""
    for row in range(a.shape[0]):
        for j in range(a.shape[1]):
            value = (xw[row, j] + a[row, j]) + b[j]
            a[row, j] = value if hidden * 2 <= j < hidden * 3 else 0.5 * value


@numba.njit(cache=True)
def _lstm_post(t, c, gates, c_next, hidden):
    """t = tanh of the (halved) pre-activations -> gates (B, 4H) = [i, f, g, o], c' = f c + i g."""
    for row in range(t.shape[0]):
        for j in range(hidden):
            i = 0.5 * (1 + t[row, j])
            f = 0.5 * (1 + t[row, hidden + j])
            g = t[row, 2 * hidden + j]
            o = 0.5 * (1 + t[row, 3 * hidden + j])
            gates[row, j] = i
            gates[row, hidden + j] = f
            gates[row, 2 * hidden + j] = g
            gates[row, 3 * hidden + j] = o
            c_next[row, j] = f * c[row, j] + i * g


def lstm_step_forward(xw, h, c, W_hh, b_hh):
    """xw (B, 4H), h, c (B, H) -> h', c', LSTMStepCache (the gates as views of one (B, 4H) array)."""
    hidden = h.shape[1]
    a = h @ W_hh.T
    _lstm_pre(a, xw, b_hh, hidden)
    numpy.tanh(a, out=a)
    gates = numpy.empty_like(a)
    c_next = numpy.empty_like(c)
    _lstm_post(a, c, gates, c_next, hidden)
    tanh_c_next = numpy.tanh(c_next)
    h_next = gates[:, 3 * hidden:] * tanh_c_next
    i, f, g, o = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
    return h_next, c_next, LSTMStepCache(c, i, f, g, o, tanh_c_next, W_hh)


@numba.njit(cache=True)
def _lstm_backward(dh_next, dc_next, c, i, f, g, o, tanh_c_next, da, dc):
    hidden = c.shape[1]
    for row in range(c.shape[0]):
        for j in range(hidden):
            ii, ff, gg, oo, tc = i[row, j], f[row, j], g[row, j], o[row, j], tanh_c_next[row, j]
            dh = dh_next[row, j]
            dc_total = dc_next[row, j] + dh * oo * (1 - tc * tc)
            da[row, j] = dc_total * gg * ii * (1 - ii)
            da[row, hidden + j] = dc_total * c[row, j] * ff * (1 - ff)
            da[row, 2 * hidden + j] = dc_total * ii * (1 - gg * gg)
            da[row, 3 * hidden + j] = dh * tc * oo * (1 - oo)
            dc[row, j] = dc_total * ff


def lstm_step_backward(dh_next, dc_next, cache):
    """dh_next, dc_next (B, H) -> dxw (B, 4H), dgh (B, 4H) (the same array), dh (B, H), dc (B, H)."""
    batch, hidden = cache.c.shape
    da = numpy.empty((batch, 4 * hidden), dtype=cache.c.dtype)
    dc = numpy.empty_like(cache.c)
    _lstm_backward(dh_next, dc_next, cache.c, cache.i, cache.f, cache.g, cache.o, cache.tanh_c_next, da, dc)
    return da, da, da @ cache.W_hh, dc


# ----------------------------------------------------------------------------- GRU

@numba.njit(cache=True)
def _gru_pre(xw, gh, pre, hidden):
    """pre[:, :2H] <- (xw + gh) / 2 for the r and z gates."""
    for row in range(xw.shape[0]):
        for j in range(2 * hidden):
            pre[row, j] = 0.5 * (xw[row, j] + gh[row, j])


@numba.njit(cache=True)
def _gru_mid(gates, xw, gh, pre_n, hidden):
    """gates holds tanh of the halved r, z pre-activations; in place -> r, z; pre_n = xw_n + r gh_n."""
    for row in range(xw.shape[0]):
        for j in range(hidden):
            r = 0.5 * (1 + gates[row, j])
            gates[row, j] = r
            gates[row, hidden + j] = 0.5 * (1 + gates[row, hidden + j])
            pre_n[row, j] = xw[row, 2 * hidden + j] + r * gh[row, 2 * hidden + j]


@numba.njit(cache=True)
def _gru_post(n, gates, h, h_next, hidden):
    """h' = (1 - z) n + z h."""
    for row in range(h.shape[0]):
        for j in range(hidden):
            z = gates[row, hidden + j]
            h_next[row, j] = (1 - z) * n[row, j] + z * h[row, j]


def gru_step_forward(xw, h, W_hh, b_hh):
    """xw (B, 3H), h (B, H) -> h', GRUStepCache."""
    batch, hidden = h.shape
    gh = h @ W_hh.T
    gh += b_hh
    gates = numpy.empty((batch, 2 * hidden), dtype=h.dtype)
    _gru_pre(xw, gh, gates, hidden)
    numpy.tanh(gates, out=gates)
    pre_n = numpy.empty_like(h)
    _gru_mid(gates, xw, gh, pre_n, hidden)
    n = numpy.tanh(pre_n, out=pre_n)
    h_next = numpy.empty_like(h)
    _gru_post(n, gates, h, h_next, hidden)
    return h_next, GRUStepCache(h, gates[:, :hidden], gates[:, hidden:], n, gh[:, 2 * hidden:], W_hh)


@numba.njit(cache=True)
def _gru_backward(dh_next, h, r, z, n, gh_n, dxw, dgh, dh_direct):
    hidden = h.shape[1]
    for row in range(h.shape[0]):
        for j in range(hidden):
            d, rr, zz, nn = dh_next[row, j], r[row, j], z[row, j], n[row, j]
            da_n = d * (1 - zz) * (1 - nn * nn)
            da_r = da_n * gh_n[row, j] * rr * (1 - rr)
            da_z = d * (h[row, j] - nn) * zz * (1 - zz)
            dxw[row, j] = da_r
            dxw[row, hidden + j] = da_z
            dxw[row, 2 * hidden + j] = da_n
            dgh[row, j] = da_r
            dgh[row, hidden + j] = da_z
            dgh[row, 2 * hidden + j] = da_n * rr
            dh_direct[row, j] = d * zz


def gru_step_backward(dh_next, cache):
    """dh_next (B, H) -> dxw (B, 3H), dgh (B, 3H), dh (B, H)."""
    batch, hidden = cache.h.shape
    dxw = numpy.empty((batch, 3 * hidden), dtype=cache.h.dtype)
    dgh = numpy.empty_like(dxw)
    dh = numpy.empty_like(cache.h)
    _gru_backward(dh_next, cache.h, cache.r, cache.z, cache.n, cache.gh_n, dxw, dgh, dh)
    dh += dgh @ cache.W_hh
    return dxw, dgh, dh

