"""Scaled dot-product attention and multi-head attention (Vaswani et al. 2017), as ``torch.nn.MultiheadAttention``.

Shapes: query (T, B, E) time-major, key and value (S, B, E); h heads of d = E / h each.

Scaled dot-product attention, per sentence b and head:

    scores = Q K^T / sqrt(d)                    (T, S): why sqrt(d): for entries of unit variance, a dot
                                                product of d terms has variance d; dividing keeps the
                                                scores at unit scale, where the softmax is not saturated
    scores[t, s] = -inf  where s is padding (key_padding_mask[b, s], True = padding, as PyTorch's)
                         or, with causal=True, where s > t (position t sees s <= t only)
    A   = softmax(scores) over s                (T, S) each row sums to 1; a masked position gets exactly 0
    ctx = dropout(A) V                          (T, d)

Multi-head attention: one projection of each input, split into heads by a reshape (no per-head weights):

    [W_q ; W_k ; W_v] = in_proj_weight (3E, E),  [b_q ; b_k ; b_v] = in_proj_bias (3E,)
    Q = query W_q^T + b_q,  K = key W_k^T + b_k,  V = value W_v^T + b_v          (.., E) each
    heads: (T, B, E) -> (B, h, T, d), the last axis cut into h pieces of d
    ctx = attention(Q, K, V) per head, heads joined back: (T, B, E)
    out = ctx W_o^T + b_o                        out_proj.weight (E, E), out_proj.bias (E,)

Backward, the mirror (derived in docs/derivations/multi-head-attention.md):

    dctx = dout W_o,  dW_o += dout^T ctx,  db_o += sum dout
    dA   = dctx V^T (through dropout's mask),  dV = A^T dctx
    dscores = A (dA - sum_s A dA)               the softmax's backward; 0 at masked positions, where A = 0
    dQ = dscores K / sqrt(d),  dK = dscores^T Q / sqrt(d)
    dquery = dQ W_q, dkey = dK W_k, dvalue = dV W_v;  dW_q += dQ^T query, ...; db += sums

For self-attention query, key and value are the same array x: its three projections are one product,
[Q K V] = x [W_q ; W_k ; W_v]^T + b, and its gradient, the sum of the three paths, one product back,
dx = [dQ dK dV] [W_q ; W_k ; W_v] (PyTorch's packed in-projection; likewise the key and value of a memory).
"""
import math
from typing import NamedTuple

from .. import backend
from . import init
from .layers import (dropout_backward, dropout_forward, linear_backward, linear_forward, softmax_backward,
                     softmax_forward)
from .module import Module


class AttentionCache(NamedTuple):
    q: object             # (B, h, T, d) the projected queries
    k: object             # (B, h, S, d)
    v: object             # (B, h, S, d)
    weights: object       # (B, h, T, S) A, before dropout
    drop_mask: object     # (B, h, T, S) or None
    scale: float          # 1 / sqrt(d)


def attention_mask(key_padding_mask, causal, steps, source, batch, xp):
    """(B, 1, T, S) True where a query may not look: padded keys, and with ``causal`` the future (s > t);
    None when nothing is masked."""
    mask = None
    if key_padding_mask is not None:
        mask = xp.broadcast_to(key_padding_mask[:, None, None, :], (batch, 1, steps, source))
    if causal:
        future = xp.arange(source)[None, :] > xp.arange(steps)[:, None]           # (T, S): s > t
        mask = future[None, None] if mask is None else mask | future[None, None]
    return mask


def scaled_dot_product_forward(q, k, v, mask=None, dropout=0.0, rng=None, train=True):
    """q (B, h, T, d), k, v (B, h, S, d), mask (B, 1, T, S) True = may not look, or None ->
    ctx (B, h, T, d), AttentionCache."""
    xp = backend.array_module(q)
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ xp.swapaxes(k, -1, -2)) * scale                 # (B, h, T, S)
    if mask is not None:
        scores = xp.where(mask, -xp.inf, scores)
    weights = softmax_forward(scores)                               # A: a masked position exactly 0
    dropped, drop_mask = dropout_forward(weights, dropout, rng, train)
    return dropped @ v, AttentionCache(q, k, v, weights, drop_mask, scale)


def scaled_dot_product_backward(dctx, cache):
    """dctx (B, h, T, d) -> dq (B, h, T, d), dk, dv (B, h, S, d)."""
    xp = backend.array_module(dctx)
    q, k, v, weights, drop_mask, scale = cache
    dropped = weights if drop_mask is None else weights * drop_mask
    dv = xp.swapaxes(dropped, -1, -2) @ dctx                        # ctx = A' V
    dweights = dropout_backward(dctx @ xp.swapaxes(v, -1, -2), drop_mask)
    dscores = softmax_backward(dweights, weights)                   # A (dA - sum_s A dA): 0 where A = 0
    dq = (dscores @ k) * scale                                      # scores = Q K^T / sqrt(d)
    dk = (xp.swapaxes(dscores, -1, -2) @ q) * scale
    return dq, dk, dv


