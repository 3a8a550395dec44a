"""The Transformer's layers (Vaswani et al. 2017), as ``torch.nn.TransformerEncoderLayer`` / ``DecoderLayer``.

Shapes: x (S, B, E) time-major with E = d_model; the target side y (T, B, E); F = dim_feedforward.

The residual stream. Each layer is sublayers f (self-attention, attention over the source, the
feed-forward block) that each *add* to the stream x. Two places for the layer norm:

    post-norm (the 2017 paper's, norm_first=False):  x <- LN(x + dropout(f(x)))
    pre-norm  (norm_first=True):                     x <- x + dropout(f(LN(x)))

Backward of one sublayer (derived in docs/derivations/transformer.md):

    post-norm:  dz = LN'(dy);  dx = dz + f'(dropout'(dz))        the residual carries dz past f
    pre-norm:   dx = dy + LN'(f'(dropout'(dy)))                 the residual carries dy untouched

With pre-norm the stream itself is never normalised, so a stack ends with one more LN (``final_norm``).

The position-wise feed-forward block, the same for every position:

    FFN(x) = W_2 dropout(relu(W_1 x + b_1)) + b_2       W_1 (F, E) linear1, W_2 (E, F) linear2

Encoder layer:  x <- sublayer(self-attention over x, with the source's key-padding mask)
                x <- sublayer(FFN)
Decoder layer:  y <- sublayer(causal self-attention over y, with the target's key-padding mask)
                y <- sublayer(attention from y over the memory (the encoder's output), with its padding mask)
                y <- sublayer(FFN)

The inputs: a token's embedding scaled by sqrt(E) (so that it is not drowned by the positional code), plus
its position's code, then dropout:

    sinusoidal:  P[pos, 2i] = sin(pos / 10000^(2i/E)),  P[pos, 2i+1] = cos(pos / 10000^(2i/E))   (fixed)
    learned:     P = a table (max_len, E) trained as an embedding of the position
"""
import math
from typing import NamedTuple

from .. import backend
from .layer_norm import LayerNorm
from .layers import Embedding, Linear, dropout_backward, dropout_forward, relu_backward, relu_forward
from .module import Module
from .multihead import MultiHeadAttention


# ----------------------------------------------------------------------------- the residual sublayer

class SublayerCache(NamedTuple):
    norm_in: object       # pre-norm: LN's cache of the sublayer's input, else None
    drop_mask: object     # dropout's mask on the branch, or None
    norm_out: object      # post-norm: LN's cache of x + branch, else None


def sublayer_input(x, norm, norm_first):
    """What the sublayer f reads: LN(x) for pre-norm, x itself for post-norm -> (input, LN cache or None)."""
    return norm.forward(x) if norm_first else (x, None)


def sublayer_output(x, branch, norm, norm_first, p, rng, train, norm_in):
    """x + dropout(branch), normalised after for post-norm -> (the new stream, SublayerCache)."""
    dropped, drop_mask = dropout_forward(branch, p, rng, train)
    z = x + dropped
    if norm_first:
        return z, SublayerCache(norm_in, drop_mask, None)
    y, norm_out = norm.forward(z)
    return y, SublayerCache(None, drop_mask, norm_out)


def sublayer_output_backward(dy, cache, norm):
    """dy of the new stream -> (the gradient the residual carries to x, the gradient of f's output)."""
    dz = dy if cache.norm_out is None else norm.backward(dy, cache.norm_out)    # through the post-norm LN
    return dz, dropout_backward(dz, cache.drop_mask)                             # z = x + dropout(branch)


def sublayer_input_backward(dresidual, dinput, cache, norm):
    """The two paths to x added: the residual's, and f's input gradient (through LN for pre-norm)."""
    if cache.norm_in is None:
        return dresidual + dinput
    return dresidual + norm.backward(dinput, cache.norm_in)


# ----------------------------------------------------------------------------- the feed-forward block

class FeedForwardCache(NamedTuple):
    first: object         # linear1's cache (its input)
    hidden: object        # (.., F) relu(W_1 x + b_1), before dropout
    drop_mask: object     # (.., F) or None
    second: object        # linear2's cache (the hidden layer after dropout)


