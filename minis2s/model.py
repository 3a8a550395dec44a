"""Seq2Seq: source embedding -> encoder -> bridge -> decoder (+ attention) -> projection -> loss.

    x  = E_src[src]                        (S, B, E)      the source, optionally reversed within each
                                                          sequence's length (Sutskever et al. 2014)
    K, s_enc = encoder(x, src_lengths)     K (S, B, M = dirs*H) the encoder outputs (attention's memory),
                                           s_enc each sequence's final state (nn/encoder.py)
    s_0 = bridge(s_enc)                    the *context vector* cv: the source summed up in a fixed size
                                           (nn/bridge.py)
                                           unidirectional: s_0 = s_enc
                                           bidirectional: per layer, tanh(W_b [h_fwd ; h_bwd] + b_b)
                                           (the same for c with its own W_b for the LSTM)
                                           bridge="zeros": s_0 = 0 (for attention-only models)
    for t = 1..T:  o_t, s_t = decoder step(y_t-1, s_t-1, K)    (see nn/decoder.py)
    logits = W_out o + b_out               (T, B, V), all steps in one product
    loss = masked cross-entropy, mean over real target tokens (each sentence ends in <eos>)

Teacher forcing (``forward_teacher_forced``): every input y_t-1 is the reference token, so all inputs are
known at once and the decoder's time loop (nn/decoder.py's ``steps_forward``) runs over them.
At decoding time the decoder reads its own outputs instead: the mismatch is the exposure bias.
Scheduled sampling (``forward_sampled``, Bengio et al. 2015) trains against it: the input is the reference
token with probability ``teacher_forcing``, else the model's own best guess argmax(logits_t-1),
drawn per sentence and step, with the ratio lowered over training. The guess is a discrete choice: no gradient
flows through it, exactly as in PyTorch, where argmax is not differentiable; the gradient reaches
the guessed token's embedding only. A guess is never <pad> or <bos> (no sentence contains them).
"""
import inspect
from typing import NamedTuple

from . import backend
from .batch import BOS, PAD
from .dispatch import twin
from .loss import cross_entropy, sequence_logprobs
from .nn.bridge import Bridge
from .nn.decoder import Decoder, steps_backward, steps_forward
from .nn.encoder import Encoder
from .nn.layers import (Embedding, EmbeddingCache, LinearCache, dropout_backward, dropout_forward,
                        length_mask, log_softmax_forward)
from .nn.module import Module
from .nn.rnn import reverse_index, reverse_time
from .transformer import Transformer

CELL_NAMES = {"rnn": "rnn_tanh", "lstm": "lstm", "gru": "gru"}
ATTENTIONS = ("none", "bahdanau", "luong-dot", "luong-general")
BRIDGES = ("final", "zeros")


class Encoded(NamedTuple):
    """What the decoder needs from the source: the same for training and for decoding."""
    memory: object            # (S, B, M) encoder outputs, in the original source order
    projected: object         # (S, B, A) bahdanau's K W_k^T, else None
    mask: object              # (S, B) real source positions
    state: tuple              # decoder's initial state: tuple of (L, B, H)
    context_vector: object    # (B, H) cv, the top layer's summary, for context feeding; else None


class EncoderCache(NamedTuple):
    embedding: object
    src_dropout: object
    encoder: object
    reverse: object
    bridge: object


class ForwardCache(NamedTuple):
    encoded: Encoded
    encoder: EncoderCache
    emb: object               # (T, B, E) target embeddings after dropout
    tokens: object            # (T, B) the decoder's input tokens (reference or guessed)
    emb_mask: object          # (T, B, E) dropout mask or None
    steps: object             # what the decoder's time loop kept: T StepCaches (or its twin's cache)
    out_cache: object         # the projection's cache (it holds o_t, (T, B, H))
    weights: object           # (T, S, B) attention weights or None


