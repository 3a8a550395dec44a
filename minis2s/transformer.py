"""Transformer: attention without recurrence (Vaswani et al. 2017), with the interface of ``Seq2Seq``.

    x      = dropout(sqrt(E) E_src[src] + P)        (S, B, E)    the source, every position at once
    memory = encoder(x, source padding)             (S, B, E)    N layers of self-attention + FFN
    y      = dropout(sqrt(E) E_tgt[y_in] + P)       (T, B, E)    the shifted target: <bos> y_1 .. y_T-1
    h      = decoder(y, memory, paddings)           (T, B, E)    causal self-attention, attention over the
                                                                 memory, FFN; N layers
    logits = h W_out^T                              (T, B, V)    W_out = E_tgt with tied embeddings
    loss   = masked cross-entropy, mean over real target tokens (as Seq2Seq's)

The layers are in ``nn/transformer.py``. Training runs every target position at once: the causal mask
lets position t see the inputs at positions <= t only, which with teacher forcing are all known. Decoding
cannot: y_t is needed before position t + 1 can start. So ``step`` runs one position at a time, and each
decoder layer keeps the keys and values of the positions decoded so far (the cache); the source's keys
and values for every layer are made once, in ``start`` (derived in docs/derivations/transformer.md).

Tied embeddings (Press and Wolf 2017): W_out is the target embedding's table itself; its gradient is the
sum of the two uses, dE_tgt = (the embedding's scatter of dy) + dlogits^T h.
"""
from typing import NamedTuple

from . import backend
from .batch import PAD
from .loss import cross_entropy, sequence_logprobs
from .nn import init
from .nn.layers import LinearCache, length_mask, linear_backward, linear_forward, log_softmax_forward
from .nn.module import Module
from .nn.transformer import TransformerDecoder, TransformerEncoder, TransformerInput


class TransformerCache(NamedTuple):
    src_input: object
    encoder: object
    tgt_input: object
    decoder: object
    out: LinearCache      # h (T, B, E), the projection's input


class TransformerEncoded(NamedTuple):
    """What decoding needs from the source, made once a sentence: the decoder reads the encoder's output
    only through each layer's keys and values of it."""
    padding: object       # (B, S) True = padding (PyTorch's key_padding_mask)
    memory_kv: list       # for each decoder layer, the source's (K, V), (B, h, S, d) each


class DecoderState(NamedTuple):
    """Incremental decoding's state: the next position, and each layer's kept self-attention (K, V)."""
    position: int
    past: list            # for each decoder layer, (K, V) (B, h, t, d) each, or None before the first step