def feed_forward_forward(x, linear1, linear2, p, rng, train):
    """x (.., E) -> W_2 dropout(relu(W_1 x + b_1)) + b_2 (.., E), FeedForwardCache."""
    pre, first = linear1.forward(x)
    hidden = relu_forward(pre)
    dropped, drop_mask = dropout_forward(hidden, p, rng, train)
    out, second = linear2.forward(dropped)
    return out, FeedForwardCache(first, hidden, drop_mask, second)


def feed_forward_backward(dout, cache, linear1, linear2):
    """dout (.., E) -> dx (.., E); adds linear1's and linear2's gradients."""
    dhidden = dropout_backward(linear2.backward(dout, cache.second), cache.drop_mask)
    return linear1.backward(relu_backward(dhidden, cache.hidden), cache.first)     # relu' = [hidden > 0]


# ----------------------------------------------------------------------------- the two layers

class EncoderLayerCache(NamedTuple):
    attention: object     # self_attn's MultiHeadCache
    first: SublayerCache
    feed_forward: FeedForwardCache
    second: SublayerCache


class TransformerEncoderLayer(Module):
    """``torch.nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation="relu",
    norm_first=...)``, time-major, with its parameter names: self_attn.*, linear1.*, linear2.*, norm1.*, norm2.*."""

    def __init__(self, d_model, num_heads, dim_feedforward, dropout=0.1, norm_first=False, dtype="float32",
                 seed=0):
        super().__init__(dtype, seed)
        self.dropout, self.norm_first = dropout, norm_first
        self.self_attn = self.add_module("self_attn", MultiHeadAttention(d_model, num_heads, dropout, dtype, seed))
        self.linear1 = self.add_module("linear1", Linear(d_model, dim_feedforward, dtype=dtype, seed=seed + 1))
        self.linear2 = self.add_module("linear2", Linear(dim_feedforward, d_model, dtype=dtype, seed=seed + 2))
        self.norm1 = self.add_module("norm1", LayerNorm(d_model, dtype=dtype))
        self.norm2 = self.add_module("norm2", LayerNorm(d_model, dtype=dtype))

    def forward(self, x, src_key_padding_mask=None, train=True):
        """x (S, B, E), src_key_padding_mask (B, S) True = padding -> y (S, B, E), EncoderLayerCache."""
        h, norm_in = sublayer_input(x, self.norm1, self.norm_first)
        a, _, attention = self.self_attn.forward(h, h, h, src_key_padding_mask, train=train)
        x, first = sublayer_output(x, a, self.norm1, self.norm_first, self.dropout, self.rng, train, norm_in)
        h, norm_in = sublayer_input(x, self.norm2, self.norm_first)
        f, feed_forward = feed_forward_forward(h, self.linear1, self.linear2, self.dropout, self.rng, train)
        x, second = sublayer_output(x, f, self.norm2, self.norm_first, self.dropout, self.rng, train, norm_in)
        return x, EncoderLayerCache(attention, first, feed_forward, second)

    def backward(self, dout, cache):
        """dout (S, B, E) -> dx (S, B, E); adds every parameter's gradient."""
        dresidual, dbranch = sublayer_output_backward(dout, cache.second, self.norm2)
        dh = feed_forward_backward(dbranch, cache.feed_forward, self.linear1, self.linear2)
        dx = sublayer_input_backward(dresidual, dh, cache.second, self.norm2)
        dresidual, dbranch = sublayer_output_backward(dx, cache.first, self.norm1)
        dh, _, _ = self.self_attn.backward(dbranch, cache.attention)      # h was q, k and v: all three paths
        return sublayer_input_backward(dresidual, dh, cache.first, self.norm1)


class DecoderLayerCache(NamedTuple):
    self_attention: object
    first: SublayerCache
    cross_attention: object
    second: SublayerCache
    feed_forward: FeedForwardCache
    third: SublayerCache


