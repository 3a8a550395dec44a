"""Shared fixtures: every test that takes ``xp`` runs once per backend; CuPy only where a GPU is present."""
import os

import numpy
import pytest
from hypothesis import HealthCheck, settings

from minis2s import backend, dispatch

settings.register_profile(
    "minis2s", max_examples=int(os.environ.get("MINIS2S_EXAMPLES", "12")), deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile("minis2s")

AVAILABLE = backend.available()
REQUIRE_GPU = os.environ.get("MINIS2S_REQUIRE_GPU", "0") not in ("", "0")   # a GPU skip becomes a failure


@pytest.fixture(autouse=True)
def reference_path():
    """Every test runs on the reference functions, the maths a learner reads, so that the gradient checks
    check that code; tests/test_kernels.py turns the fast twins on and holds each against its reference."""
    with dispatch.reference_path():
        yield


@pytest.fixture(params=backend.BACKENDS)
def xp(request):
    """The array module of the backend under test, made active for the test's duration."""
    if request.param not in AVAILABLE:
        if REQUIRE_GPU:
            pytest.fail(f"MINIS2S_REQUIRE_GPU=1 but backend {request.param} is not available (needs CuPy and a GPU)")
        pytest.skip(f"backend {request.param} is not available here (needs CuPy and a GPU)")
    before = backend.name()                # the suite's backend: numpy, or MINIS2S_BACKEND's (fakecupy, cupy)
    module = backend.use(request.param)
    yield module
    backend.use(before)


@pytest.fixture
def on_numpy():
    """For a test that means NumPy (the Numba kernels' arrays, a NumPy-only tool): NumPy for its duration,
    whatever backend the suite runs under (MINIS2S_BACKEND=fakecupy runs the rest on the stand-in)."""
    before = backend.name()
    yield backend.use("numpy")
    backend.use(before)


def assert_checked(errors, tolerance=1e-7):
    """Every tensor's max relative error is within tolerance (and something was checked)."""
    assert errors, "no tensor was checked"
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance, f"{worst}: relative error {errors[worst]:.3e} > {tolerance:.0e} ({errors})"


def host(a):
    return backend.to_numpy(a)


@pytest.fixture
def rng():
    return numpy.random.default_rng(1234)
