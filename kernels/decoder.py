"""The decoder's time loop under teacher forcing: the fast twin of ``minis2s.nn.decoder.steps_forward`` and
``steps_backward`` for a GRU or LSTM decoder with attention (Bahdanau's, the default model, or Luong's dot
or general, with or without input feeding), a stack of any number of layers, with or without context
feeding and dropout; and the same loop run for one step, ``decode_step`` (kernels/model.py's decoding
step: greedy and beam search). The plain RNN cell goes to the reference. A decoder whose cells are fed nothing but the
embedding (no attention, or Luong's without feeding; no context feeding) needs no loop: the twins
run it over whole sequences instead (nn/decoder.py's ``forward_whole_sequences``, the recurrent
layer's own kernels, Luong's attention for all steps at once).

The reference runs each step as a dozen Python calls (attention, the extras, the cell stack, dropout),
each with its own (S, B, A) or (B, G*H) temporaries; at the ``small`` size those round trips are most
of a training step. Here the whole loop is one compiled call each way, with the same equations
(nn/decoder.py, nn/attention.py; the cell's row maths is rnn.py's, shared with the encoder's kernels).
One step t of a Bahdanau decoder, with h = h_t-1 (the top layer's, for a stack):

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

With Bahdanau's attentional output (``attentional_output``), o_t = dropout(h~_t), h~_t = tanh(W_c [ctx_t ; h_t]):
it feeds nothing back, so it runs after the loop for all steps at once (two products), and its backward
before the loop's: dpre = do (1 - h~^2), dctx_out = dpre W_c1 (added to each step's dctx), dh_t = dpre W_c2.
The deep output (``deep_output``) adds emb_t W_c3^T inside the tanh and dpre W_c3 to demb.

A Luong decoder's step attends after the cells, with the top layer's new h_t:

    xw      = xw_emb_t + cv W_cv^T + h~_t-1 W_feed^T    input feeding: W_ih = [W_emb | W_feed | W_cv]
    h_t     = cell stack(xw, ...)                       as above
    u       = h_t (dot) or h_t W_a^T (general),  score_s = K_s . u,  alpha, ctx as above
    h~_t    = tanh(ctx W_c1^T + h_t W_c2^T)             W_c = [W_c1 | W_c2], the combine layer; o_t = dropout(h~_t)

and back: dpre = (do_t + dh~_t) (1 - h~_t^2) with dh~_t carried from step t+1's input (input feeding);
dctx = dpre W_c1, dh_t = dpre W_c2 + dq; through the softmax and the scores, du_s, dK_s += dscore_s u,
dq = du (dot) or du W_a (general); the cell stack as above; dh~_t-1 = dxw^0 W_feed.

After the loop, as in the reference, every weight gradient is one matrix product over all steps.
"""
import functools
from typing import NamedTuple

import numba
import numpy

from minis2s import dispatch

from . import blas, rnn
from .attention import _context_backward, _dot, softmax_context_into
from .blas import gemm
from .rnn import _KERNEL, add_weight_grads, gru_row, gru_row_backward, lstm_row, lstm_row_backward
from .scalar import tanh_of


class StepsCache(NamedTuple):
    """What the compiled forward keeps for its backward (in place of the reference's T StepCaches);
    per-layer arrays layer first, so that each layer's (T, B, ...) block is contiguous."""
    cell: str
    attention: str        # bahdanau, luong-dot or luong-general
    out: object           # (T, B, H) every step's output before dropout: h_t, or Luong's h~_t
    h_prev: object        # (L, T, B, H) the state entering each step
    ctx: object           # (T, B, M) each step's context vector
    weights: object       # (T, S, B) alpha
    gates: object         # (L, T, B, G*H)
    below: object         # (L-1, T, B, H) the inputs of the layers above the first, after dropout
    gh_n: object          # GRU (L, T, B, H) W_hn h + b_hn; else empty
    c_prev: object        # LSTM (L, T, B, H) the cell state entering each step; else empty
    tanh_c: object        # LSTM (L, T, B, H) tanh(c'); else empty
    phi: object           # bahdanau (T, S, B, A) tanh(KW_s + qW); else None
    u: object             # luong (T, B, M) the vector scored against the memory; else None
    tops: object          # luong (T, B, H) the top layer's h_t (the query); else None
    feeds: object         # input feeding (T, B, H) h~_t-1, layer 0's extra input; else None
    layer_masks: object   # (L-1, T, B, H) the dropout masks on the upper layers' inputs, or None
    out_masks: object     # (T, B, H) the dropout masks on o_t, or None


# ----------------------------------------------------------------------------- attention, one step

