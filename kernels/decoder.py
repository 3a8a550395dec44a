"""The decoder's time loop under teacher forcing: the fast twin of ``minis2s.nn.decoder.steps_forward`` and
``steps_backward`` for a GRU or LSTM decoder with Bahdanau attention (the default model), a stack of any
number of layers, with or without context feeding and dropout; and the same loop run for one step, the
twin of ``decode_step`` (greedy and beam search). Any other decoder goes to the reference (input feeding,
the plain RNN cell; Luong without input feeding and no attention never reach it in training: model.py
runs them over whole sequences).

The reference runs each step as a dozen Python calls (attention, the extras, the cell stack, dropout),
each with its own (S, B, A) or (B, G*H) temporaries; at the ``small`` size those round trips are most
of a training step. Here the whole loop is one compiled call each way, with the same equations
(nn/decoder.py, nn/attention.py; the cell's row maths is rnn.py's, shared with the encoder's kernels).
One step t, with h = h_t-1 (the top layer's, for a stack):

    qW      = h W_q^T                                   BLAS, from inside the loop
    phi_s   = tanh(KW_s + qW),  score_s = v . phi_s     one pass over (S, B, A), KW = K W_k^T (precomputed)
    alpha   = masked softmax(score),  ctx = sum_s alpha_s K_s           (attention.py's kernel)
    xw      = xw_emb_t + cv W_cv^T + ctx W_ctx^T        W_ih = [W_emb | W_ctx | W_cv]: the embedding's and the
                                                        context vector's shares are computed for all steps
                                                        before the loop, the attention's per step (BLAS)
    h_t     = cell(xw, h)                               its h W_hh^T through BLAS, the gates row by row
    layer k > 0:  xw^k = dropout(h^k-1_t) W_ih^k^T + b_ih^k,  h^k_t = cell(xw^k, h^k_t-1)    (BLAS; the
                                                        masks drawn before the loop in the reference's order)
    o_t     = dropout(h_t)                              the masks drawn in the reference's order, applied after

and back, t = T-1 .. 0, carrying dh (and dc):

    dxw, dgh = cell backward(do_t + dh)                 dh <- direct path + dgh W_hh; for a stack, top layer
                                                        first, each layer k > 0 handing dxw^k W_ih^k (through
                                                        its dropout mask) to layer k-1 as its do_t
    dctx    = dxw W_ctx                                 (BLAS)
    dK_s   += alpha_s dctx,  dscore = alpha (K . dctx - sum_s' alpha_s' K_s' . dctx)
    dv     += sum dscore_s phi_s,  dpre_s = dscore_s v (1 - phi_s^2),  dKW_s += dpre_s,  dqW = sum_s dpre_s
    dh     += dqW W_q                                   the query was h_t-1

After the loop, as in the reference, every weight gradient is one matrix product over all steps.
"""
from typing import NamedTuple

import numba
import numpy

from . import blas
from .attention import softmax_context_into
from .blas import gemm
from .rnn import _KERNEL, gru_row, gru_row_backward, lstm_row, lstm_row_backward
from .scalar import tanh_of


class StepsCache(NamedTuple):
    """What the compiled forward keeps for its backward (in place of the reference's T StepCaches);
    per-layer arrays layer first, so that each layer's (T, B, ...) block is contiguous."""
    cell: str
    h_prev: object        # (L, T, B, H) the state entering each step (the top layer's: the query)
    ctx: object           # (T, B, M) each step's context vector
    phi: object           # (T, S, B, A) tanh(KW_s + qW)
    weights: object       # (T, S, B) alpha
    gates: object         # (L, T, B, G*H)
    below: object         # (L-1, T, B, H) the inputs of the layers above the first, after dropout
    gh_n: object          # GRU (L, T, B, H) W_hn h + b_hn; else None
    c_prev: object        # LSTM (L, T, B, H) the cell state entering each step; else None
    tanh_c: object        # LSTM (L, T, B, H) tanh(c'); else None
    layer_masks: object   # (L-1, T, B, H) the dropout masks on those inputs, or None
    out_masks: object     # (T, B, H) the dropout masks on o_t, or None