def split_heads(x, heads):
    """(T, B, E) -> (B, h, T, d): the last axis cut into h pieces of d = E / h."""
    steps, batch, size = x.shape
    return x.reshape(steps, batch, heads, size // heads).transpose(1, 2, 0, 3)


def join_heads(x):
    """(B, h, T, d) -> (T, B, E), the inverse of ``split_heads``."""
    batch, heads, steps, size = x.shape
    return x.transpose(2, 0, 1, 3).reshape(steps, batch, heads * size)


class MultiHeadCache(NamedTuple):
    projections: list     # for each distinct input: (its first part, its number of parts, its LinearCache)
    attention: AttentionCache
    ctx: object           # (T, B, E) the heads joined, the output projection's input


def shared_inputs(query, key, value):
    """The distinct inputs among query, key and value, each with the projections it feeds: [(x, first part,
    parts)], part 0 = W_q, 1 = W_k, 2 = W_v. As PyTorch's in_projection_packed: self-attention (one array
    three times) is one product with all of in_proj_weight; attention over a memory (key is value) is one
    product for the query and one for the key and value together."""
    if query is key and key is value:
        return [(query, 0, 3)]
    if key is value:
        return [(query, 0, 1), (key, 1, 2)]
    return [(query, 0, 1), (key, 1, 1), (value, 2, 1)]


class MultiHeadAttention(Module):
    """``torch.nn.MultiheadAttention(embed_dim, num_heads, dropout)`` (batch_first=False), with its parameter
    names and initialisation: in_proj_weight Xavier-uniform, in_proj_bias 0, out_proj as a Linear's weight,
    out_proj.bias 0."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, dtype="float32", seed=0):
        super().__init__(dtype, seed)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        xp = backend.xp()
        self.add_param("in_proj_weight", init.xavier_uniform((3 * embed_dim, embed_dim), self.init_rng))
        self.add_param("in_proj_bias", xp.zeros(3 * embed_dim))
        self.add_param("out_proj.weight", init.kaiming_uniform((embed_dim, embed_dim), self.init_rng, "leaky_relu",
                                                               a=5 ** 0.5))
        self.add_param("out_proj.bias", xp.zeros(embed_dim))

    def _rows(self, first, parts):
        """The rows of in_proj_weight (and in_proj_bias) of projections first .. first + parts - 1."""
        return slice(first * self.embed_dim, (first + parts) * self.embed_dim)

    def projections(self, x, first, parts):
        """x (.., B, E) -> ``parts`` projections in one product (``first``: 0 = queries, 1 = keys, 2 = values),
        each with its heads split (B, h, .., d), and the product's LinearCache."""
        xp = backend.array_module(x)
        rows = self._rows(first, parts)
        y, cache = linear_forward(x, self.params["in_proj_weight"][rows], self.params["in_proj_bias"][rows])
        return [split_heads(part, self.num_heads) for part in xp.split(y, parts, axis=-1)], cache

    def forward(self, query, key, value, key_padding_mask=None, causal=False, train=True):
        """query (T, B, E), key and value (S, B, E), key_padding_mask (B, S) True = padding ->
        out (T, B, E), weights (B, h, T, S), MultiHeadCache."""
        xp = backend.array_module(query)
        projected, caches = [], []
        for x, first, parts in shared_inputs(query, key, value):
            heads, cache = self.projections(x, first, parts)
            projected += heads
            caches.append((first, parts, cache))
        mask = attention_mask(key_padding_mask, causal, query.shape[0], key.shape[0], query.shape[1], xp)
        ctx, attention = scaled_dot_product_forward(*projected, mask, self.dropout, self.rng, train)
        joined = join_heads(ctx)
        out, _ = linear_forward(joined, self.params["out_proj.weight"], self.params["out_proj.bias"])
        return out, attention.weights, MultiHeadCache(caches, attention, joined)

    def backward(self, dout, cache):
        """dout (T, B, E) -> dquery (T, B, E), dkey, dvalue (S, B, E); adds every parameter's gradient. An
        input given in more than one place gets its whole gradient in the first (self-attention: dquery is
        dx, the sum of the three paths), None in the others."""
        from .layers import LinearCache
        xp = backend.array_module(dout)
        dctx = linear_backward(dout, LinearCache(cache.ctx), self.params["out_proj.weight"],
                               self.grads["out_proj.weight"], self.grads["out_proj.bias"])
        dparts = scaled_dot_product_backward(split_heads(dctx, self.num_heads), cache.attention)   # dq, dk, dv
        inputs = [None, None, None]
        for first, parts, projection in cache.projections:
            rows = self._rows(first, parts)
            dy = xp.concatenate([join_heads(d) for d in dparts[first:first + parts]], axis=-1) if parts > 1 \
                else join_heads(dparts[first])
            inputs[first] = linear_backward(dy, projection, self.params["in_proj_weight"][rows],
                                            self.grads["in_proj_weight"][rows], self.grads["in_proj_bias"][rows])
        return tuple(inputs)

    # ------------------------------------------------------------------ decoding, no caches kept
    # (``projections`` above makes a step's queries, keys and values: incremental decoding keeps the keys and
    # values of the positions decoded so far, and the source's, made once)

    def attend(self, q, k, v, mask=None):
        """Projected heads q (B, h, T, d), k, v (B, h, S, d), mask (B, 1, T, S) or None -> out (T, B, E),
        weights (B, h, T, S): the rest of ``forward``, with no dropout and no cache."""
        ctx, attention = scaled_dot_product_forward(q, k, v, mask, train=False)
        out, _ = linear_forward(join_heads(ctx), self.params["out_proj.weight"], self.params["out_proj.bias"])
        return out, attention.weights
