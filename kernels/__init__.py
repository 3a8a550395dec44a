"""Fast twins of the reference maths (Numba on the CPU), behind one switch.

    minis2s.kernels.enable(False)     # or MINIS2S_KERNELS=0: the pure reference path
    minis2s.kernels.enabled()         # is the fast path in use?

Every kernel here has a parity test against the reference function it replaces.

    rnn.py        LSTM and GRU steps: the gate maths fused, forward and backward
    attention.py  masked softmax + context, its backward, Bahdanau's score backward
    loss.py       masked cross-entropy and its gradient: the loss and the gradient in one parallel pass
    embedding.py  the embedding gradient's scatter-add
    decode.py     beam search's top-k selection, one pass, no (B, k*V) temporary
    optim.py      fused Adam update (one pass over p, g, m, v)

Numba's scalar tanh/exp are not vectorised here (no SVML: 16 ns a tanh against NumPy's 0.5 ns), so
the kernels leave whole-array tanh/exp to NumPy and fuse the arithmetic around them.
"""
import os

import numba
import numpy

# Numba's threads, on the "workqueue" layer, sleep between parallel regions. On OpenMP they spin after
# each one and, on a 2-core machine, slow the BLAS threads of the next matrix product (measured here:
# small-config training steps up to 2.5x slower); the workqueue layer keeps the parallel kernels' gain
# (Adam at 8.6M parameters: 18 ms -> 7 ms) without that. A layer the user chose is left alone.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

_enabled = os.environ.get("MINIS2S_KERNELS", "1") not in ("0", "false", "no", "off")


def enable(flag=True):
    """Use the fast kernels where they exist (True) or only the reference path (False)."""
    global _enabled
    _enabled = bool(flag)


def enabled():
    return _enabled


def use_for(*arrays):
    """The kernels are on and every array is a NumPy array (CuPy arrays keep the reference path)."""
    return _enabled and all(type(a) is numpy.ndarray for a in arrays)


from . import attention, decode, embedding, loss, optim, rnn  # noqa: E402, F401  (reached as minis2s.kernels.rnn, ...)