@numba.njit(**_KERNEL)
def _attend(h, W_q_t, v, memory, projected, mask, qw, scores, phi, weights, ctx, one):
    """Bahdanau's attention queried by h (B, H) -> phi (S, B, A), weights (S, B), ctx (B, M)."""
    zero = one - one
    gemm(False, h, W_q_t, zero, qw)                                  # W_q q for every sentence
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


# ----------------------------------------------------------------------------- Luong's attention, one step

@numba.njit(**_KERNEL)
def _attend_luong(q, W_a_t, general, memory, mask, u, scores, weights, ctx, one):
    """Luong's attention queried by h_t (B, H): u = q (dot) or q W_a^T (general), score_s = K_s . u ->
    u (B, M), weights (S, B), ctx (B, M)."""
    if general:
        gemm(False, q, W_a_t, one - one, u)                          # u = W_a q
    else:
        u[:] = q
    for s in range(memory.shape[0]):
        for b in range(memory.shape[1]):
            scores[s, b] = _dot(memory[s, b], u[b])                  # score_s = K_s . u
    softmax_context_into(scores, mask, memory, weights, ctx)


@numba.njit(**_KERNEL)
def _attend_luong_backward(dctx, memory, weights, u, dscores, du, dmemory, one):
    """dctx (B, M) -> du (B, M) the gradient of u; adds dK into dmemory (S, B, M)."""
    _context_backward(dctx, weights, memory, dmemory, dscores)       # through ctx = sum alpha K, the softmax
    du[:] = one - one
    for s in range(memory.shape[0]):
        for b in range(memory.shape[1]):
            d = dscores[s, b]
            if d == 0:
                continue
            k, dk, ub, dub = memory[s, b], dmemory[s, b], u[b], du[b]
            for m in range(k.shape[0]):
                dub[m] += d * k[m]                                   # score_s = K_s . u
                dk[m] += d * ub[m]


# ----------------------------------------------------------------------------- the stack, one step

# A stack of L layers, arrays layer first: W_hh (L, G*H, H), b_hh (L, G*H); the layers above the first
# take the new h of the layer below through dropout: W_up (L-1, G*H, H), b_up (L-1, G*H), their inputs
# kept in below (L-1, T, B, H), the masks in drop (L-1, T, B, H) when ``dropping``. ``lstm`` picks the
# cell; the other cell's arrays are empty.

@numba.njit(**_KERNEL)
def _layer_input(k, t, h, W_up_t, b_up, drop, dropping, below, x):
    """Layer k > 0's input side at step t: x = dropout(h of layer k-1) W_up^T + b_up (B, G*H)."""
    inp = below[k - 1, t]
    inp[:] = h[k - 1]
    if dropping:
        inp *= drop[k - 1, t]
    x[:] = b_up[k - 1]
    gemm(False, inp, W_up_t[k - 1], x.dtype.type(1), x)


@numba.njit(**_KERNEL)
def _layer_input_backward(k, t, dx, W_up, drop, dropping, dbelow):
    """dx (B, G*H) of layer k > 0's input side -> dbelow (B, H) the gradient of layer k-1's new h."""
    gemm(False, dx, W_up[k - 1], dx.dtype.type(0), dbelow)
    if dropping:
        dbelow *= drop[k - 1, t]


@numba.njit(**_KERNEL)
def _stack_step(lstm, t, x0, h, c, W_hh_t, b_hh, W_up_t, b_up, drop, dropping, below, h_prev, c_prev, gates, gh_n,
                tanh_c, scratch, x_up, one):
    """Step t through every layer: x0 (B, G*H) layer 0's input side; h (L, B, H) and c <- the new states
    (h_prev, c_prev keep the old ones)."""
    zero = one - one
    layers, batch, hidden = h.shape
    for k in range(layers):
        x = x0
        if k > 0:
            _layer_input(k, t, h, W_up_t, b_up, drop, dropping, below, x_up)
            x = x_up
        h_prev[k, t] = h[k]
        gemm(False, h[k], W_hh_t[k], zero, scratch)                  # h W_hh^T
        if lstm:
            c_prev[k, t] = c[k]
            for row in range(batch):
                g, tc, new = gates[k, t, row], tanh_c[k, t, row], h[k, row]
                lstm_row(x[row], scratch[row], b_hh[k], g, c_prev[k, t, row], tc, c[k, row], one)
                for j in range(hidden):
                    new[j] = g[3 * hidden + j] * tc[j]               # h' = o tanh(c')
        else:
            for row in range(batch):
                gru_row(x[row], scratch[row], b_hh[k], gates[k, t, row], gh_n[k, t, row], h_prev[k, t, row],
                        h[k, row], one)


