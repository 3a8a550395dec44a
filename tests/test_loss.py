"""Masked cross-entropy: gradients, padding, stability, reductions."""
import numpy
import pytest
from hypothesis import given, strategies as st

from minis2s import backend, checks
from minis2s.loss import cross_entropy
from conftest import assert_checked, host


@pytest.mark.parametrize("reduction", ["mean", "sum", "sequence"])
@given(steps=st.integers(1, 5), batch=st.integers(1, 4), vocab=st.integers(2, 7),
       smoothing=st.sampled_from([0.0, 0.1, 0.3]), seed=st.integers(0, 10_000))
def test_cross_entropy_gradients(xp, reduction, steps, batch, vocab, smoothing, seed):
    assert_checked(checks.check_cross_entropy(steps, batch, vocab, reduction, smoothing, seed))


def _case(rng, steps=6, batch=4, vocab=9):
    logits = rng.standard_normal((steps, batch, vocab))
    targets = rng.integers(0, vocab, size=(steps, batch))
    lengths = numpy.array([6, 1, 3, 5])
    return logits, targets, lengths


@pytest.mark.parametrize("reduction", ["mean", "sum", "sequence"])
def test_padding_changes_nothing(xp, rng, reduction):
    logits, targets, lengths = _case(rng)
    loss, dlogits = cross_entropy(backend.asarray(logits), backend.asarray(targets),
                                  backend.asarray(lengths), reduction=reduction, label_smoothing=0.1)
    pad = numpy.arange(6)[:, None] >= lengths[None, :]
    logits2, targets2 = logits.copy(), targets.copy()
    logits2[pad] = rng.standard_normal((pad.sum(), 9)) * 1e3
    targets2[pad] = -100                                       # even out-of-range targets are ignored
    loss2, dlogits2 = cross_entropy(backend.asarray(logits2), backend.asarray(targets2),
                                    backend.asarray(lengths), reduction=reduction, label_smoothing=0.1)
    numpy.testing.assert_array_equal(host(loss), host(loss2))
    numpy.testing.assert_array_equal(host(dlogits), host(dlogits2))
    assert (host(dlogits)[pad] == 0).all()


def test_mean_is_per_real_token_and_mask_equals_lengths(xp, rng):
    logits, targets, lengths = _case(rng)
    total, _ = cross_entropy(backend.asarray(logits), backend.asarray(targets), backend.asarray(lengths),
                             reduction="sum")
    mean, _ = cross_entropy(backend.asarray(logits), backend.asarray(targets), backend.asarray(lengths))
    total, mean = backend.to_float(total), backend.to_float(mean)
    assert mean == pytest.approx(total / lengths.sum(), rel=1e-12)
    mask = numpy.arange(6)[:, None] < lengths[None, :]
    by_mask, _ = cross_entropy(backend.asarray(logits), backend.asarray(targets), mask=backend.asarray(mask))
    assert backend.to_float(by_mask) == mean
    per_sequence, _ = cross_entropy(backend.asarray(logits), backend.asarray(targets), backend.asarray(lengths),
                                    reduction="sequence")
    assert host(per_sequence).sum() == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_huge_logits_neither_overflow_nor_nan(xp, dtype):
    logits = numpy.zeros((2, 2, 4))
    logits[..., 0] = 1e4
    logits[..., 1] = -1e4
    targets = numpy.array([[0, 1], [2, 0]])
    loss, dlogits = cross_entropy(backend.asarray(logits, dtype=dtype), backend.asarray(targets),
                                  backend.asarray(numpy.array([2, 2])), reduction="sum")
    loss = backend.to_float(loss)
    assert numpy.isfinite(loss) and numpy.isfinite(host(dlogits)).all()
    assert loss == pytest.approx(2e4 + 1e4 + 0.0, rel=1e-6)     # -log p: 0, 2e4, 1e4, 0


def test_matches_pytorch_with_label_smoothing(rng):
    torch = pytest.importorskip("torch")
    logits, targets, lengths = _case(rng)
    mask = numpy.arange(6)[:, None] < lengths[None, :]
    loss, dlogits = cross_entropy(logits, targets, lengths, label_smoothing=0.2)
    a = torch.tensor(logits, requires_grad=True)
    t = torch.tensor(numpy.where(mask, targets, -100))
    ref = torch.nn.functional.cross_entropy(a.reshape(-1, 9), t.reshape(-1), ignore_index=-100,
                                            label_smoothing=0.2, reduction="sum") / mask.sum()
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    numpy.testing.assert_allclose(dlogits, a.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_bad_arguments_are_named(rng):
    logits, targets, lengths = _case(rng)
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(logits, targets, lengths, reduction="average")
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(logits, targets, lengths, label_smoothing=1.0)
