"""Recurrent layers over whole sequences: RNN, LSTM, GRU, with back-propagation through time.

Shapes: x (T, B, D) time-major, lengths (B,) each in 1..T, out (T, B, dirs*H),
h / c states (layers*dirs, B, H) with index k*dirs + d (layer k, direction d), as in PyTorch.

Forward, for each layer k and direction d:

    xw_t   = x_t W_ih^T + b_ih                 for all t at once: one (T*B, D) x (D, G*H) product
    s_t    = cell(xw_t, s_t-1)                 the step functions of rnn_cells.py
    m_t    = [t < length]                      padding: a padded step neither updates the state
    s_t    = m_t ? s_t : s_t-1                 nor emits output (out_t = 0 there), so each
    out_t  = m_t ? h_t : 0                     sequence's final state is the one at its own last token

The reverse direction runs the same code on each sequence reversed *within its own length*
(x_rev[t] = x[length - 1 - t] for t < length), so it starts at the sequence's last real token,
not at the end of the padded batch; its outputs are put back in the original order.
Layers above the first take the concatenated directions of the layer below, through dropout
(training only; not after the last layer).

Backward through time walks the steps in reverse, carrying dstate:

    dnew_t = m_t ? dstate + dout_t : 0           gradient reaching the step's new state
    dstate = (m_t ? 0 : dstate) + cell_backward(dnew_t)'s dstate_prev
    dW_ih += dXW^T X,  db_ih += sum dXW,  dW_hh += dGH^T H_prev,  db_hh += sum dGH    (after the loop:
    dx     = dXW W_ih                                                 one matrix product each)

The layers above run layer by layer, each over all steps. The decoder cannot: its step t needs the
output of step t-1 (attention, input feeding, its own guesses), so it runs step by step, each step
through every layer: ``Recurrent.stack_step_forward`` / ``stack_step_backward`` below, the same cells
and the same dropout between layers, with ``stack_weight_grads`` taking the weight gradients after
the loop as one product each. Derivation: docs/derivations/bptt-and-masking.md.

``direction_forward`` / ``direction_backward`` have fast twins (kernels/rnn.py: the same time loop,
compiled, one call per direction); ``minis2s.dispatch`` picks one. What you read here is the reference.
"""
from typing import NamedTuple

import numpy

from .. import backend
from ..dispatch import twin
from . import init
from .layers import dropout_backward, dropout_forward, length_mask
from .module import Module
from .rnn_cells import CELLS


def reverse_index(lengths, steps):
    """(T, B) time index that reverses each sequence within its own length (an involution)."""
    xp = backend.array_module(lengths)
    t = xp.arange(steps)[:, None]
    return xp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def reverse_time(x, rev):
    """x (T, B, ...) with each sequence reversed within its length; its own inverse."""
    xp = backend.array_module(x)
    return x[rev, xp.arange(x.shape[1])[None, :]]


# ----------------------------------------------------------------------------- one direction of one layer

class DirectionCache(NamedTuple):
    x: object             # (T, B, D) the input this direction saw
    h_prev: object        # (T, B, H) the hidden state entering each step
    step_caches: list     # T step caches
    mask: object          # (T, B, 1) boolean


@twin("rnn.direction_forward")
def direction_forward(cell, x, state, W_ih, b_ih, W_hh, b_hh, mask):
    """Run ``cell`` over x (T, B, D) from ``state`` (tuple of (B, H)); returns out (T, B, H), state_n, cache."""
    xp = backend.array_module(x)
    steps, batch, _ = x.shape
    hidden = W_hh.shape[1]
    xw = (x.reshape(steps * batch, -1) @ W_ih.T + b_ih).reshape(steps, batch, -1)   # hoisted input side
    out = xp.zeros((steps, batch, hidden), dtype=x.dtype)
    h_prev = xp.empty_like(out)
    step_caches = []
    mask = mask[:, :, None]
    for t in range(steps):
        h_prev[t] = state[0]
        new_state, step_cache = cell.forward(xw[t], state, W_hh, b_hh)
        state = tuple(xp.where(mask[t], new, old) for new, old in zip(new_state, state))
        out[t] = xp.where(mask[t], new_state[0], 0)
        step_caches.append(step_cache)
    return out, state, DirectionCache(x, h_prev, step_caches, mask)