@numba.njit(**_KERNEL)
def _stack_step_backward(lstm, t, reaching, dh, dc, h_prev, c_prev, gates, gh_n, tanh_c, W_hh, W_up, drop,
                         dropping, dxw, dgh, dbelow, one):
    """Step t back through every layer, top first: reaching (B, H) the gradient of the top layer's h_t from
    above -> dxw[:, t], dgh[:, t] (the same array for the LSTM); dh (and dc) <- the gradients of the states
    entering step t."""
    layers, batch, hidden = dh.shape
    for k in range(layers - 1, -1, -1):
        for row in range(batch):
            if lstm:
                lstm_row_backward(reaching[row], dh[k, row], dc[k, row], gates[k, t, row], c_prev[k, t, row],
                                  tanh_c[k, t, row], dxw[k, t, row], one)
            else:
                gru_row_backward(reaching[row], dh[k, row], gates[k, t, row], gh_n[k, t, row], h_prev[k, t, row],
                                 dxw[k, t, row], dgh[k, t, row], one)
        gemm(False, dgh[k, t], W_hh[k], one, dh[k])                  # dh += dgh W_hh
        if k > 0:
            _layer_input_backward(k, t, dxw[k, t], W_up, drop, dropping, dbelow)
            reaching = dbelow


# ----------------------------------------------------------------------------- the loops

@numba.njit(**_KERNEL)
def _bahdanau_forward(lstm, xw, h, c, W_hh_t, b_hh, W_up_t, b_up, drop, dropping, W_ctx_t, W_q_t, v, memory, projected,
                      mask, one, out, ctx, phi, weights, h_prev, c_prev, gates, gh_n, tanh_c, below):
    steps, batch, size = xw.shape
    layers = h.shape[0]
    qw = numpy.empty((batch, projected.shape[2]), dtype=xw.dtype)
    scores = numpy.empty((memory.shape[0], batch), dtype=xw.dtype)
    scratch = numpy.empty((batch, size), dtype=xw.dtype)
    x_up = numpy.empty((batch, size), dtype=xw.dtype)
    for t in range(steps):
        _attend(h[layers - 1], W_q_t, v, memory, projected, mask, qw, scores, phi[t], weights[t], ctx[t], one)
        gemm(False, ctx[t], W_ctx_t, one, xw[t])                     # xw_t += ctx_t W_ctx^T
        _stack_step(lstm, t, xw[t], h, c, W_hh_t, b_hh, W_up_t, b_up, drop, dropping, below, h_prev, c_prev, gates,
                    gh_n, tanh_c, scratch, x_up, one)
        out[t] = h[layers - 1]


@numba.njit(**_KERNEL)
def _bahdanau_backward(lstm, dout, h_prev, c_prev, gates, gh_n, tanh_c, W_hh, W_up, drop, dropping, W_ctx, W_q, v,
                       memory, phi, weights, one, dh, dc, dxw, dgh, dqw, dmemory, dprojected, dv, dctx_out):
    steps, batch, hidden = dout.shape
    layers = dh.shape[0]
    zero = one - one
    dctx = numpy.empty((batch, memory.shape[2]), dtype=dout.dtype)
    dscores = numpy.empty((memory.shape[0], batch), dtype=dout.dtype)
    dbelow = numpy.empty((batch, hidden), dtype=dout.dtype)
    for t in range(steps - 1, -1, -1):
        _stack_step_backward(lstm, t, dout[t], dh, dc, h_prev, c_prev, gates, gh_n, tanh_c, W_hh, W_up, drop,
                             dropping, dxw, dgh, dbelow, one)
        if dctx_out.shape[0]:                                         # the attentional output read ctx_t too
            dctx[...] = dctx_out[t]
            gemm(False, dxw[0, t], W_ctx, one, dctx)                 # dctx = dctx_out + dxw W_ctx
        else:
            gemm(False, dxw[0, t], W_ctx, zero, dctx)                # dctx = dxw W_ctx
        _attend_backward(dctx, memory, phi[t], weights[t], v, dv, dmemory, dprojected, dscores, dqw[t], one)
        gemm(False, dqw[t], W_q, one, dh[layers - 1])                # dh += dqW W_q (the query was h_t-1)


