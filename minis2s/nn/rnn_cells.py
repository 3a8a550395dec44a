"""One time step of the Elman RNN, the LSTM and the GRU: forward beside backward.

Notation (PyTorch's, so the code can be held against its documentation line by line):
x (B, D) input, h (B, H) previous hidden state, c (B, H) previous LSTM cell state,
W_ih (G*H, D), W_hh (G*H, H), b_ih, b_hh (G*H,), sigma the logistic sigmoid, * elementwise.

The input side x W_ih^T + b_ih does not depend on h, so the sequence layers compute it for
all steps at once (one big matrix product) and hand each step its row ``xw`` (B, G*H).
A step therefore only adds the recurrent side gh = h W_hh^T + b_hh and does the gate maths.

Elman RNN (G = 1)
    h' = act(xw + gh)                                   act = tanh or relu
  backward
    da = dh' * act'(.)        tanh: 1 - h'^2,  relu: [h' > 0]
    dxw = dgh = da,  dh = da W_hh

LSTM (G = 4, gates in the order i, f, g, o)
    i = sigma(xw_i + gh_i)    f = sigma(xw_f + gh_f)    g = tanh(xw_g + gh_g)    o = sigma(xw_o + gh_o)
    c' = f * c + i * g
    h' = o * tanh(c')
  backward (dh', dc' arrive from above and from the next step)
    dc'_total = dc' + dh' * o * (1 - tanh(c')^2)
    do = dh' * tanh(c')       di = dc'_total * g       dg = dc'_total * i       df = dc'_total * c
    dc = dc'_total * f
    pre-activations: da_i = di i (1 - i),  da_f = df f (1 - f),  da_g = dg (1 - g^2),  da_o = do o (1 - o)
    dxw = dgh = [da_i, da_f, da_g, da_o],  dh = dgh W_hh

GRU (G = 3, gates in the order r, z, n)
    r = sigma(xw_r + gh_r)    z = sigma(xw_z + gh_z)
    n = tanh(xw_n + r * gh_n)                           (the reset gate scales W_hn h + b_hn)
    h' = (1 - z) * n + z * h
  backward
    dn = dh' * (1 - z)        dz = dh' * (h - n)        dh_direct = dh' * z
    da_n = dn * (1 - n^2)     dr = da_n * gh_n
    da_r = dr r (1 - r)       da_z = dz z (1 - z)
    dxw = [da_r, da_z, da_n]          dgh = [da_r, da_z, da_n * r]
    dh = dh_direct + dgh W_hh

The weight gradients dW_ih = sum_t dxw_t^T x_t and dW_hh = sum_t dgh_t^T h_t-1 are *not* taken
here: the sequence layer stacks every step's dxw and dgh and takes each as one matrix product.

Every step of these derivations: docs/derivations/lstm.md and gru.md.
"""
from typing import NamedTuple

from .. import backend
from .layers import relu_forward, sigmoid_forward, tanh_forward


# ----------------------------------------------------------------------------- Elman RNN

class RNNStepCache(NamedTuple):
    h_next: object        # (B, H) the new state, act(a)
    W_hh: object          # (H, H)
    nonlinearity: str


def rnn_step_forward(xw, h, W_hh, b_hh, nonlinearity="tanh"):
    """xw (B, H), h (B, H) -> h_next (B, H), cache."""
    a = xw + h @ W_hh.T + b_hh
    h_next = tanh_forward(a) if nonlinearity == "tanh" else relu_forward(a)
    return h_next, RNNStepCache(h_next, W_hh, nonlinearity)


def rnn_step_backward(dh_next, cache):
    """dh_next (B, H) -> dxw (B, H), dgh (B, H), dh (B, H)."""
    if cache.nonlinearity == "tanh":
        da = dh_next * (1 - cache.h_next * cache.h_next)        # backprop through tanh
    else:
        da = dh_next * (cache.h_next > 0)                         # backprop through relu
    dh = da @ cache.W_hh                                          # backprop through h W_hh^T
    return da, da, dh


# ----------------------------------------------------------------------------- LSTM

class LSTMStepCache(NamedTuple):
    c: object             # (B, H) previous cell state
    i: object             # (B, H) input gate
    f: object             # (B, H) forget gate
    g: object             # (B, H) candidate
    o: object             # (B, H) output gate
    tanh_c_next: object   # (B, H) tanh(c')
    W_hh: object          # (4H, H)


def lstm_step_forward(xw, h, c, W_hh, b_hh):
    """xw (B, 4H), h (B, H), c (B, H) -> h_next (B, H), c_next (B, H), cache."""
    hidden = h.shape[1]
    a = xw + h @ W_hh.T + b_hh                                    # (B, 4H) pre-activations
    i = sigmoid_forward(a[:, 0 * hidden:1 * hidden])
    f = sigmoid_forward(a[:, 1 * hidden:2 * hidden])
    g = tanh_forward(a[:, 2 * hidden:3 * hidden])
    o = sigmoid_forward(a[:, 3 * hidden:4 * hidden])
    c_next = f * c + i * g
    tanh_c_next = tanh_forward(c_next)
    h_next = o * tanh_c_next
    return h_next, c_next, LSTMStepCache(c, i, f, g, o, tanh_c_next, W_hh)