# ----------------------------------------------------------------------------- attention, one step

@numba.njit(**_KERNEL)
def _attend(h, W_q, v, memory, projected, mask, qw, scores, phi, weights, ctx, one):
    """Bahdanau's attention queried by h (B, H) -> phi (S, B, A), weights (S, B), ctx (B, M)."""
    zero = one - one
    gemm(True, h, W_q, zero, qw)                                     # W_q q for every sentence
    for s in range(projected.shape[0]):
        for b in range(projected.shape[1]):
            p, kw, q = phi[s, b], projected[s, b], qw[b]
            score = zero
            for a in range(p.shape[0]):
                p[a] = tanh_of(kw[a] + q[a])                         # phi_s = tanh(W_q q + W_k K_s)
                score += p[a] * v[a]                                 # score_s = v . phi_s
            scores[s, b] = score
    softmax_context_into(scores, mask, memory, weights, ctx)


@numba.njit(**_KERNEL)
def _attend_backward(dctx, memory, phi, weights, v, dv, dmemory, dprojected, dscores, dqw, one):
    """dctx (B, M) -> dqw (B, A) the gradient of W_q q; adds into dv (A,), dmemory (S, B, M), dprojected
    (S, B, A). A position with alpha_s = 0 (padding) gets nothing, as its every term is 0 in the reference."""
    zero = one - one
    steps, batch, size = memory.shape
    for b in range(batch):
        weighted = zero                                              # sum_s alpha_s dalpha_s
        dc = dctx[b]
        for s in range(steps):
            w = weights[s, b]
            dalpha = zero
            if w != zero:
                k, dm = memory[s, b], dmemory[s, b]
                for m in range(size):
                    dm[m] += w * dc[m]                               # dK_s += alpha_s dctx
                    dalpha += k[m] * dc[m]                           # dalpha_s = dctx . K_s
            dscores[s, b] = dalpha
            weighted += w * dalpha
        for s in range(steps):
            dscores[s, b] = weights[s, b] * (dscores[s, b] - weighted)
    dqw[:] = zero
    for s in range(steps):
        for b in range(batch):
            de = dscores[s, b]
            if de == zero:
                continue
            p, dp, q = phi[s, b], dprojected[s, b], dqw[b]
            for a in range(p.shape[0]):
                pa = p[a]
                dv[a] += de * pa                                     # score_s = v . phi_s
                d = de * v[a] * (one - pa * pa)                      # phi_s = tanh(pre_s)
                dp[a] += d
                q[a] += d


# ----------------------------------------------------------------------------- the loops

# A stack of L layers, arrays layer first: W_hh (L, G*H, H), b_hh (L, G*H); the layers above the first
# take the new h of the layer below through dropout: W_up (L-1, G*H, H), b_up (L-1, G*H), their inputs
# kept in below (L-1, T, B, H), the masks in drop (L-1, T, B, H) when ``dropping``. The query is the top
# layer's h_t-1; the context joins layer 0's input side.

@numba.njit(**_KERNEL)
def _layer_input(k, t, h, W_up, b_up, drop, dropping, below, x):
    """Layer k > 0's input side at step t: x = dropout(h of layer k-1) W_up^T + b_up (B, G*H)."""
    inp = below[k - 1, t]
    inp[:] = h[k - 1]
    if dropping:
        inp *= drop[k - 1, t]
    x[:] = b_up[k - 1]
    gemm(True, inp, W_up[k - 1], x.dtype.type(1), x)


@numba.njit(**_KERNEL)
def _layer_input_backward(k, t, dx, W_up, drop, dropping, dbelow):
    """dx (B, G*H) of layer k > 0's input side -> dbelow (B, H) the gradient of layer k-1's new h."""
    gemm(False, dx, W_up[k - 1], dx.dtype.type(0), dbelow)
    if dropping:
        dbelow *= drop[k - 1, t]


