"""Each fast kernel against the reference path it replaces."""
import numpy
import pytest
from hypothesis import given, strategies as st

from minis2s import kernels, optim


@pytest.fixture
def reference_only():
    kernels.enable(False)
    yield
    kernels.enable(True)


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
@pytest.mark.parametrize("dtype,tolerance", [(numpy.float64, 1e-12), (numpy.float32, 1e-5)])
def test_fused_adam_matches_the_reference(dtype, tolerance, shapes, weight_decay, steps, monkeypatch):
    from minis2s.kernels import optim as fused
    monkeypatch.setattr(fused, "FUSED_FROM", 1)                        # the kernel on every tensor
    fast, fast_adam = _run_adam(dtype, shapes, weight_decay, steps, True)
    slow, slow_adam = _run_adam(dtype, shapes, weight_decay, steps, False)
    for k in fast:
        numpy.testing.assert_allclose(fast[k], slow[k], rtol=tolerance, atol=tolerance)
        numpy.testing.assert_allclose(fast_adam.v[k], slow_adam.v[k], rtol=tolerance, atol=tolerance * 1e-3)


def test_the_switch(reference_only):
    assert not kernels.enabled()
    kernels.enable(True)
    assert kernels.enabled()


@pytest.mark.parametrize("dtype,tolerance", [(numpy.float64, 1e-12), (numpy.float32, 1e-5)])
def test_fused_adam_matches_the_reference_on_large_tensors(dtype, tolerance):
    from minis2s.kernels.optim import FUSED_FROM
    shapes = [(FUSED_FROM // 100 + 7, 100), (3,)]                       # one tensor above the threshold
    fast, _ = _run_adam(dtype, shapes, 0.01, 3, True)
    slow, _ = _run_adam(dtype, shapes, 0.01, 3, False)
    for k in fast:
        numpy.testing.assert_allclose(fast[k], slow[k], rtol=tolerance, atol=tolerance)
