"""The gradient checks behind ``minis2s gradcheck`` and the test suite.

Each ``*_problem`` builds one layer (or a whole model) in float64 at the given sizes with random
inputs and returns the ``gradcheck.Problem``; each ``check_*`` runs it and returns {tensor name: max
relative error} against finite differences. The tests call them on hypothesis-drawn sizes; the
command line runs the small fixed sizes in ``CATALOGUE``, on the reference path unless told otherwise.
"""
import numpy

from . import backend, gradcheck, loss
from .nn import layer_norm, layers, multihead, rnn, transformer

F64 = "float64"


def _checked(problem):
    """problem(...) -> Problem  becomes  check(...) -> {tensor name: max relative error}."""
    def check(*args, **kwargs):
        return gradcheck.check(problem(*args, **kwargs))
    check.__name__ = check.__qualname__ = "check_" + problem.__name__[:-len("_problem")]
    check.__doc__ = problem.__doc__
    check.problem = problem
    return check


def _normal(rng, shape):
    return backend.asarray(rng.standard_normal(shape), dtype=F64)


def linear_problem(lead=(3, 2), in_features=4, out_features=5, seed=0):
    rng = numpy.random.default_rng(seed)
    layer = layers.Linear(in_features, out_features, dtype=F64, seed=seed)
    return gradcheck.function_problem(layer.forward, layer.backward,
                                    {"x": _normal(rng, (*lead, in_features))}, module=layer, seed=seed)


def embedding_problem(lead=(4, 3), vocab=7, dim=3, seed=0):
    """Ids drawn with repeats, so the scatter-add must accumulate."""
    rng = numpy.random.default_rng(seed)
    layer = layers.Embedding(vocab, dim, dtype=F64, seed=seed)
    ids = backend.asarray(rng.integers(0, vocab, size=lead))

    def backward(dout, cache):
        layer.backward(dout, cache)
        return (None,)

    return gradcheck.function_problem(layer.forward, backward, {"ids": ids}, module=layer, seed=seed)


def dropout_problem(shape=(4, 5), p=0.3, seed=0):
    """The mask is fixed (the generator restarts at each call), so the layer is linear in x."""
    rng = numpy.random.default_rng(seed)
    layer = layers.Dropout(p, dtype=F64, seed=seed)

    def forward(x):
        layer.reseed(seed)
        return layer.forward(x, train=True)

    return gradcheck.function_problem(forward, layer.backward, {"x": _normal(rng, shape)}, seed=seed)


def _activation_problem(forward, backward, shape, seed, shift=0.0):
    rng = numpy.random.default_rng(seed)
    x = _normal(rng, shape) + shift
    return gradcheck.function_problem(lambda a: (forward(a), forward(a)), lambda dy, y: backward(dy, y),
                                    {"x": x}, seed=seed)


def tanh_problem(shape=(3, 4), seed=0):
    return _activation_problem(layers.tanh_forward, layers.tanh_backward, shape, seed)


def sigmoid_problem(shape=(3, 4), seed=0):
    return _activation_problem(layers.sigmoid_forward, layers.sigmoid_backward, shape, seed)


def relu_problem(shape=(3, 4), seed=0):
    """Inputs kept away from the kink at 0, where the derivative does not exist."""
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal(shape)
    x = backend.asarray(numpy.where(numpy.abs(x) < 1e-3, 0.5, x), dtype=F64)
    return gradcheck.function_problem(lambda a: (layers.relu_forward(a),) * 2,
                                    lambda dy, y: layers.relu_backward(dy, y), {"x": x}, seed=seed)


def softmax_problem(shape=(3, 5), seed=0):
    return _activation_problem(layers.softmax_forward, layers.softmax_backward, shape, seed)


def log_softmax_problem(shape=(3, 5), seed=0):
    return _activation_problem(layers.log_softmax_forward, layers.log_softmax_backward, shape, seed)


