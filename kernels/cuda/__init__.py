"""CUDA twins of the reference maths, written with ``numba.cuda``, for CuPy arrays.

Each public function has the name, arguments and results of a reference function (as the CPU twins in
``kernels/`` do); ``minis2s.dispatch`` runs it when the kernels are on and the arrays are CuPy's. The
matrix products stay with cuBLAS (CuPy's ``@``); what is fused is the elementwise maths and the
reductions around them, each in one launch:

    rnn.py     direction_forward/backward: the book's time loop over a sequence, each LSTM or GRU step's
               gates, nonlinearities and state update in one launch each way
    decoder.py steps_forward/backward: where nothing feeds back into the cells, the decoder over whole
               sequences (a few large launches); else the book's step loop (its cells, attention and
               layers as CuPy array code)
    loss.py    softmax_cross_entropy: log-softmax, masked (smoothed) cross-entropy and its gradient, one
               block per row
    optim.py   adam_update: one pass over p, g, m, v
    embedding.py  scatter_add_rows: the embedding gradient by sorted segments, no float atomics, so a
               resumed run is bit-exact
    decode.py  beam_search (kernels/beam.py's batched search on CuPy arrays) and its top_k: the k best
               extensions per sentence, one block per sentence, nothing of (B, k*V) written

The kernels take any array Numba's CUDA target accepts (CuPy's, through ``__cuda_array_interface__``)
and launch on CuPy's current stream. Every one also runs in Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``), on NumPy arrays: that is how CI, with no GPU, holds them to the reference
(``python -m pytest -q -m cuda``).
"""
from numba import config, cuda


def stream_of(array):
    """CuPy's current stream for a CuPy array (kernels queue behind CuPy's own work); 0 otherwise."""
    module = type(array).__module__
    if module.startswith("cupy") and not config.ENABLE_CUDASIM:
        import cupy
        return cuda.external_stream(cupy.cuda.get_current_stream().ptr)
    return 0


def grid(*sizes, block=(16, 16)):
    """Blocks covering ``sizes`` with ``block`` threads each (2-D) or ``block[0]`` (1-D)."""
    return tuple((size + b - 1) // b for size, b in zip(sizes, block))
