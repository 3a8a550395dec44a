"""Embedding gradient: the fast twin of ``minis2s.nn.layers.scatter_add_rows``.

    dW[ids[n]] += rows[n]     for every n, repeated ids accumulating, the padding row skipped

NumPy's ``add.at`` does this one element at a time through its generic ufunc machinery (about 0.5 ms
for a 32 x 20 batch of 64-wide rows here); the loop below is a plain pass over the rows.
"""
import numba
import numpy


@numba.njit(cache=True)
def _scatter_add_rows(target, ids, rows, skip):
    for n in range(ids.shape[0]):
        i = ids[n]
        if i == skip:
            continue
        for e in range(rows.shape[1]):
            target[i, e] += rows[n, e]


def scatter_add_rows(target, ids, rows, skip=-1):
    """target (V, E) += rows (N, E) at ids (N,), in place; rows with id ``skip`` are left out."""
    if ids.size and (ids.min() < 0 or ids.max() >= target.shape[0]):
        raise IndexError(f"token id out of range 0..{target.shape[0] - 1}")
    _scatter_add_rows(target, ids, numpy.ascontiguousarray(rows), skip)