def cross_entropy_problem(steps=4, batch=3, vocab=6, reduction="mean", label_smoothing=0.0, seed=0):
    """Padded targets (random lengths) with the given reduction and smoothing."""
    rng = numpy.random.default_rng(seed)
    logits = _normal(rng, (steps, batch, vocab))
    targets = backend.asarray(rng.integers(0, vocab, size=(steps, batch)))
    lengths = backend.asarray(rng.integers(1, steps + 1, size=batch))

    def forward(a):
        value, dlogits = loss.cross_entropy(a, targets, lengths, reduction=reduction,
                                            label_smoothing=label_smoothing)
        return backend.asarray(value, dtype=F64), dlogits

    def backward(dloss, dlogits):
        if reduction == "sequence":  # sequence b's loss depends on logits[:, b] only
            return dlogits * dloss[None, :, None]
        return dlogits * dloss

    return gradcheck.function_problem(forward, backward, {"logits": logits}, seed=seed)


RECURRENT = {"rnn": lambda *a, **k: rnn.RNN(*a, **k),
             "rnn_relu": lambda *a, **k: rnn.RNN(*a, nonlinearity="relu", **k),
             "lstm": lambda *a, **k: rnn.LSTM(*a, **k),
             "gru": lambda *a, **k: rnn.GRU(*a, **k)}


def make_recurrent(cell, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
                   dtype=F64, seed=0):
    return RECURRENT[cell](input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                           dropout=dropout, dtype=dtype, seed=seed)


def recurrent_problem(cell="lstm", num_layers=1, bidirectional=False, lengths=(4, 2, 3), input_size=3,
                    hidden_size=4, dropout=0.0, seed=0, max_elements=None):
    """x, the initial state and every parameter, with padding (lengths) and, if dropout > 0, a fixed mask.

    Upstream gradients arrive both at the outputs and at the final states.
    """
    rng = numpy.random.default_rng(seed)
    layer = make_recurrent(cell, input_size, hidden_size, num_layers, bidirectional, dropout, seed=seed)
    steps, batch = max(lengths), len(lengths)
    states = layer.num_layers * layer.num_directions
    inputs = {"x": _normal(rng, (steps, batch, input_size)), "h0": _normal(rng, (states, batch, hidden_size))}
    if cell == "lstm":
        inputs["c0"] = _normal(rng, (states, batch, hidden_size))
    lengths = backend.asarray(numpy.array(lengths))

    def forward(x, h0, c0=None):
        layer.reseed(seed)                              # the same dropout mask at every call
        out, state_n, cache = layer.forward(x, lengths, (h0, c0) if c0 is not None else h0, train=True)
        return (out, *state_n) if c0 is not None else (out, state_n), cache

    def backward(douts, cache):
        dout, *dstate = douts
        dx, dstate0 = layer.backward(dout, tuple(dstate) if len(dstate) == 2 else dstate[0], cache)
        return (dx, *dstate0) if len(dstate) == 2 else (dx, dstate0)

    h = 1e-6 if cell == "rnn_relu" else 1e-5      # a smaller nudge almost never crosses relu's kink at 0
    return gradcheck.function_problem(forward, backward, inputs, module=layer, seed=seed, max_elements=max_elements,
                                    h=h)


def layer_norm_problem(lead=(3, 2), size=5, seed=0):
    """LayerNorm with a weight and bias away from 1 and 0 (with w = 1 and dout = 1 the true dx is 0)."""
    rng = numpy.random.default_rng(seed)
    layer = layer_norm.LayerNorm(size, dtype=F64, seed=seed)
    layer.params["weight"][...] = backend.asarray(1.0 + 0.5 * rng.standard_normal(size))
    layer.params["bias"][...] = backend.asarray(rng.standard_normal(size))
    return gradcheck.function_problem(layer.forward, layer.backward, {"x": _normal(rng, (*lead, size))},
                                      module=layer, seed=seed)


def padding_mask(lengths, steps):
    """(B, S) True at the padded positions of sequences of ``lengths``: PyTorch's key_padding_mask."""
    return backend.asarray(numpy.arange(steps)[None, :] >= numpy.asarray(lengths)[:, None])


def scaled_dot_product_problem(steps=4, source=5, batch=2, heads=2, size=3, lengths=(5, 2), causal=True, seed=0):
    """q, k, v of two heads; padded keys and (with causal, T <= S) the future masked."""
    rng = numpy.random.default_rng(seed)
    xp = backend.xp()
    mask = multihead.attention_mask(padding_mask(lengths, source), causal, steps, source, batch, xp)
    return gradcheck.function_problem(
        lambda q, k, v: multihead.scaled_dot_product_forward(q, k, v, mask), multihead.scaled_dot_product_backward,
        {"q": _normal(rng, (batch, heads, steps, size)), "k": _normal(rng, (batch, heads, source, size)),
         "v": _normal(rng, (batch, heads, source, size))}, seed=seed)