@numba.njit(**_KERNEL)
def _luong_forward(lstm, general, feeding, xw, h, c, W_hh_t, b_hh, W_up_t, b_up, drop, dropping, feed, W_feed_t,
                   W_a_t, W_c1_t, W_c2_t, memory, mask, one, out, ctx, u, weights, tops, feeds, h_prev, c_prev, gates,
                   gh_n, tanh_c, below):
    steps, batch, size = xw.shape
    layers = h.shape[0]
    zero = one - one
    scores = numpy.empty((memory.shape[0], batch), dtype=xw.dtype)
    scratch = numpy.empty((batch, size), dtype=xw.dtype)
    x_up = numpy.empty((batch, size), dtype=xw.dtype)
    for t in range(steps):
        if feeding:
            feeds[t] = feed
            gemm(False, feed, W_feed_t, one, xw[t])                  # xw_t += h~_t-1 W_feed^T
        _stack_step(lstm, t, xw[t], h, c, W_hh_t, b_hh, W_up_t, b_up, drop, dropping, below, h_prev, c_prev, gates,
                    gh_n, tanh_c, scratch, x_up, one)
        q = h[layers - 1]
        tops[t] = q
        _attend_luong(q, W_a_t, general, memory, mask, u[t], scores, weights[t], ctx[t], one)
        tilde = out[t]
        gemm(False, ctx[t], W_c1_t, zero, tilde)                     # W_c [ctx ; h] = ctx W_c1^T + h W_c2^T
        gemm(False, q, W_c2_t, one, tilde)
        for b in range(batch):
            for j in range(tilde.shape[1]):
                tilde[b, j] = tanh_of(tilde[b, j])                   # h~_t
        if feeding:
            feed[:] = tilde


@numba.njit(**_KERNEL)
def _luong_backward(lstm, general, feeding, dout, h_tilde, u, h_prev, c_prev, gates, gh_n, tanh_c, W_hh, W_up, drop,
                    dropping, W_feed, W_a, W_c1, W_c2, memory, weights, one, dh, dc, dxw, dgh, dpre, du, dmemory):
    steps, batch, hidden = dout.shape
    zero = one - one
    dfeed = numpy.zeros((batch, hidden), dtype=dout.dtype)           # the gradient of h~_t from step t+1's input
    dctx = numpy.empty((batch, memory.shape[2]), dtype=dout.dtype)
    dtop = numpy.empty((batch, hidden), dtype=dout.dtype)
    dscores = numpy.empty((memory.shape[0], batch), dtype=dout.dtype)
    dbelow = numpy.empty((batch, hidden), dtype=dout.dtype)
    for t in range(steps - 1, -1, -1):
        d, tilde = dpre[t], h_tilde[t]
        for b in range(batch):
            for j in range(hidden):
                d[b, j] = (dout[t, b, j] + dfeed[b, j]) * (one - tilde[b, j] * tilde[b, j])   # h~ = tanh(pre)
        gemm(False, d, W_c1, zero, dctx)                             # [dctx ; dh] = dpre W_c
        gemm(False, d, W_c2, zero, dtop)
        _attend_luong_backward(dctx, memory, weights[t], u[t], dscores, du[t], dmemory, one)
        if general:
            gemm(False, du[t], W_a, one, dtop)                       # the query h_t: dq = du W_a
        else:
            dtop += du[t]                                            # dq = du
        _stack_step_backward(lstm, t, dtop, dh, dc, h_prev, c_prev, gates, gh_n, tanh_c, W_hh, W_up, drop,
                             dropping, dxw, dgh, dbelow, one)
        if feeding:
            gemm(False, dxw[0, t], W_feed, zero, dfeed)              # h~_t-1 was part of x_t


# ----------------------------------------------------------------------------- the twins

def _fits(decoder, array):
    """Is this a decoder the compiled loop covers?"""
    return (blas.available and decoder.attention_kind != "none" and decoder.rnn.cell.name in ("gru", "lstm")
            and array.dtype in (numpy.float32, numpy.float64))


def _plain(decoder, array):
    """A one-layer decoder without attention: its decoding step is rnn.py's sequence kernel, one step long."""
    return (blas.available and decoder.attention_kind == "none" and decoder.rnn.num_layers == 1
            and array.dtype in (numpy.float32, numpy.float64))


class _Operands(NamedTuple):
    W_ih: object
    W_ctx: object         # bahdanau: (G*H, M) W_ih's columns for ctx, contiguous; else None
    W_feed: object        # input feeding: (G*H, H) W_ih's columns for h~_t-1; else empty
    W_hh: object          # (L, G*H, H) every layer's
    b_hh: object          # (L, G*H)
    W_up: object          # (L-1, G*H, H) the input weights of the layers above the first
    b_up: object          # (L-1, G*H)
    W_q: object           # bahdanau's, else None
    v: object
    projected: object
    W_a: object           # luong-general's (M, H), else empty
    W_c1: object          # luong, bahdanau's attentional output: W_c's columns for ctx (H, M) and for h (H, H);
                          # else None
    W_c2: object
    W_c3: object          # the deep output: W_c's columns for emb (H, E); else None
    memory: object
    mask: object