@numba.njit(**_KERNEL)
def _through_step(t, dxw0, W_ctx, W_q, v, memory, phi, weights, one, dh_top, dctx, dscores, dqw, dmemory,
                  dprojected, dv):
    """After the cells' backward at step t (dxw0 (B, G*H) layer 0's): the attention's share, into dh_top
    (the gradient of the top layer's h_t-1, the query) and the attention's sums."""
    zero = one - one
    gemm(False, dxw0, W_ctx, zero, dctx)                             # dctx = dxw W_ctx
    _attend_backward(dctx, memory, phi[t], weights[t], v, dv, dmemory, dprojected, dscores, dqw[t], one)
    gemm(False, dqw[t], W_q, one, dh_top)                            # dh += dqW W_q (the query was h_t-1)


@numba.njit(**_KERNEL)
def _gru_steps_forward(xw, W_hh, b_hh, W_up, b_up, drop, dropping, W_ctx, W_q, v, memory, projected, mask, one,
                       h, out, h_prev, ctx, phi, weights, gates, gh_n, below):
    steps, batch, three = xw.shape
    layers = h.shape[0]
    zero = one - one
    qw = numpy.empty((batch, projected.shape[2]), dtype=xw.dtype)
    scores = numpy.empty((memory.shape[0], batch), dtype=xw.dtype)
    gh = numpy.empty((batch, three), dtype=xw.dtype)
    x_up = numpy.empty((batch, three), dtype=xw.dtype)
    for t in range(steps):
        _attend(h[layers - 1], W_q, v, memory, projected, mask, qw, scores, phi[t], weights[t], ctx[t], one)
        gemm(True, ctx[t], W_ctx, one, xw[t])                        # xw_t += ctx_t W_ctx^T
        for k in range(layers):
            x = xw[t]
            if k > 0:
                _layer_input(k, t, h, W_up, b_up, drop, dropping, below, x_up)
                x = x_up
            h_prev[k, t] = h[k]
            gemm(True, h[k], W_hh[k], zero, gh)
            for row in range(batch):                                 # h[k] <- h' (h_prev keeps h)
                gru_row(x[row], gh[row], b_hh[k], gates[k, t, row], gh_n[k, t, row], h_prev[k, t, row],
                        h[k, row], one)
        out[t] = h[layers - 1]


@numba.njit(**_KERNEL)
def _gru_steps_backward(dout, h_prev, gates, gh_n, W_hh, W_up, drop, dropping, W_ctx, W_q, v, memory, phi,
                        weights, one, dh, dxw, dgh, dqw, dmemory, dprojected, dv):
    steps, batch, hidden = dout.shape
    layers = dh.shape[0]
    dctx = numpy.empty((batch, memory.shape[2]), dtype=dout.dtype)
    dscores = numpy.empty((memory.shape[0], batch), dtype=dout.dtype)
    dbelow = numpy.empty((batch, hidden), dtype=dout.dtype)
    for t in range(steps - 1, -1, -1):
        reaching = dout[t]                                           # the gradient of layer k's h_t from above
        for k in range(layers - 1, -1, -1):
            for row in range(batch):
                gru_row_backward(reaching[row], dh[k, row], gates[k, t, row], gh_n[k, t, row],
                                 h_prev[k, t, row], dxw[k, t, row], dgh[k, t, row], one)
            gemm(False, dgh[k, t], W_hh[k], one, dh[k])              # dh += dgh W_hh
            if k > 0:
                _layer_input_backward(k, t, dxw[k, t], W_up, drop, dropping, dbelow)
                reaching = dbelow
        _through_step(t, dxw[0, t], W_ctx, W_q, v, memory, phi, weights, one, dh[layers - 1], dctx, dscores,
                      dqw, dmemory, dprojected, dv)


