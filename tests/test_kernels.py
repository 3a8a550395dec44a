"""Each fast kernel against the reference path it replaces."""
import contextlib

import numpy
import pytest
from hypothesis import given, strategies as st

import minis2s
from minis2s import dispatch, kernels, optim


@pytest.fixture(autouse=True)
def kernels_on(on_numpy):
    """This file holds the Numba kernels (NumPy arrays) against the reference: on NumPy, whatever backend
    the suite runs under, and the kernels on unless a test turns them off (the rest of the suite runs on
    the reference path, see conftest.py)."""
    with dispatch.reference_path(False):
        yield


@pytest.fixture
def reference_only():
    kernels.enable(False)
    yield
    kernels.enable(True)


DTYPES = [numpy.float64, numpy.float32]
LAMBDA = 10.0          # how many standard deviations of rounding a tolerance allows (see parity_tolerance)


def parity_tolerance(dtype, operations):
    """The tolerance of a fast result against its reference, relative to the reference's scale (assert_near),
    from an error bound rather than from what one machine's BLAS happened to round to.

    A value computed through n floating-point operations in sequence (the terms of its sums, times the
    dependent steps the sums feed: time steps, layers, a forward then its backward) carries a relative
    rounding error of at most gamma_n = n u in the worst case (Higham, Accuracy and Stability of Numerical
    Algorithms, 2nd ed., section 3.1), and of at most lambda sqrt(n) u with probability at least
    1 - 2n exp(-lambda^2 / 2) when the roundings are independent and centred (Higham and Mary, A new approach
    to probabilistic rounding error analysis, SIAM J. Sci. Comput. 41, 2019, theorem 2.4). The kernel and the
    reference each round their own way (another BLAS kernel, order or fused multiply-add), so they may differ
    by twice that: 2 lambda sqrt(n) u, with lambda = 10 (a chance below 1e-20 per value of a false alarm).
    u is the unit roundoff: 2^-24 for float32, 2^-53 for float64. Inputs are O(1) (assert_near's floor is
    their scale where a result can cancel to ~0), so a term's size is the result's.

    float64 keeps the fixed 1e-12 of the kernels' issue where the bound is smaller (every case here: n is at
    most a few thousand): it is the goal those kernels were written to, and far below any bug's size."""
    unit_roundoff = float(numpy.finfo(dtype).eps) / 2
    bound = 2 * LAMBDA * numpy.sqrt(operations) * unit_roundoff
    return max(bound, 1e-12) if numpy.dtype(dtype) == numpy.float64 else bound


ADAM_OPERATIONS = 15    # a step's roundings of one parameter: m, v (with weight decay), their corrections, the
                        # square root, the division and the update


def _run_adam(dtype, shapes, weight_decay, steps, fast):
    kernels.enable(fast)
    try:
        rng = numpy.random.default_rng(0)
        params = {f"p{i}": rng.standard_normal(shape).astype(dtype) for i, shape in enumerate(shapes)}
        grads = {k: numpy.zeros_like(v) for k, v in params.items()}
        adam = optim.Adam(params, grads, lr=1e-2, weight_decay=weight_decay)
        for _ in range(steps):
            for k in grads:
                grads[k][...] = rng.standard_normal(grads[k].shape)
            adam.step()
        return params, adam
    finally:
        kernels.enable(True)


@given(shapes=st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple), min_size=1, max_size=3),
       weight_decay=st.sampled_from([0.0, 0.01]), steps=st.integers(1, 4))
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_adam_matches_the_reference(dtype, shapes, weight_decay, steps):
    tolerance = parity_tolerance(dtype, ADAM_OPERATIONS * steps)
    fast, fast_adam = _run_adam(dtype, shapes, weight_decay, steps, True)
    slow, slow_adam = _run_adam(dtype, shapes, weight_decay, steps, False)
    for k in fast:
        numpy.testing.assert_allclose(fast[k], slow[k], rtol=tolerance, atol=tolerance)
        numpy.testing.assert_allclose(fast_adam.v[k], slow_adam.v[k], rtol=tolerance, atol=tolerance * 1e-3)