def _columns(decoder):
    """Where layer 0's input [emb ; ctx (bahdanau) ; h~_t-1 (input feeding) ; cv (context feeding)] keeps each
    part: the start columns of ctx, h~ and cv in W_ih."""
    ctx = decoder.emb_size
    feed = ctx + (decoder.memory_size if decoder.attention_kind == "bahdanau" else 0)
    return ctx, feed, feed + (decoder.hidden_size if decoder.input_feeding else 0)


def _operands(decoder, encoded):
    """The weights and the source side as the kernels take them (contiguous, layers stacked)."""
    rnn, attention = decoder.rnn.params, decoder.attention.params
    layers, hidden, memory_size = decoder.rnn.num_layers, decoder.hidden_size, decoder.memory_size
    W_ih = rnn["weight_ih_l0"]
    dtype = W_ih.dtype
    contiguous = numpy.ascontiguousarray
    empty = numpy.empty((0, 0), dtype=dtype)

    def stacked(name, first, shape):                                 # one layer: a view, no copy (a decoding
        parts = [rnn[f"{name}_l{k}"] for k in range(first, layers)]  # step calls this every step)
        if len(parts) == 1:
            return contiguous(parts[0][None])
        return numpy.stack(parts) if parts else numpy.empty((0,) + shape, dtype=dtype)
    start_ctx, start_feed, _ = _columns(decoder)
    bahdanau = decoder.attention_kind == "bahdanau"
    W_c = None if decoder.combine is None else decoder.combine.params["weight"]
    joined = memory_size + hidden                                    # W_c = [W_c1 | W_c2 (| W_c3, deep output)]
    return _Operands(
        W_ih, contiguous(W_ih[:, start_ctx:start_ctx + memory_size]) if bahdanau else None,
        contiguous(W_ih[:, start_feed:start_feed + hidden]) if decoder.input_feeding else empty,
        stacked("weight_hh", 0, None), stacked("bias_hh", 0, None),
        stacked("weight_ih", 1, (W_ih.shape[0], hidden)), stacked("bias_ih", 1, (W_ih.shape[0],)),
        contiguous(attention["W_q"]) if bahdanau else None, attention["v"] if bahdanau else None,
        contiguous(encoded.projected) if bahdanau else None,
        contiguous(attention["W_a"]) if decoder.attention_kind == "luong-general" else empty,
        None if W_c is None else contiguous(W_c[:, :memory_size]),
        None if W_c is None else contiguous(W_c[:, memory_size:joined]),
        contiguous(W_c[:, joined:]) if decoder.deep_output else None,
        contiguous(encoded.memory), contiguous(encoded.mask))


def _forward_operands(ops):
    """The operands as the forward kernels take them: every matrix W that a step multiplies as x W^T comes
    transposed, W^T contiguous (``rnn.transposed``), so that each step's product is BLAS's plain one
    (13-30% faster at these shapes); the backward kernels take ``ops`` itself (dx = dy W is plain already)."""
    def t(W):
        return W if W is None or W.size == 0 else rnn.transposed(W)

    def layers(W):                                                   # (L, G*H, H) -> (L, H, G*H)
        if W.shape[0] == 0:
            return numpy.empty((0, W.shape[2], W.shape[1]), dtype=W.dtype)
        return numpy.stack([rnn.transposed(w) for w in W])
    return ops._replace(W_ctx=t(ops.W_ctx), W_feed=t(ops.W_feed), W_hh=layers(ops.W_hh), W_up=layers(ops.W_up),
                        W_q=t(ops.W_q), W_a=t(ops.W_a), W_c1=t(ops.W_c1), W_c2=t(ops.W_c2), W_c3=t(ops.W_c3))


def _input_side(decoder, xw_emb, encoded, W_ih):
    """xw_emb (T, B, G*H) -> a contiguous copy plus cv's share cv W_cv^T (the same at every step), to which
    the kernel adds the attention's (bahdanau) or h~_t-1's (input feeding) share."""
    xw = numpy.array(xw_emb, order="C")
    if encoded.context_vector is not None:
        xw += encoded.context_vector @ W_ih[:, _columns(decoder)[2]:].T
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