@numba.njit(**_KERNEL)
def _lstm_steps_forward(xw, W_hh, b_hh, W_up, b_up, drop, dropping, W_ctx, W_q, v, memory, projected, mask, one,
                        h, c, out, h_prev, c_prev, ctx, phi, weights, gates, tanh_c, below):
    steps, batch, four = xw.shape
    hidden = four // 4
    layers = h.shape[0]
    zero = one - one
    qw = numpy.empty((batch, projected.shape[2]), dtype=xw.dtype)
    scores = numpy.empty((memory.shape[0], batch), dtype=xw.dtype)
    a = numpy.empty((batch, four), dtype=xw.dtype)
    x_up = numpy.empty((batch, four), dtype=xw.dtype)
    for t in range(steps):
        _attend(h[layers - 1], W_q, v, memory, projected, mask, qw, scores, phi[t], weights[t], ctx[t], one)
        gemm(True, ctx[t], W_ctx, one, xw[t])                        # xw_t += ctx_t W_ctx^T
        for k in range(layers):
            x = xw[t]
            if k > 0:
                _layer_input(k, t, h, W_up, b_up, drop, dropping, below, x_up)
                x = x_up
            h_prev[k, t] = h[k]
            c_prev[k, t] = c[k]
            gemm(True, h[k], W_hh[k], zero, a)
            for row in range(batch):                                 # c[k] <- c' (c_prev keeps c)
                g, tc, new = gates[k, t, row], tanh_c[k, t, row], h[k, row]
                lstm_row(x[row], a[row], b_hh[k], g, c_prev[k, t, row], tc, c[k, row], one)
                for j in range(hidden):
                    new[j] = g[3 * hidden + j] * tc[j]               # h' = o tanh(c')
        out[t] = h[layers - 1]


@numba.njit(**_KERNEL)
def _lstm_steps_backward(dout, gates, c_prev, tanh_c, W_hh, W_up, drop, dropping, W_ctx, W_q, v, memory, phi,
                         weights, one, dh, dc, da, dqw, dmemory, dprojected, dv):
    steps, batch, hidden = dout.shape
    layers = dh.shape[0]
    dctx = numpy.empty((batch, memory.shape[2]), dtype=dout.dtype)
    dscores = numpy.empty((memory.shape[0], batch), dtype=dout.dtype)
    dbelow = numpy.empty((batch, hidden), dtype=dout.dtype)
    for t in range(steps - 1, -1, -1):
        reaching = dout[t]
        for k in range(layers - 1, -1, -1):
            for row in range(batch):
                lstm_row_backward(reaching[row], dh[k, row], dc[k, row], gates[k, t, row], c_prev[k, t, row],
                                  tanh_c[k, t, row], da[k, t, row], one)
            gemm(False, da[k, t], W_hh[k], one, dh[k])               # dh += da W_hh
            if k > 0:
                _layer_input_backward(k, t, da[k, t], W_up, drop, dropping, dbelow)
                reaching = dbelow
        _through_step(t, da[0, t], W_ctx, W_q, v, memory, phi, weights, one, dh[layers - 1], dctx, dscores,
                      dqw, dmemory, dprojected, dv)


# ----------------------------------------------------------------------------- the twins

def _fits(decoder, array):
    """Is this a decoder the compiled loop covers?"""
    return (blas.available and decoder.attention_kind == "bahdanau" and decoder.rnn.cell.name in ("gru", "lstm")
            and not decoder.input_feeding and array.dtype in (numpy.float32, numpy.float64))


def _plain(decoder, array):
    """A one-layer decoder without attention: its decoding step is rnn.py's sequence kernel, one step long."""
    return (blas.available and decoder.attention_kind == "none" and decoder.rnn.num_layers == 1
            and array.dtype in (numpy.float32, numpy.float64))


class _Operands(NamedTuple):
    W_ih: object
    W_ctx: object         # (G*H, M) W_ih's columns for ctx, contiguous
    W_hh: object          # (L, G*H, H) every layer's
    b_hh: object          # (L, G*H)
    W_up: object          # (L-1, G*H, H) the input weights of the layers above the first
    b_up: object          # (L-1, G*H)
    W_q: object
    v: object
    memory: object
    projected: object
    mask: object


