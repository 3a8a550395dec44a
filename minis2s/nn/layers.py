"""Feed-forward building blocks, each forward beside its backward.

Embedding (lookup table, W: (V, E))
    forward:   out[...] = W[ids[...]]
    backward:  dW[v] += sum of dout[...] over every position where ids == v     (a scatter-add:
               a row used twice gets both gradients; the padding_idx row gets none)

Linear (W: (out, in), b: (out,)), any number of leading dimensions
    forward:   y = x W^T + b
    backward:  dx = dy W,   dW += dy^T x,   db += sum of dy over the leading dimensions

Dropout (inverted; p = drop probability)
    forward:   m = [u >= p] / (1 - p) with u ~ U[0, 1),  y = x * m    (training only; identity otherwise)
    backward:  dx = dy * m

Activations, derivatives from the saved output y:
    tanh:      y = tanh(a),              da = dy * (1 - y^2)
    sigmoid:   y = 1 / (1 + e^-a),       da = dy * y * (1 - y)
    relu:      y = max(a, 0),            da = dy * [y > 0]

Softmax over the last axis, with the maximum subtracted so that exp never overflows:
    y = exp(a - max a) / sum exp(a - max a)          da = y * (dy - sum(dy * y))
    log_softmax: l = (a - max a) - log sum exp(a - max a),   da = dy - softmax(a) * sum(dy)
"""
from typing import NamedTuple

from .. import backend
from ..dispatch import twin
from . import init
from .module import Module


# ----------------------------------------------------------------------------- activations

def tanh_forward(a):
    return backend.array_module(a).tanh(a)


def tanh_backward(dy, y):
    return dy * (1 - y * y)  # d tanh(a)/da = 1 - tanh(a)^2


def sigmoid_forward(a):
    # 1/(1+e^-a) written through tanh: equal in exact arithmetic, and never overflows.
    return 0.5 * (1 + backend.array_module(a).tanh(0.5 * a))


def sigmoid_backward(dy, y):
    return dy * y * (1 - y)  # d sigma(a)/da = sigma(a) (1 - sigma(a))


def relu_forward(a):
    return backend.array_module(a).maximum(a, 0)


def relu_backward(dy, y):
    return dy * (y > 0)


def softmax_forward(a, axis=-1):
    """softmax(a) = exp(a - max a) / sum exp(a - max a) along ``axis``; an entry of -inf gets exactly 0
    (a masked position: the Transformer's attention)."""
    xp = backend.array_module(a)
    shifted = a - a.max(axis=axis, keepdims=True)  # largest exponent is e^0 = 1
    e = xp.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(dy, y, axis=-1):
    # da_j = sum_i dy_i dy_i/da_j = y_j (dy_j - sum_i dy_i y_i)
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def log_softmax_forward(a, axis=-1):
    """log softmax(a) = a - max a - log sum exp(a - max a) along ``axis`` (the maximum keeps exp from
    overflowing)."""
    xp = backend.array_module(a)
    shifted = a - a.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax_backward(dy, logp, axis=-1):
    # dl_i/da_j = [i == j] - softmax_j  =>  da = dy - softmax * sum(dy)
    xp = backend.array_module(dy)
    return dy - xp.exp(logp) * dy.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------- embedding

class EmbeddingCache(NamedTuple):
    ids: object          # (...) integer token ids
    num_rows: int        # V


def embedding_forward(weight, ids):
    """weight: (V, E), ids: (...) integers  ->  out: (..., E)."""
    return weight[ids], EmbeddingCache(ids=ids, num_rows=weight.shape[0])


def embedding_backward(dout, cache, dweight, padding_idx=None):
    """Scatter-add the rows of dout (..., E) into dweight (V, E), in place; the padding row gets nothing."""
    ids = cache.ids.reshape(-1)
    rows = dout.reshape(ids.shape[0], -1)
    scatter_add_rows(dweight, ids, rows, -1 if padding_idx is None else padding_idx)


@twin("embedding.scatter_add_rows")
def scatter_add_rows(target, ids, rows, skip=-1):
    """target[ids[n]] += rows[n] for every n, accumulating repeated ids; rows whose id is ``skip`` are left out."""
    xp = backend.array_module(target)
    rows = rows * (ids != skip)[:, None]             # the padding row learns nothing
    xp.add.at(target, ids, rows)                     # on CuPy: atomic adds (its CUDA twin sorts instead)