@twin("rnn.direction_backward")
def direction_backward(cell, dout, dstate, cache, W_ih, grads):
    """dout (T, B, H) or None, dstate tuple or None -> dx (T, B, D), dstate0 tuple.

    ``grads`` = (dW_ih, db_ih, dW_hh, db_hh), added into in place.
    """
    xp = backend.array_module(cache.x)
    steps, batch, _ = cache.x.shape
    hidden = cache.h_prev.shape[2]
    if dstate is None:
        dstate = tuple(xp.zeros((batch, hidden), dtype=cache.x.dtype) for _ in range(cell.state_size))
    dxw = xp.empty((steps, batch, cell.gates * hidden), dtype=cache.x.dtype)
    dgh = xp.empty_like(dxw)
    for t in reversed(range(steps)):
        m = cache.mask[t]
        reaching = (dstate[0] + dout[t] if dout is not None else dstate[0],) + dstate[1:]
        dnew = tuple(xp.where(m, d, 0) for d in reaching)                 # s_t = m ? new : old, out_t = m ? h : 0
        dxw[t], dgh[t], dprev = cell.backward(dnew, cache.step_caches[t])
        dstate = tuple(xp.where(m, 0, d) + dp                             # a padded step passes dstate through
                       for d, dp in zip(dstate, dprev))
    add_weight_grads(grads, cache.x, cache.h_prev, dxw, dgh)
    dx = dxw @ W_ih
    return dx, dstate


def add_weight_grads(grads, x, h_prev, dxw, dgh):
    """After a time loop, one layer's weight gradients, one matrix product each over all steps:
    x (T, B, D) its inputs, h_prev (T, B, H) the states entering each step, dxw, dgh (T, B, G*H).
    ``grads`` = (dW_ih, db_ih, dW_hh, db_hh), added into in place."""
    dW_ih, db_ih, dW_hh, db_hh = grads
    flat_dxw = dxw.reshape(-1, dxw.shape[-1])
    flat_dgh = dgh.reshape(-1, dgh.shape[-1])
    dW_ih += flat_dxw.T @ x.reshape(-1, x.shape[-1])                     # xw = x W_ih^T + b_ih
    db_ih += flat_dxw.sum(axis=0)
    dW_hh += flat_dgh.T @ h_prev.reshape(-1, h_prev.shape[-1])           # gh = h W_hh^T + b_hh
    db_hh += flat_dgh.sum(axis=0)


# ----------------------------------------------------------------------------- the layers

class StackStepCache(NamedTuple):
    """One time step through a stack of layers (one direction), for the decoder."""
    inputs: list          # [k] (B, D_k) layer k's input after dropout; None for layer 0 (its input side came as xw)
    drop_masks: list      # [k] the dropout mask on layer k's input; None for layer 0
    h_prev: list          # [k] (B, H) the hidden state entering layer k
    cells: list           # [k] the cell's step cache


class RecurrentCache(NamedTuple):
    lengths: object
    reverse: object                 # (T, B) reversing index
    directions: list                # [layer][direction] DirectionCache
    dropout_masks: list             # [layer] mask applied to that layer's input (None for layer 0)