def _operands(decoder, encoded):
    """The weights and the source side as the kernels take them (contiguous, layers stacked)."""
    rnn, attention = decoder.rnn.params, decoder.attention.params
    layers = decoder.rnn.num_layers
    W_ih = rnn["weight_ih_l0"]
    start = decoder.emb_size
    contiguous = numpy.ascontiguousarray

    def stacked(name, first, shape):                                 # one layer: a view, no copy (a decoding
        parts = [rnn[f"{name}_l{k}"] for k in range(first, layers)]  # step calls this every step)
        if len(parts) == 1:
            return contiguous(parts[0][None])
        return numpy.stack(parts) if parts else numpy.empty((0,) + shape, dtype=W_ih.dtype)
    W_up = stacked("weight_ih", 1, W_ih[:, :decoder.hidden_size].shape)
    b_up = stacked("bias_ih", 1, rnn["bias_ih_l0"].shape)
    return _Operands(W_ih, contiguous(W_ih[:, start:start + decoder.memory_size]), stacked("weight_hh", 0, None),
                     stacked("bias_hh", 0, None), W_up, b_up, contiguous(attention["W_q"]), attention["v"],
                     contiguous(encoded.memory), contiguous(encoded.projected), contiguous(encoded.mask))


def _input_side(decoder, xw_emb, encoded, W_ih):
    """xw_emb (T, B, G*H) -> a contiguous copy plus cv's share cv W_cv^T (the same at every step), to which
    the kernel adds the attention's share. Layer 0's input is [emb ; ctx (bahdanau) ; cv]."""
    xw = numpy.array(xw_emb, order="C")
    if encoded.context_vector is not None:
        start = decoder.emb_size + (decoder.memory_size if decoder.attention_kind == "bahdanau" else 0)
        xw += encoded.context_vector @ W_ih[:, start:].T
    return xw


def _layer_masks(decoder, steps, batch, dtype, train):
    """The dropout masks on the inputs of the layers above the first, (L-1, T, B, H), drawn from the stack's
    generator in the reference's order (step by step, layer by layer); None when nothing is dropped."""
    from minis2s.nn.layers import dropout_mask
    rnn = decoder.rnn
    if not train or rnn.dropout == 0 or rnn.num_layers == 1:
        return None
    masks = [[dropout_mask((batch, decoder.hidden_size), rnn.dropout, rnn.rng, dtype)
              for _ in range(1, rnn.num_layers)] for _ in range(steps)]
    return numpy.stack([numpy.stack(step) for step in masks], axis=1)


def _run_forward(decoder, xw, state, ops, drop):
    """The compiled loop over xw (T, B, G*H) from ``state`` -> out (T, B, H), the final state, and the
    arrays it filled: h_prev, ctx, phi, weights, gates, below, gh_n (GRU) or c_prev, tanh_c (LSTM)."""
    steps, batch, gates_size = xw.shape
    dtype = xw.dtype
    one = dtype.type(1)
    layers, hidden = decoder.rnn.num_layers, decoder.hidden_size
    source, size = ops.projected.shape[0], ops.projected.shape[2]
    h = numpy.array(state[0], dtype=dtype, order="C")                  # (L, B, H), updated in place
    out = numpy.empty((steps, batch, hidden), dtype=dtype)
    per_layer = (layers, steps, batch, hidden)
    h_prev, extra, more = numpy.empty(per_layer, dtype), numpy.empty(per_layer, dtype), numpy.empty(per_layer, dtype)
    below = numpy.empty((layers - 1, steps, batch, hidden), dtype=dtype)
    ctx = numpy.empty((steps, batch, decoder.memory_size), dtype=dtype)
    phi = numpy.empty((steps, source, batch, size), dtype=dtype)
    weights = numpy.empty((steps, source, batch), dtype=dtype)
    gates = numpy.empty((layers, steps, batch, gates_size), dtype=dtype)
    dropping = drop is not None
    drop = drop if dropping else numpy.empty((0, 0, 0, 0), dtype=dtype)
    common = (ops.W_hh, ops.b_hh, ops.W_up, ops.b_up, drop, dropping, ops.W_ctx, ops.W_q, ops.v, ops.memory,
              ops.projected, ops.mask, one)
    if decoder.rnn.cell.name == "gru":
        _gru_steps_forward(xw, *common, h, out, h_prev, ctx, phi, weights, gates, extra, below)
        final, kept = (h,), dict(gh_n=extra, c_prev=None, tanh_c=None)
    else:
        c = numpy.array(state[1], dtype=dtype, order="C")
        _lstm_steps_forward(xw, *common, h, c, out, h_prev, extra, ctx, phi, weights, gates, more, below)
        final, kept = (h, c), dict(gh_n=None, c_prev=extra, tanh_c=more)
    return out, final, dict(h_prev=h_prev, ctx=ctx, phi=phi, weights=weights, gates=gates, below=below, **kept)