class TransformerDecoderLayer(Module):
    """``torch.nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation="relu",
    norm_first=...)`` with a causal self-attention, time-major, with its parameter names: self_attn.*,
    multihead_attn.*, linear1.*, linear2.*, norm1.*, norm2.*, norm3.*."""

    def __init__(self, d_model, num_heads, dim_feedforward, dropout=0.1, norm_first=False, dtype="float32",
                 seed=0):
        super().__init__(dtype, seed)
        self.dropout, self.norm_first = dropout, norm_first
        self.self_attn = self.add_module("self_attn", MultiHeadAttention(d_model, num_heads, dropout, dtype, seed))
        self.multihead_attn = self.add_module("multihead_attn", MultiHeadAttention(d_model, num_heads, dropout,
                                                                                   dtype, seed + 1))
        self.linear1 = self.add_module("linear1", Linear(d_model, dim_feedforward, dtype=dtype, seed=seed + 2))
        self.linear2 = self.add_module("linear2", Linear(dim_feedforward, d_model, dtype=dtype, seed=seed + 3))
        self.norm1 = self.add_module("norm1", LayerNorm(d_model, dtype=dtype))
        self.norm2 = self.add_module("norm2", LayerNorm(d_model, dtype=dtype))
        self.norm3 = self.add_module("norm3", LayerNorm(d_model, dtype=dtype))

    def forward(self, y, memory, tgt_key_padding_mask=None, memory_key_padding_mask=None, train=True):
        """y (T, B, E), memory (S, B, E), masks (B, T) and (B, S) True = padding -> (T, B, E), DecoderLayerCache.
        The cache also holds the attention weights over the source: ``cache.cross_attention.attention.weights``."""
        h, norm_in = sublayer_input(y, self.norm1, self.norm_first)
        a, _, self_attention = self.self_attn.forward(h, h, h, tgt_key_padding_mask, causal=True, train=train)
        y, first = sublayer_output(y, a, self.norm1, self.norm_first, self.dropout, self.rng, train, norm_in)
        h, norm_in = sublayer_input(y, self.norm2, self.norm_first)
        c, _, cross_attention = self.multihead_attn.forward(h, memory, memory, memory_key_padding_mask, train=train)
        y, second = sublayer_output(y, c, self.norm2, self.norm_first, self.dropout, self.rng, train, norm_in)
        h, norm_in = sublayer_input(y, self.norm3, self.norm_first)
        f, feed_forward = feed_forward_forward(h, self.linear1, self.linear2, self.dropout, self.rng, train)
        y, third = sublayer_output(y, f, self.norm3, self.norm_first, self.dropout, self.rng, train, norm_in)
        return y, DecoderLayerCache(self_attention, first, cross_attention, second, feed_forward, third)

    def backward(self, dout, cache):
        """dout (T, B, E) -> dy (T, B, E), dmemory (S, B, E); adds every parameter's gradient."""
        dresidual, dbranch = sublayer_output_backward(dout, cache.third, self.norm3)
        dh = feed_forward_backward(dbranch, cache.feed_forward, self.linear1, self.linear2)
        dy = sublayer_input_backward(dresidual, dh, cache.third, self.norm3)
        dresidual, dbranch = sublayer_output_backward(dy, cache.second, self.norm2)
        dq, dmemory, _ = self.multihead_attn.backward(dbranch, cache.cross_attention)  # memory: key and value
        dy = sublayer_input_backward(dresidual, dq, cache.second, self.norm2)
        dresidual, dbranch = sublayer_output_backward(dy, cache.first, self.norm1)
        dh, _, _ = self.self_attn.backward(dbranch, cache.self_attention)
        return sublayer_input_backward(dresidual, dh, cache.first, self.norm1), dmemory

    # ------------------------------------------------------------------ decoding, one position at a time

    def memory_keys_values(self, memory):
        """The source's keys and values for the attention over it, (B, h, S, d) each: made once a sentence."""
        return self.multihead_attn.projections(memory, 1, 2)[0]

    def step(self, y, past, memory_kv, memory_mask):
        """One new position: y (1, B, E), past = (K, V) of the positions before it, (B, h, t, d) each or None,
        memory_kv from ``memory_keys_values``, memory_mask (B, 1, 1, S) True = padding ->
        (1, B, E), the new (K, V) with this position's appended, the weights over the source (B, h, 1, S).

        The same sums as ``forward`` at the last position of the prefix: its causal mask lets position t see
        positions <= t, which are exactly the kept keys and values and its own; no other position changes."""
        xp = backend.array_module(y)
        attention = self.self_attn
        h, _ = sublayer_input(y, self.norm1, self.norm_first)
        (q, k, v), _ = attention.projections(h, 0, 3)
        if past is not None:
            k, v = xp.concatenate([past[0], k], axis=2), xp.concatenate([past[1], v], axis=2)
        a, _ = attention.attend(q, k, v)
        y, _ = sublayer_output(y, a, self.norm1, self.norm_first, 0.0, None, False, None)
        h, _ = sublayer_input(y, self.norm2, self.norm_first)
        (q,), _ = self.multihead_attn.projections(h, 0, 1)
        c, weights = self.multihead_attn.attend(q, *memory_kv, memory_mask)
        y, _ = sublayer_output(y, c, self.norm2, self.norm_first, 0.0, None, False, None)
        h, _ = sublayer_input(y, self.norm3, self.norm_first)
        f, _ = feed_forward_forward(h, self.linear1, self.linear2, 0.0, None, False)
        y, _ = sublayer_output(y, f, self.norm3, self.norm_first, 0.0, None, False, None)
        return y, (k, v), weights


