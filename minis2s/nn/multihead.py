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

For self-attention query, key and value are the same array: its gradient is the sum of the three.
"""
import math
from typing import NamedTuple

from .. import backend
from . import init
from .layers import dropout_backward, dropout_forward, linear_backward, linear_forward
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
    shifted = scores - scores.max(axis=-1, keepdims=True)           # the softmax, never overflowing
    e = xp.exp(shifted)
    weights = e / e.sum(axis=-1, keepdims=True)                     # A: a masked position exactly 0
    dropped, drop_mask = dropout_forward(weights, dropout, rng, train)
    return dropped @ v, AttentionCache(q, k, v, weights, drop_mask, scale)


def scaled_dot_product_backward(dctx, cache):
    """dctx (B, h, T, d) -> dq (B, h, T, d), dk, dv (B, h, S, d)."""
    xp = backend.array_module(dctx)
    q, k, v, weights, drop_mask, scale = cache
    dropped = weights if drop_mask is None else weights * drop_mask
    dv = xp.swapaxes(dropped, -1, -2) @ dctx                        # ctx = A' V
    dweights = dropout_backward(dctx @ xp.swapaxes(v, -1, -2), drop_mask)
    dscores = weights * (dweights - (dweights * weights).sum(axis=-1, keepdims=True))   # through the softmax
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
    query: object         # the three projections' caches
    key: object
    value: object
    attention: AttentionCache
    ctx: object           # (T, B, E) the heads joined, the output projection's input


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

    def _projection(self, part):
        """W_q, W_k or W_v (rows of in_proj_weight) and its bias, as views."""
        size = self.embed_dim
        rows = slice(part * size, (part + 1) * size)
        return self.params["in_proj_weight"][rows], self.params["in_proj_bias"][rows], rows

    def forward(self, query, key, value, key_padding_mask=None, causal=False, train=True):
        """query (T, B, E), key and value (S, B, E), key_padding_mask (B, S) True = padding ->
        out (T, B, E), weights (B, h, T, S), MultiHeadCache."""
        xp = backend.array_module(query)
        heads = self.num_heads
        projected, caches = [], []
        for part, x in enumerate((query, key, value)):
            weight, bias, _ = self._projection(part)
            y, cache = linear_forward(x, weight, bias)
            projected.append(split_heads(y, heads))
            caches.append(cache)
        mask = attention_mask(key_padding_mask, causal, query.shape[0], key.shape[0], query.shape[1], xp)
        ctx, attention = scaled_dot_product_forward(*projected, mask, self.dropout, self.rng, train)
        joined = join_heads(ctx)
        out, _ = linear_forward(joined, self.params["out_proj.weight"], self.params["out_proj.bias"])
        return out, attention.weights, MultiHeadCache(*caches, attention, joined)

    def backward(self, dout, cache):
        """dout (T, B, E) -> dquery (T, B, E), dkey, dvalue (S, B, E); adds every parameter's gradient."""
        from .layers import LinearCache
        dctx = linear_backward(dout, LinearCache(cache.ctx), self.params["out_proj.weight"],
                               self.grads["out_proj.weight"], self.grads["out_proj.bias"])
        dq, dk, dv = scaled_dot_product_backward(split_heads(dctx, self.num_heads), cache.attention)
        inputs = []
        for part, (dpart, part_cache) in enumerate(zip((dq, dk, dv), (cache.query, cache.key, cache.value))):
            weight, _, rows = self._projection(part)
            inputs.append(linear_backward(join_heads(dpart), part_cache, weight, self.grads["in_proj_weight"][rows],
                                          self.grads["in_proj_bias"][rows]))
        return tuple(inputs)

    # ------------------------------------------------------------------ decoding, no caches kept

    def project(self, x, part):
        """x (T, B, E) -> its queries (part 0), keys (1) or values (2), heads split: (B, h, T, d). Incremental
        decoding keeps the keys and values of the positions decoded so far, and the source's, made once."""
        weight, bias, _ = self._projection(part)
        return split_heads(linear_forward(x, weight, bias)[0], self.num_heads)

    def attend(self, q, k, v, mask=None):
        """Projected heads q (B, h, T, d), k, v (B, h, S, d), mask (B, 1, T, S) or None -> out (T, B, E),
        weights (B, h, T, S): the rest of ``forward``, with no dropout and no cache."""
        ctx, attention = scaled_dot_product_forward(q, k, v, mask, train=False)
        out, _ = linear_forward(join_heads(ctx), self.params["out_proj.weight"], self.params["out_proj.bias"])
        return out, attention.weights
