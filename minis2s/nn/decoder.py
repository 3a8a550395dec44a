"""The decoder: a stack of recurrent cells, attention, and the projection onto the vocabulary.

One step t, in the order ``step_forward`` runs it (y_t-1 the input token, s_t-1 the state of every
layer, h_t the top layer's hidden state, K the encoder outputs, cv the context vector; letters as in
docs/notation.md):

    emb_t = E_tgt[y_t-1]                                        the input token's embedding
    bahdanau: ctx_t = attend(h_t-1, K)                          attention *before* the cell, queried by
                                                                the previous state (Bahdanau et al. 2015)
    x_t   = [emb_t ; extras_t],  extras_t = [ctx_t (bahdanau) ; h~_t-1 (input feeding) ; cv (context feeding)]
    s_t   = cell stack(x_t, s_t-1)                              Recurrent.stack_step_forward (nn/rnn.py)
    luong: ctx_t = attend(h_t, K),  h~_t = tanh(W_c [ctx_t ; h_t])    the attentional hidden state
           (Luong et al. 2015, ``combine_forward``); with input feeding h~_t is fed into step t+1
    bahdanau with attentional_output: h~_t = tanh(W_c [ctx_t ; h_t]) with the step's ctx_t (from h_t-1):
           the output sees the context too (Joey NMT's and OpenNMT-py's attentional layer; Bahdanau et al.
           compute their output from s_i, y_i-1 and c_i)
    bahdanau with deep_output: h~_t = tanh(W_c [ctx_t ; h_t ; emb_t]): the attentional layer reads the input
           token as well, all three of Bahdanau's inputs to their output (their maxout layer, here a tanh)
    o_t   = dropout(h~_t (luong; bahdanau with attentional_output) or h_t (bahdanau, none))
    logits_t = W_out o_t + b_out                                (for all steps at once, in model.py)

cv is the encoder's summary of the source (its final state, through the bridge): the d2l design feeds
it at every step. Layer 0's input side x_t W_ih^T splits into the embedding's part, computed for every
step at once where the inputs are known (``embedding_projection``), and the extras' part, per step.

``step_backward`` is the mirror image, the same concerns in reverse order (do_t arrives from the
projection; the carried gradients ds_t, dh~_t from step t+1 start at zero):

    o_t:      dropout backward
    luong:    dh~_t += dh~_t (carried, input feeding);  [dctx_t ; dh_t] = combine_backward(dh~_t)
              dh_t += attention backward of dctx_t          (the query was h_t)
    bahdanau with attentional_output: [dctx_t ; dh_t] = combine_backward(dh~_t)
              (with deep_output [dctx_t ; dh_t ; demb_t]: demb_t is added to the embedding's gradient)
    cells:    Recurrent.stack_step_backward(dh_t, ds_t)  ->  dxw^k, dgh^k, ds_t-1
    extras:   [dctx_t ; dh~_t-1 ; dcv] = dxw^0 W_ih^0[:, E:]      (``split_extras``)
    bahdanau: dh_t-1 += attention backward of dctx_t        (the query was h_t-1; with attentional_output
              dctx_t sums both uses of ctx_t: the cell's input and the output layer)

dcv and the attention's dK, dKW are summed over all steps; after the loop ``weight_grads`` takes the
cell stack's weight gradients as one product each and returns demb = dXW^0 W_ih^0[:, :E].
With teacher forcing every input is known before the loop starts: ``steps_forward`` runs the steps
in turn, ``steps_backward`` walks them back. Their twins (kernels/decoder.py) run the whole loop of a
GRU or LSTM decoder with attention as one compiled loop each way; and a decoder whose cells are fed
nothing but the embedding (no attention, or Luong's without input feeding; no context feeding) needs
no step loop at all: ``forward_whole_sequences`` below runs its stack over all steps at once, as the
encoder's, then Luong's attention for all steps (``Attention.forward_steps``). That variant is the
same equations in fewer, larger calls (tests/test_model.py holds it equal to the loop); the twins
choose it.
Derivations: docs/derivations/attention.md.
"""
from typing import NamedTuple