# ----------------------------------------------------------------------------- stacks

class TransformerEncoder(Module):
    """N encoder layers (``layers.0.*``, ...), with a final LayerNorm (``norm.*``) for pre-norm, whose stream
    is otherwise never normalised (as ``torch.nn.TransformerEncoder(layer, N, norm)``)."""

    def __init__(self, d_model, num_heads, dim_feedforward, num_layers, dropout=0.1, norm_first=False,
                 dtype="float32", seed=0):
        super().__init__(dtype, seed)
        self.layers = [self.add_module(f"layers.{k}", TransformerEncoderLayer(
            d_model, num_heads, dim_feedforward, dropout, norm_first, dtype, seed + 10 * k)) for k in range(num_layers)]
        self.norm = self.add_module("norm", LayerNorm(d_model, dtype=dtype)) if norm_first else None

    def forward(self, x, src_key_padding_mask=None, train=True):
        caches = []
        for layer in self.layers:
            x, cache = layer.forward(x, src_key_padding_mask, train)
            caches.append(cache)
        norm_cache = None
        if self.norm is not None:
            x, norm_cache = self.norm.forward(x)
        return x, (caches, norm_cache)

    def backward(self, dout, cache):
        caches, norm_cache = cache
        if self.norm is not None:
            dout = self.norm.backward(dout, norm_cache)
        for layer, layer_cache in zip(reversed(self.layers), reversed(caches)):
            dout = layer.backward(dout, layer_cache)
        return dout


class TransformerDecoder(Module):
    """N decoder layers (``layers.0.*``, ...), a final LayerNorm (``norm.*``) for pre-norm; every layer
    attends to the same memory, so the memory's gradient is the sum of every layer's."""

    def __init__(self, d_model, num_heads, dim_feedforward, num_layers, dropout=0.1, norm_first=False,
                 dtype="float32", seed=0):
        super().__init__(dtype, seed)
        self.layers = [self.add_module(f"layers.{k}", TransformerDecoderLayer(
            d_model, num_heads, dim_feedforward, dropout, norm_first, dtype, seed + 10 * k)) for k in range(num_layers)]
        self.norm = self.add_module("norm", LayerNorm(d_model, dtype=dtype)) if norm_first else None

    def forward(self, y, memory, tgt_key_padding_mask=None, memory_key_padding_mask=None, train=True):
        caches = []
        for layer in self.layers:
            y, cache = layer.forward(y, memory, tgt_key_padding_mask, memory_key_padding_mask, train)
            caches.append(cache)
        norm_cache = None
        if self.norm is not None:
            y, norm_cache = self.norm.forward(y)
        return y, (caches, norm_cache)

    def backward(self, dout, cache):
        caches, norm_cache = cache
        if self.norm is not None:
            dout = self.norm.backward(dout, norm_cache)
        dmemory = 0
        for layer, layer_cache in zip(reversed(self.layers), reversed(caches)):
            dout, dlayer_memory = layer.backward(dout, layer_cache)
            dmemory = dmemory + dlayer_memory
        return dout, dmemory