class Seq2Seq(Module):
    """An encoder-decoder with optional attention; see the module docstring for the equations."""

    def __init__(self, src_vocab_size, tgt_vocab_size, cell="gru", attention="bahdanau", emb_size=256,
                 hidden_size=256, num_layers=1, bidirectional=False, dropout=0.0, teacher_forcing=1.0,
                 dtype="float32", seed=0, bridge="final", input_feeding=False, context_feeding=False,
                 reverse_source=False, label_smoothing=0.0, attentional_output=False,
                 deep_output=False):
        super().__init__(dtype, seed)
        if cell not in CELL_NAMES:
            raise ValueError(f"cell must be one of {tuple(CELL_NAMES)}, got {cell!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if bridge not in BRIDGES:
            raise ValueError(f"bridge must be one of {BRIDGES}, got {bridge!r}")
        if input_feeding and not attention.startswith("luong"):
            raise ValueError("input_feeding feeds Luong's attentional vector tanh(W_c [c; h]) into the next "
                             "step: it needs attention='luong-dot' or 'luong-general'")
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must be in [0, 1], got {teacher_forcing}")
        for name, size in (("src_vocab_size", src_vocab_size), ("tgt_vocab_size", tgt_vocab_size),
                           ("emb_size", emb_size), ("hidden_size", hidden_size)):
            if size < 1:
                raise ValueError(f"{name} must be >= 1, got {size}")
        self.config = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, cell=cell,
                           attention=attention, emb_size=emb_size, hidden_size=hidden_size,
                           num_layers=num_layers, bidirectional=bidirectional, dropout=dropout,
                           teacher_forcing=teacher_forcing, dtype=str(self.dtype), seed=seed, bridge=bridge,
                           input_feeding=input_feeding, context_feeding=context_feeding,
                           reverse_source=reverse_source, label_smoothing=label_smoothing,
                           attentional_output=attentional_output, deep_output=deep_output)
        self.attention, self.bridge_kind = attention, bridge
        self.teacher_forcing, self.dropout = teacher_forcing, dropout
        self.reverse_source, self.label_smoothing = reverse_source, label_smoothing
        self.context_feeding = context_feeding
        directions = 2 if bidirectional else 1
        # Luong's dot score K_s . q needs the memory as wide as the query: a bidirectional encoder then gives
        # each direction hidden_size / 2, so that [h_fwd ; h_bwd] has hidden_size (OpenNMT-py's brnn does so)
        encoder_hidden = hidden_size
        if bidirectional and attention == "luong-dot":
            if hidden_size % 2:
                raise ValueError(f"luong-dot attention with a bidirectional encoder gives each direction "
                                 f"hidden_size / 2 (so that the memory has the query's size): hidden_size must be "
                                 f"even, got {hidden_size}")
            encoder_hidden = hidden_size // 2
        self.src_embedding = self.add_module("src_embedding", Embedding(src_vocab_size, emb_size, PAD, dtype, seed))
        self.tgt_embedding = self.add_module("tgt_embedding", Embedding(tgt_vocab_size, emb_size, PAD, dtype,
                                                                        seed + 1))
        self.encoder = self.add_module("encoder", Encoder(CELL_NAMES[cell], emb_size, encoder_hidden, num_layers,
                                                          bidirectional, dropout, dtype, seed + 2))
        self.bridge = None
        if bidirectional and (bridge == "final" or context_feeding):
            self.bridge = self.add_module("bridge", Bridge(encoder_hidden, hidden_size, num_layers,
                                                           self.encoder.cell.state_size, dtype, seed + 3))
        self.decoder = self.add_module("decoder", Decoder(
            CELL_NAMES[cell], tgt_vocab_size, emb_size, hidden_size, directions * encoder_hidden, num_layers,
            attention, input_feeding, context_feeding, dropout, dtype, seed + 4, attentional_output, deep_output))
        self.flatten_parameters()              # every parameter a view of one buffer: Adam updates all in one call

    # ------------------------------------------------------------------ the source side

    def encode(self, src, src_lengths, train=False):
        """src (S, B) ids, src_lengths (B,) -> Encoded, EncoderCache."""
        xp = backend.array_module(src)
        rev = None
        if self.reverse_source:
            rev = reverse_index(src_lengths, src.shape[0])
            src = reverse_time(src, rev)
        emb, emb_cache = self.src_embedding.forward(src)
        emb, src_dropout = dropout_forward(emb, self.dropout, self.rng, train)
        memory, enc_state, enc_cache = self.encoder.encode(emb, src_lengths, rev, train)   # K, s_enc
        summary, bridge_cache = (self.bridge.forward(enc_state) if self.bridge is not None else (enc_state, None))
        if self.bridge_kind == "final":
            state = summary
        else:
            shape = (self.decoder.rnn.num_layers, src.shape[1], self.decoder.hidden_size)
            state = tuple(xp.zeros(shape, dtype=self.dtype) for _ in enc_state)
        context_vector = summary[0][-1] if self.context_feeding else None
        projected = self.decoder.attention.project_memory(memory) if self.decoder.attention else None
        mask = length_mask(src_lengths, src.shape[0])
        encoded = Encoded(memory, projected, mask, state, context_vector)
        return encoded, EncoderCache(emb_cache, src_dropout, enc_cache, rev, bridge_cache)

    def encode_backward(self, dmemory, dprojected, dstate0, dcontext_vector, cache, encoded):
        """Gradients arriving at the memory, the initial decoder state and z -> the source side's grads."""
        if dprojected is not None:
            extra = self.decoder.attention.project_memory_backward(dprojected, encoded.memory)
            dmemory = extra if dmemory is None else dmemory + extra
        dsummary = dstate0 if self.bridge_kind == "final" else None
        if dcontext_vector is not None:
            dsummary = tuple(backend.array_module(dcontext_vector).zeros_like(s) for s in encoded.state) \
                if dsummary is None else tuple(s.copy() for s in dsummary)
            dsummary[0][-1] += dcontext_vector
        denc_state = None
        if dsummary is not None:
            denc_state = self.bridge.backward(dsummary, cache.bridge) if self.bridge is not None else dsummary
        demb = self.encoder.encode_backward(dmemory, denc_state, cache.encoder, cache.reverse)
        demb = dropout_backward(demb, cache.src_dropout)
        self.src_embedding.backward(demb, cache.embedding)

    # ------------------------------------------------------------------ the whole model

    def forward(self, batch, train=True, teacher_forcing=None):
        """Batch -> logits (T, B, V), ForwardCache. The cache holds the attention weights (T, S, B).

        With teacher forcing (ratio 1, and always outside training) every decoder input is the reference
        token; below 1 some inputs are the model's own guesses (scheduled sampling).
        """
        outputs, logits, cache = self.forward_outputs(batch, train, teacher_forcing)
        if logits is None:
            logits, _ = self.decoder.out.forward(outputs)                # (T, B, V), every step in one product
        return logits, cache

    def forward_outputs(self, batch, train=True, teacher_forcing=None):
        """Batch -> the decoder's outputs o (T, B, H) before the projection, the logits where the time loop
        needed them already (scheduled sampling; else None), ForwardCache."""
        ratio = self.teacher_forcing if teacher_forcing is None else teacher_forcing
        encoded, enc_cache = self.encode(batch.src, batch.src_lengths, train)
        if ratio < 1.0 and train:
            return self.forward_sampled(batch, encoded, enc_cache, ratio)
        return self.forward_teacher_forced(batch, encoded, enc_cache, train)

    def forward_teacher_forced(self, batch, encoded, enc_cache, train):
        """Every input y_t-1 is the reference token: all inputs are known before the loop starts."""
        emb, _ = self.tgt_embedding.forward(batch.tgt_in)                # (T, B, E); backward needs the tokens only
        emb, emb_mask = dropout_forward(emb, self.dropout, self.rng, train)
        outputs, weights, step_caches = steps_forward(self.decoder, emb, encoded, train)   # the time loop
        return outputs, None, ForwardCache(encoded, enc_cache, emb, batch.tgt_in, emb_mask, step_caches,
                                           LinearCache(outputs), weights)

    def forward_sampled(self, batch, encoded, enc_cache, ratio):
        """Scheduled sampling: input y_t-1 is the reference token with probability ``ratio``, else the model's
        own guess argmax(logits_t-1), so each step's logits are needed before the next step starts."""
        xp = backend.array_module(batch.src)
        decoder = self.decoder
        size = batch.tgt_in.shape[1]
        state, feed = encoded.state, decoder.initial_feed(size)
        tokens, embs, emb_masks, outputs, logits, weights, step_caches = [], [], [], [], [], [], []
        for t in range(batch.tgt_in.shape[0]):
            token = batch.tgt_in[t]                                      # <bos> at t = 0
            if t > 0:
                use_reference = self.rng.random((size,), dtype=self.dtype) < ratio
                token = xp.where(use_reference, batch.tgt_in[t], best_output(logits[-1]))
            emb, _ = self.tgt_embedding.forward(token)
            emb, emb_mask = dropout_forward(emb, self.dropout, self.rng, True)
            output, state, feed, step_weights, step_cache = decoder.step_forward(
                decoder.embedding_projection(emb), state, feed, encoded, True, emb)
            step_logits, _ = decoder.out.forward(output)                 # the next step's guess needs them now
            tokens.append(token)
            embs.append(emb)
            emb_masks.append(emb_mask)
            outputs.append(output)
            logits.append(step_logits)
            weights.append(step_weights)
            step_caches.append(step_cache)
        outputs = xp.stack(outputs)
        return outputs, xp.stack(logits), ForwardCache(encoded, enc_cache, xp.stack(embs), xp.stack(tokens),
                                                       _stack(emb_masks), step_caches, LinearCache(outputs),
                                                       _stack(weights))

    def backward(self, dlogits, cache):
        """dlogits (T, B, V) -> adds every parameter's gradient (the mirror of ``forward``)."""
        self.outputs_backward(self.decoder.out.backward(dlogits, cache.out_cache), cache)   # all steps at once

    def outputs_backward(self, doutputs, cache):
        """doutputs (T, B, H), the gradient of the decoder's outputs -> adds every gradient below the projection
        (the mirror of ``forward_outputs``)."""
        demb, dstate, dmemory, dprojected, dcontext_vector = steps_backward(self.decoder, doutputs, cache.emb,
                                                                            cache.steps, cache.encoded)  # the loop
        self.target_embedding_backward(demb, cache)
        self.encode_backward(dmemory, dprojected, dstate, dcontext_vector, cache.encoder, cache.encoded)

    def target_embedding_backward(self, demb, cache):
        """demb (T, B, E) of the embeddings after dropout -> the target embedding's gradient."""
        demb = dropout_backward(demb, cache.emb_mask)
        self.tgt_embedding.backward(demb, EmbeddingCache(cache.tokens, self.tgt_embedding.params["weight"].shape[0]))

    # ------------------------------------------------------------------ the public contract

    def loss(self, batch):
        """Mean cross-entropy per target token, a Python float: no gradients, no dropout, reference inputs."""
        logits, _ = self.forward(batch, train=False)
        value, _ = cross_entropy(logits, batch.tgt_out, batch.tgt_lengths, label_smoothing=self.label_smoothing)
        return backend.to_float(value)

    def sequence_logprobs(self, batch):
        """(B,) float64: each target's log-probability log p(y | x) = sum_t log p(y_t | y_<t, x), teacher
        forced, no dropout, no label smoothing (what ``minis2s score`` prints)."""
        logits, _ = self.forward(batch, train=False)
        return sequence_logprobs(log_softmax_forward(logits), batch.tgt_out, batch.tgt_lengths)

    def loss_and_grads(self, batch, teacher_forcing=None):
        """The same loss, in training mode (dropout, teacher forcing ratio); fills ``grads`` (zeroed first).
        The loss stays where the model runs: a float on NumPy, a 0-d array on a GPU, so that a training step
        never waits for the device (``backend.to_float(loss)`` reads it)."""
        self.zero_grad()
        logits, cache = self.forward(batch, train=True, teacher_forcing=teacher_forcing)
        value, dlogits = cross_entropy(logits, batch.tgt_out, batch.tgt_lengths, label_smoothing=self.label_smoothing)
        self.backward(dlogits, cache)
        return value

    # ------------------------------------------------------------------ decoding, one step, no caches kept

    def start(self, src, src_lengths):
        """Encode for decoding: Encoded and the decoder's first (state, feed)."""
        encoded, _ = self.encode(src, src_lengths, train=False)
        return encoded, encoded.state, self.decoder.initial_feed(src.shape[1])

    def repeat_encoded(self, encoded, rows):
        """The Encoded of the sentences at ``rows`` (B',): beam search repeats each sentence k times."""
        return encoded._replace(memory=encoded.memory[:, rows], mask=encoded.mask[:, rows],
                                projected=None if encoded.projected is None else encoded.projected[:, rows],
                                context_vector=None if encoded.context_vector is None
                                else encoded.context_vector[rows])

    def select_state(self, state, feed, rows):
        """The decoder's state and feed of the beams at ``rows`` (B',): beam search follows its back-pointers."""
        return tuple(s[:, rows] for s in state), None if feed is None else feed[rows]

    @twin("model.step")
    def step(self, tokens, state, feed, encoded):
        """tokens (B,) -> log-probabilities (B, V), new state, new feed, attention weights (S, B) or None.

        One decoder step with nothing kept for a backward and no dropout: y_t-1's embedding, its part of
        layer 0's input side, the step, the output layer, log-softmax."""
        emb, _ = self.tgt_embedding.forward(tokens)                                  # E[y_t-1] (B, E)
        xw_emb = self.decoder.embedding_projection(emb)                              # (B, G*H)
        output, state, feed, weights, _ = self.decoder.step_forward(xw_emb, state, feed, encoded, train=False,
                                                                    emb=emb)
        logits, _ = self.decoder.out.forward(output)
        return log_softmax_forward(logits), state, feed, weights


def _model_class(config):
    """Transformer when a checkpoint's ``model`` config says ``arch = transformer``, else Seq2Seq
    (checkpoints written before the Transformer have no ``arch``)."""
    return Transformer if config.get("arch", "rnn") == "transformer" else Seq2Seq


def build(config):
    """The model a checkpoint's ``model`` config describes."""
    return _model_class(config)(**{k: v for k, v in config.items() if k != "arch"})


def full_config(config):
    """``config`` with every constructor option it leaves out at its default: what a checkpoint written
    before an option existed means (and what ``build`` then builds)."""
    parameters = inspect.signature(_model_class(config).__init__).parameters.values()
    return {**{p.name: p.default for p in parameters if p.default is not p.empty}, **config}


def best_output(scores):
    """argmax over the vocabulary (..., V), never <pad> or <bos>, which no sentence contains."""
    xp = backend.array_module(scores)
    allowed = xp.ones(scores.shape[-1], dtype=bool)
    allowed[[PAD, BOS]] = False
    return xp.where(allowed, scores, -xp.inf).argmax(axis=-1)


def _stack(arrays):
    if arrays[0] is None:
        return None
    return backend.array_module(arrays[0]).stack(arrays)
