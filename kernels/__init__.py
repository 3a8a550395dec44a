"""Fast twins of the reference maths (Numba on the CPU).

Each public function here has the name, the arguments and the results of one reference function in
minis2s, which names it with ``@twin("module.function")``; ``minis2s.dispatch`` chooses between the two
(the switch: ``MINIS2S_KERNELS=0``, ``minis2s.dispatch.use_kernels(False)``, or here ``enable(False)``).
The reference functions never import this package: only the dispatch does, and only when the kernels
are on, so minis2s runs without Numba. Every twin has a parity test against its reference
(tests/test_kernels.py).

The ten twins, each of one coarse reference function (``@twin`` in minis2s; a CUDA twin in kernels/cuda/
where one is named), and what each does differently from the book:

    reference (minis2s/)             twin (kernels/)          what the twin does differently
    rnn.direction_forward            rnn.py                   a layer's whole time loop (RNN, LSTM, GRU, masks)
    rnn.direction_backward                                    in one Numba call each way, a row's gate maths in
                                                              one pass, the step's product on BLAS from inside
                                                              Numba, float32 tanh/exp vectorised (scalar.py);
                                                              CUDA: the book's loop, each step one launch
    decoder.steps_forward            decoder.py               the decoder's teacher-forced time loop (GRU/LSTM,
    decoder.steps_backward                                    any layers, Bahdanau or Luong, feeding, dropout) in
                                                              one Numba call each way; where nothing feeds back
                                                              into the cells, no loop: the book's whole-sequence
                                                              variant over rnn.py's kernels (CUDA: that variant)
    model.Seq2Seq.step               model.py                 decoding's step on kept tables: a token's row of
                                                              E W_emb^T made once a decode, the decoder's loop one
                                                              step long, W_out^T kept contiguous, log-softmax in
                                                              one pass a row (layers.py)
    decode.beam_search               beam.py, decode.py       every sentence at once as array code (NumPy or
                                                              CuPy), the batch shrinking as sentences finish,
                                                              back-pointers read once after the loop; top_k in
                                                              one pass, no (B, k*V) temporary
    loss.softmax_cross_entropy       loss.py                  the loss and its gradient a row at a time in cache,
                                                              rows in parallel (CUDA: one block a row)
    optim.adam_update                optim.py                 one pass over p, g, m, v, in place (rows in
                                                              parallel for large tensors)
    embedding.scatter_add_rows       embedding.py             the embedding gradient as a plain loop, not ``add.at`` (CUDA:
                                                              sorted segments, no float atomics: bit-exact)
    rng.uniform                      rng.py                   the counter-based generator, hash and float in
                                                              one pass

The rest of this package serves those ten: blas.py (NumPy's own BLAS, sgemm/dgemm, callable from inside
the Numba loops), attention.py (a step's masked softmax and context, for decoder.py), layers.py (for
model.py's step: log-softmax a row in one pass, the product on a kept W^T, the token-row table) and
scalar.py (float32 tanh and exp, and a running maximum, that LLVM vectorises inside those loops).

Numba's scalar tanh/exp are not vectorised (llvmlite has had no SVML since LLVM 20, Numba 0.62, so
installing Intel's runtime changes nothing: ``numba -s`` says "SVML Operational: False"). The
whole-sequence kernels, the decoder's loop, the loss and log-softmax use scalar.py's float32 tanh and
exp instead, which LLVM does vectorise.

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