def multihead_problem(steps=4, source=5, batch=3, embed=6, heads=2, self_attention=True, causal=False,
                      lengths=(4, 2, 3), seed=0, separate_value=False):
    """MultiHeadAttention over a padded batch (key_padding_mask), self-attention (query = key = value: their
    gradients add) or attention over another sequence; biases drawn away from PyTorch's zeros."""
    rng = numpy.random.default_rng(seed)
    attention = multihead.MultiHeadAttention(embed, heads, dtype=F64, seed=seed)
    for name in ("in_proj_bias", "out_proj.bias"):
        attention.params[name][...] = backend.asarray(0.3 * rng.standard_normal(attention.params[name].shape))
    keys = steps if self_attention else source
    mask = padding_mask(lengths, keys)
    if self_attention:
        def forward(x):
            out, _, cache = attention.forward(x, x, x, mask, causal)
            return out, cache

        def backward(dout, cache):
            dx, _, _ = attention.backward(dout, cache)                  # x was all three: their sum, once
            return dx
        inputs = {"x": _normal(rng, (steps, batch, embed))}
    elif separate_value:                                                # three arrays: three products
        def forward(query, key, value):
            out, _, cache = attention.forward(query, key, value, mask, causal)
            return out, cache

        def backward(dout, cache):
            return attention.backward(dout, cache)
        inputs = {"query": _normal(rng, (steps, batch, embed)), "key": _normal(rng, (source, batch, embed)),
                  "value": _normal(rng, (source, batch, embed))}
    else:
        def forward(query, memory):
            out, _, cache = attention.forward(query, memory, memory, mask, causal)
            return out, cache

        def backward(dout, cache):
            dquery, dmemory, _ = attention.backward(dout, cache)        # the memory was key and value
            return dquery, dmemory
        inputs = {"query": _normal(rng, (steps, batch, embed)), "memory": _normal(rng, (source, batch, embed))}
    return gradcheck.function_problem(forward, backward, inputs, module=attention, seed=seed)


def _redraw_biases(module, rng):
    """Biases and layer norms' weights drawn away from PyTorch's zeros and ones (with LN's weight 1 and bias
    0 some gradients vanish by symmetry, and a wrong backward could hide there)."""
    for name, value in module.params.items():
        if name.endswith("bias"):
            value[...] = backend.asarray(0.3 * rng.standard_normal(value.shape))
        elif name.endswith(".weight") and name.split(".")[-2].startswith("norm"):     # a layer norm's
            value[...] = backend.asarray(1.0 + 0.3 * rng.standard_normal(value.shape))


def encoder_layer_problem(norm_first=False, dropout=0.2, steps=5, batch=3, d_model=6, heads=2, ff=7,
                          lengths=(5, 2, 4), seed=0):
    """TransformerEncoderLayer over a padded batch, its dropout masks fixed (the generator restarts each call)."""
    rng = numpy.random.default_rng(seed)
    layer = transformer.TransformerEncoderLayer(d_model, heads, ff, dropout, norm_first, dtype=F64, seed=seed)
    _redraw_biases(layer, rng)
    mask = padding_mask(lengths, steps)

    def forward(x):
        layer.reseed(seed)
        return layer.forward(x, mask, train=True)
    return gradcheck.function_problem(forward, layer.backward, {"x": _normal(rng, (steps, batch, d_model))},
                                      module=layer, seed=seed)


def decoder_layer_problem(norm_first=True, dropout=0.2, steps=4, source=5, batch=3, d_model=6, heads=2, ff=7,
                          tgt_lengths=(4, 1, 3), src_lengths=(5, 2, 3), seed=0):
    """TransformerDecoderLayer: causal self-attention with the target's padding, attention over a padded
    memory, the feed-forward block; dropout masks fixed."""
    rng = numpy.random.default_rng(seed)
    layer = transformer.TransformerDecoderLayer(d_model, heads, ff, dropout, norm_first, dtype=F64, seed=seed)
    _redraw_biases(layer, rng)
    tgt_mask, src_mask = padding_mask(tgt_lengths, steps), padding_mask(src_lengths, source)

    def forward(y, memory):
        layer.reseed(seed)
        return layer.forward(y, memory, tgt_mask, src_mask, train=True)
    return gradcheck.function_problem(forward, layer.backward, {"y": _normal(rng, (steps, batch, d_model)),
                                                                "memory": _normal(rng, (source, batch, d_model))},
                                      module=layer, seed=seed)