from .. import backend
from ..dispatch import twin
from .attention import Attention
from .layers import Linear, dropout_backward, dropout_forward, linear_forward, tanh_backward, tanh_forward
from .module import Module
from .rnn import Recurrent


class CombineCache(NamedTuple):
    linear: object            # the Linear layer's cache (it holds [ctx ; h], (B, M+H); [ctx ; h ; emb], deep output)
    h_tilde: object           # (B, H) tanh(W_c [ctx ; h])


class StepCache(NamedTuple):
    extras: object            # (B, X) layer 0's extra input [ctx ; h~_t-1 ; cv], or None
    stack: object             # rnn.StackStepCache: the cells of every layer
    attention: object         # AttentionCache, or None without attention
    combine: object           # CombineCache (luong), or None
    out_mask: object          # the dropout mask on o_t, or None


class Decoder(Module):
    def __init__(self, cell, vocab_size, emb_size, hidden_size, memory_size, num_layers=1, attention="none",
                 input_feeding=False, context_feeding=False, dropout=0.0, dtype=None, seed=0,
                 attentional_output=False, deep_output=False):
        super().__init__(dtype, seed)
        if deep_output and not (attention == "bahdanau" and attentional_output):
            raise ValueError("deep_output adds the input token's embedding to Bahdanau's attentional output "
                             "layer: it needs attention='bahdanau' and attentional_output=True")
        self.deep_output = deep_output
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
        self.combine = None                            # W_c of h~_t = tanh(W_c [ctx_t ; h_t (; emb_t)])
        if attention.startswith("luong") or (attention == "bahdanau" and attentional_output):
            joined = memory_size + hidden_size + (emb_size if deep_output else 0)
            self.combine = self.add_module("combine", Linear(joined, hidden_size, bias=False, dtype=dtype,
                                                             seed=seed + 17))
        self.out = self.add_module("out", Linear(hidden_size, vocab_size, dtype=dtype, seed=seed + 19))

    # ------------------------------------------------------------------ the embedding's share of layer 0

    def embedding_projection(self, emb):
        """emb (..., E) -> emb W_ih0[:, :E]^T + b_ih0 (..., G*H): layer 0's input side for the embedding part."""
        return linear_forward(emb, self.rnn.params["weight_ih_l0"][:, :self.emb_size], self.rnn.params["bias_ih_l0"])[0]

    def initial_feed(self, batch):
        """h~_0 = 0 (B, H) with input feeding, else None."""
        if not self.input_feeding:
            return None
        return backend.xp().zeros((batch, self.hidden_size), dtype=self.dtype)

    # ------------------------------------------------------------------ the attentional hidden state

    def combine_forward(self, ctx, h, emb=None):
        """ctx (B, M), h (B, H) -> h~ = tanh(W_c [ctx ; h]) (B, H), cache (or every step at once: (T, B, ...));
        with the deep output also emb (B, E): h~ = tanh(W_c [ctx ; h ; emb])."""
        parts = [ctx, h] if emb is None else [ctx, h, emb]
        joined = backend.array_module(h).concatenate(parts, axis=-1)
        pre, linear_cache = self.combine.forward(joined)
        h_tilde = tanh_forward(pre)
        return h_tilde, CombineCache(linear_cache, h_tilde)

    def combine_backward(self, dh_tilde, cache):
        """dh~ (B, H) -> dctx (B, M), dh (B, H), demb (B, E) with the deep output (else None); adds dW_c."""
        dpre = tanh_backward(dh_tilde, cache.h_tilde)                    # h~ = tanh(pre)
        djoined = self.combine.backward(dpre, cache.linear)              # pre = W_c [ctx ; h (; emb)]
        m, h = self.memory_size, self.memory_size + self.hidden_size
        return djoined[..., :m], djoined[..., m:h], djoined[..., h:] if self.deep_output else None

    # ------------------------------------------------------------------ layer 0's extra inputs

    def join_extras(self, ctx, feed, context_vector):
        """[ctx (bahdanau) ; h~_t-1 (input feeding) ; cv (context feeding)] (B, X), or None when there are none."""
        parts = [part for part in (ctx, feed, context_vector) if part is not None]
        return backend.array_module(parts[0]).concatenate(parts, axis=1) if parts else None

    def split_extras(self, dextras):
        """(B, X) -> dctx (bahdanau) or None, dfeed (input feeding) or None, dcontext_vector or None."""
        sizes = [(self.attention_kind == "bahdanau", self.memory_size), (self.input_feeding, self.hidden_size),
                 (self.context_feeding, self.hidden_size)]
        parts, offset = [], 0
        for present, size in sizes:
            parts.append(dextras[:, offset:offset + size] if present else None)
            offset += size if present else 0
        return tuple(parts)

    # ------------------------------------------------------------------ one step

    def step_forward(self, xw_emb, state, feed, encoded, train, emb=None):
        """One decoder step.

        xw_emb (B, G*H)     the embedding's share of layer 0's input side (``embedding_projection``)
        emb (B, E)          the input token's embedding itself: read by the deep output only
        state               tuple of (L, B, H): (h,) or (h, c)
        feed (B, H)         h~_t-1 for input feeding (or None)
        encoded             model.Encoded: memory (S, B, M), projected (S, B, A) or None, mask (S, B),
                            context_vector (B, H) or None
        Returns o_t (B, H) after output dropout, the new state, the new feed, attention weights (S, B) or
        None, and the cache.
        """
        attention_cache = ctx = None
        if self.attention_kind == "bahdanau":                           # queried by h_t-1
            ctx, attention_cache = self.attention.forward(state[0][-1], encoded.memory, encoded.projected,
                                                          encoded.mask)
        extras = self.join_extras(ctx, feed, encoded.context_vector)
        xw0 = xw_emb
        if extras is not None:
            xw0 = xw_emb + extras @ self.rnn.params["weight_ih_l0"][:, self.emb_size:].T
        state, stack_cache = self.rnn.stack_step_forward(xw0, state, train)
        output, combine_cache = state[0][-1], None                      # h_t, the top layer's new state
        if self.combine is not None:
            if self.attention_kind != "bahdanau":                       # Luong: attend with h_t, then combine
                ctx, attention_cache = self.attention.forward(output, encoded.memory, encoded.projected,
                                                              encoded.mask)
            output, combine_cache = self.combine_forward(ctx, output,   # h~_t = tanh(W_c [ctx_t ; h_t])
                                                         emb if self.deep_output else None)
        new_feed = output if self.input_feeding else None
        dropped, out_mask = dropout_forward(output, self.dropout, self.rng, train)
        weights = None if attention_cache is None else attention_cache.weights
        cache = StepCache(extras, stack_cache, attention_cache, combine_cache, out_mask)
        return dropped, state, new_feed, weights, cache

    def step_backward(self, doutput, dstate, dfeed, cache, encoded, dmemory=None, dprojected=None):
        """Backward of one step, the mirror of ``step_forward``.

        doutput (B, H) the gradient of o_t; dstate tuple of (L, B, H) from step t+1; dfeed (B, H) or None,
        the gradient of h~_t from step t+1's input. Returns dxw, dgh (lists per layer, (B, G*H)), dfeed for
        step t-1 (or None), dcontext_vector (B, H) or None, dstate for step t-1, and demb (B, E), the deep
        output's share of the embedding's gradient (None without it). Adds into the attention's
        and the combine layer's gradients, and (with attention) into the sums over steps dmemory (S, B, M)
        and dprojected (S, B, A, bahdanau).
        """
        memory = encoded.memory
        doutput = dropout_backward(doutput, cache.out_mask)
        dtop, dctx_out, demb = doutput, None, None
        if self.combine is not None:
            if dfeed is not None:
                doutput = doutput + dfeed                               # h~_t also fed step t+1
            dctx_out, dtop, demb = self.combine_backward(doutput, cache.combine)
            if self.attention_kind != "bahdanau":                       # Luong: the query was h_t
                dtop = dtop + self.attention.backward(dctx_out, cache.attention, memory, dmemory, dprojected)
        dxw, dgh, dstate_prev = self.rnn.stack_step_backward(dtop, dstate, cache.stack)
        dfeed_prev = dcontext_vector = None
        if cache.extras is not None:
            dextras = dxw[0] @ self.rnn.params["weight_ih_l0"][:, self.emb_size:]
            dctx, dfeed_prev, dcontext_vector = self.split_extras(dextras)
            if dctx is not None:                                        # bahdanau: the query was h_t-1
                if dctx_out is not None:
                    dctx = dctx + dctx_out                              # ctx_t fed the cell and the output
                dstate_prev[0][-1] += self.attention.backward(dctx, cache.attention, memory, dmemory, dprojected)
        return dxw, dgh, dfeed_prev, dcontext_vector, dstate_prev, demb

    def weight_grads(self, emb, steps, dxw, dgh):
        """After the time loop: the cell stack's weight gradients, one product each over all steps.

        emb (T, B, E) the target embeddings (after dropout), steps the T StepCaches, dxw[k], dgh[k] (T, B, G*H).
        Returns demb (T, B, E).
        """
        xp = backend.array_module(emb)
        inputs = [emb if steps[0].extras is None                       # layer 0: x_t = [emb_t ; extras_t]
                  else xp.concatenate([emb, xp.stack([s.extras for s in steps])], axis=2)]
        inputs += [xp.stack([s.stack.inputs[k] for s in steps]) for k in range(1, self.rnn.num_layers)]
        h_prev = [xp.stack([s.stack.h_prev[k] for s in steps]) for k in range(self.rnn.num_layers)]
        self.rnn.stack_weight_grads(inputs, h_prev, dxw, dgh)
        return dxw[0] @ self.rnn.params["weight_ih_l0"][:, :self.emb_size]


