"""Fast twins of the reference maths (Numba on the CPU).

Each public function here has the name, the arguments and the results of one reference function in
minis2s, which names it with ``@twin("module.function")``; ``minis2s.dispatch`` chooses between the two
(the switch: ``MINIS2S_KERNELS=0``, ``minis2s.dispatch.use_kernels(False)``, or here ``enable(False)``).
The reference functions never import this package: only the dispatch does, and only when the kernels
are on, so minis2s runs without Numba. Every twin has a parity test against its reference
(tests/test_kernels.py).

    rnn.py        direction_forward/backward: a layer's whole time loop (RNN, LSTM, GRU, masks
                  included) in one Numba call each way, a row's gate maths in one pass (lstm_row,
                  gru_row and their backward, shared with decoder.py); lstm_step_forward/backward,
                  gru_step_forward/backward: one step's gate maths (scheduled sampling's steps)
    decoder.py    steps_forward/backward: the decoder's whole time loop under teacher forcing (GRU or
                  LSTM, any number of layers, Bahdanau attention with or without the attentional
                  output, or Luong's dot or general with or without input feeding; context feeding,
                  dropout) in one Numba call each way; where nothing feeds back into the cells (no
                  attention, Luong's without feeding), no loop at all: the book's whole-sequence
                  variant over rnn.py's kernels; decode_step: the loop one step long, for model.py
    blas.py       NumPy's own BLAS (sgemm/dgemm) callable from inside those Numba loops
    attention.py  softmax_context, softmax_context_backward, bahdanau_score_backward
    loss.py       softmax_cross_entropy: the loss and the gradient, a row at a time in cache, rows in parallel
    layer_norm.py layer_norm_forward: layer norm in one pass, rows in parallel (the reference backward
                  reads its cache)
    layers.py     log_softmax_forward: the same row-wise fusion for decoding's log-probabilities;
                  for model.py's step (not twins): linear_forward, the product on a kept contiguous W^T,
                  and embedding_linear_forward, a token's E[y] W^T + b made once a decode
    model.py      step: Seq2Seq.step, the decoding step, on the kernels above (the token's row, the
                  decoder's loop one step long, the output layer on a kept W^T, log-softmax)
    scalar.py     tanh_of, exp_of, max_of: float32 tanh and exp, and a running maximum, that LLVM
                  vectorises inside those loops
    embedding.py  scatter_add_rows: the embedding gradient
    beam.py       beam_search: the textbook search's twin, every sentence at once as array code on the
                  device (NumPy or CuPy), the batch shrinking as sentences finish, back-pointers read
                  back once after the loop
    decode.py     top_k: that search's selection, one pass, no (B, k*V) temporary
    optim.py      adam_update: one pass over p, g, m, v
    rng.py        uniform: the counter-based generator, hash and float in one pass

Numba's scalar tanh/exp are not vectorised (llvmlite has had no SVML since LLVM 20, Numba 0.62, so
installing Intel's runtime changes nothing: ``numba -s`` says "SVML Operational: False"). The step
kernels leave whole-array tanh/exp to NumPy and fuse the arithmetic around them; the whole-sequence
kernels, the decoder's loop, the loss and log-softmax use scalar.py's float32 tanh and exp, which LLVM
does vectorise.

Numba caches each compiled kernel beside its source (``cache=True``) and checks only the kernel's own
file for changes: after editing a function other kernels call (scalar.py, rnn.py's row functions,
blas.py), delete ``kernels/__pycache__/*.nbi`` and ``*.nbc`` so that their callers are compiled again.
"""
import os

import numba

# Numba's threads, on the "workqueue" layer, sleep between parallel regions. On OpenMP they spin after
# each one and, on a 2-core machine, slow the BLAS threads of the next matrix product (measured here:
# small-config training steps up to 2.5x slower); the workqueue layer keeps the parallel kernels' gain
# (Adam at 8.6M parameters: 18 ms -> 7 ms) without that. A layer the user chose is left alone.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


def _keep_freed_memory():
    """glibc's malloc hands large blocks back to the kernel when they are freed (mmap'd above a threshold
    it moves with the sizes it sees, the heap's top trimmed above another), so the next training step's
    arrays of the same sizes come back as fresh pages, each zeroed on its first touch. Measured here at
    ``small`` GRU + Bahdanau: 3,165 page faults a step, 24 ms a step; with both thresholds fixed high
    (blocks up to 32 MiB from the heap, the heap kept): none, 19 ms; at ``base``: 766 -> 722 ms. The
    cost is that the process keeps its largest footprint. Environment variables the user set
    (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) win; elsewhere than glibc this does nothing."""
    import ctypes
    import ctypes.util
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 * 2 ** 20)              # glibc's largest allowed on 64-bit
    mallopt(M_TRIM_THRESHOLD, 2 ** 30)


_keep_freed_memory()


def enable(flag=True):
    """Use the fast kernels where they exist (True) or only the reference path (False)."""
    from minis2s import dispatch
    dispatch.use_kernels(flag)


def enabled():
    from minis2s import dispatch
    return dispatch.kernels_enabled()


from . import attention, decode, decoder, embedding, layers, loss, optim, rng, rnn  # noqa: E402, F401  (reached as minis2s.kernels.rnn, ...)
