"""Layer norm in one pass each way: the fast twins of ``minis2s.nn.layer_norm``.

Reference (layer_norm.py), per vector x of E numbers:

    mu = mean x,  rstd = 1 / sqrt(mean (x - mu)^2 + eps),  n = (x - mu) rstd,  y = w n + b
    dn = dy w,  dx = rstd (dn - mean dn - n mean (dn n)),  dw += sum dy n,  db += sum dy

The reference makes a temporary of the whole (..., E) input for each of its ~8 elementwise steps and
reads them back; here a row is read once for its two sums, once more to write y (forward), and the
backward's two row means and the output are two passes over the row, in cache. Rows run in parallel
(a block of rows a thread, each with its own dw, db sums, added at the end). The statistics are
computed in float64 for float32 rows too (the reference's are float32): the difference is within
float32's rounding, which the parity test bounds.
"""
import numba
import numpy

from .rnn import _KERNEL

PARALLEL_FROM = 1 << 16          # elements: below this, one thread (a parallel region costs ~10 us)


@numba.njit(**_KERNEL)
def _forward_rows(x, weight, bias, eps, y, norm, rstd, start, stop):
    size = x.shape[1]
    for r in range(start, stop):
        row = x[r]
        total = 0.0
        for i in range(size):
            total += row[i]
        mu = total / size
        squares = 0.0
        for i in range(size):
            centred = row[i] - mu
            squares += centred * centred
        inverse = 1.0 / numpy.sqrt(squares / size + eps)
        rstd[r] = inverse
        for i in range(size):
            n = (row[i] - mu) * inverse
            norm[r, i] = n
            y[r, i] = weight[i] * n + bias[i]


@numba.njit(parallel=True, **_KERNEL)
def _forward_parallel(x, weight, bias, eps, y, norm, rstd, parts):
    rows = x.shape[0]
    for p in numba.prange(parts):
        _forward_rows(x, weight, bias, eps, y, norm, rstd, p * rows // parts, (p + 1) * rows // parts)


@numba.njit(**_KERNEL)
def _forward(x, weight, bias, eps, y, norm, rstd):
    _forward_rows(x, weight, bias, eps, y, norm, rstd, 0, x.shape[0])


def layer_norm_forward(x, weight, bias, eps=1e-5):
    """The twin of ``minis2s.nn.layer_norm.layer_norm_forward``: x (..., E) -> y, LayerNormCache."""
    from minis2s.nn.layer_norm import LayerNormCache
    rows = numpy.ascontiguousarray(x).reshape(-1, x.shape[-1])
    y, norm = numpy.empty_like(rows), numpy.empty_like(rows)
    rstd = numpy.empty(rows.shape[0], dtype=x.dtype)
    if rows.size >= PARALLEL_FROM:
        _forward_parallel(rows, weight, bias, eps, y, norm, rstd, numba.get_num_threads())
    else:
        _forward(rows, weight, bias, eps, y, norm, rstd)
    return y.reshape(x.shape), LayerNormCache(norm.reshape(x.shape), rstd.reshape(x.shape[:-1] + (1,)))


@numba.njit(**_KERNEL)
def _backward_rows(dy, norm, rstd, weight, dx, dweight, dbias, start, stop):
    size = dy.shape[1]
    for r in range(start, stop):
        mean_dn = 0.0
        mean_dn_n = 0.0
        for i in range(size):
            g = dy[r, i]
            n = norm[r, i]
            dn = g * weight[i]
            mean_dn += dn
            mean_dn_n += dn * n
            dweight[i] += g * n
            dbias[i] += g
        mean_dn /= size
        mean_dn_n /= size
        inverse = rstd[r]
        for i in range(size):
            n = norm[r, i]
            dx[r, i] = inverse * (dy[r, i] * weight[i] - mean_dn - n * mean_dn_n)


@numba.njit(parallel=True, **_KERNEL)
def _backward_parallel(dy, norm, rstd, weight, dx, dweight_parts, dbias_parts):
    parts, rows = dweight_parts.shape[0], dy.shape[0]
    for p in numba.prange(parts):
        _backward_rows(dy, norm, rstd, weight, dx, dweight_parts[p], dbias_parts[p], p * rows // parts,
                       (p + 1) * rows // parts)


@numba.njit(**_KERNEL)
def _backward(dy, norm, rstd, weight, dx, dweight_parts, dbias_parts):
    _backward_rows(dy, norm, rstd, weight, dx, dweight_parts[0], dbias_parts[0], 0, dy.shape[0])


def layer_norm_backward(dy, cache, weight, dweight, dbias):
    """The twin of ``minis2s.nn.layer_norm.layer_norm_backward``: dy (..., E) -> dx; adds dw and db."""
    size = dy.shape[-1]
    rows = numpy.ascontiguousarray(dy).reshape(-1, size)
    norm = numpy.ascontiguousarray(cache.norm).reshape(-1, size)
    rstd = numpy.ascontiguousarray(cache.rstd).reshape(-1)
    dx = numpy.empty_like(rows)
    parallel = rows.size >= PARALLEL_FROM
    parts = numba.get_num_threads() if parallel else 1
    dweight_parts = numpy.zeros((parts, size))                       # float64 sums, one set a thread
    dbias_parts = numpy.zeros((parts, size))
    (_backward_parallel if parallel else _backward)(rows, norm, rstd, weight, dx, dweight_parts, dbias_parts)
    dweight += dweight_parts.sum(axis=0).astype(dweight.dtype)
    dbias += dbias_parts.sum(axis=0).astype(dbias.dtype)
    return dx.reshape(dy.shape)
