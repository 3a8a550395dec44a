"""The CUDA kernels (kernels/cuda/) against the reference, float64 to 1e-12 and float32 to 1e-5.

Marked ``cuda``: they run on a GPU (with CuPy arrays) or, with NUMBA_ENABLE_CUDASIM=1, on Numba's CUDA
simulator (NumPy arrays, tiny shapes: the simulator runs every CUDA thread as a Python thread), which
is how CI runs them; otherwise they skip (fail with MINIS2S_REQUIRE_GPU=1).
"""
import os

import numpy
import pytest

from minis2s import backend, dispatch
from conftest import REQUIRE_GPU

pytestmark = pytest.mark.cuda
TOLERANCES = [(numpy.float64, 1e-12), (numpy.float32, 1e-5)]


def _simulator():
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@pytest.fixture
def device():
    """The array module the kernels get: CuPy on a GPU, NumPy on the simulator."""
    if _simulator():
        return numpy
    try:
        from numba import cuda
        import cupy
        if cuda.is_available():
            return cupy
    except ImportError:
        pass
    if REQUIRE_GPU:
        pytest.fail("MINIS2S_REQUIRE_GPU=1 but there is no GPU (or no CuPy) for the CUDA kernels")
    pytest.skip("no GPU: NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda runs these on the simulator")


def near(fast, reference, tolerance, what):
    fast = numpy.asarray(backend.to_numpy(fast), dtype=numpy.float64)
    reference = numpy.asarray(reference, dtype=numpy.float64)
    assert fast.shape == reference.shape, what
    scale = max(float(numpy.abs(reference).max(initial=0.0)), 1.0)
    worst = float(numpy.abs(fast - reference).max(initial=0.0))
    assert worst <= tolerance * scale, f"{what}: {worst:.3e} > {tolerance:.0e} * {scale:.3e}"


def normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("dtype,tolerance", TOLERANCES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_steps(device, cell, dtype, tolerance):
    from minis2s.kernels.cuda import rnn as fast
    from minis2s.nn import rnn_cells
    rng = numpy.random.default_rng(3)
    batch, hidden = 3, 5
    gates = 4 if cell == "lstm" else 3
    xw, W_hh = normal(rng, (batch, gates * hidden), dtype, 2.0), normal(rng, (gates * hidden, hidden), dtype, 0.5)
    b_hh = normal(rng, (gates * hidden,), dtype)
    h, c, dh, dc = (normal(rng, (batch, hidden), dtype) for _ in range(4))
    on = device.asarray
    if cell == "lstm":
        reference = rnn_cells.lstm_step_forward(xw, h, c, W_hh, b_hh)
        results = fast.lstm_step_forward(on(xw), on(h), on(c), on(W_hh), on(b_hh))
        reference = reference[:2] + tuple(reference[2][:6]) + rnn_cells.lstm_step_backward(dh, dc, reference[2])
        results = results[:2] + tuple(results[2][:6]) + fast.lstm_step_backward(on(dh), on(dc), results[2])
    else:
        reference = rnn_cells.gru_step_forward(xw, h, W_hh, b_hh)
        results = fast.gru_step_forward(on(xw), on(h), on(W_hh), on(b_hh))
        reference = reference[:1] + tuple(reference[1][:5]) + rnn_cells.gru_step_backward(dh, reference[1])
        results = results[:1] + tuple(results[1][:5]) + fast.gru_step_backward(on(dh), results[1])
    assert len(results) == len(reference)
    for k, (a, b) in enumerate(zip(results, reference)):
        assert a.dtype == dtype
        near(a, b, tolerance, f"{cell} result {k}")


@pytest.mark.parametrize("dtype,tolerance", TOLERANCES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy(device, dtype, tolerance, smoothing):
    from minis2s import loss
    from minis2s.kernels.cuda import loss as fast
    rng = numpy.random.default_rng(4)
    steps, batch, vocab = 2, 3, 37
    logits = normal(rng, (steps, batch, vocab), dtype, 3.0)
    targets = rng.integers(0, vocab, (steps, batch))
    mask = numpy.array([[True, True, True], [True, False, True]])
    weight = mask * rng.uniform(0.5, 1.5, (steps, batch)).astype(dtype)
    logits[1, 1] = numpy.inf                                    # a padded row may hold anything
    reference = loss.softmax_cross_entropy.reference(logits, targets, mask, weight, smoothing)
    on = device.asarray
    results = fast.softmax_cross_entropy(on(logits), on(targets), on(mask), on(weight), smoothing)
    for what, a, b in zip(("token loss", "dlogits"), results, reference):
        assert a.dtype == dtype
        near(a, b, tolerance, what)


@pytest.mark.parametrize("dtype,tolerance", TOLERANCES)
def test_adam(device, dtype, tolerance):
    from minis2s import optim
    from minis2s.kernels.cuda import optim as fast
    rng = numpy.random.default_rng(5)
    p, g, m = (normal(rng, (7, 11), dtype) for _ in range(3))
    v = numpy.abs(normal(rng, (7, 11), dtype))
    arguments = (0.01 / (1 - 0.9 ** 3), 0.9, 0.999, 1 - 0.999 ** 3, 1e-8, 0.01)
    on = device.asarray
    fast_p, fast_g, fast_m, fast_v = on(p), on(g), on(m), on(v)
    fast.adam_update(fast_p, fast_g, fast_m, fast_v, *arguments)
    with dispatch.reference_path():
        optim.adam_update(p, g, m, v, *arguments)
    for what, a, b in (("p", fast_p, p), ("m", fast_m, m), ("v", fast_v, v), ("g kept", fast_g, g)):
        near(a, b, tolerance, what)


def test_the_dispatch_sends_cupy_arrays_to_the_cuda_twins(device):
    """On a GPU, with the kernels on, a reference function with a CUDA twin runs the twin."""
    if device is numpy:
        pytest.skip("the simulator's arrays are NumPy's: the dispatch sends those to the CPU twins")
    from minis2s.kernels.cuda import rnn as fast
    from minis2s.nn import rnn, rnn_cells
    calls = []
    original = fast.direction_forward
    fast.direction_forward = lambda *args: calls.append(1) or original(*args)
    try:
        with dispatch.reference_path(False):
            zeros = lambda *shape: device.zeros(shape, dtype=device.float32)
            rnn.direction_forward(rnn_cells.CELLS["gru"], zeros(3, 2, 4), (zeros(2, 2),), zeros(6, 4), zeros(6),
                                  zeros(6, 2), zeros(6), device.ones((3, 2), dtype=bool))
    finally:
        fast.direction_forward = original
    assert calls == [1]


@pytest.mark.parametrize("dtype,tolerance", TOLERANCES)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_recurrent_direction(device, cell, dtype, tolerance):
    """A direction over a padded sequence, forward and backward: the CUDA twin (the book's loop on the fused
    steps) against the reference: outputs, final state, dx, the first state's gradient, the weight gradients.
    Bound: a step's tolerance times the T = 4 steps a gradient flows through."""
    from minis2s.kernels.cuda import rnn as fast
    from minis2s.nn import rnn, rnn_cells
    rng = numpy.random.default_rng(11)
    steps, batch, size, hidden = 4, 3, 5, 4
    kind = rnn_cells.CELLS[cell]
    G = kind.gates * hidden
    x, dout = normal(rng, (steps, batch, size), dtype), normal(rng, (steps, batch, hidden), dtype)
    W_ih, W_hh = normal(rng, (G, size), dtype, 0.5), normal(rng, (G, hidden), dtype, 0.5)
    b_ih, b_hh = normal(rng, (G,), dtype), normal(rng, (G,), dtype)
    state = tuple(normal(rng, (batch, hidden), dtype) for _ in range(kind.state_size))
    dfinal = tuple(normal(rng, (batch, hidden), dtype) for _ in range(kind.state_size))
    mask = numpy.arange(steps)[:, None] < numpy.array([4, 2, 1])[None, :]
    grads = [numpy.zeros_like(a) for a in (W_ih, b_ih, W_hh, b_hh)]
    out, final, cache = rnn.direction_forward.reference(kind, x, state, W_ih, b_ih, W_hh, b_hh, mask)
    dx, dfirst = rnn.direction_backward.reference(kind, dout, dfinal, cache, W_ih, grads)
    on = device.asarray
    fast_grads = [on(numpy.zeros_like(a)) for a in (W_ih, b_ih, W_hh, b_hh)]
    fast_out, fast_final, fast_cache = fast.direction_forward(kind, on(x), tuple(map(on, state)), on(W_ih), on(b_ih),
                                                              on(W_hh), on(b_hh), on(mask))
    fast_dx, fast_dfirst = fast.direction_backward(kind, on(dout), tuple(map(on, dfinal)), fast_cache, on(W_ih),
                                                   fast_grads)
    pairs = [("out", fast_out, out), ("dx", fast_dx, dx)] + [
        (f"final {k}", a, b) for k, (a, b) in enumerate(zip(fast_final, final))] + [
        (f"dfirst {k}", a, b) for k, (a, b) in enumerate(zip(fast_dfirst, dfirst))] + [
        (name, a, b) for name, a, b in zip(("dW_ih", "db_ih", "dW_hh", "db_hh"), fast_grads, grads)]
    for what, a, b in pairs:
        assert a.dtype == dtype, what
        near(a, b, 4 * tolerance, f"{cell} {what}")


@pytest.mark.parametrize("dtype,tolerance", TOLERANCES)
def test_embedding_gradient_by_sorted_segments(device, dtype, tolerance):
    from minis2s.kernels.cuda import embedding as fast
    from minis2s.nn import layers
    rng = numpy.random.default_rng(7)
    ids = rng.integers(0, 6, 23)                                  # repeated ids, and the padding id 0
    rows, target = normal(rng, (23, 3), dtype), normal(rng, (6, 3), dtype)
    expected = target.copy()
    layers.scatter_add_rows.reference(expected, ids, rows, 0)
    on = device.asarray
    result = on(target)
    fast.scatter_add_rows(result, on(ids), on(rows), 0)
    near(result, expected, tolerance, "embedding gradient")
    assert numpy.array_equal(backend.to_numpy(result)[0], target[0])  # the padding row learns nothing
    again = on(target)
    fast.scatter_add_rows(again, on(ids), on(rows), 0)
    assert numpy.array_equal(backend.to_numpy(again), backend.to_numpy(result))    # bit for bit, run after run


@pytest.mark.parametrize("k", [1, 3, 5])
def test_beam_top_k(device, k):
    """The k best extensions per sentence: the same indices and scores as the CPU twin (ties included: the
    log-probabilities are rounded so that many candidates are equal) and the array code's scores."""
    from minis2s.kernels import beam
    from minis2s.kernels import decode as cpu
    from minis2s.kernels.cuda import decode as fast
    rng = numpy.random.default_rng(8 + k)
    size, vocab = 4, 150                                         # more words than the block has threads
    scores = numpy.round(rng.standard_normal((size, k)), 1)
    scores[1, k // 2 + 1:] = -numpy.inf                           # beams not alive
    logp = numpy.round(rng.standard_normal((size * k, vocab)), 1).astype(numpy.float32)
    logp[:, 1] = -numpy.inf                                       # a forbidden word
    on = device.asarray
    best, best_scores = (backend.to_numpy(a) for a in fast.top_k(on(scores), on(logp)))
    expected, expected_scores = cpu.top_k(scores, logp)
    numpy.testing.assert_array_equal(best_scores, expected_scores)
    numpy.testing.assert_array_equal(best, expected)
    _, array_scores = beam.top_k(scores, logp)
    numpy.testing.assert_array_equal(best_scores, array_scores)


@pytest.mark.parametrize("attention,feeding", [("none", False), ("luong-general", False), ("luong-dot", True)])
def test_the_decoder_loop_on_a_gpu_runs_whole_sequences_where_nothing_feeds_back(device, attention, feeding,
                                                                                 monkeypatch):
    """kernels/cuda/decoder.py: a decoder whose cells see only the embedding runs over whole sequences
    (nn/decoder.py's forward_whole_sequences), any other the reference's step loop; the loss and every
    gradient are the reference's (float64). It is array code: it runs on whatever arrays it is given."""
    import minis2s
    from minis2s import checks, model as model_module
    from minis2s.kernels.cuda import decoder as fast
    from minis2s.nn import decoder as book
    batch = checks.random_batch(numpy.random.default_rng(4), (4, 2, 5), (3, 5, 1), 11, 12)

    def run():
        model = minis2s.Seq2Seq(11, 12, cell="lstm", attention=attention, input_feeding=feeding, emb_size=5,
                                hidden_size=6, num_layers=2, dropout=0.2, dtype="float64", seed=2)
        loss = float(backend.to_numpy(model.loss_and_grads(batch)))
        return loss, {name: backend.to_numpy(g).copy() for name, g in model.grads.items()}

    loss, grads = run()
    kept = []
    monkeypatch.setattr(model_module, "steps_forward", lambda *args: kept.append(fast.steps_forward(*args)) or kept[-1])
    monkeypatch.setattr(model_module, "steps_backward", fast.steps_backward)
    fast_loss, fast_grads = run()
    assert isinstance(kept[0][2], book.WholeSequenceCache) == (not feeding)
    assert abs(fast_loss - loss) <= 1e-12 * abs(loss)
    for name, g in grads.items():
        near(fast_grads[name], g, 1e-12, name)