def transformer_input_problem(positional="learned", steps=4, batch=3, vocab=7, d_model=6, dropout=0.2, seed=0):
    """sqrt(E) E[tokens] + P, then dropout: the embedding's (and the learned positions') gradients."""
    rng = numpy.random.default_rng(seed)
    layer = transformer.TransformerInput(vocab, d_model, 0, positional, 16, dropout, dtype=F64, seed=seed)
    tokens = backend.asarray(rng.integers(1, vocab, size=(steps, batch)))         # <pad> (0) learns nothing

    def forward(ids):
        layer.reseed(seed)
        return layer.forward(ids, 2, train=True)                       # positions 2.., as a decoding step's

    def backward(dout, cache):
        layer.backward(dout, cache)
        return (None,)
    return gradcheck.function_problem(forward, backward, {"ids": tokens}, module=layer, seed=seed)


def transformer_problem(norm_first=True, tie_embeddings=False, positional="sinusoidal", dropout=0.0,
                        label_smoothing=0.0, num_layers=2, src_lengths=(3, 1, 4), tgt_lengths=(2, 3, 1), seed=0,
                        max_elements=None):
    """Every parameter of a whole Transformer through ``loss_and_grads``, on a padded batch."""
    from .transformer import Transformer
    rng = numpy.random.default_rng(seed)
    model = Transformer(9, 8, d_model=4, num_heads=2, num_encoder_layers=num_layers, num_decoder_layers=num_layers,
                        ff_size=5, dropout=dropout, norm_first=norm_first, positional=positional,
                        tie_embeddings=tie_embeddings, label_smoothing=label_smoothing, dtype=F64, seed=seed,
                        max_len=16)
    _redraw_biases(model, rng)
    batch = random_batch(rng, src_lengths, tgt_lengths, 9, 8)
    return whole_model_problem(model, batch, label_smoothing, seed, max_elements)


def transformer_logits_problem(norm_first=False, tie_embeddings=True, seed=0, max_elements=None):
    """A Transformer's ``forward`` to the logits and its ``backward`` from a random dlogits at the real
    positions (the path without the loss: L = sum logits * dlogits), on a padded batch."""
    from .transformer import Transformer
    rng = numpy.random.default_rng(seed)
    model = Transformer(9, 8, d_model=4, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, ff_size=5,
                        dropout=0.0, norm_first=norm_first, tie_embeddings=tie_embeddings, dtype=F64, seed=seed)
    _redraw_biases(model, rng)
    batch = random_batch(rng, (3, 1, 4), (2, 3, 1), 9, 8)
    real = layers.length_mask(batch.tgt_lengths, batch.tgt_in.shape[0])[..., None]
    dlogits = _normal(rng, model.forward(batch, train=False)[0].shape) * real   # padded outputs unused, as
    # in the loss: the <pad> row, which learns nothing, feeds only them

    def objective():
        return backend.to_float((model.forward(batch, train=False)[0] * dlogits).sum())

    def analytic():
        model.zero_grad()
        _, cache = model.forward(batch, train=False)
        model.backward(dlogits, cache)
        return {name: grad.copy() for name, grad in model.grads.items()}

    return gradcheck.Problem(objective, model.params, analytic, max_elements, 1e-5, seed)


def whole_model_problem(model, batch, label_smoothing, seed, max_elements=None):
    """Every parameter of a model (Seq2Seq or Transformer) through ``loss_and_grads``; the objective the
    same mean cross-entropy from ``forward``, the dropout generator restarted at each call."""
    from .loss import cross_entropy

    def objective():
        model.reseed(seed)
        logits, _ = model.forward(batch, train=True)
        return cross_entropy(logits, batch.tgt_out, batch.tgt_lengths, label_smoothing=label_smoothing)[0]

    def analytic():
        model.reseed(seed)
        model.loss_and_grads(batch)
        return {name: grad.copy() for name, grad in model.grads.items()}

    return gradcheck.Problem(objective, model.params, analytic, max_elements, 1e-5, seed)