# ----------------------------------------------------------------------------- every step, teacher forced

@twin("decoder.steps_forward")
def steps_forward(decoder, emb, encoded, train):
    """Teacher forcing: every input token is known, so all T steps run in one loop.

    emb (T, B, E) the input tokens' embeddings (after dropout), encoded the model's Encoded ->
    outputs o (T, B, H) after dropout, attention weights (T, S, B) or None, the T StepCaches.
    """
    xp = backend.array_module(emb)
    xw_emb = decoder.embedding_projection(emb)                      # (T, B, G*H), every step in one product
    state, feed = encoded.state, decoder.initial_feed(emb.shape[1])
    outputs, weights, caches = [], [], []
    for t in range(xw_emb.shape[0]):
        output, state, feed, step_weights, cache = decoder.step_forward(xw_emb[t], state, feed, encoded, train,
                                                                        emb[t])
        outputs.append(output)
        weights.append(step_weights)
        caches.append(cache)
    return xp.stack(outputs), None if weights[0] is None else xp.stack(weights), caches


@twin("decoder.steps_backward")
def steps_backward(decoder, doutputs, emb, caches, encoded):
    """The mirror of ``steps_forward`` (and of scheduled sampling's loop, whose caches are the same):
    doutputs (T, B, H) the gradient of every o_t, emb (T, B, E) the embeddings the steps saw ->
    demb (T, B, E), dstate0 (tuple of (L, B, H), the initial state's), dmemory (S, B, M) and dprojected
    (S, B, A) summed over all steps (None where unused), dcontext_vector (B, H) or None.
    Adds into the decoder's weight gradients."""
    xp = backend.array_module(doutputs)
    rnn = decoder.rnn
    dstate = tuple(xp.zeros_like(s) for s in encoded.state)
    dfeed = None
    dmemory = xp.zeros_like(encoded.memory) if decoder.attention else None
    dprojected = xp.zeros_like(encoded.projected) if encoded.projected is not None else None
    dcontext_vector = xp.zeros_like(encoded.context_vector) if encoded.context_vector is not None else None
    steps = doutputs.shape[0]
    dxw = [[None] * steps for _ in range(rnn.num_layers)]
    dgh = [[None] * steps for _ in range(rnn.num_layers)]
    demb_out = [None] * steps                                           # the deep output's share of demb
    for t in reversed(range(steps)):
        step_dxw, step_dgh, dfeed, dcv, dstate, demb_out[t] = decoder.step_backward(
            doutputs[t], dstate, dfeed, caches[t], encoded, dmemory, dprojected)
        for k in range(rnn.num_layers):
            dxw[k][t], dgh[k][t] = step_dxw[k], step_dgh[k]
        if dcv is not None:
            dcontext_vector += dcv                                      # cv was fed at every step
    demb = decoder.weight_grads(emb, caches, [xp.stack(d) for d in dxw], [xp.stack(d) for d in dgh])
    if decoder.deep_output:
        demb = demb + xp.stack(demb_out)                                # emb_t fed the cells and the output
    return demb, dstate, dmemory, dprojected, dcontext_vector