def steps_forward(decoder, xw_emb, encoded, train):
    """The twin of ``minis2s.nn.decoder.steps_forward``: the same arguments and results, the cache a
    StepsCache where the reference returns T StepCaches."""
    from minis2s.nn import decoder as reference
    from minis2s.nn.layers import dropout_mask
    if not _fits(decoder, xw_emb):
        return reference.steps_forward.reference(decoder, xw_emb, encoded, train)
    steps, batch, _ = xw_emb.shape
    ops = _operands(decoder, encoded)
    layer_masks = _layer_masks(decoder, steps, batch, xw_emb.dtype, train)
    out, _, kept = _run_forward(decoder, _input_side(decoder, xw_emb, encoded, ops.W_ih), encoded.state, ops,
                                layer_masks)
    out_masks = None
    if train and decoder.dropout > 0:                                # one mask per step, in the reference's order
        out_masks = numpy.stack([dropout_mask((batch, decoder.hidden_size), decoder.dropout, decoder.rng,
                                              xw_emb.dtype) for _ in range(steps)])
        out *= out_masks
    cache = StepsCache(decoder.rnn.cell.name, layer_masks=layer_masks, out_masks=out_masks, **kept)
    return out, kept["weights"], cache


def steps_backward(decoder, doutputs, emb, caches, encoded):
    """The twin of ``minis2s.nn.decoder.steps_backward`` (its forward must have been this file's)."""
    from minis2s.nn import decoder as reference
    from minis2s.nn.rnn import add_weight_grads
    if not isinstance(caches, StepsCache):                           # the reference ran the forward
        return reference.steps_backward.reference(decoder, doutputs, emb, caches, encoded)
    seq = caches
    layers, steps, batch, hidden = seq.h_prev.shape
    dtype = seq.h_prev.dtype
    one = dtype.type(1)
    emb_size, memory_size = decoder.emb_size, decoder.memory_size
    ops = _operands(decoder, encoded)
    W_ih, W_q, v, memory = ops.W_ih, ops.W_q, ops.v, ops.memory
    dout = doutputs if seq.out_masks is None else doutputs * seq.out_masks
    dout = numpy.ascontiguousarray(dout)
    dropping = seq.layer_masks is not None
    drop = seq.layer_masks if dropping else numpy.empty((0, 0, 0, 0), dtype=dtype)
    dh = numpy.zeros((layers, batch, hidden), dtype=dtype)
    dxw = numpy.empty_like(seq.gates)
    dqw = numpy.empty((steps, batch, seq.phi.shape[3]), dtype=dtype)
    dmemory = numpy.zeros_like(memory)
    dprojected = numpy.zeros_like(seq.phi[0])
    dv = numpy.zeros_like(v)
    attention = (ops.W_ctx, W_q, v, memory, seq.phi, seq.weights, one)
    if seq.cell == "gru":
        dgh = numpy.empty_like(dxw)
        _gru_steps_backward(dout, seq.h_prev, seq.gates, seq.gh_n, ops.W_hh, ops.W_up, drop, dropping, *attention,
                            dh, dxw, dgh, dqw, dmemory, dprojected, dv)
        dstate = (dh,)
    else:
        dc = numpy.zeros_like(dh)
        _lstm_steps_backward(dout, seq.gates, seq.c_prev, seq.tanh_c, ops.W_hh, ops.W_up, drop, dropping,
                             *attention, dh, dc, dxw, dqw, dmemory, dprojected, dv)
        dgh, dstate = dxw, (dh, dc)
    grads = decoder.attention.grads
    grads["v"] += dv
    top = seq.h_prev[layers - 1]                                     # the query: the top layer's h_t-1
    grads["W_q"] += dqw.reshape(-1, dqw.shape[2]).T @ top.reshape(-1, hidden)
    inputs = [emb, seq.ctx]                                          # layer 0's x_t = [emb_t ; ctx_t (; cv)]
    dcontext_vector = None
    if encoded.context_vector is not None:
        inputs.append(numpy.broadcast_to(encoded.context_vector, (steps, batch, hidden)))
        dcontext_vector = dxw[0].sum(axis=0) @ W_ih[:, emb_size + memory_size:]
    rnn = decoder.rnn
    add_weight_grads(rnn.weight_grads(0, ""), numpy.concatenate(inputs, axis=2), seq.h_prev[0], dxw[0], dgh[0])
    for k in range(1, layers):                                       # layer k's x_t: dropout(h_t of layer k-1)
        add_weight_grads(rnn.weight_grads(k, ""), seq.below[k - 1], seq.h_prev[k], dxw[k], dgh[k])
    demb = dxw[0] @ W_ih[:, :emb_size]
    return demb, dstate, dmemory, dprojected, dcontext_vector


