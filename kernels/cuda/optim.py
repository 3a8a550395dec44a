"""Adam's update of one parameter in one CUDA launch: the twin of ``minis2s.optim.adam_update``.

    g  = g + wd p
    m  = beta1 m + (1 - beta1) g
    v  = beta2 v + (1 - beta2) g^2
    p  = p - step_size m / (sqrt(v) / sqrt(c2) + eps)         step_size = lr / (1 - beta1^t), c2 = 1 - beta2^t
"""
import math

from numba import cuda

from ..optim import adam_element
from . import stream_of

THREADS = 256


_element = cuda.jit(device=True)(adam_element)                 # the CPU kernel's element update


@cuda.jit
def _adam(p, g, m, v, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_sqrt_c2, eps, weight_decay):
    i = cuda.grid(1)
    if i < p.shape[0]:
        _element(p, g, m, v, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_sqrt_c2, eps,
                 weight_decay, i)


def adam_update(p, g, m, v, step_size, beta1, beta2, correction2, eps, weight_decay):
    """In place on p, m, v (contiguous device arrays of one parameter); g is left as it was."""
    dtype = p.dtype.type
    size = p.size
    _adam[(size + THREADS - 1) // THREADS, THREADS, stream_of(p)](
        p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), dtype(step_size), dtype(beta1),
        dtype(1.0 - beta1), dtype(beta2), dtype(1.0 - beta2), dtype(1.0 / math.sqrt(correction2)), dtype(eps),
        dtype(weight_decay))
