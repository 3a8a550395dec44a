"""The decoder's time loop under teacher forcing: the fast twin of ``minis2s.nn.decoder.steps_forward`` and
``steps_backward`` for a one-layer GRU or LSTM decoder with Bahdanau attention (the default model), with
or without context feeding and dropout; and the same loop run for one step, the twin of ``decode_step``
(greedy and beam search). Any other decoder goes to the reference.

The reference runs each step as a dozen Python calls (attention, the extras, the cell stack, dropout),
each with its own (S, B, A) or (B, G*H) temporaries; at the ``small`` size those round trips are most
of a training step. Here the whole loop is one compiled call each way, with the same equations
(nn/decoder.py, nn/attention.py; the cell's row maths is rnn.py's, shared with the encoder's kernels).
One step t, with h = h_t-1:

    qW      = h W_q^T                                   BLAS, from inside the loop
    phi_s   = tanh(KW_s + qW),  score_s = v . phi_s     one pass over (S, B, A), KW = K W_k^T (precomputed)
    alpha   = masked softmax(score),  ctx = sum_s alpha_s K_s           (attention.py's kernel)
    xw      = xw_emb_t + cv W_cv^T + ctx W_ctx^T        W_ih = [W_emb | W_ctx | W_cv]: the embedding's and the
                                                        context vector's shares are computed for all steps
                                                        before the loop, the attention's per step (BLAS)
    h_t     = cell(xw, h)                               its h W_hh^T through BLAS, the gates row by row
    o_t     = dropout(h_t)                              the masks drawn in the reference's order, applied after

and back, t = T-1 .. 0, carrying dh (and dc):

    dxw, dgh = cell backward(do_t + dh)                 dh <- direct path + dgh W_hh
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
    """What the compiled forward keeps for its backward (in place of the reference's T StepCaches)."""
    cell: str
    h_prev: object        # (T, B, H) the state entering each step (the query, and the cell's h)
    ctx: object           # (T, B, M) each step's context vector
    phi: object           # (T, S, B, A) tanh(KW_s + qW)
    weights: object       # (T, S, B) alpha
    gates: object         # (T, B, G*H)
    gh_n: object          # GRU (T, B, H) W_hn h + b_hn; else None
    c_prev: object        # LSTM (T, B, H) the cell state entering each step; else None
    tanh_c: object        # LSTM (T, B, H) tanh(c'); else None
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

@numba.njit(**_KERNEL)
def _through_step(dgh, dxw, W_hh, W_ctx, W_q, v, memory, phi, weights, one, dh, dctx, dscores, dqw, dmemory,
                  dprojected, dv):
    """After a step's cell backward (dgh, dxw (B, G*H); dh holds the direct path): the rest of the step back,
    into dh (the gradient of h_t-1) and the attention's sums."""
    zero = one - one
    gemm(False, dgh, W_hh, one, dh)                                  # dh += dgh W_hh
    gemm(False, dxw, W_ctx, zero, dctx)                              # dctx = dxw W_ctx
    _attend_backward(dctx, memory, phi, weights, v, dv, dmemory, dprojected, dscores, dqw, one)
    gemm(False, dqw, W_q, one, dh)                                   # dh += dqW W_q (the query was h_t-1)


@numba.njit(**_KERNEL)
def _gru_steps_forward(xw, W_hh, b_hh, W_ctx, W_q, v, memory, projected, mask, one,
                       h, out, h_prev, ctx, phi, weights, gates, gh_n):
    steps, batch, three = xw.shape
    zero = one - one
    qw = numpy.empty((batch, projected.shape[2]), dtype=xw.dtype)
    scores = numpy.empty((memory.shape[0], batch), dtype=xw.dtype)
    gh = numpy.empty((batch, three), dtype=xw.dtype)
    for t in range(steps):
        h_prev[t] = h
        _attend(h, W_q, v, memory, projected, mask, qw, scores, phi[t], weights[t], ctx[t], one)
        gemm(True, ctx[t], W_ctx, one, xw[t])                        # xw_t += ctx_t W_ctx^T
        gemm(True, h, W_hh, zero, gh)
        for row in range(batch):
            gru_row(xw[t, row], gh[row], b_hh, gates[t, row], gh_n[t, row], h[row], out[t, row], one)
        h[:] = out[t]


@numba.njit(**_KERNEL)
def _gru_steps_backward(dout, h_prev, gates, gh_n, W_hh, W_ctx, W_q, v, memory, phi, weights, one,
                        dh, dxw, dgh, dqw, dmemory, dprojected, dv):
    steps, batch, _ = dout.shape
    dctx = numpy.empty((batch, memory.shape[2]), dtype=dout.dtype)
    dscores = numpy.empty((memory.shape[0], batch), dtype=dout.dtype)
    for t in range(steps - 1, -1, -1):
        for row in range(batch):
            gru_row_backward(dout[t, row], dh[row], gates[t, row], gh_n[t, row], h_prev[t, row], dxw[t, row],
                             dgh[t, row], one)
        _through_step(dgh[t], dxw[t], W_hh, W_ctx, W_q, v, memory, phi[t], weights[t], one, dh, dctx, dscores,
                      dqw[t], dmemory, dprojected, dv)


@numba.njit(**_KERNEL)
def _lstm_steps_forward(xw, W_hh, b_hh, W_ctx, W_q, v, memory, projected, mask, one,
                        h, c, out, h_prev, c_prev, ctx, phi, weights, gates, tanh_c):
    steps, batch, four = xw.shape
    hidden = four // 4
    zero = one - one
    qw = numpy.empty((batch, projected.shape[2]), dtype=xw.dtype)
    scores = numpy.empty((memory.shape[0], batch), dtype=xw.dtype)
    a = numpy.empty((batch, four), dtype=xw.dtype)
    for t in range(steps):
        h_prev[t] = h
        c_prev[t] = c
        _attend(h, W_q, v, memory, projected, mask, qw, scores, phi[t], weights[t], ctx[t], one)
        gemm(True, ctx[t], W_ctx, one, xw[t])                        # xw_t += ctx_t W_ctx^T
        gemm(True, h, W_hh, zero, a)
        for row in range(batch):
            g, tc, new = gates[t, row], tanh_c[t, row], out[t, row]
            lstm_row(xw[t, row], a[row], b_hh, g, c_prev[t, row], tc, c[row], one)   # c <- c' (c_prev keeps c)
            for j in range(hidden):
                new[j] = g[3 * hidden + j] * tc[j]                   # h' = o tanh(c')
        h[:] = out[t]


@numba.njit(**_KERNEL)
def _lstm_steps_backward(dout, gates, c_prev, tanh_c, W_hh, W_ctx, W_q, v, memory, phi, weights, one,
                         dh, dc, da, dqw, dmemory, dprojected, dv):
    steps, batch, _ = dout.shape
    dctx = numpy.empty((batch, memory.shape[2]), dtype=dout.dtype)
    dscores = numpy.empty((memory.shape[0], batch), dtype=dout.dtype)
    for t in range(steps - 1, -1, -1):
        for row in range(batch):
            lstm_row_backward(dout[t, row], dh[row], dc[row], gates[t, row], c_prev[t, row], tanh_c[t, row],
                              da[t, row], one)
        _through_step(da[t], da[t], W_hh, W_ctx, W_q, v, memory, phi[t], weights[t], one, dh, dctx, dscores,
                      dqw[t], dmemory, dprojected, dv)


# ----------------------------------------------------------------------------- the twins

def _fits(decoder, array):
    """Is this a decoder the compiled loop covers?"""
    return (blas.available and decoder.attention_kind == "bahdanau" and decoder.rnn.num_layers == 1
            and decoder.rnn.cell.name in ("gru", "lstm") and not decoder.input_feeding
            and array.dtype in (numpy.float32, numpy.float64))


def _plain(decoder, array):
    """A one-layer decoder without attention: its decoding step is rnn.py's sequence kernel, one step long."""
    return (blas.available and decoder.attention_kind == "none" and decoder.rnn.num_layers == 1
            and array.dtype in (numpy.float32, numpy.float64))


class _Operands(NamedTuple):
    W_ih: object
    W_ctx: object         # (G*H, M) W_ih's columns for ctx, contiguous
    W_hh: object
    b_hh: object
    W_q: object
    v: object
    memory: object
    projected: object
    mask: object


def _operands(decoder, encoded):
    """The weights and the source side as the kernels take them (contiguous)."""
    rnn, attention = decoder.rnn.params, decoder.attention.params
    W_ih = rnn["weight_ih_l0"]
    start = decoder.emb_size
    contiguous = numpy.ascontiguousarray
    return _Operands(W_ih, contiguous(W_ih[:, start:start + decoder.memory_size]), contiguous(rnn["weight_hh_l0"]),
                     rnn["bias_hh_l0"], contiguous(attention["W_q"]), attention["v"], contiguous(encoded.memory),
                     contiguous(encoded.projected), contiguous(encoded.mask))


def _input_side(decoder, xw_emb, encoded, W_ih):
    """xw_emb (T, B, G*H) -> a contiguous copy plus cv's share cv W_cv^T (the same at every step), to which
    the kernel adds the attention's share. Layer 0's input is [emb ; ctx (bahdanau) ; cv]."""
    xw = numpy.array(xw_emb, order="C")
    if encoded.context_vector is not None:
        start = decoder.emb_size + (decoder.memory_size if decoder.attention_kind == "bahdanau" else 0)
        xw += encoded.context_vector @ W_ih[:, start:].T
    return xw


def _run_forward(decoder, xw, state, ops):
    """The compiled loop over xw (T, B, G*H) from ``state`` -> out (T, B, H), the final state, and the
    arrays it filled: h_prev, ctx, phi, weights, gates, gh_n (GRU) or c_prev, tanh_c (LSTM)."""
    steps, batch, _ = xw.shape
    dtype = xw.dtype
    one = dtype.type(1)
    hidden, source, size = decoder.hidden_size, ops.projected.shape[0], ops.projected.shape[2]
    h = numpy.array(state[0][0], order="C")
    out = numpy.empty((steps, batch, hidden), dtype=dtype)
    h_prev, extra, more = numpy.empty_like(out), numpy.empty_like(out), numpy.empty_like(out)
    ctx = numpy.empty((steps, batch, decoder.memory_size), dtype=dtype)
    phi = numpy.empty((steps, source, batch, size), dtype=dtype)
    weights = numpy.empty((steps, source, batch), dtype=dtype)
    gates = numpy.empty_like(xw)
    common = (ops.W_hh, ops.b_hh, ops.W_ctx, ops.W_q, ops.v, ops.memory, ops.projected, ops.mask, one)
    if decoder.rnn.cell.name == "gru":
        _gru_steps_forward(xw, *common, h, out, h_prev, ctx, phi, weights, gates, extra)
        final, kept = (h[None],), dict(gh_n=extra, c_prev=None, tanh_c=None)
    else:
        c = numpy.array(state[1][0], order="C")
        _lstm_steps_forward(xw, *common, h, c, out, h_prev, extra, ctx, phi, weights, gates, more)
        final, kept = (h[None], c[None]), dict(gh_n=None, c_prev=extra, tanh_c=more)
    return out, final, dict(h_prev=h_prev, ctx=ctx, phi=phi, weights=weights, gates=gates, **kept)


def steps_forward(decoder, xw_emb, encoded, train):
    """The twin of ``minis2s.nn.decoder.steps_forward``: the same arguments and results, the cache a
    StepsCache where the reference returns T StepCaches."""
    from minis2s.nn import decoder as reference
    from minis2s.nn.layers import dropout_mask
    if not _fits(decoder, xw_emb):
        return reference.steps_forward.reference(decoder, xw_emb, encoded, train)
    steps, batch, _ = xw_emb.shape
    ops = _operands(decoder, encoded)
    out, _, kept = _run_forward(decoder, _input_side(decoder, xw_emb, encoded, ops.W_ih), encoded.state, ops)
    out_masks = None
    if train and decoder.dropout > 0:                                # one mask per step, in the reference's order
        out_masks = numpy.stack([dropout_mask((batch, decoder.hidden_size), decoder.dropout, decoder.rng,
                                              xw_emb.dtype) for _ in range(steps)])
        out *= out_masks
    cache = StepsCache(decoder.rnn.cell.name, out_masks=out_masks, **kept)
    return out, kept["weights"], cache


def steps_backward(decoder, doutputs, emb, caches, encoded):
    """The twin of ``minis2s.nn.decoder.steps_backward`` (its forward must have been this file's)."""
    from minis2s.nn import decoder as reference
    from minis2s.nn.rnn import add_weight_grads
    if not isinstance(caches, StepsCache):                           # the reference ran the forward
        return reference.steps_backward.reference(decoder, doutputs, emb, caches, encoded)
    seq = caches
    steps, batch, hidden = seq.h_prev.shape
    dtype = seq.h_prev.dtype
    one = dtype.type(1)
    emb_size, memory_size = decoder.emb_size, decoder.memory_size
    ops = _operands(decoder, encoded)
    W_ih, W_hh, W_q, v, memory = ops.W_ih, ops.W_hh, ops.W_q, ops.v, ops.memory
    dout = doutputs if seq.out_masks is None else doutputs * seq.out_masks
    dout = numpy.ascontiguousarray(dout)
    dh = numpy.zeros((batch, hidden), dtype=dtype)
    dxw = numpy.empty_like(seq.gates)
    dqw = numpy.empty((steps, batch, seq.phi.shape[3]), dtype=dtype)
    dmemory = numpy.zeros_like(memory)
    dprojected = numpy.zeros_like(seq.phi[0])
    dv = numpy.zeros_like(v)
    if seq.cell == "gru":
        dgh = numpy.empty_like(dxw)
        _gru_steps_backward(dout, seq.h_prev, seq.gates, seq.gh_n, W_hh, ops.W_ctx, W_q, v, memory, seq.phi,
                            seq.weights, one, dh, dxw, dgh, dqw, dmemory, dprojected, dv)
        dstate = (dh[None],)
    else:
        dc = numpy.zeros_like(dh)
        _lstm_steps_backward(dout, seq.gates, seq.c_prev, seq.tanh_c, W_hh, ops.W_ctx, W_q, v, memory, seq.phi,
                             seq.weights, one, dh, dc, dxw, dqw, dmemory, dprojected, dv)
        dgh, dstate = dxw, (dh[None], dc[None])
    grads = decoder.attention.grads
    grads["v"] += dv
    grads["W_q"] += dqw.reshape(-1, dqw.shape[2]).T @ seq.h_prev.reshape(-1, hidden)    # W_q q, every step
    inputs = [emb, seq.ctx]                                          # layer 0's x_t = [emb_t ; ctx_t (; cv)]
    dcontext_vector = None
    if encoded.context_vector is not None:
        inputs.append(numpy.broadcast_to(encoded.context_vector, (steps, batch, hidden)))
        dcontext_vector = dxw.sum(axis=0) @ W_ih[:, emb_size + memory_size:]
    add_weight_grads(decoder.rnn.weight_grads(0, ""), numpy.concatenate(inputs, axis=2), seq.h_prev, dxw, dgh)
    demb = dxw @ W_ih[:, :emb_size]
    return demb, dstate, dmemory, dprojected, dcontext_vector


def decode_step(decoder, xw_emb, state, feed, encoded):
    """The twin of ``minis2s.nn.decoder.decode_step``: the forward loop above run for one step; without
    attention, rnn.py's whole-sequence kernel run for one step."""
    from minis2s.nn import decoder as reference
    if _fits(decoder, xw_emb):
        ops = _operands(decoder, encoded)
        out, final, kept = _run_forward(decoder, _input_side(decoder, xw_emb[None], encoded, ops.W_ih), state, ops)
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