def _run_forward(decoder, xw, state, feed, ops, drop, emb=None):
    """The compiled loop over xw (T, B, G*H) from ``state`` (and, with input feeding, ``feed``), ``ops`` as
    ``_forward_operands`` gives them (emb (T, B, E) the embeddings, for the deep output) -> out
    (T, B, H) (h_t, or Luong's h~_t), the final state, the final feed, and the arrays it filled."""
    steps, batch, gates_size = xw.shape
    dtype = xw.dtype
    one = dtype.type(1)
    layers, hidden, memory_size = decoder.rnn.num_layers, decoder.hidden_size, decoder.memory_size
    source = ops.memory.shape[0]
    lstm = decoder.rnn.cell.name == "lstm"
    per_layer = (layers, steps, batch, hidden)
    none4 = numpy.empty((0, 0, 0, 0), dtype=dtype)                   # the other cell's arrays
    h = numpy.array(state[0], dtype=dtype, order="C")                  # (L, B, H), updated in place
    c = numpy.array(state[1], dtype=dtype, order="C") if lstm else numpy.empty((0, 0, 0), dtype=dtype)
    out = numpy.empty((steps, batch, hidden), dtype=dtype)
    ctx = numpy.empty((steps, batch, memory_size), dtype=dtype)
    weights = numpy.empty((steps, source, batch), dtype=dtype)
    kept = dict(h_prev=numpy.empty(per_layer, dtype), gates=numpy.empty((layers, steps, batch, gates_size), dtype),
                below=numpy.empty((layers - 1, steps, batch, hidden), dtype),
                gh_n=none4 if lstm else numpy.empty(per_layer, dtype),
                c_prev=numpy.empty(per_layer, dtype) if lstm else none4,
                tanh_c=numpy.empty(per_layer, dtype) if lstm else none4)
    dropping = drop is not None
    stack = (h, c, ops.W_hh, ops.b_hh, ops.W_up, ops.b_up, drop if dropping else none4, dropping)
    cells = (kept["h_prev"], kept["c_prev"], kept["gates"], kept["gh_n"], kept["tanh_c"], kept["below"])
    if decoder.attention_kind == "bahdanau":
        phi = numpy.empty((steps, source, batch, ops.projected.shape[2]), dtype=dtype)
        _bahdanau_forward(lstm, xw, *stack, ops.W_ctx, ops.W_q, ops.v, ops.memory, ops.projected, ops.mask, one,
                          out, ctx, phi, weights, *cells)
        tops = None
        if ops.W_c1 is not None:                      # the attentional output: it feeds nothing back, so it runs
            tops = out                                # for all steps at once after the loop, one product a part
            pre = ctx @ ops.W_c1 + tops @ ops.W_c2                        # h~_t = tanh(W_c [ctx_t ; h_t])
            if ops.W_c3 is not None:                                     # deep output: + emb_t W_c3^T
                pre += emb @ ops.W_c3
            out = numpy.tanh(pre)
        kept.update(phi=phi, u=None, tops=tops, feeds=None)
    else:
        feeding = decoder.input_feeding
        feed = (numpy.array(feed, dtype=dtype, order="C") if feeding and feed is not None
                else numpy.zeros((batch, hidden), dtype=dtype))
        u = numpy.empty((steps, batch, memory_size), dtype=dtype)
        tops = numpy.empty((steps, batch, hidden), dtype=dtype)
        feeds = numpy.empty((steps, batch, hidden), dtype=dtype) if feeding else numpy.empty((0, 0, 0), dtype)
        _luong_forward(lstm, decoder.attention_kind == "luong-general", feeding, xw, *stack, feed, ops.W_feed,
                       ops.W_a, ops.W_c1, ops.W_c2, ops.memory, ops.mask, one, out, ctx, u, weights, tops, feeds,
                       *cells)
        kept.update(phi=None, u=u, tops=tops, feeds=feeds if feeding else None)
    final = (h, c) if lstm else (h,)
    new_feed = feed if decoder.input_feeding else None                # h~_T, the next step's input
    return out, final, new_feed, dict(ctx=ctx, weights=weights, **kept)


def steps_forward(decoder, emb, encoded, train):
    """The twin of ``minis2s.nn.decoder.steps_forward``: the same arguments and results, the cache a
    StepsCache (or a WholeSequenceCache) where the reference returns T StepCaches."""
    from minis2s.nn import decoder as reference
    from minis2s.nn.layers import dropout_mask
    if decoder.extra_size == 0:                                      # nothing fed back: no loop at all
        return reference.forward_whole_sequences(decoder, emb, encoded, train)
    if not _fits(decoder, emb):
        return reference.steps_forward.reference(decoder, emb, encoded, train)
    xw_emb = decoder.embedding_projection(emb)                       # (T, B, G*H), as the reference
    steps, batch, _ = xw_emb.shape
    ops = _operands(decoder, encoded)
    layer_masks = _layer_masks(decoder, steps, batch, xw_emb.dtype, train)
    out, _, _, kept = _run_forward(decoder, _input_side(decoder, xw_emb, encoded, ops.W_ih), encoded.state, None,
                                   _forward_operands(ops), layer_masks, emb)
    out_masks, dropped = None, out
    if train and decoder.dropout > 0:                                # one mask per step, in the reference's order
        out_masks = numpy.stack([dropout_mask((batch, decoder.hidden_size), decoder.dropout, decoder.rng,
                                              xw_emb.dtype) for _ in range(steps)])
        dropped = out * out_masks
    cache = StepsCache(decoder.rnn.cell.name, decoder.attention_kind, out=out, layer_masks=layer_masks,
                       out_masks=out_masks, **kept)
    return dropped, kept["weights"], cache


