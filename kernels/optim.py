"""Fused optimiser updates: the fast twin of ``minis2s.optim.Adam.step`` (one pass over memory).

Reference (minis2s/optim.py), per element:
    g  = g + wd p
    m  = beta1 m + (1 - beta1) g
    v  = beta2 v + (1 - beta2) g^2
    p  = p - (lr / c1) m / (sqrt(v) / sqrt(c2) + eps)         c1 = 1 - beta1^t, c2 = 1 - beta2^t
"""
import math

import numba


FUSED_FROM = 1 << 16     # smaller tensors keep the reference path: there NumPy's few passes cost less than a call


@numba.njit(parallel=True, cache=True)
def _adam(p, g, m, v, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_sqrt_c2, eps, weight_decay):
    for i in numba.prange(p.shape[0]):
        gi = g[i] + weight_decay * p[i]
        mi = beta1 * m[i] + one_minus_beta1 * gi
        vi = beta2 * v[i] + one_minus_beta2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (math.sqrt(vi) * inv_sqrt_c2 + eps)


def adam_update(p, g, m, v, step_size, beta1, beta2, correction2, eps, weight_decay):
    """In place on NumPy arrays of one parameter; tensors below FUSED_FROM elements (or not contiguous) take
    the reference update."""
    if p.size < FUSED_FROM or not all(a.flags.c_contiguous for a in (p, g, m, v)):
        from minis2s.optim import adam_update as reference
        return reference.reference(p, g, m, v, step_size, beta1, beta2, correction2, eps, weight_decay)
    dtype = p.dtype.type
    # 1 - beta is formed in double precision, as the reference does (float32(1) - float32(0.999) is not
    # float32(0.001): 1.3e-5 apart)
    _adam(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), dtype(step_size), dtype(beta1),
          dtype(1.0 - beta1), dtype(beta2), dtype(1.0 - beta2), dtype(1.0 / math.sqrt(correction2)), dtype(eps),
          dtype(weight_decay))