# ----------------------------------------------------------------------------- the inputs

def sinusoidal_positions(length, size, xp, dtype):
    """(length, E): P[pos, 2i] = sin(pos / 10000^(2i/E)), P[pos, 2i+1] = cos(pos / 10000^(2i/E)).
    Each pair of columns turns at its own frequency, from 1 down to 1/10000: P[pos + k] is a fixed rotation
    of P[pos] for every pos, so relative offsets are easy for attention to read."""
    position = xp.arange(length, dtype=xp.float64)[:, None]
    frequency = xp.exp(-math.log(10000.0) * xp.arange(0, size, 2, dtype=xp.float64) / size)    # (E/2,)
    table = xp.zeros((length, size), dtype=xp.float64)
    table[:, 0::2] = xp.sin(position * frequency)
    table[:, 1::2] = xp.cos(position * frequency[: size // 2])
    return table.astype(dtype)


class InputCache(NamedTuple):
    embedding: object     # the token embedding's cache
    positions: object     # the learned positions' cache, or None
    drop_mask: object


class TransformerInput(Module):
    """x = dropout(sqrt(E) E[tokens] + P[0..S-1]): tokens (S, B) -> (S, B, E). Parameters: ``embedding.weight``
    and, with learned positions, ``positions.weight`` (max_len, E)."""

    def __init__(self, vocab_size, d_model, padding_idx, positional="sinusoidal", max_len=512, dropout=0.1,
                 dtype="float32", seed=0):
        super().__init__(dtype, seed)
        if positional not in ("sinusoidal", "learned"):
            raise ValueError(f"positional must be 'sinusoidal' or 'learned', got {positional!r}")
        self.d_model, self.max_len, self.dropout = d_model, max_len, dropout
        self.scale = math.sqrt(d_model)
        self.embedding = self.add_module("embedding", Embedding(vocab_size, d_model, padding_idx, dtype, seed))
        self.positions = None
        if positional == "learned":
            self.positions = self.add_module("positions", Embedding(max_len, d_model, None, dtype, seed + 1))
        self.table = sinusoidal_positions(max_len, d_model, backend.xp(), self.dtype) if positional == "sinusoidal" \
            else None

    def position_codes(self, start, length):
        """P[start .. start + length - 1] -> (length, 1, E) and the learned table's cache (or None). The
        sinusoids go on past max_len (the table grows); learned positions end there."""
        if self.positions is None:
            if start + length > self.table.shape[0]:
                self.table = sinusoidal_positions(2 * (start + length), self.d_model, backend.xp(), self.dtype)
            return self.table[start:start + length, None, :], None
        if start + length > self.max_len:
            raise ValueError(f"position {start + length - 1} is past the learned positional table (max_len "
                             f"{self.max_len}): a longer sentence needs --positional sinusoidal")
        ids = backend.xp().arange(start, start + length)[:, None]
        codes, cache = self.positions.forward(ids)
        return codes, cache

    def forward(self, tokens, start=0, train=True):
        """tokens (S, B) at positions start.. -> x (S, B, E), InputCache."""
        emb, embedding = self.embedding.forward(tokens)
        codes, positions = self.position_codes(start, tokens.shape[0])
        x, drop_mask = dropout_forward(emb * self.scale + codes, self.dropout, self.rng, train)
        return x, InputCache(embedding, positions, drop_mask)

    def backward(self, dx, cache):
        """dx (S, B, E) -> adds the embedding's (and the learned positions') gradient."""
        dx = dropout_backward(dx, cache.drop_mask)
        self.embedding.backward(dx * self.scale, cache.embedding)
        if cache.positions is not None:
            self.positions.backward(dx.sum(axis=1, keepdims=True), cache.positions)   # one row for every b
