import numpy
import pytest

from minis2s import backend, rng


def test_numpy_is_the_default_and_float32_is_the_default_dtype(monkeypatch):
    monkeypatch.delenv("MINIS2S_BACKEND", raising=False)
    monkeypatch.setattr(backend, "_active", None)
    assert backend.xp() is numpy
    assert backend.get_dtype() == numpy.float32
    assert backend.get_dtype("float64") == numpy.float64


def test_environment_variable_chooses_the_backend(monkeypatch):
    monkeypatch.setattr(backend, "_active", None)
    monkeypatch.setenv("MINIS2S_BACKEND", "numpy")
    assert backend.name() == "numpy"
    monkeypatch.setattr(backend, "_active", None)
    monkeypatch.setenv("MINIS2S_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match="tensorflow"):
        backend.xp()
    backend.use("numpy")


def test_cupy_without_cupy_or_gpu_says_which(monkeypatch):
    if "cupy" in backend.available():
        pytest.skip("CuPy and a GPU are present here")
    before = backend.name()                        # numpy, or the stand-in under MINIS2S_BACKEND=fakecupy
    with pytest.raises(backend.BackendError, match="CuPy, which is not installed|no CUDA GPU"):
        backend.use("cupy")
    assert backend.name() == before                # a refused backend leaves the active one in place


def test_cupy_missing_is_named(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    with pytest.raises(backend.BackendError, match="CuPy, which is not installed"):
        backend.use("cupy")


def test_only_float_dtypes_are_accepted():
    with pytest.raises(ValueError, match="float32 or float64"):
        backend.get_dtype("int32")


def test_round_trip_and_seeded_generators(xp):
    a = numpy.arange(6.0).reshape(2, 3)
    moved = backend.asarray(a, dtype="float32")
    assert isinstance(moved, xp.ndarray) and moved.dtype == numpy.float32
    numpy.testing.assert_array_equal(backend.to_numpy(moved), a)
    first = backend.to_numpy(rng.generator(7).random((5,), dtype=numpy.float64))
    again = backend.to_numpy(rng.generator(7).random((5,), dtype=numpy.float64))
    other = backend.to_numpy(rng.generator(8).random((5,), dtype=numpy.float64))
    numpy.testing.assert_array_equal(first, again)
    assert not numpy.array_equal(first, other)