class Transformer(Module):
    """An encoder-decoder Transformer; see the module docstring for the equations. Parameters: src_input.*,
    tgt_input.*, encoder.layers.k.*, decoder.layers.k.* (PyTorch's layer names), encoder.norm.* and
    decoder.norm.* for pre-norm, and out.weight unless the embeddings are tied."""

    def __init__(self, src_vocab_size, tgt_vocab_size, d_model=256, num_heads=4, num_encoder_layers=3,
                 num_decoder_layers=3, ff_size=1024, dropout=0.1, norm_first=True, positional="sinusoidal",
                 tie_embeddings=False, label_smoothing=0.0, dtype="float32", seed=0, max_len=512):
        super().__init__(dtype, seed)
        for name, size in (("src_vocab_size", src_vocab_size), ("tgt_vocab_size", tgt_vocab_size),
                           ("d_model", d_model), ("num_heads", num_heads), ("ff_size", ff_size)):
            if size < 1:
                raise ValueError(f"{name} must be >= 1, got {size}")
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} must be divisible by num_heads {num_heads}")
        self.config = dict(arch="transformer", src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                           d_model=d_model, num_heads=num_heads, num_encoder_layers=num_encoder_layers,
                           num_decoder_layers=num_decoder_layers, ff_size=ff_size, dropout=dropout,
                           norm_first=norm_first, positional=positional, tie_embeddings=tie_embeddings,
                           label_smoothing=label_smoothing, dtype=str(self.dtype), seed=seed, max_len=max_len)
        self.label_smoothing, self.tie_embeddings = label_smoothing, tie_embeddings
        self.teacher_forcing, self.attention = 1.0, "multi-head"     # what the training loop and plots read
        self.src_input = self.add_module("src_input", TransformerInput(
            src_vocab_size, d_model, PAD, positional, max_len, dropout, dtype, seed))
        self.tgt_input = self.add_module("tgt_input", TransformerInput(
            tgt_vocab_size, d_model, PAD, positional, max_len, dropout, dtype, seed + 1))
        self.encoder = self.add_module("encoder", TransformerEncoder(
            d_model, num_heads, ff_size, num_encoder_layers, dropout, norm_first, dtype, seed + 2))
        self.decoder = self.add_module("decoder", TransformerDecoder(
            d_model, num_heads, ff_size, num_decoder_layers, dropout, norm_first, dtype, seed + 3))
        if not tie_embeddings:
            self.add_param("out.weight", init.xavier_uniform((tgt_vocab_size, d_model), self.init_rng))
        self.initialise(d_model)
        self.flatten_parameters()              # every parameter a view of one buffer: Adam updates all in one call

    def initialise(self, d_model):
        """As torch.nn.Transformer and Joey NMT: every matrix of the layers Xavier-uniform; the embeddings
        N(0, 1/E) (fairseq's), so that sqrt(E) E[y] has unit-variance entries, as a tied output layer needs
        (with N(0, 1) rows the logits h . E_v would have a standard deviation of sqrt(E))."""
        for name, value in self.params.items():
            if name.endswith(("embedding.weight", "positions.weight")):        # learned positions: the same
                table = self.init_rng.normal(0.0, d_model ** -0.5, size=value.shape)
                if name.endswith("embedding.weight"):
                    table[PAD] = 0.0
                value[...] = backend.asarray(table, dtype=self.dtype)
            elif value.ndim > 1 and name.startswith(("encoder.", "decoder.")):
                value[...] = backend.asarray(init.xavier_uniform(value.shape, self.init_rng), dtype=self.dtype)

    @property
    def output_weight(self):
        """W_out (V, E): the target embedding's table when tied."""
        return self.params["tgt_input.embedding.weight" if self.tie_embeddings else "out.weight"]

    @property
    def output_grad(self):
        return self.grads["tgt_input.embedding.weight" if self.tie_embeddings else "out.weight"]

    # ------------------------------------------------------------------ the whole model

    def encode(self, src, src_lengths, train=False):
        """src (S, B), src_lengths (B,) -> memory (S, B, E), padding (B, S), the caches."""
        padding = ~length_mask(src_lengths, src.shape[0]).T                # True = padding, PyTorch's
        x, src_cache = self.src_input.forward(src, 0, train)
        memory, encoder_cache = self.encoder.forward(x, padding, train)
        return memory, padding, src_cache, encoder_cache

    def forward(self, batch, train=True, teacher_forcing=None):
        """Batch -> logits (T, B, V), TransformerCache. Teacher forced: every position at once."""
        h, cache = self.forward_outputs(batch, train)
        logits, _ = linear_forward(h, self.output_weight)
        return logits, cache

    def forward_outputs(self, batch, train=True):
        """Batch -> the decoder's output h (T, B, E) before the projection, TransformerCache."""
        memory, padding, src_cache, encoder_cache = self.encode(batch.src, batch.src_lengths, train)
        tgt_padding = ~length_mask(batch.tgt_lengths, batch.tgt_in.shape[0]).T
        y, tgt_cache = self.tgt_input.forward(batch.tgt_in, 0, train)
        h, decoder_cache = self.decoder.forward(y, memory, tgt_padding, padding, train)
        return h, TransformerCache(src_cache, encoder_cache, tgt_cache, decoder_cache, LinearCache(h))

    def backward(self, dlogits, cache):
        """dlogits (T, B, V) -> adds every parameter's gradient (the mirror of ``forward``)."""
        dh = linear_backward(dlogits, cache.out, self.output_weight, self.output_grad)    # tied: the first share
        self.outputs_backward(dh, cache)

    def outputs_backward(self, dh, cache):
        """dh (T, B, E), the gradient of the decoder's output -> every gradient below the projection."""
        dy, dmemory = self.decoder.backward(dh, cache.decoder)
        self.tgt_input.backward(dy, cache.tgt_input)                                       # tied: the second
        dx = self.encoder.backward(dmemory, cache.encoder)
        self.src_input.backward(dx, cache.src_input)

    # ------------------------------------------------------------------ the public contract (as Seq2Seq's)

    def loss(self, batch):
        """Mean cross-entropy per target token, a Python float: no gradients, no dropout."""
        logits, _ = self.forward(batch, train=False)
        value, _ = cross_entropy(logits, batch.tgt_out, batch.tgt_lengths, label_smoothing=self.label_smoothing)
        return backend.to_float(value)

    def sequence_logprobs(self, batch):
        """(B,) each target's log p(y | x), teacher forced, no dropout, no label smoothing."""
        logits, _ = self.forward(batch, train=False)
        return sequence_logprobs(log_softmax_forward(logits), batch.tgt_out, batch.tgt_lengths)

    def loss_and_grads(self, batch, teacher_forcing=None):
        """The same loss in training mode (dropout); fills ``grads`` (zeroed first). ``teacher_forcing`` is
        accepted for the training loop's sake: a Transformer trains teacher forced."""
        self.zero_grad()
        logits, cache = self.forward(batch, train=True)
        value, dlogits = cross_entropy(logits, batch.tgt_out, batch.tgt_lengths, label_smoothing=self.label_smoothing)
        self.backward(dlogits, cache)
        return value

    # ------------------------------------------------------------------ decoding, one position a step

    def start(self, src, src_lengths):
        """Encode for decoding: TransformerEncoded, the empty DecoderState, no feed."""
        memory, padding, _, _ = self.encode(src, src_lengths, train=False)
        memory_kv = [layer.memory_keys_values(memory) for layer in self.decoder.layers]
        return TransformerEncoded(padding, memory_kv), DecoderState(0, [None] * len(self.decoder.layers)), None

    def repeat_encoded(self, encoded, rows):
        """The encoded sentences at ``rows`` (B',): beam search repeats, and drops finished sentences."""
        return TransformerEncoded(encoded.padding[rows], [(k[rows], v[rows]) for k, v in encoded.memory_kv])

    def select_state(self, state, feed, rows):
        """The kept keys and values of the beams at ``rows``: the cache follows the back-pointers."""
        past = [None if kv is None else (kv[0][rows], kv[1][rows]) for kv in state.past]
        return DecoderState(state.position, past), None

    def step(self, tokens, state, feed, encoded):
        """tokens (B,) at position t -> log-probabilities (B, V), the state for t + 1, None, the last layer's
        attention over the source averaged over the heads (S, B)."""
        y, _ = self.tgt_input.forward(tokens[None, :], state.position, train=False)      # (1, B, E)
        memory_mask = encoded.padding[:, None, None, :]                                   # (B, 1, 1, S)
        past = []
        for layer, layer_past, memory_kv in zip(self.decoder.layers, state.past, encoded.memory_kv):
            y, kept, weights = layer.step(y, layer_past, memory_kv, memory_mask)
            past.append(kept)
        if self.decoder.norm is not None:
            y, _ = self.decoder.norm.forward(y)
        logits, _ = linear_forward(y[0], self.output_weight)
        return (log_softmax_forward(logits), DecoderState(state.position + 1, past), None,
                weights[:, :, 0].mean(axis=1).T)