class Embedding(Module):
    """A table of V vectors of size E; ids in, vectors out.

    Initialised N(0, 1) as in PyTorch; the ``padding_idx`` row starts at zero and gets no gradient.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=None, seed=0):
        super().__init__(dtype, seed)
        weight = self.init_rng.normal(0.0, 1.0, size=(num_embeddings, embedding_dim))
        if padding_idx is not None:
            weight[padding_idx] = 0.0
        self.padding_idx = padding_idx
        self.add_param("weight", weight)

    def forward(self, ids):
        return embedding_forward(self.params["weight"], ids)

    def backward(self, dout, cache):
        embedding_backward(dout, cache, self.grads["weight"], self.padding_idx)


# ----------------------------------------------------------------------------- linear

class LinearCache(NamedTuple):
    x: object            # (..., in)


def linear_forward(x, weight, bias=None):
    """x: (..., in), weight: (out, in), bias: (out,) or None  ->  y: (..., out)."""
    x2 = x.reshape(-1, x.shape[-1])                 # one (N, in) x (in, out) product, not one per leading index
    y = x2 @ weight.T
    if bias is not None:
        y += bias
    return y.reshape(x.shape[:-1] + (weight.shape[0],)), LinearCache(x=x)


def linear_backward(dy, cache, weight, dweight, dbias=None):
    """Returns dx (..., in); adds dW = dy^T x and db = sum dy into dweight, dbias."""
    x2 = cache.x.reshape(-1, cache.x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    dweight += dy2.T @ x2               # y = x W^T  =>  dW = dy^T x
    if dbias is not None:
        dbias += dy2.sum(axis=0)        # each output unit's bias sees every row
    return (dy2 @ weight).reshape(cache.x.shape)    # dx = dy W


class Linear(Module):
    """y = x W^T + b, initialised as PyTorch's nn.Linear: W by He's uniform rule with leaky-relu slope
    a = sqrt(5), which is U(-1/sqrt(in), 1/sqrt(in)), and b ~ U(-1/sqrt(in), 1/sqrt(in)) (docs/derivations/
    initialisation.md)."""

    def __init__(self, in_features, out_features, bias=True, dtype=None, seed=0):
        super().__init__(dtype, seed)
        self.add_param("weight", init.kaiming_uniform((out_features, in_features), self.init_rng, "leaky_relu",
                                                      a=5 ** 0.5))
        self.has_bias = bias
        if bias:
            self.add_param("bias", init.uniform((out_features,), 1.0 / in_features ** 0.5, self.init_rng))

    def forward(self, x):
        return linear_forward(x, self.params["weight"], self.params.get("bias"))

    def backward(self, dy, cache):
        return linear_backward(dy, cache, self.params["weight"], self.grads["weight"], self.grads.get("bias"))


# ----------------------------------------------------------------------------- masks

def length_mask(lengths, steps):
    """(T, B) boolean mask m_t: True where t < lengths[b], a real (not padded) position."""
    xp = backend.array_module(lengths)
    return xp.arange(steps)[:, None] < lengths[None, :]


# ----------------------------------------------------------------------------- dropout

def dropout_mask(shape, p, rng, dtype):
    """The inverted-dropout mask: 0 with probability p, else 1/(1-p) (so E[mask] = 1)."""
    keep = rng.random(shape, dtype=dtype) >= p
    return keep.astype(dtype) / (1.0 - p)


def dropout_forward(x, p, rng, train=True):
    """Returns (y, mask); mask is None when nothing is dropped (eval, or p == 0)."""
    if not train or p == 0.0:
        return x, None
    mask = dropout_mask(x.shape, p, rng, x.dtype)
    return x * mask, mask


def dropout_backward(dy, mask):
    return dy if mask is None else dy * mask


class Dropout(Module):
    """Inverted dropout with drop probability ``p``; the mask comes from this layer's own generator."""

    def __init__(self, p=0.5, dtype=None, seed=0):
        super().__init__(dtype, seed)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x, train=True):
        return dropout_forward(x, self.p, self.rng, train)

    def backward(self, dy, mask):
        return dropout_backward(dy, mask)