def unit_scale(module, seed):
    """Redraw every parameter N(0, 1), so that no tensor's gradient is too small to tell from
    finite-difference rounding noise (PyTorch-default scales leave some attention gradients at 1e-5)."""
    rng = numpy.random.default_rng(seed + 99)
    for value in module.params.values():
        value[...] = backend.asarray(rng.standard_normal(value.shape), dtype=value.dtype)
    for name, sub in module.modules.items():
        if getattr(sub, "padding_idx", None) is not None:       # the padding row stays zero, as in training
            sub.params["weight"][sub.padding_idx] = 0


def random_batch(rng, src_lengths, tgt_lengths, src_vocab, tgt_vocab):
    from .batch import collate
    src = [rng.integers(4, src_vocab, size=n).tolist() for n in src_lengths]
    tgt = [rng.integers(4, tgt_vocab, size=n).tolist() for n in tgt_lengths]
    return collate(src, tgt)


def seq2seq_problem(cell="gru", attention="bahdanau", bidirectional=False, input_feeding=False,
                  context_feeding=False, teacher_forcing=1.0, num_layers=1, dropout=0.0, reverse_source=False,
                  label_smoothing=0.0, bridge="final", src_lengths=(3, 1, 4), tgt_lengths=(2, 3, 1),
                  emb_size=3, hidden_size=4, seed=0, max_elements=None, attentional_output=False,
                  deep_output=False):
    """Every parameter of a whole model through ``loss_and_grads`` (mean cross-entropy per token).

    With teacher_forcing < 1 the sampled schedule is fixed: the generator restarts at each call,
    so the same coins choose the same positions for the model's own guesses.
    """
    from .model import Seq2Seq
    rng = numpy.random.default_rng(seed)
    model = Seq2Seq(9, 8, cell=cell, attention=attention, emb_size=emb_size, hidden_size=hidden_size,
                    num_layers=num_layers, bidirectional=bidirectional, dropout=dropout,
                    teacher_forcing=teacher_forcing, dtype=F64, seed=seed, bridge=bridge,
                    input_feeding=input_feeding, context_feeding=context_feeding, reverse_source=reverse_source,
                    label_smoothing=label_smoothing, attentional_output=attentional_output,
                    deep_output=deep_output)
    unit_scale(model, seed)
    batch = random_batch(rng, src_lengths, tgt_lengths, 9, 8)
    return whole_model_problem(model, batch, label_smoothing, seed, max_elements)


# check_X(...) runs X_problem(...): {tensor name: max relative error}
check_linear = _checked(linear_problem)
check_embedding = _checked(embedding_problem)
check_dropout = _checked(dropout_problem)
check_tanh = _checked(tanh_problem)
check_sigmoid = _checked(sigmoid_problem)
check_relu = _checked(relu_problem)
check_softmax = _checked(softmax_problem)
check_log_softmax = _checked(log_softmax_problem)
check_cross_entropy = _checked(cross_entropy_problem)
check_recurrent = _checked(recurrent_problem)
check_seq2seq = _checked(seq2seq_problem)