class Recurrent(Module):
    """The shared body of RNN, LSTM and GRU; ``cell_name`` picks the step functions."""

    def __init__(self, cell_name, input_size, hidden_size, num_layers=1, bidirectional=False,
                 dropout=0.0, dtype="float32", seed=0, init_method="default"):
        super().__init__(dtype, seed)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if init_method not in ("default", "orthogonal"):
            raise ValueError(f"init_method must be 'default' or 'orthogonal', got {init_method!r}")
        self.cell = CELLS[cell_name]
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.dropout = bidirectional, dropout
        self.num_directions = 2 if bidirectional else 1
        gates = self.cell.gates
        for k in range(num_layers):
            layer_input = input_size if k == 0 else self.num_directions * hidden_size
            for suffix in self.suffixes:
                # PyTorch's default: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))
                for name, shape in ((f"weight_ih_l{k}", (gates * hidden_size, layer_input)),
                                    (f"weight_hh_l{k}", (gates * hidden_size, hidden_size)),
                                    (f"bias_ih_l{k}", (gates * hidden_size,)),
                                    (f"bias_hh_l{k}", (gates * hidden_size,))):
                    value = init.recurrent_uniform(shape, hidden_size, self.init_rng)
                    if init_method == "orthogonal" and name.startswith("weight_hh"):
                        # one orthogonal (H, H) block per gate
                        value = _stack_orthogonal(gates, hidden_size, self.init_rng)
                    self.add_param(name + suffix, value)

    @property
    def suffixes(self):
        return ("", "_reverse")[:self.num_directions]

    def weights(self, k, suffix):
        p = self.params
        return (p[f"weight_ih_l{k}{suffix}"], p[f"bias_ih_l{k}{suffix}"],
                p[f"weight_hh_l{k}{suffix}"], p[f"bias_hh_l{k}{suffix}"])

    def weight_grads(self, k, suffix):
        g = self.grads
        return (g[f"weight_ih_l{k}{suffix}"], g[f"bias_ih_l{k}{suffix}"],
                g[f"weight_hh_l{k}{suffix}"], g[f"bias_hh_l{k}{suffix}"])

    # The state travels as a tuple of (layers*dirs, B, H) arrays: (h,) or (h, c).
    def _state_tuple(self, state, batch, dtype):
        xp = backend.xp()
        if state is None:
            shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
            return tuple(xp.zeros(shape, dtype=dtype) for _ in range(self.cell.state_size))
        return tuple(state) if self.cell.state_size == 2 else (state,)

    def _state_public(self, states):
        return states if self.cell.state_size == 2 else states[0]

    def forward(self, x, lengths=None, state=None, train=True):
        """x (T, B, D), lengths (B,) or None, state h or (h, c) or None -> out, state_n, cache."""
        xp = backend.array_module(x)
        steps, batch, _ = x.shape
        if lengths is None:
            lengths = xp.full((batch,), steps, dtype=xp.int64)
        mask = length_mask(lengths, steps)
        rev = reverse_index(lengths, steps)
        state0 = self._state_tuple(state, batch, x.dtype)
        finals = [[None] * (self.num_layers * self.num_directions) for _ in state0]
        direction_caches, dropout_masks = [], []
        layer_input = x
        for k in range(self.num_layers):
            drop_mask = None
            if k > 0:
                layer_input, drop_mask = dropout_forward(layer_input, self.dropout, self.rng, train)
            dropout_masks.append(drop_mask)
            outputs, caches = [], []
            for d, suffix in enumerate(self.suffixes):
                index = k * self.num_directions + d
                seen = layer_input if d == 0 else reverse_time(layer_input, rev)
                W_ih, b_ih, W_hh, b_hh = self.weights(k, suffix)
                out, state_n, cache = direction_forward(self.cell, seen, tuple(s[index] for s in state0),
                                                        W_ih, b_ih, W_hh, b_hh, mask)
                outputs.append(out if d == 0 else reverse_time(out, rev))
                caches.append(cache)
                for j, s in enumerate(state_n):
                    finals[j][index] = s
            direction_caches.append(caches)
            layer_input = outputs[0] if len(outputs) == 1 else xp.concatenate(outputs, axis=2)
        state_n = tuple(xp.stack(f) for f in finals)
        cache = RecurrentCache(lengths, rev, direction_caches, dropout_masks)
        return layer_input, self._state_public(state_n), cache

    def backward(self, dout, dstate_n, cache):
        """dout (T, B, dirs*H) or None, dstate_n like state_n or None -> dx (T, B, D), dstate0."""
        xp = backend.array_module(cache.lengths)
        hidden = self.hidden_size
        dstates = None if dstate_n is None else self._state_tuple(dstate_n, None, None)
        dstate0 = [[None] * (self.num_layers * self.num_directions) for _ in range(self.cell.state_size)]
        d_layer_output = dout
        for k in reversed(range(self.num_layers)):
            d_input = None
            for d, suffix in enumerate(self.suffixes):
                index = k * self.num_directions + d
                dcache = cache.directions[k][d]
                dout_d = None if d_layer_output is None else d_layer_output[:, :, d * hidden:(d + 1) * hidden]
                if dout_d is not None and d == 1:
                    dout_d = reverse_time(dout_d, cache.reverse)
                dfinal = None if dstates is None else tuple(s[index] for s in dstates)
                dx, dfirst = direction_backward(self.cell, dout_d, dfinal, dcache,
                                                self.params[f"weight_ih_l{k}{suffix}"], self.weight_grads(k, suffix))
                if d == 1:
                    dx = reverse_time(dx, cache.reverse)
                d_input = dx if d_input is None else d_input + dx
                for j, s in enumerate(dfirst):
                    dstate0[j][index] = s
            d_layer_output = dropout_backward(d_input, cache.dropout_masks[k]) if k > 0 else d_input
        return d_layer_output, self._state_public(tuple(xp.stack(s) for s in dstate0))


    # ------------------------------------------------------------------ one step through every layer (decoder)

    def stack_step_forward(self, xw0, state, train=True):
        """xw0 (B, G*H) layer 0's input side x W_ih^T + b_ih, state tuple of (L, B, H) -> new state, cache.

        Layer k > 0 takes the new h of layer k-1 through dropout. Unidirectional layers only.
        """
        xp = backend.array_module(xw0)
        inputs, drop_masks, h_prev, cells, new_state = [], [], [], [], []
        below = None
        for k in range(self.num_layers):
            W_ih, b_ih, W_hh, b_hh = self.weights(k, "")
            if k == 0:
                x, drop_mask, xw = None, None, xw0
            else:
                x, drop_mask = dropout_forward(below, self.dropout, self.rng, train)
                xw = x @ W_ih.T + b_ih
            layer_state, cell_cache = self.cell.forward(xw, tuple(s[k] for s in state), W_hh, b_hh)
            inputs.append(x)
            drop_masks.append(drop_mask)
            h_prev.append(state[0][k])
            cells.append(cell_cache)
            new_state.append(layer_state)
            below = layer_state[0]
        new_state = tuple(xp.stack(parts) for parts in zip(*new_state))
        return new_state, StackStepCache(inputs, drop_masks, h_prev, cells)

    def stack_step_backward(self, dtop, dstate, cache):
        """dtop (B, H) the gradient of the top layer's new h from above, dstate tuple of (L, B, H) from the
        next step -> dxw [k] (B, G*H), dgh [k] (B, G*H), dstate_prev tuple of (L, B, H)."""
        xp = backend.array_module(dtop)
        dxw, dgh, dprev = [None] * self.num_layers, [None] * self.num_layers, [None] * self.num_layers
        dbelow = dtop                                             # the gradient reaching h_t of layer k
        for k in reversed(range(self.num_layers)):
            dnew = (dstate[0][k] + dbelow,) + tuple(s[k] for s in dstate[1:])
            dxw[k], dgh[k], dprev[k] = self.cell.backward(dnew, cache.cells[k])
            if k > 0:                                             # layer k's input was dropout(h of layer k-1)
                dbelow = dropout_backward(dxw[k] @ self.params[f"weight_ih_l{k}"], cache.drop_masks[k])
        return dxw, dgh, tuple(xp.stack(parts) for parts in zip(*dprev))

    def stack_weight_grads(self, inputs, h_prev, dxw, dgh):
        """After a step-by-step loop, every layer's weight gradients as one product each over all steps:
        inputs[k] (T, B, D_k), h_prev[k] (T, B, H), dxw[k], dgh[k] (T, B, G*H)."""
        for k in range(self.num_layers):
            add_weight_grads(self.weight_grads(k, ""), inputs[k], h_prev[k], dxw[k], dgh[k])


def _stack_orthogonal(gates, hidden, rng):
    """One orthogonal (H, H) block per gate, stacked: (G*H, H)."""
    return numpy.concatenate([init.orthogonal((hidden, hidden), rng) for _ in range(gates)], axis=0)


class RNN(Recurrent):
    """Elman RNN: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act = tanh (default) or relu."""

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
                 dtype="float32", seed=0, nonlinearity="tanh", init_method="default"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, num_layers, bidirectional,
                         dropout, dtype, seed, init_method)


class LSTM(Recurrent):
    """LSTM with gates i, f, g, o (PyTorch's order); the state is the pair (h, c)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
                 dtype="float32", seed=0, init_method="default"):
        super().__init__("lstm", input_size, hidden_size, num_layers, bidirectional, dropout, dtype, seed,
                         init_method)


class GRU(Recurrent):
    """GRU with gates r, z, n and n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), as in PyTorch."""

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
                 dtype="float32", seed=0, init_method="default"):
        super().__init__("gru", input_size, hidden_size, num_layers, bidirectional, dropout, dtype, seed,
                         init_method)
