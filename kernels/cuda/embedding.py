"""The embedding gradient without floating-point atomics, so that it is the same run after run: the
twin of ``minis2s.nn.layers.scatter_add_rows`` (target[ids[n]] += rows[n]).

CuPy's ``add.at`` adds with atomics, in whatever order the threads arrive: float addition is not
associative, so two runs (a run and its resumption) can differ in the last bits. Here the positions
are sorted by id (a stable sort: the same order every time); the thread of column e at the first
position of each id's run adds that run's rows, in order, and writes the sum once.
"""
from numba import cuda

from minis2s import backend

from . import grid, stream_of


@cuda.jit
def _segments(target, sorted_ids, order, rows, skip):
    n, e = cuda.grid(2)
    count = sorted_ids.shape[0]
    if n < count and e < rows.shape[1]:
        word = sorted_ids[n]
        if word == skip or (n > 0 and sorted_ids[n - 1] == word):
            return                                   # not the first of its run (or the padding id)
        acc = rows[order[n], e]
        k = n + 1
        while k < count and sorted_ids[k] == word:
            acc += rows[order[k], e]
            k += 1
        target[word, e] += acc


def scatter_add_rows(target, ids, rows, skip=-1):
    """target (V, E), ids (N,), rows (N, E), in place; rows whose id is ``skip`` are left out."""
    xp = backend.array_module(target)
    order = xp.argsort(ids, kind="stable")
    sorted_ids = xp.ascontiguousarray(ids[order])
    rows = xp.ascontiguousarray(rows)
    _segments[grid(ids.shape[0], rows.shape[1]), (16, 16), stream_of(target)](target, sorted_ids, order, rows,
                                                                             skip)
