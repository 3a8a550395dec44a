"""Gradient checks of every feed-forward layer, and the properties each one promises."""
import numpy
import pytest
from hypothesis import given, strategies as st

from minis2s import backend, checks, gradcheck, nn
from minis2s.nn import layers
from conftest import assert_checked, host

small = st.integers(1, 5)
lead = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
seeds = st.integers(0, 10_000)


@given(lead=lead, fan_in=small, fan_out=small, seed=seeds)
def test_linear_gradients(xp, lead, fan_in, fan_out, seed):
    assert_checked(checks.check_linear(lead, fan_in, fan_out, seed))


@given(lead=lead, vocab=st.integers(1, 6), dim=small, seed=seeds)
def test_embedding_gradients(xp, lead, vocab, dim, seed):
    assert_checked(checks.check_embedding(lead, vocab, dim, seed))


@given(shape=lead, p=st.floats(0.05, 0.9), seed=seeds)
def test_dropout_gradients(xp, shape, p, seed):
    assert_checked(checks.check_dropout(shape, p, seed))


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "relu", "softmax", "log_softmax"])
@given(shape=lead, seed=seeds)
def test_activation_gradients(xp, name, shape, seed):
    assert_checked(getattr(checks, f"check_{name}")(shape, seed))


def test_checker_catches_a_wrong_gradient(xp):
    """A backward that is off by 1% in one entry must fail the check."""
    x = backend.asarray(numpy.random.default_rng(0).standard_normal((3, 4)), dtype="float64")

    def wrong_backward(dy, y):
        dx = layers.tanh_backward(dy, y)
        dx[0, 0] *= 1.01
        return dx

    errors = gradcheck.check_function(lambda a: (layers.tanh_forward(a),) * 2, wrong_backward, {"x": x})
    assert errors["x"] > 1e-4


def test_embedding_accumulates_repeated_ids_and_skips_padding(xp):
    emb = nn.Embedding(5, 3, padding_idx=0, dtype="float64")
    assert numpy.all(host(emb.params["weight"])[0] == 0)
    ids = backend.asarray(numpy.array([[2, 2, 0], [0, 2, 4]]))
    out, cache = emb.forward(ids)
    dout = backend.asarray(numpy.arange(18.0).reshape(2, 3, 3))
    emb.backward(dout, cache)
    grad = host(emb.grads["weight"])
    d = numpy.arange(18.0).reshape(2, 3, 3)
    numpy.testing.assert_array_equal(grad[2], d[0, 0] + d[0, 1] + d[1, 1])   # used three times
    numpy.testing.assert_array_equal(grad[4], d[1, 2])
    numpy.testing.assert_array_equal(grad[0], 0)                             # padding row: nothing
    numpy.testing.assert_array_equal(grad[[1, 3]], 0)                        # unused rows: nothing
    emb.zero_grad()
    assert not host(emb.grads["weight"]).any()


def test_linear_takes_any_leading_dimensions(xp):
    lin = nn.Linear(4, 2, dtype="float64")
    x = backend.asarray(numpy.random.default_rng(0).standard_normal((2, 3, 5, 4)))
    y, _ = lin.forward(x)
    expected = host(x).reshape(-1, 4) @ host(lin.params["weight"]).T + host(lin.params["bias"])
    numpy.testing.assert_allclose(host(y).reshape(-1, 2), expected, rtol=1e-12)


def test_dropout_statistics_and_identity_at_eval(xp):
    drop = nn.Dropout(0.25, dtype="float64", seed=3)
    x = backend.asarray(numpy.ones((200, 500)))
    y, mask = drop.forward(x, train=True)
    y = host(y)
    assert abs((y == 0).mean() - 0.25) < 0.01                    # drop rate p
    assert abs(y.mean() - 1.0) < 0.02                             # inverted: expectation kept
    assert set(numpy.unique(y)) <= {0.0, 1 / 0.75}
    dy = backend.asarray(numpy.random.default_rng(1).standard_normal((200, 500)))
    numpy.testing.assert_array_equal(host(drop.backward(dy, mask)), host(dy) * host(mask))
    same, none = drop.forward(x, train=False)
    assert same is x and none is None


def test_softmax_is_stable_for_huge_logits(xp):
    a = backend.asarray(numpy.array([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4]]), dtype="float32")
    p = host(layers.softmax_forward(a))
    logp = host(layers.log_softmax_forward(a))
    assert numpy.isfinite(p).all() and numpy.isfinite(logp).all()
    numpy.testing.assert_allclose(p, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-7)
    numpy.testing.assert_allclose(logp[1, :2], numpy.log(0.5), rtol=1e-6)
    s = host(layers.sigmoid_forward(backend.asarray(numpy.array([-1e4, 0.0, 1e4]))))
    numpy.testing.assert_array_equal(s, [0.0, 0.5, 1.0])
