"""Layer normalisation (Ba, Kiros and Hinton 2016), over the last axis, as ``torch.nn.LayerNorm``.

Each vector x (E,) of the input (..., E) is centred and scaled by its own statistics, then given a
learned scale and shift:

    mu    = mean_i x_i                          sigma^2 = mean_i (x_i - mu)^2       (the biased variance)
    rstd  = 1 / sqrt(sigma^2 + eps)
    n_i   = (x_i - mu) rstd                     the normalised vector: mean 0, variance ~1
    y_i   = w_i n_i + b_i                       weight w (E,), bias b (E,)

Backward (derived in docs/derivations/layer-norm.md): with dn = dy * w,

    dw += sum over vectors of dy * n,   db += sum over vectors of dy
    dx  = rstd (dn - mean_i dn_i - n mean_i (dn_i n_i))

The two means are what normalising takes away: a shift of every x_i moves nothing (so dx sums to 0),
and neither does a scaling (so dx is orthogonal to n). With dout = 1 and w = 1 the true dx is therefore
exactly zero, and a gradient check with such a dout cannot see a wrong backward: the checks use a
random one.
"""
from typing import NamedTuple

from .. import backend
from .module import Module


class LayerNormCache(NamedTuple):
    norm: object          # (..., E) n, the normalised input
    rstd: object          # (..., 1) 1 / sqrt(sigma^2 + eps)


def layer_norm_forward(x, weight, bias, eps=1e-5):
    """x (..., E), weight (E,), bias (E,) -> y (..., E), LayerNormCache."""
    xp = backend.array_module(x)
    mu = x.mean(axis=-1, keepdims=True)
    centred = x - mu
    variance = (centred * centred).mean(axis=-1, keepdims=True)     # biased, as PyTorch's
    rstd = 1.0 / xp.sqrt(variance + eps)
    norm = centred * rstd
    return norm * weight + bias, LayerNormCache(norm, rstd)


def layer_norm_backward(dy, cache, weight, dweight, dbias):
    """dy (..., E) -> dx (..., E); adds dw and db into dweight, dbias."""
    norm, rstd = cache
    size = norm.shape[-1]
    dweight += (dy * norm).reshape(-1, size).sum(axis=0)           # y = w n + b
    dbias += dy.reshape(-1, size).sum(axis=0)
    dnorm = dy * weight
    return rstd * (dnorm - dnorm.mean(axis=-1, keepdims=True)        # through n = (x - mu) rstd: the shift's
                   - norm * (dnorm * norm).mean(axis=-1, keepdims=True))   # and the scale's share removed


class LayerNorm(Module):
    """``torch.nn.LayerNorm(size, eps)``: parameters weight (E,) = 1 and bias (E,) = 0 to start."""

    def __init__(self, size, eps=1e-5, dtype="float32", seed=0):
        super().__init__(dtype, seed)
        self.eps = eps
        self.add_param("weight", backend.xp().ones(size))
        self.add_param("bias", backend.xp().zeros(size))

    def forward(self, x):
        return layer_norm_forward(x, self.params["weight"], self.params["bias"], self.eps)

    def backward(self, dout, cache):
        return layer_norm_backward(dout, cache, self.params["weight"], self.grads["weight"], self.grads["bias"])