# ----------------------------------------------------------------------------- nothing fed back: whole sequences

class WholeSequenceCache(NamedTuple):
    """The decoder's cache when it ran over whole sequences (``forward_whole_sequences``)."""
    rnn: object               # rnn.RecurrentCache of the decoder's stack
    attention: object         # attention.StepsAttentionCache (Luong), or None
    combine: object           # CombineCache (Luong), or None
    out_mask: object          # (T, B, H) the dropout mask on the outputs, or None


def forward_whole_sequences(decoder, emb, encoded, train):
    """``steps_forward`` for a decoder whose cells are fed nothing but the embedding (no Bahdanau attention,
    no input or context feeding): step t's cells see only y_t-1's embedding and s_t-1, so the stack is a
    plain recurrent layer over the shifted targets, started from the encoder's state. It runs like the
    encoder, each layer over all steps at once; Luong's attention, queried by h_t after the cells, then
    runs for all steps at once too. The same results, dropout included for up to two layers: its masks
    are drawn a layer at a time where the loop draws them a step at a time, and the generator is
    counter-based, so T draws of (B, H) are one draw of (T, B, H); with more layers the two orders
    interleave differently (other masks, the same distribution)."""
    state = encoded.state if decoder.rnn.cell.state_size == 2 else encoded.state[0]
    hidden, _, rnn_cache = decoder.rnn.forward(emb, None, state, train)          # (T, B, H): every h_t
    weights = attention_cache = combine_cache = None
    if decoder.attention is not None:                                # Luong: ctx_t = attend(h_t, K), then
        ctx, weights, attention_cache = decoder.attention.forward_steps(hidden, encoded.memory, encoded.mask)
        hidden, combine_cache = decoder.combine_forward(ctx, hidden)            # h~_t = tanh(W_c [ctx_t ; h_t])
    outputs, out_mask = dropout_forward(hidden, decoder.dropout, decoder.rng, train)
    return outputs, weights, WholeSequenceCache(rnn_cache, attention_cache, combine_cache, out_mask)


def backward_whole_sequences(decoder, doutputs, emb, cache, encoded):
    """The mirror of ``forward_whole_sequences``, with ``steps_backward``'s results: demb (T, B, E), dstate0,
    dmemory (S, B, M) or None, and None for dprojected and dcontext_vector (nothing of those was used)."""
    rnn = decoder.rnn
    dhidden = dropout_backward(doutputs, cache.out_mask)
    dmemory = None
    if cache.attention is not None:                                  # Luong, every step at once
        dctx, dhidden, _ = decoder.combine_backward(dhidden, cache.combine)   # Luong: no deep output
        dquery, dmemory = decoder.attention.backward_steps(dctx, cache.attention)
        dhidden = dhidden + dquery                                   # h_t was also the query
    demb, dstate = rnn.backward(dhidden, None, cache.rnn)
    return demb, dstate if rnn.cell.state_size == 2 else (dstate,), dmemory, None, None