def decode_step(decoder, xw_emb, state, feed, encoded):
    """The twin of ``minis2s.nn.decoder.decode_step``: the forward loop above run for one step; without
    attention, rnn.py's whole-sequence kernel run for one step."""
    from minis2s.nn import decoder as reference
    if _fits(decoder, xw_emb):
        ops = _operands(decoder, encoded)
        out, final, kept = _run_forward(decoder, _input_side(decoder, xw_emb[None], encoded, ops.W_ih), state, ops,
                                        None)
        return out[0], final, None, kept["weights"][0]
    if _plain(decoder, xw_emb):
        params = decoder.rnn.params
        xw = _input_side(decoder, xw_emb[None], encoded, params["weight_ih_l0"])
        output, new_state = _plain_step(decoder.rnn.cell.name, xw, state,
                                        numpy.ascontiguousarray(params["weight_hh_l0"]), params["bias_hh_l0"])
        return output, new_state, None, None
    return reference.decode_step.reference(decoder, xw_emb, state, feed, encoded)


def _plain_step(cell, xw, state, W_hh, b_hh):
    """One step of a cell on xw (1, B, G*H) from state (tuple of (1, B, H)) -> h' (B, H), the new state."""
    from . import rnn
    _, batch, _ = xw.shape
    one = xw.dtype.type(1)
    mask = numpy.ones((1, batch), dtype=bool)
    h = numpy.array(state[0][0], order="C")
    out = numpy.empty((1,) + h.shape, dtype=xw.dtype)
    scratch = numpy.empty_like(xw)
    if cell == "lstm":
        c = numpy.array(state[1][0], order="C")
        rnn._lstm_sequence_forward(xw, W_hh, b_hh, mask, one, h, c, out, numpy.empty_like(out),
                                   numpy.empty_like(out), scratch, numpy.empty_like(out))
        return out[0], (h[None], c[None])
    if cell == "gru":
        rnn._gru_sequence_forward(xw, W_hh, b_hh, mask, one, h, out, numpy.empty_like(out), scratch,
                                  numpy.empty_like(out))
    else:
        rnn._rnn_sequence_forward(xw, W_hh, b_hh, mask, cell == "rnn_relu", one, h, out, numpy.empty_like(out),
                                  scratch)
    return out[0], (h[None],)