def test_the_switch(reference_only):
    assert not kernels.enabled()
    kernels.enable(True)
    assert kernels.enabled()


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_adam_matches_the_reference_on_large_tensors(dtype):
    tolerance = parity_tolerance(dtype, ADAM_OPERATIONS * 3)
    from minis2s.kernels.optim import PARALLEL_FROM
    shapes = [(PARALLEL_FROM // 100 + 7, 100), (3,)]                    # one tensor in parallel, one not
    fast, _ = _run_adam(dtype, shapes, 0.01, 3, True)
    slow, _ = _run_adam(dtype, shapes, 0.01, 3, False)
    for k in fast:
        numpy.testing.assert_allclose(fast[k], slow[k], rtol=tolerance, atol=tolerance)


# ----------------------------------------------------------------------------- the kernels of issue 6
#
# Each test runs the same call twice, kernels on and off, and compares. "Relative" here is relative to
# the largest magnitude of the reference array (|fast - reference| <= tol * max|reference|): elementwise
# relative error is meaningless where a gradient is a sum that cancels to nearly zero. A spy counts the
# kernel's calls, so a dispatch that silently fell back to the reference could not pass.

def assert_near(fast, reference, tolerance, what="", floor=1e-30):
    """|fast - reference| <= tolerance * max(max|reference|, floor). The floor serves arrays that are
    exactly zero in exact arithmetic (softmax gradients over one position): there the inputs' scale."""
    fast, reference = numpy.asarray(fast, dtype=numpy.float64), numpy.asarray(reference, dtype=numpy.float64)
    assert fast.shape == reference.shape, what
    scale = max(float(numpy.abs(reference).max(initial=0.0)), floor)
    worst = float(numpy.abs(fast - reference).max(initial=0.0))
    assert worst <= tolerance * scale, f"{what}: {worst:.3e} > {tolerance:.0e} * {scale:.3e}"


def both(function):
    """function() with the kernels on, then off: (fast result, reference result)."""
    results = []
    for fast in (True, False):
        kernels.enable(fast)
        try:
            results.append(function())
        finally:
            kernels.enable(True)
    return results


@contextlib.contextmanager
def spying(module, *names):
    """Within the block, count the calls of module.name for each name: yields {name: count}."""
    calls = dict.fromkeys(names, 0)
    originals = {name: getattr(module, name) for name in names}

    def counter(name):
        def counted(*args, **kwargs):
            calls[name] += 1
            return originals[name](*args, **kwargs)
        return counted
    try:
        for name in names:
            setattr(module, name, counter(name))
        yield calls
    finally:
        for name in names:
            setattr(module, name, originals[name])


def _normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


@given(steps=st.integers(1, 6), batch=st.integers(1, 4), hidden=st.integers(1, 7), seed=st.integers(0, 1000),
       reach=st.sampled_from(["both", "outputs", "final"]))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_whole_sequence_kernels_match_the_reference(cell, dtype, steps, batch, hidden, seed, reach):
    """One direction of a layer over a padded batch (lengths 1..T), forward and back through time: the
    outputs, the final state, dx, the gradient of the initial state and the four weight gradients. The
    gradient reaches the outputs, the final state or both (the encoder's cases)."""
    from minis2s.nn.layers import length_mask
    from minis2s.nn import rnn
    from minis2s.nn.rnn_cells import CELLS
    rng = numpy.random.default_rng(seed)
    the_cell = CELLS[cell]
    size = the_cell.gates * hidden
    # T steps forward and T back, each a sum over the input (3) and the gates (size) and the gates' arithmetic;
    # the weight gradients sum over every step and sentence
    tolerance = parity_tolerance(dtype, 2 * steps * (size + 3 + 8) + batch * steps)
    x = _normal(rng, (steps, batch, 3), dtype)
    lengths = rng.integers(1, steps + 1, batch)
    state = tuple(_normal(rng, (batch, hidden), dtype) for _ in range(the_cell.state_size))
    weights = (_normal(rng, (size, 3), dtype), _normal(rng, (size,), dtype),
               _normal(rng, (size, hidden), dtype, 0.7), _normal(rng, (size,), dtype))
    dout = None if reach == "final" else _normal(rng, (steps, batch, hidden), dtype)
    dstate = None if reach == "outputs" else tuple(_normal(rng, (batch, hidden), dtype) for _ in state)

    def run():
        mask = length_mask(lengths, steps)
        out, final, cache = rnn.direction_forward(the_cell, x, state, *weights, mask)
        grads = tuple(numpy.zeros_like(w) for w in weights)
        dx, dfirst = rnn.direction_backward(the_cell, dout, dstate, cache, weights[0], grads)
        return (out,) + final + (dx,) + dfirst + grads

    with spying(kernels.rnn, "direction_forward", "direction_backward") as calls:
        fast, reference = both(run)
    assert calls == {"direction_forward": 1, "direction_backward": 1}
    for k, (a, b) in enumerate(zip(fast, reference)):
        assert a.dtype == b.dtype == dtype
        assert_near(a, b, tolerance, f"{cell} result {k}", floor=1.0)     # the inputs' scale: a state can be ~0


def test_a_reference_forward_is_taken_back_by_the_reference_backward():
    """The switch turned between a forward and its backward: the whole-sequence backward hands a cache of
    step caches to the reference instead of misreading it."""
    from minis2s.nn.layers import length_mask
    from minis2s.nn import rnn
    from minis2s.nn.rnn_cells import CELLS
    rng = numpy.random.default_rng(0)
    cell = CELLS["lstm"]
    weights = (rng.standard_normal((8, 3)), rng.standard_normal(8), rng.standard_normal((8, 2)), rng.standard_normal(8))
    x, state = rng.standard_normal((4, 3, 3)), (rng.standard_normal((3, 2)), rng.standard_normal((3, 2)))
    mask = length_mask(numpy.array([4, 2, 1]), 4)
    dout = rng.standard_normal((4, 3, 2))
    with dispatch.reference_path():
        _, _, cache = rnn.direction_forward(cell, x, state, *weights, mask)
    results = []
    for fast in (True, False):
        grads = tuple(numpy.zeros_like(w) for w in weights)
        with dispatch.reference_path(not fast):
            dx, _ = rnn.direction_backward(cell, dout, None, cache, weights[0], grads)
        results.append((dx,) + grads)
    for a, b in zip(*results):
        numpy.testing.assert_array_equal(a, b)


@given(steps=st.integers(1, 5), batch=st.integers(1, 4), vocab=st.integers(2, 40), seed=st.integers(0, 1000),
       smoothing=st.sampled_from([0.0, 0.1]), reduction=st.sampled_from(["mean", "sum", "sequence"]))
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_kernel_matches_the_reference(dtype, steps, batch, vocab, seed, smoothing, reduction):
    from minis2s.loss import cross_entropy
    tolerance = parity_tolerance(dtype, 2 * vocab + steps * batch + 4)    # log-sum-exp (and smoothing's mean)
                                                                          # over V, the mean over the tokens
    rng = numpy.random.default_rng(seed)
    logits = _normal(rng, (steps, batch, vocab), dtype, 3.0)
    lengths = rng.integers(1, steps + 1, size=batch)
    targets = rng.integers(0, vocab, size=(steps, batch))
    targets[numpy.arange(steps)[:, None] >= lengths[None, :]] = 10 ** 6    # padded targets: anything
    logits[-1, -1, 0] = numpy.inf if lengths[-1] < steps else logits[-1, -1, 0]   # even inf on a pad

    with spying(kernels.loss, "softmax_cross_entropy") as calls:
        fast, reference = both(lambda: cross_entropy(logits, targets, lengths, reduction=reduction,
                                                     label_smoothing=smoothing))
    assert calls == {"softmax_cross_entropy": 1}
    # loss = w (log sum exp - a_y) and dlogits = w (p - onehot): their terms are of the token weight w's size
    # (1/N for the mean, else 1) even where a saturated softmax makes the difference tiny, and rounding
    # happens at that scale
    weight = 1.0 / int(lengths.sum()) if reduction == "mean" else 1.0
    assert_near(fast[0], reference[0], tolerance, "loss", floor=weight)
    assert_near(fast[1], reference[1], tolerance, "dlogits", floor=weight)
    assert fast[1].dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_kernel_at_a_real_vocabulary_size(dtype):
    """8,000 words (the vectorised loops' main body, not only their remainders), logits up to +-40."""
    tolerance = parity_tolerance(dtype, 2 * 8000 + 15 + 4)
    from minis2s.loss import cross_entropy
    rng = numpy.random.default_rng(1)
    logits = _normal(rng, (3, 5, 8000), dtype, 10.0)
    targets = rng.integers(0, 8000, size=(3, 5))
    fast, reference = both(lambda: cross_entropy(logits, targets, numpy.array([3, 1, 2, 3, 2]), label_smoothing=0.1))
    assert_near(fast[0], reference[0], tolerance, "loss")
    assert_near(fast[1], reference[1], tolerance, "dlogits")


@given(rows=st.integers(1, 6), size=st.integers(1, 3000), scale=st.sampled_from([1.0, 30.0]),
       seed=st.integers(0, 1000))
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_kernel_matches_the_reference(dtype, rows, size, scale, seed):
    from minis2s.nn import layers
    tolerance = parity_tolerance(dtype, size + 4)                          # log-sum-exp over the row
    logits = _normal(numpy.random.default_rng(seed), (2, rows, size), dtype, scale)
    fast, reference = kernels.layers.log_softmax_forward(logits), layers.log_softmax_forward(logits)  # model.step's
    assert fast.dtype == dtype
    assert_near(fast, reference, tolerance, floor=1.0)


@given(vocab=st.integers(1, 12), dim=st.integers(1, 6), size=st.integers(1, 9), calls=st.integers(1, 4),
       rows=st.integers(1, 7), with_bias=st.booleans(), seed=st.integers(0, 1000))
@pytest.mark.parametrize("dtype", DTYPES)
def test_projected_tokens_kernel_matches_the_reference(dtype, vocab, dim, size, calls, rows, with_bias, seed):
    """embedding_linear_forward inside a decode (the rows kept per token and gathered), call after call with
    tokens seen before and new ones, against the book's embedding then linear layer; the weight a column
    slice as the decoder's is."""
    tolerance = parity_tolerance(dtype, dim + 1)                           # E[y] W^T over E, the bias
    rng = numpy.random.default_rng(seed)
    table = _normal(rng, (vocab, dim), dtype)
    weight = _normal(rng, (size, dim + 3), dtype)[:, :dim]
    bias = _normal(rng, (size,), dtype) if with_bias else None
    steps = [rng.integers(0, vocab, size=rows) for _ in range(calls)]

    with spying(kernels.layers, "_project_tokens") as spied:
        with dispatch.constant_weights():
            fast = [kernels.layers.embedding_linear_forward(table, ids, weight, bias) for ids in steps]
    reference = [book_projection(table, ids, weight, bias) for ids in steps]
    assert spied == {"_project_tokens": calls}                                         # the kernel, no fallback
    for got, expected in zip(fast, reference):
        assert got.dtype == dtype
        assert_near(got, expected, tolerance, floor=1.0)


def book_projection(table, ids, weight, bias):
    """E[ids] W^T + b as Seq2Seq.step computes it on the reference path: the embedding, then the linear layer."""
    from minis2s.nn import layers
    with dispatch.reference_path():
        return layers.linear_forward(layers.embedding_forward(table, ids)[0], weight, bias)[0]


def test_projected_tokens_outside_the_table_get_the_references_answer():
    """An id past the table's end raises the reference's IndexError, a negative one counts from the end as
    NumPy's indexing does, and neither leaves a row behind: the kernel checks before it touches anything."""
    project = kernels.layers.embedding_linear_forward
    rng = numpy.random.default_rng(0)
    table, weight, bias = rng.standard_normal((6, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    with dispatch.constant_weights():
        with pytest.raises(IndexError):
            project(table, numpy.array([1, 6]), weight, bias)
        wrapped = project(table, numpy.array([-1, 2]), weight, bias)
        assert numpy.allclose(wrapped, table[[5, 2]] @ weight.T + bias, rtol=1e-12)
        table[1] += 1.0                                   # token 1 was not projected by the refused call
        later = project(table, numpy.array([1]), weight, bias)
    assert numpy.allclose(later, table[[1]] @ weight.T + bias, rtol=1e-12)


def test_projected_tokens_are_computed_once_a_decode():
    """Inside one constant_weights() block a token's row is computed when the token first comes up and kept:
    change the embedding table in place (breaking the block's promise) and a token seen before keeps its
    first row, while a new one is made from the table as it is now; the next block starts afresh. (The
    table, not W: the reference's own linear_forward keeps W^T for the block as well.)"""
    project = kernels.layers.embedding_linear_forward
    rng = numpy.random.default_rng(0)
    table, weight, bias = rng.standard_normal((6, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    first_ids, later_ids = numpy.array([2, 5, 2]), numpy.array([5, 1])
    with dispatch.constant_weights():
        first = project(table, first_ids, weight, bias)
        table *= 2.0
        later = project(table, later_ids, weight, bias)
    assert numpy.array_equal(later[0], first[1])                                  # token 5: kept from the first call
    assert numpy.allclose(later[1], table[1] @ weight.T + bias, rtol=1e-12)      # token 1: new, the table now
    with dispatch.constant_weights():
        again = project(table, later_ids, weight, bias)
    assert numpy.allclose(again, table[later_ids] @ weight.T + bias, rtol=1e-12)


@given(rows=st.integers(1, 30), vocab=st.integers(1, 8), dim=st.integers(1, 5), seed=st.integers(0, 1000),
       padding=st.sampled_from([None, 0]))
@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_scatter_add_kernel_matches_the_reference(dtype, rows, vocab, dim, seed, padding):
    from minis2s.nn.layers import EmbeddingCache, embedding_backward
    tolerance = parity_tolerance(dtype, rows + 1)                          # a row sums up to every repeat
    rng = numpy.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=rows)                                 # repeated ids accumulate
    dout = _normal(rng, (rows, dim), dtype)
    start = _normal(rng, (vocab, dim), dtype)

    def run():
        dweight = start.copy()
        embedding_backward(dout, EmbeddingCache(ids, vocab), dweight, padding)
        return dweight

    with spying(kernels.embedding, "scatter_add_rows") as calls:
        fast, reference = both(run)
    assert calls == {"scatter_add_rows": 1}
    assert_near(fast, reference, tolerance)
    if padding is not None:
        assert numpy.array_equal(fast[padding], start[padding])


MODEL_CASES = [("lstm", "bahdanau", dict()), ("gru", "luong-general", dict(input_feeding=True, bidirectional=True)),
               ("lstm", "luong-dot", dict(num_layers=2, dropout=0.3)), ("gru", "none", dict(label_smoothing=0.1))]


@pytest.mark.parametrize("cell,attention,options", MODEL_CASES)
def test_whole_model_with_kernels_matches_the_reference_and_the_finite_differences(cell, attention, options):
    """Loss and every gradient of a padded batch, kernels on and off (float64); then the gradient check
    with the kernels on (the suite's other gradient checks run on the reference path)."""
    from conftest import assert_checked
    from minis2s import checks
    def run():
        rng = numpy.random.default_rng(5)
        model = minis2s.Seq2Seq(11, 12, cell=cell, attention=attention, emb_size=5, hidden_size=6,
                                dtype="float64", seed=2, **options)
        checks.unit_scale(model, 2)
        batch = checks.random_batch(rng, (4, 2, 5), (3, 5, 1), 11, 12)
        model.reseed(0)
        loss = model.loss_and_grads(batch)
        return loss, {name: g.copy() for name, g in model.grads.items()}

    # the encoder's sequences (without attention, or with Luong's and no feeding, the decoder too runs over
    # whole sequences; with attention and feeding it runs as one compiled loop, kernels/decoder.py, whose own
    # tests are below)
    names = ("direction_backward",)
    with spying(kernels.rnn, *names) as calls:
        (fast_loss, fast_grads), (loss, grads) = both(run)
    assert min(calls.values()) > 0
    assert abs(fast_loss - loss) <= 1e-12 * abs(loss)
    for name in grads:
        assert_near(fast_grads[name], grads[name], 1e-12, name)
    with spying(kernels.rnn, *names) as calls:
        assert_checked(checks.check_seq2seq(cell, attention, max_elements=8, **options))
    assert min(calls.values()) > 0


DECODER_CASES = [("gru", dict()), ("lstm", dict()), ("gru", dict(context_feeding=True, dropout=0.3)),
                 ("lstm", dict(bidirectional=True, context_feeding=True, dropout=0.2, reverse_source=True)),
                 ("lstm", dict(num_layers=2, dropout=0.3)),
                 ("gru", dict(num_layers=3, bidirectional=True, context_feeding=True, dropout=0.2)),
                 ("gru", dict(attention="luong-dot", input_feeding=True)),
                 ("lstm", dict(attention="luong-general", input_feeding=True, num_layers=2, dropout=0.3)),
                 ("gru", dict(attention="luong-general", context_feeding=True, dropout=0.2)),
                 ("lstm", dict(attention="luong-dot", input_feeding=True, context_feeding=True, bidirectional=True,
                               reverse_source=True)),
                 ("gru", dict(attentional_output=True)),
                 ("lstm", dict(attentional_output=True, num_layers=2, dropout=0.3, context_feeding=True)),
                 ("gru", dict(attentional_output=True, deep_output=True, bidirectional=True, dropout=0.2))]
PLAIN_DECODER_CASES = [("gru", dict(attention="none")), ("lstm", dict(attention="none", context_feeding=True)),
                       ("rnn", dict(attention="none", bidirectional=True))]


def decoder_operations(model, batch, steps=None):
    """The roundings a decoder's result can carry: each of T decoder and S encoder steps, in each of L layers,
    sums over its inputs (E and the extras, at most 4H wide), its gates (G H) and the source (S), forward and
    back; the weight gradients sum over every step of every sentence (B T). ``steps``: decoding steps only."""
    config = model.config
    L, H, E = config["num_layers"], config["hidden_size"], config["emb_size"]
    G = {"rnn": 1, "gru": 3, "lstm": 4}[config["cell"]]
    S, T, B = batch.src.shape[0], batch.tgt_in.shape[0], batch.src.shape[1]
    width = E + 4 * H + G * H + S
    if steps is not None:
        return steps * L * width + S * L * width + config["tgt_vocab_size"]
    return 2 * (T + S) * L * width + B * T


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell,options", DECODER_CASES)
def test_decoder_loop_kernel_matches_the_reference(cell, options, dtype):
    """The whole teacher-forced decoder loop (kernels/decoder.py) against the reference's steps: loss, the
    attention weights and every gradient of a padded batch: Bahdanau and Luong (dot, general, input feeding),
    with dropout (the same masks, between layers too), context feeding and stacks of 1-3 layers; the compiled
    loop must have run (its cache, not the reference's step caches)."""
    from minis2s import checks
    from minis2s.kernels.decoder import StepsCache
    caches = []

    def run():
        rng = numpy.random.default_rng(3)
        model = minis2s.Seq2Seq(13, 17, cell=cell, emb_size=5, hidden_size=6, dtype=numpy.dtype(dtype).name,
                                seed=2, **{"attention": "bahdanau", **options})
        checks.unit_scale(model, 2)
        batch = checks.random_batch(rng, (4, 2, 7, 1), (3, 6, 1, 5), 13, 17)
        model.reseed(0)
        logits, cache = model.forward(batch, train=True)
        caches.append(cache.steps)
        model.reseed(0)
        loss = model.loss_and_grads(batch)
        tolerances.append(parity_tolerance(dtype, decoder_operations(model, batch)))
        return loss, cache.weights, logits, {name: g.copy() for name, g in model.grads.items()}

    tolerances = []
    (fast_loss, fast_weights, fast_logits, fast_grads), (loss, weights, logits, grads) = both(run)
    tolerance = tolerances[0]
    assert isinstance(caches[0], StepsCache) and isinstance(caches[1], list)
    assert abs(fast_loss - loss) <= tolerance * abs(loss)
    assert_near(fast_weights, weights, tolerance, "attention weights")
    assert_near(fast_logits, logits, tolerance, "logits")
    for name in grads:
        assert_near(fast_grads[name], grads[name], tolerance, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell,options", DECODER_CASES + PLAIN_DECODER_CASES)
def test_decode_step_kernel_matches_the_reference(cell, options, dtype):
    """Three decoding steps (model.step: log-probabilities, state, attention weights), kernel and reference;
    without attention, through rnn.py's sequence kernels."""
    from minis2s import checks
    rng = numpy.random.default_rng(4)
    model = minis2s.Seq2Seq(13, 17, cell=cell, emb_size=5, hidden_size=6, dtype=numpy.dtype(dtype).name, seed=2,
                            **{"attention": "bahdanau", **options})
    checks.unit_scale(model, 2)
    batch = checks.random_batch(rng, (4, 2, 7), (1, 1, 1), 13, 17)
    tolerance = parity_tolerance(dtype, decoder_operations(model, batch, steps=3))

    def run():
        encoded, state, feed = model.start(batch.src, batch.src_lengths)
        tokens, results = batch.tgt_in[0], []
        for _ in range(3):
            logp, state, feed, weights = model.step(tokens, state, feed, encoded)
            results.append((logp, weights) + tuple(state))
            tokens = logp.argmax(axis=1)
        return results

    spied = "_plain_step" if options.get("attention") == "none" else "_run_forward"
    with spying(kernels.decoder, spied) as calls:
        fast, reference = both(run)
    assert calls[spied] == 3
    for fast_step, reference_step in zip(fast, reference):
        assert len(fast_step) == len(reference_step)
        for fast_array, reference_array in zip(fast_step, reference_step):
            if reference_array is None:
                assert fast_array is None
            else:
                assert_near(fast_array, reference_array, tolerance)


def test_decoder_loop_kernel_leaves_other_decoders_to_the_reference():
    """The plain RNN cell: the twin hands it to the reference loop."""
    from minis2s import checks
    rng = numpy.random.default_rng(0)
    batch = checks.random_batch(rng, (3, 2), (2, 4), 9, 9)
    for options in (dict(cell="rnn"), dict(cell="rnn", attention="luong-dot", input_feeding=True)):
        model = minis2s.Seq2Seq(9, 9, emb_size=4, hidden_size=4, seed=1, **{"attention": "bahdanau", **options})
        _, cache = model.forward(batch, train=True)
        assert isinstance(cache.steps, list)
        model.loss_and_grads(batch)


@given(size=st.integers(1, 4), k=st.integers(1, 5), vocab=st.integers(5, 300), seed=st.integers(0, 1000),
       dtype=st.sampled_from([numpy.float64, numpy.float32]), ties=st.booleans())
def test_beam_top_k_kernel_matches_the_reference(size, k, vocab, seed, dtype, ties):
    """The k best of scores[b, j] + logp[b*k + j, v] per sentence, sorted; dead beams;
    vocabularies over several of the kernel's 64-word blocks, float32 log-probabilities, and ties."""
    from minis2s.kernels.decode import top_k
    rng = numpy.random.default_rng(seed)
    scores = rng.standard_normal((size, k))
    scores[:, k // 2:] = numpy.where(rng.random((size, k - k // 2)) < 0.3, -numpy.inf, scores[:, k // 2:])
    scores[:, 0] = rng.standard_normal(size)                              # one live beam at least
    logp = rng.standard_normal((size * k, vocab))
    if ties:
        logp = numpy.round(logp * 2) / 2
        scores = numpy.round(scores * 2) / 2
    logp = logp.astype(dtype)
    logp[:, 1] = -numpy.inf                                               # a forbidden word
    best, best_scores = top_k(scores, logp)

    candidates = (scores.reshape(-1, 1) + logp.astype(numpy.float64)).reshape(size, k * vocab)
    for b in range(size):
        expected = numpy.sort(candidates[b])[::-1][:k]
        numpy.testing.assert_array_equal(best_scores[b], expected)
        numpy.testing.assert_array_equal(candidates[b, best[b]], best_scores[b])   # the indices name them
        finite = numpy.isfinite(best_scores[b])
        assert len(set(best[b][finite].tolist())) == int(finite.sum())


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_beam_top_k_kernel_finds_a_lone_best_word_anywhere_in_its_block(dtype):
    """The kernel passes over 64-word blocks by their maximum: one word far above the rest, at each edge
    of a block, in the middle, and in the last, shorter block, is still found (then the runner-up)."""
    from minis2s.kernels.decode import top_k
    vocab = 200
    for position in (0, 1, 31, 62, 63, 64, 65, 127, 128, 191, 192, 199):
        logp = numpy.full((2, vocab), -10.0, dtype=dtype)
        logp[1, position] = -1.0
        logp[1, (position + 100) % vocab] = -2.0
        best, best_scores = top_k(numpy.array([[-0.5, -0.25]]), logp)
        assert best[0].tolist() == [vocab + position, vocab + (position + 100) % vocab]
        assert best_scores[0].tolist() == [-1.25, -2.25]


@pytest.mark.parametrize("cell,attention", [("lstm", "bahdanau"), ("gru", "none")])
def test_decoding_with_kernels_gives_the_reference_translations(cell, attention):
    from minis2s.decode import beam_search
    rng = numpy.random.default_rng(1)
    model = minis2s.Seq2Seq(40, 40, cell=cell, attention=attention, emb_size=8, hidden_size=16, seed=4)
    src = [rng.integers(4, 40, size=n).tolist() for n in (5, 9, 3, 7)]
    for beam in (1, 4):
        with spying(kernels.decode, "top_k") as calls:
            fast, reference = both(lambda: beam_search(model, src, beam_size=beam, nbest=beam, max_length=12))
        assert calls["top_k"] > 0
        for hypotheses, expected in zip(fast, reference):
            assert [h.tokens for h in hypotheses] == [h.tokens for h in expected]
            numpy.testing.assert_allclose([h.score for h in hypotheses], [h.score for h in expected], rtol=1e-5)


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("trans_b", [True, False])
def test_numpys_blas_called_from_numba(dtype, trans_b):
    """kernels/blas.py: the product the whole-sequence kernels take at each step, inside Numba, equals
    NumPy's (the same library, so to the last bit on these shapes), beta = 0 ignoring what c held."""
    import numba
    from minis2s.kernels import blas
    assert blas.available                    # NumPy's wheels bundle OpenBLAS; CI installs those
    gemm = numba.njit(lambda t, a, b, beta, c: blas.gemm(t, a, b, beta, c))
    rng = numpy.random.default_rng(1)
    a = rng.standard_normal((5, 7)).astype(dtype)
    b = rng.standard_normal((9, 7) if trans_b else (7, 9)).astype(dtype)
    c = rng.standard_normal((5, 9)).astype(dtype)
    product = a @ (b.T if trans_b else b)
    added = c.copy()
    gemm(trans_b, a, b, dtype(1), added)
    assert_near(added, c + product, 1e-6 if dtype == numpy.float32 else 1e-14)
    c[...] = numpy.nan
    gemm(trans_b, a, b, dtype(0), c)
    assert_near(c, product, 1e-6 if dtype == numpy.float32 else 1e-14)
    gemm_at = numba.njit(lambda a, b, beta, c: blas.gemm_at(a, b, beta, c))   # c <- a^T b + beta c
    d = rng.standard_normal((5, 4)).astype(dtype)
    added = rng.standard_normal((7, 4)).astype(dtype)
    expected = added + a.T @ d
    gemm_at(a, d, dtype(1), added)
    assert_near(added, expected, 1e-6 if dtype == numpy.float32 else 1e-14)


@given(size=st.integers(1, 70), where=st.integers(0, 69), seed=st.integers(0, 1000),
       fill=st.sampled_from([None, -numpy.inf]))
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_vectorised_running_maximum_is_exact(dtype, size, where, seed, fill):
    """kernels/scalar.py's max_of, in the running-maximum loop the log-softmax and cross-entropy kernels
    vectorise: the exact maximum wherever it lies (first, last, in the tail past a multiple of the SIMD
    width), with -inf elsewhere, and ties."""
    import numba
    from minis2s.kernels.scalar import max_of

    @numba.njit(fastmath=True, error_model="numpy")
    def running_max(row):
        top = row[0]
        for v in range(1, row.shape[0]):
            top = max_of(top, row[v])
        return top

    row = numpy.random.default_rng(seed).standard_normal(size).astype(dtype)
    if fill is not None:
        row[:] = fill
    row[where % size] = 10.0                      # beyond any normal draw
    row[(where * 7) % size] = 10.0                # a tie, or the same place
    assert running_max(row) == row.max() == dtype(10.0)
    assert running_max(-numpy.abs(row)) == (-numpy.abs(row)).max()


@given(rows=st.integers(1, 40), columns=st.integers(1, 40), start=st.integers(0, 3),
       dtype=st.sampled_from([numpy.float32, numpy.float64]))
def test_tiled_transpose_is_the_transpose(rows, columns, start, dtype):
    """kernels/rnn.py's transposed (8 x 8 tiles, then the edges): W^T exactly, C-contiguous, for any shape
    and for a column slice (the embedding's columns of W_ih)."""
    from minis2s.kernels.rnn import transposed
    whole = numpy.random.default_rng(rows * 41 + columns).standard_normal((rows, columns + start)).astype(dtype)
    for W in (whole, whole[:, start:]):
        out = transposed(W)
        assert out.flags.c_contiguous and out.dtype == dtype
        numpy.testing.assert_array_equal(out, W.T)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_kernel_in_parallel_at_a_real_size(dtype, smoothing):
    """The rows' parallel loop (from 2^20 logits on), padded positions included, against the reference."""
    from minis2s.loss import cross_entropy
    rng = numpy.random.default_rng(7)
    steps, batch, vocab = 12, 30, 9000                   # over 2^20 logits
    logits = _normal(rng, (steps, batch, vocab), dtype, 3.0)
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = steps
    targets = rng.integers(0, vocab, size=(steps, batch))
    tolerance = parity_tolerance(dtype, 2 * vocab + steps * batch + 4)    # as the test above
    with spying(kernels.loss, "_rows_parallel") as calls:
        fast, reference = both(lambda: cross_entropy(logits, targets, lengths, label_smoothing=smoothing))
    assert calls == {"_rows_parallel": 1}
    weight = 1.0 / int(lengths.sum())
    assert_near(fast[0], reference[0], tolerance, "loss", floor=weight)
    assert_near(fast[1], reference[1], tolerance, "dlogits", floor=weight)