# name -> the zero-argument Problem the command line checks, at small fixed sizes
CATALOGUE = {
    "Embedding": embedding_problem,
    "Linear": linear_problem,
    "Dropout (fixed mask)": dropout_problem,
    "tanh": tanh_problem,
    "sigmoid": sigmoid_problem,
    "relu": relu_problem,
    "softmax": softmax_problem,
    "log_softmax": log_softmax_problem,
    "cross-entropy (mean)": lambda: cross_entropy_problem(reduction="mean"),
    "cross-entropy (sum)": lambda: cross_entropy_problem(reduction="sum"),
    "cross-entropy (sequence)": lambda: cross_entropy_problem(reduction="sequence"),
    "cross-entropy (label smoothing 0.1)": lambda: cross_entropy_problem(label_smoothing=0.1),
    "RNN tanh (2 layers, bidirectional, padded, dropout)":
        lambda: recurrent_problem("rnn", 2, True, dropout=0.3),
    "RNN relu (2 layers, bidirectional, padded)": lambda: recurrent_problem("rnn_relu", 2, True),
    "LSTM (2 layers, bidirectional, padded, dropout)": lambda: recurrent_problem("lstm", 2, True, dropout=0.3),
    "GRU (2 layers, bidirectional, padded, dropout)": lambda: recurrent_problem("gru", 2, True, dropout=0.3),
    "LayerNorm (weight and bias not 1 and 0)": layer_norm_problem,
    "scaled dot-product attention (key padding, causal)": scaled_dot_product_problem,
    "multi-head self-attention (key padding, causal)": lambda: multihead_problem(causal=True),
    "multi-head attention over a source (key padding)": lambda: multihead_problem(self_attention=False),
    "Transformer input (embedding x sqrt(E) + learned positions, dropout)": transformer_input_problem,
    "Transformer encoder layer (post-norm, key padding, dropout)": encoder_layer_problem,
    "Transformer encoder layer (pre-norm, key padding)": lambda: encoder_layer_problem(True, 0.0),
    "Transformer decoder layer (pre-norm, causal, both paddings, dropout)": decoder_layer_problem,
    "Transformer decoder layer (post-norm, causal, both paddings)": lambda: decoder_layer_problem(False, 0.0),
    "Transformer (pre-norm, untied, sinusoidal, padded, dropout)": lambda: transformer_problem(dropout=0.2),
    "Transformer (pre-norm, tied embeddings, learned positions, smoothing)":
        lambda: transformer_problem(tie_embeddings=True, positional="learned", label_smoothing=0.1),
    "Transformer (post-norm, tied embeddings, padded, dropout)":
        lambda: transformer_problem(norm_first=False, tie_embeddings=True, dropout=0.2),
    "Transformer logits, forward and backward (post-norm, tied, padded)": transformer_logits_problem,
    "Bahdanau attention (Seq2Seq, GRU, bidirectional)":
        lambda: seq2seq_problem("gru", "bahdanau", bidirectional=True),
    "Luong dot attention (Seq2Seq, LSTM, input feeding)":
        lambda: seq2seq_problem("lstm", "luong-dot", input_feeding=True),
    "Luong dot attention, bidirectional (Seq2Seq, GRU, H/2 a direction)":
        lambda: seq2seq_problem("gru", "luong-dot", bidirectional=True),
    "Luong general attention (Seq2Seq, RNN, bidirectional)":
        lambda: seq2seq_problem("rnn", "luong-general", bidirectional=True),
    "Seq2Seq LSTM, no attention, context feeding, reversed source":
        lambda: seq2seq_problem("lstm", "none", context_feeding=True, reverse_source=True),
    "Seq2Seq GRU+Bahdanau, 2 layers, dropout, sampled schedule":
        lambda: seq2seq_problem("gru", "bahdanau", num_layers=2, dropout=0.3, teacher_forcing=0.5,
                              tgt_lengths=(4, 3, 5)),
    "Seq2Seq GRU+Bahdanau, attentional output, context feeding":
        lambda: seq2seq_problem("gru", "bahdanau", attentional_output=True, context_feeding=True, dropout=0.2),
    "Seq2Seq LSTM+Bahdanau, attentional output, 2 layers, sampled":
        lambda: seq2seq_problem("lstm", "bahdanau", attentional_output=True, num_layers=2, teacher_forcing=0.5,
                              bidirectional=True, tgt_lengths=(4, 3, 5)),
    "Seq2Seq GRU+Bahdanau, deep output, bidir, dropout, sampled":
        lambda: seq2seq_problem("gru", "bahdanau", attentional_output=True, deep_output=True, bidirectional=True,
                              dropout=0.2, teacher_forcing=0.5, tgt_lengths=(4, 3, 5)),
    "Seq2Seq LSTM+Luong general, bidir, 2 layers, smoothing":
        lambda: seq2seq_problem("lstm", "luong-general", bidirectional=True, num_layers=2, input_feeding=True,
                              label_smoothing=0.1),
}


def run_catalogue(names=None):
    """Yield (name, {tensor: error}) for each check of the catalogue (or those named)."""
    for name, problem in CATALOGUE.items():
        if names is None or name in names:
            yield name, gradcheck.check(problem())
