"""The gradient checks behind ``minis2s gradcheck`` and the test suite.

Each ``check_*`` builds one layer in float64 at the given sizes, feeds it random
inputs, and returns {tensor name: max relative error} against finite differences
(see ``gradcheck``). The tests call them on hypothesis-drawn sizes; the command
line calls them on the small fixed sizes in ``CATALOGUE``.
"""
import numpy

from . import backend, gradcheck, loss
from .nn import layers

F64 = "float64"


def _normal(rng, shape):
    return backend.asarray(rng.standard_normal(shape), dtype=F64)


def check_linear(lead=(3, 2), in_features=4, out_features=5, seed=0):
    rng = numpy.random.default_rng(seed)
    layer = layers.Linear(in_features, out_features, dtype=F64, seed=seed)
    return gradcheck.check_function(layer.forward, layer.backward,
                                    {"x": _normal(rng, (*lead, in_features))}, module=layer, seed=seed)


def check_embedding(lead=(4, 3), vocab=7, dim=3, seed=0):
    """Ids drawn with repeats, so the scatter-add must accumulate."""
    rng = numpy.random.default_rng(seed)
    layer = layers.Embedding(vocab, dim, dtype=F64, seed=seed)
    ids = backend.asarray(rng.integers(0, vocab, size=lead))

    def backward(dout, cache):
        layer.backward(dout, cache)
        return (None,)

    return gradcheck.check_function(layer.forward, backward, {"ids": ids}, module=layer, seed=seed)


def check_dropout(shape=(4, 5), p=0.3, seed=0):
    """The mask is fixed (the generator restarts at each call), so the layer is linear in x."""
    rng = numpy.random.default_rng(seed)
    layer = layers.Dropout(p, dtype=F64, seed=seed)

    def forward(x):
        layer.reseed(seed)
        return layer.forward(x, train=True)

    return gradcheck.check_function(forward, layer.backward, {"x": _normal(rng, shape)}, seed=seed)


def _check_activation(forward, backward, shape, seed, shift=0.0):
    rng = numpy.random.default_rng(seed)
    x = _normal(rng, shape) + shift
    return gradcheck.check_function(lambda a: (forward(a), forward(a)), lambda dy, y: backward(dy, y),
                                    {"x": x}, seed=seed)


def check_tanh(shape=(3, 4), seed=0):
    return _check_activation(layers.tanh_forward, layers.tanh_backward, shape, seed)


def check_sigmoid(shape=(3, 4), seed=0):
    return _check_activation(layers.sigmoid_forward, layers.sigmoid_backward, shape, seed)


def check_relu(shape=(3, 4), seed=0):
    """Inputs kept away from the kink at 0, where the derivative does not exist."""
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal(shape)
    x = backend.asarray(numpy.where(numpy.abs(x) < 1e-3, 0.5, x), dtype=F64)
    return gradcheck.check_function(lambda a: (layers.relu_forward(a),) * 2,
                                    lambda dy, y: layers.relu_backward(dy, y), {"x": x}, seed=seed)


def check_softmax(shape=(3, 5), seed=0):
    return _check_activation(layers.softmax_forward, layers.softmax_backward, shape, seed)


def check_log_softmax(shape=(3, 5), seed=0):
    return _check_activation(layers.log_softmax_forward, layers.log_softmax_backward, shape, seed)


def check_cross_entropy(steps=4, batch=3, vocab=6, reduction="mean", label_smoothing=0.0, seed=0):
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

    return gradcheck.check_function(forward, backward, {"logits": logits}, seed=seed)


# name -> zero-argument check at the fixed sizes the command line uses
CATALOGUE = {
    "Embedding": check_embedding,
    "Linear": check_linear,
    "Dropout (fixed mask)": check_dropout,
    "tanh": check_tanh,
    "sigmoid": check_sigmoid,
    "relu": check_relu,
    "softmax": check_softmax,
    "log_softmax": check_log_softmax,
    "cross-entropy (mean)": lambda: check_cross_entropy(reduction="mean"),
    "cross-entropy (sum)": lambda: check_cross_entropy(reduction="sum"),
    "cross-entropy (sequence)": lambda: check_cross_entropy(reduction="sequence"),
    "cross-entropy (label smoothing 0.1)": lambda: check_cross_entropy(label_smoothing=0.1),
}


def run_catalogue(names=None):
    """Yield (name, {tensor: error}) for each check of the catalogue (or those named)."""
    for name, check in CATALOGUE.items():
        if names is None or name in names:
            yield name, check()