def lstm_step_backward(dh_next, dc_next, cache):
    """dh_next, dc_next (B, H) -> dxw (B, 4H), dgh (B, 4H), dh (B, H), dc (B, H)."""
    xp = backend.array_module(dh_next)
    c, i, f, g, o, tanh_c_next = cache.c, cache.i, cache.f, cache.g, cache.o, cache.tanh_c_next
    dc_total = dc_next + dh_next * o * (1 - tanh_c_next * tanh_c_next)   # h' = o tanh(c')
    da = xp.concatenate([
        dc_total * g * i * (1 - i),                               # c' = ... + i g,  i = sigma(a_i)
        dc_total * c * f * (1 - f),                               # c' = f c + ...,  f = sigma(a_f)
        dc_total * i * (1 - g * g),                               # c' = ... + i g,  g = tanh(a_g)
        dh_next * tanh_c_next * o * (1 - o),                      # h' = o tanh(c'), o = sigma(a_o)
    ], axis=1)
    dc = dc_total * f                                             # c' = f c + ...
    dh = da @ cache.W_hh                                          # a = ... + h W_hh^T
    return da, da, dh, dc


# ----------------------------------------------------------------------------- GRU

class GRUStepCache(NamedTuple):
    h: object             # (B, H) previous state
    r: object             # (B, H) reset gate
    z: object             # (B, H) update gate
    n: object             # (B, H) candidate
    gh_n: object          # (B, H) W_hn h + b_hn, before the reset gate scales it
    W_hh: object          # (3H, H)


def gru_step_forward(xw, h, W_hh, b_hh):
    """xw (B, 3H), h (B, H) -> h_next (B, H), cache."""
    hidden = h.shape[1]
    gh = h @ W_hh.T + b_hh                                        # (B, 3H)
    r = sigmoid_forward(xw[:, 0 * hidden:1 * hidden] + gh[:, 0 * hidden:1 * hidden])
    z = sigmoid_forward(xw[:, 1 * hidden:2 * hidden] + gh[:, 1 * hidden:2 * hidden])
    gh_n = gh[:, 2 * hidden:3 * hidden]
    n = tanh_forward(xw[:, 2 * hidden:3 * hidden] + r * gh_n)
    h_next = (1 - z) * n + z * h
    return h_next, GRUStepCache(h, r, z, n, gh_n, W_hh)


def gru_step_backward(dh_next, cache):
    """dh_next (B, H) -> dxw (B, 3H), dgh (B, 3H), dh (B, H)."""
    xp = backend.array_module(dh_next)
    h, r, z, n, gh_n = cache.h, cache.r, cache.z, cache.n, cache.gh_n
    da_n = dh_next * (1 - z) * (1 - n * n)                        # h' = (1-z) n + ...,  n = tanh(a_n)
    da_r = da_n * gh_n * r * (1 - r)                              # a_n = xw_n + r gh_n,  r = sigma(a_r)
    da_z = dh_next * (h - n) * z * (1 - z)                        # h' = n + z (h - n),  z = sigma(a_z)
    dxw = xp.concatenate([da_r, da_z, da_n], axis=1)
    dgh = xp.concatenate([da_r, da_z, da_n * r], axis=1)          # gh_n enters scaled by r
    dh = dh_next * z + dgh @ cache.W_hh                           # direct path + through gh = h W_hh^T
    return dxw, dgh, dh


# ----------------------------------------------------------------------------- one interface for all three

class Cell(NamedTuple):
    """A cell as the sequence layers see it: the state is a tuple ((h,) or (h, c))."""
    name: str             # "rnn_tanh", "rnn_relu", "lstm", "gru"
    gates: int
    state_size: int       # 1: (h,), 2: (h, c)
    forward: object       # (xw, state, W_hh, b_hh) -> (new_state, cache)
    backward: object      # (dnew_state, cache) -> (dxw, dgh, dstate)


def _rnn(nonlinearity):
    def forward(xw, state, W_hh, b_hh):
        h_next, cache = rnn_step_forward(xw, state[0], W_hh, b_hh, nonlinearity)
        return (h_next,), cache

    def backward(dstate, cache):
        dxw, dgh, dh = rnn_step_backward(dstate[0], cache)
        return dxw, dgh, (dh,)

    return Cell(f"rnn_{nonlinearity}", 1, 1, forward, backward)


def _lstm_forward(xw, state, W_hh, b_hh):
    h_next, c_next, cache = lstm_step_forward(xw, state[0], state[1], W_hh, b_hh)
    return (h_next, c_next), cache


def _lstm_backward(dstate, cache):
    dxw, dgh, dh, dc = lstm_step_backward(dstate[0], dstate[1], cache)
    return dxw, dgh, (dh, dc)


def _gru_forward(xw, state, W_hh, b_hh):
    h_next, cache = gru_step_forward(xw, state[0], W_hh, b_hh)
    return (h_next,), cache


def _gru_backward(dstate, cache):
    dxw, dgh, dh = gru_step_backward(dstate[0], cache)
    return dxw, dgh, (dh,)


CELLS = {
    "rnn_tanh": _rnn("tanh"),
    "rnn_relu": _rnn("relu"),
    "lstm": Cell("lstm", 4, 2, _lstm_forward, _lstm_backward),
    "gru": Cell("gru", 3, 1, _gru_forward, _gru_backward),
}