def steps_backward(decoder, doutputs, emb, caches, encoded):
    """The twin of ``minis2s.nn.decoder.steps_backward`` (its forward must have been this file's)."""
    from minis2s.nn import decoder as reference
    if isinstance(caches, reference.WholeSequenceCache):
        return reference.backward_whole_sequences(decoder, doutputs, emb, caches, encoded)
    if not isinstance(caches, StepsCache):                           # the reference ran the forward
        return reference.steps_backward.reference(decoder, doutputs, emb, caches, encoded)
    seq = caches
    layers, steps, batch, hidden = seq.h_prev.shape
    dtype = seq.h_prev.dtype
    one = dtype.type(1)
    lstm = seq.cell == "lstm"
    ops = _operands(decoder, encoded)
    W_ih, memory = ops.W_ih, ops.memory
    dout = doutputs if seq.out_masks is None else doutputs * seq.out_masks
    dout = numpy.ascontiguousarray(dout)
    dropping = seq.layer_masks is not None
    none4 = numpy.empty((0, 0, 0, 0), dtype=dtype)
    dh = numpy.zeros((layers, batch, hidden), dtype=dtype)
    dc = numpy.zeros_like(dh) if lstm else numpy.empty((0, 0, 0), dtype=dtype)
    dxw = numpy.empty_like(seq.gates)
    dgh = dxw if lstm else numpy.empty_like(dxw)                     # the LSTM's are the same
    dmemory = numpy.zeros_like(memory)
    cells = (seq.h_prev, seq.c_prev, seq.gates, seq.gh_n, seq.tanh_c, ops.W_hh, ops.W_up,
             seq.layer_masks if dropping else none4, dropping)
    attention = decoder.attention
    demb_out = None                                                  # the deep output's share of demb
    inputs = [emb]                                                   # layer 0's x_t = [emb_t ; extras_t]
    if seq.attention == "bahdanau":
        dqw = numpy.empty((steps, batch, seq.phi.shape[3]), dtype=dtype)
        dprojected = numpy.zeros_like(seq.phi[0])
        dv = numpy.zeros_like(ops.v)
        dctx_out = numpy.empty((0, 0, 0), dtype=dtype)
        if seq.tops is not None:                      # the attentional output, all steps at once: h~ = tanh(pre)
            dpre = dout * (1 - seq.out * seq.out)
            parts = [seq.ctx, seq.tops] + ([emb] if ops.W_c3 is not None else [])     # [ctx ; h (; emb)]
            joined = numpy.concatenate(parts, axis=2)
            decoder.combine.grads["weight"] += dpre.reshape(-1, hidden).T @ joined.reshape(-1, joined.shape[2])
            dctx_out = numpy.ascontiguousarray(dpre @ ops.W_c1)     # [dctx ; dh (; demb)] = dpre W_c
            dout = numpy.ascontiguousarray(dpre @ ops.W_c2)
            if ops.W_c3 is not None:
                demb_out = dpre @ ops.W_c3
        _bahdanau_backward(lstm, dout, *cells, ops.W_ctx, ops.W_q, ops.v, memory, seq.phi, seq.weights, one,
                           dh, dc, dxw, dgh, dqw, dmemory, dprojected, dv, dctx_out)
        attention.grads["v"] += dv
        top = seq.h_prev[layers - 1]                                 # the query: the top layer's h_t-1
        attention.grads["W_q"] += dqw.reshape(-1, dqw.shape[2]).T @ top.reshape(-1, hidden)
        inputs.append(seq.ctx)
    else:
        general = seq.attention == "luong-general"
        dpre = numpy.empty_like(seq.out)
        du = numpy.empty_like(seq.u)
        dprojected = None
        _luong_backward(lstm, general, decoder.input_feeding, dout, seq.out, seq.u, *cells, ops.W_feed, ops.W_a,
                        ops.W_c1, ops.W_c2, memory, seq.weights, one, dh, dc, dxw, dgh, dpre, du, dmemory)
        joined = numpy.concatenate([seq.ctx, seq.tops], axis=2)      # h~ = tanh(W_c [ctx ; h])
        decoder.combine.grads["weight"] += dpre.reshape(-1, hidden).T @ joined.reshape(-1, joined.shape[2])
        if general:                                                  # u = W_a h_t
            attention.grads["W_a"] += du.reshape(-1, du.shape[2]).T @ seq.tops.reshape(-1, hidden)
        if decoder.input_feeding:
            inputs.append(seq.feeds)
    dcontext_vector = None
    if encoded.context_vector is not None:
        inputs.append(numpy.broadcast_to(encoded.context_vector, (steps, batch, hidden)))
        dcontext_vector = dxw[0].sum(axis=0) @ W_ih[:, _columns(decoder)[2]:]
    rnn = decoder.rnn
    add_weight_grads(rnn.weight_grads(0, ""), numpy.concatenate(inputs, axis=2), seq.h_prev[0], dxw[0], dgh[0])
    for k in range(1, layers):                                       # layer k's x_t: dropout(h_t of layer k-1)
        add_weight_grads(rnn.weight_grads(k, ""), seq.below[k - 1], seq.h_prev[k], dxw[k], dgh[k])
    demb = dxw[0] @ W_ih[:, :decoder.emb_size]
    if demb_out is not None:
        demb += demb_out                                             # emb_t fed the cells and the output
    return demb, (dh, dc) if lstm else (dh,), dmemory, dprojected, dcontext_vector


