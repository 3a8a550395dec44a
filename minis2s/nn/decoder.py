"""The decoder: a stack of recurrent cells, attention, and the projection onto the vocabulary.

One step t, in the order the code runs it (y_t-1 the input token, s_t-1 the state of every layer,
h^top the hidden state of the top layer, K the encoder outputs):

    e_t  = E_tgt[y_t-1]                                           the input token's embedding
    bahdanau: c_t = attend(h^top_t-1, K)                          attention *before* the cell, queried by
                                                                  the previous state (Bahdanau et al. 2015)
    x_t  = [e_t ; c_t (bahdanau) ; a_t-1 (input feeding) ; z (context feeding)]
    s_t  = cell stack(x_t, s_t-1)                                 dropout between layers
    luong: c_t = attend(h^top_t, K),  a_t = tanh(W_c [c_t ; h^top_t])     the attentional hidden state
           (Luong et al. 2015); with input feeding a_t is fed into step t+1
    o_t  = a_t (luong) or h^top_t (bahdanau, none)
    logits_t = W_out dropout(o_t) + b_out

z is the context vector: the top layer of the bridged encoder state, fed at every step (the d2l design).

The input side of the first layer, x_t W_ih^T, splits into the embedding's part, which can be computed
for every step at once, and the rest (c_t, a_t-1, z), computed at each step.

Backward of step t, walking t = T..1 (do_t arrives from the projection, dlogits_t W_out; the carried
gradients ds_t, da_t, from step t+1, start at zero):

    luong:   da_t  = do_t + da_t(carried)                 a_t was also step t+1's input (input feeding)
             dpre  = da_t * (1 - a_t^2)                   a_t = tanh(pre)
             dW_c += dpre^T [c_t ; h^top_t],   [dc_t ; dh^top_t] = dpre W_c
             dh^top_t += dquery                           from the attention's backward of dc_t
    else:    dh^top_t = do_t
    layer k = top..0:   cell backward of (dh^k_t + ds^k_t)  ->  dxw^k, dgh^k, ds^k_t-1
                        dh^(k-1)_t = dropout'(dxw^k W_ih^k)    (layer k's input was h^(k-1)_t)
    layer 0 extras:     [dc_t ; da_t-1 ; dz] = dxw^0 W_ih^0[:, E:]
    bahdanau:           dh^top_t-1 += dquery             from the attention's backward of dc_t
    carried to t-1:     ds_t-1, da_t-1;   dz and the attention's dK, dKW summed over all steps

After the loop the cell stack's weight gradients are one matrix product each over all steps
(dW_ih^k += dXW^k^T X^k, dW_hh^k += dGH^k^T H^k_prev), and de = dXW^0 W_ih^0[:, :E] goes to the
embedding's scatter-add.
"""
from typing import NamedTuple

from .. import backend
from .attention import Attention
from .layers import Linear, dropout_backward, dropout_forward, tanh_backward
from .module import Module
from .rnn import Recurrent


class StepCache(NamedTuple):
    layer_inputs: list        # [k] (B, D_k): the input of layer k (layer 0: the extras only)
    h_prev: list              # [k] (B, H): the state entering layer k
    cell_caches: list         # [k] the cell's step cache
    drop_masks: list          # [k] dropout mask on layer k's input (None for k = 0)
    attention: object         # AttentionCache or None (it holds the query it saw)
    combine: object           # luong: ([c; h] (B, M+H), a (B, H)); else None
    out_mask: object          # dropout mask on o_t or None


