"""The counter-based generator: known answers, one stream, the same numbers on every backend."""
import numpy
import pytest

from minis2s import backend, dispatch, rng
from conftest import host


def test_splitmix64_known_answers():
    """Key 0, counters 0, 1, 2 are SplitMix64's first three outputs from seed 0 (its published sequence)."""
    bits = rng.splitmix64(numpy.arange(3, dtype=numpy.uint64), numpy.uint64(0))
    assert [hex(int(b)) for b in bits] == ["0xe220a8397b1dcdaf", "0x6e789e6aa1b965f4", "0x6c45d188009454f"]


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_the_numba_generator_is_the_reference_bit_for_bit(dtype):
    from minis2s.kernels.rng import uniform as fast
    for key, start in ((rng._key(0), 0), (rng._key(-3), 12345), (rng._key(2 ** 70), 2 ** 40)):
        expected = rng.uniform.reference(numpy.empty(1000, dtype=dtype), start, key)
        assert numpy.array_equal(fast(numpy.empty(1000, dtype=dtype), start, key), expected)


def test_one_stream_whatever_the_shapes():
    a = rng.CounterRNG(5, numpy)
    first = numpy.concatenate([a.random((2, 3)).ravel(), a.random((4,))])
    assert numpy.array_equal(first, rng.CounterRNG(5, numpy).random((10,)))
    assert not numpy.array_equal(first, rng.CounterRNG(6, numpy).random((10,)))


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_uniform_in_the_unit_interval(dtype):
    u = rng.CounterRNG(1, numpy).random((200_000,), dtype=dtype)
    assert u.dtype == dtype and u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    counts, _ = numpy.histogram(u, bins=20, range=(0, 1))
    assert counts.min() > 0.9 * len(u) / 20


def test_the_same_numbers_on_every_backend(xp):
    on_numpy = rng.CounterRNG(11, numpy).random((3, 4), dtype=numpy.float32)
    with dispatch.reference_path():
        here = host(rng.generator(11).random((3, 4), dtype=numpy.float32))
    assert numpy.array_equal(here, on_numpy)


def test_dropout_is_the_same_on_every_backend(xp):
    """A training step with dropout and scheduled sampling gives the same loss on NumPy and on this backend."""
    import minis2s
    from minis2s.data import collate

    def loss_on(name):
        backend.use(name)
        try:
            model = minis2s.Seq2Seq(11, 12, cell="lstm", attention="bahdanau", emb_size=5, hidden_size=6,
                                    dropout=0.4, teacher_forcing=0.5, dtype="float64", seed=3)
            batch = collate([[4, 5, 6, 7], [5, 6]], [[6, 5, 4], [4, 8, 9, 7]])
            model.reseed(17)
            return backend.to_float(model.loss_and_grads(batch))
        finally:
            backend.use("numpy")
    assert loss_on(backend.name()) == pytest.approx(loss_on("numpy"), rel=1e-12)