def decode_step(decoder, xw_emb, state, feed, encoded, emb=None):
    """One step at decoding time, as the book's ``Decoder.step_forward(..., train=False)`` without its cache ->
    o_t (B, H), the new state, the new feed, attention weights (S, B) or None: the forward loop above run for
    one step; without attention, rnn.py's whole-sequence kernel run for one step. Inside a decode
    (``dispatch.constant_weights``) the weights as the kernels take them (contiguous slices, W_hh^T) are made
    at the first step and kept. Any other decoder (the plain RNN cell): the book's step."""
    if _fits(decoder, xw_emb):
        ops = dispatch.derived("decoder.operands", (decoder, encoded.memory, encoded.mask, encoded.projected),
                               lambda: _forward_operands(_operands(decoder, encoded)))   # kept for the decode
        out, final, feed, kept = _run_forward(decoder, _input_side(decoder, xw_emb[None], encoded, ops.W_ih), state,
                                              feed, ops, None, None if emb is None else emb[None])
        return out[0], final, feed, kept["weights"][0]
    if _plain(decoder, xw_emb):
        params = decoder.rnn.params
        xw = _input_side(decoder, xw_emb[None], encoded, params["weight_ih_l0"])
        W_hh = params["weight_hh_l0"]
        W_hh_t = dispatch.derived("transposed", (W_hh,), lambda: rnn.transposed(W_hh))   # kept for the decode
        output, new_state = _plain_step(decoder.rnn.cell.name, xw, state, W_hh_t, params["bias_hh_l0"])
        return output, new_state, None, None
    return decoder.step_forward(xw_emb, state, feed, encoded, train=False, emb=emb)[:4]


@functools.lru_cache(maxsize=64)
def _all_real(batch):
    """(1, B) True: a decoding step has no padded rows (one array a batch size, read only)."""
    mask = numpy.ones((1, batch), dtype=bool)
    mask.flags.writeable = False
    return mask


def _plain_step(cell, xw, state, W_hh_t, b_hh):
    """One step of a cell on xw (1, B, G*H) from state (tuple of (1, B, H)) -> h' (B, H), the new state;
    W_hh^T (H, G*H) as rnn.py's forward kernels take it."""
    _, batch, _ = xw.shape
    one = xw.dtype.type(1)
    mask = _all_real(batch)
    h = numpy.array(state[0][0], order="C")
    out = numpy.empty((1,) + h.shape, dtype=xw.dtype)
    scratch = numpy.empty_like(xw)
    if cell == "lstm":
        c = numpy.array(state[1][0], order="C")
        rnn._lstm_sequence_forward(xw, W_hh_t, b_hh, mask, one, h, c, out, numpy.empty_like(out),
                                   numpy.empty_like(out), scratch, numpy.empty_like(out))
        return out[0], (h[None], c[None])
    if cell == "gru":
        rnn._gru_sequence_forward(xw, W_hh_t, b_hh, mask, one, h, out, numpy.empty_like(out), scratch,
                                  numpy.empty_like(out))
    else:
        rnn._rnn_sequence_forward(xw, W_hh_t, b_hh, mask, cell == "rnn_relu", one, h, out, numpy.empty_like(out),
                                  scratch)
    return out[0], (h[None],)