class Decoder(Module):
    def __init__(self, cell, vocab_size, emb_size, hidden_size, memory_size, num_layers=1, attention="none",
                 input_feeding=False, context_feeding=False, dropout=0.0, dtype=None, seed=0):
        super().__init__(dtype, seed)
        self.attention_kind = attention
        self.input_feeding = input_feeding
        self.context_feeding = context_feeding
        self.dropout = dropout
        self.emb_size, self.hidden_size, self.memory_size = emb_size, hidden_size, memory_size
        extra = (memory_size if attention == "bahdanau" else 0) + (hidden_size if input_feeding else 0) \
            + (hidden_size if context_feeding else 0)
        self.extra_size = extra
        self.rnn = self.add_module("rnn", Recurrent(cell, emb_size + extra, hidden_size, num_layers, False,
                                                    dropout, dtype, seed + 11))
        self.attention = None
        if attention != "none":
            self.attention = self.add_module("attention", Attention(attention, hidden_size, memory_size,
                                                                    dtype=dtype, seed=seed + 13))
        self.combine = None
        if attention.startswith("luong"):
            self.combine = self.add_module("combine", Linear(memory_size + hidden_size, hidden_size, bias=False,
                                                             dtype=dtype, seed=seed + 17))
        self.out = self.add_module("out", Linear(hidden_size, vocab_size, dtype=dtype, seed=seed + 19))

    # ------------------------------------------------------------------ the embedding's share of layer 0

    def embedding_projection(self, emb):
        """emb (..., E) -> emb W_ih0[:, :E]^T + b_ih0 (..., G*H): layer 0's input side for the embedding part."""
        W_ih = self.rnn.params["weight_ih_l0"]
        return emb @ W_ih[:, :self.emb_size].T + self.rnn.params["bias_ih_l0"]

    # ------------------------------------------------------------------ one step

    def step_forward(self, xw_emb, state, feed, context_vector, memory, projected, mask, train):
        """One decoder step.

        xw_emb (B, G*H)     the embedding's share of layer 0's input side (``embedding_projection``)
        state               tuple of (L, B, H): (h,) or (h, c)
        feed (B, H)         a_t-1 for input feeding (or None)
        context_vector      z (B, H) for context feeding (or None)
        memory (S, B, M), projected (S, B, A) or None, mask (S, B)
        Returns o_t (B, H) after output dropout, the new state, the new feed, attention weights (S, B) or
        None, and the cache.
        """
        xp = backend.array_module(xw_emb)
        rnn, cell = self.rnn, self.rnn.cell
        attention_cache, weights = None, None
        extras = []
        if self.attention_kind == "bahdanau":                           # queried by h^top_t-1
            context, attention_cache = self.attention.forward(state[0][-1], memory, projected, mask)
            weights = attention_cache.weights
            extras.append(context)
        if self.input_feeding:
            extras.append(feed)
        if self.context_feeding:
            extras.append(context_vector)

        layer_inputs, h_prev, cell_caches, drop_masks, new_state = [], [], [], [], []
        x = xp.concatenate(extras, axis=1) if extras else None
        for k in range(rnn.num_layers):
            W_ih, b_ih, W_hh, b_hh = rnn.weights(k, "")
            if k == 0:
                xw = xw_emb if x is None else xw_emb + x @ W_ih[:, self.emb_size:].T
                drop_mask = None
            else:
                x, drop_mask = dropout_forward(x, self.dropout, rnn.rng, train)
                xw = x @ W_ih.T + b_ih
            layer_inputs.append(x)
            drop_masks.append(drop_mask)
            h_prev.append(state[0][k])
            layer_state, cell_cache = cell.forward(xw, tuple(s[k] for s in state), W_hh, b_hh)
            cell_caches.append(cell_cache)
            new_state.append(layer_state)
            x = layer_state[0]
        new_state = tuple(xp.stack(parts) for parts in zip(*new_state))

        output, combine = x, None
        if self.combine is not None:                                   # Luong: attend with h_t, then combine
            context, attention_cache = self.attention.forward(x, memory, projected, mask)
            weights = attention_cache.weights
            joined = xp.concatenate([context, x], axis=1)
            output = xp.tanh(joined @ self.combine.params["weight"].T)  # a_t = tanh(W_c [c_t; h_t])
            combine = (joined, output)
        new_feed = output if self.input_feeding else None
        dropped, out_mask = dropout_forward(output, self.dropout, self.rng, train)
        cache = StepCache(layer_inputs, h_prev, cell_caches, drop_masks, attention_cache, combine, out_mask)
        return dropped, new_state, new_feed, weights, cache

    def step_backward(self, doutput, dstate, dfeed, cache, memory, dmemory=None, dprojected=None):
        """Backward of one step.

        doutput (B, H) the gradient of o_t (after dropout); dstate tuple of (L, B, H) from step t+1;
        dfeed (B, H) or None from step t+1's input. Returns dxw (list per layer, (B, G*H)), dgh (list),
        the extras' gradient (B, extra) or None, and dstate for step t-1. Adds into the attention's and
        the combine layer's gradients, and (with attention) into the sums over steps dmemory (S, B, M)
        and dprojected (S, B, A, bahdanau).
        """
        xp = backend.array_module(doutput)
        rnn, cell = self.rnn, self.rnn.cell
        doutput = dropout_backward(doutput, cache.out_mask)
        dtop = None
        if self.combine is not None:
            if dfeed is not None:
                doutput = doutput + dfeed                                   # a_t also fed step t+1
            joined, output = cache.combine
            dpre = tanh_backward(doutput, output)                           # a = tanh(W_c [c; h])
            self.combine.grads["weight"] += dpre.T @ joined
            djoined = dpre @ self.combine.params["weight"]
            dcontext, dtop = djoined[:, :self.memory_size], djoined[:, self.memory_size:]
            dquery = self.attention.backward(dcontext, cache.attention, memory, dmemory, dprojected)
            dtop = dtop + dquery                                            # the query was h_t
        else:
            dtop = doutput

        dxw, dgh, dprev = [None] * rnn.num_layers, [None] * rnn.num_layers, [None] * rnn.num_layers
        dbelow = dtop                                                       # gradient reaching h_t of layer k
        for k in reversed(range(rnn.num_layers)):
            dnew = (dstate[0][k] + dbelow,) + tuple(s[k] for s in dstate[1:])
            dxw[k], dgh[k], dprev[k] = cell.backward(dnew, cache.cell_caches[k])
            if k > 0:
                W_ih = rnn.params[f"weight_ih_l{k}"]
                dbelow = dropout_backward(dxw[k] @ W_ih, cache.drop_masks[k])  # layer k's input was h of k-1
        dstate_prev = tuple(xp.stack(parts) for parts in zip(*dprev))

        dextras = None
        if self.extra_size:
            dextras = dxw[0] @ rnn.params["weight_ih_l0"][:, self.emb_size:]
            if self.attention_kind == "bahdanau":
                dcontext = dextras[:, :self.memory_size]
                dquery = self.attention.backward(dcontext, cache.attention, memory, dmemory, dprojected)
                dstate_prev[0][-1] += dquery                                # the query was h^top_t-1
        return dxw, dgh, dextras, dstate_prev

    def split_extras(self, dextras):
        """(B, extra) -> (dfeed or None, dcontext_vector or None): the parts after the bahdanau context."""
        offset = self.memory_size if self.attention_kind == "bahdanau" else 0
        dfeed = dcontext_vector = None
        if self.input_feeding:
            dfeed = dextras[:, offset:offset + self.hidden_size]
            offset += self.hidden_size
        if self.context_feeding:
            dcontext_vector = dextras[:, offset:offset + self.hidden_size]
        return dfeed, dcontext_vector

    def accumulate_weight_grads(self, emb, layer_inputs, h_prev, dxw, dgh):
        """After the time loop: dW_ih, dW_hh, biases as one product each over all steps.

        emb (T, B, E); layer_inputs[k] (T, B, D_k) (layer 0: the extras, or None); h_prev[k] (T, B, H);
        dxw[k], dgh[k] (T, B, G*H). Returns demb (T, B, E).
        """
        rnn = self.rnn
        for k in range(rnn.num_layers):
            flat_dxw = dxw[k].reshape(-1, dxw[k].shape[-1])
            flat_dgh = dgh[k].reshape(-1, dgh[k].shape[-1])
            dW_ih, db_ih, dW_hh, db_hh = rnn.weight_grads(k, "")
            if k == 0:
                dW_ih[:, :self.emb_size] += flat_dxw.T @ emb.reshape(-1, self.emb_size)
                if layer_inputs[0] is not None:
                    dW_ih[:, self.emb_size:] += flat_dxw.T @ layer_inputs[0].reshape(-1, self.extra_size)
            else:
                dW_ih += flat_dxw.T @ layer_inputs[k].reshape(-1, layer_inputs[k].shape[-1])
            db_ih += flat_dxw.sum(axis=0)
            dW_hh += flat_dgh.T @ h_prev[k].reshape(-1, self.hidden_size)
            db_hh += flat_dgh.sum(axis=0)
        return dxw[0] @ rnn.params["weight_ih_l0"][:, :self.emb_size]
