"""Array backends: the same maths on NumPy (CPU) or CuPy (GPU).

Every layer in minis2s is written once against an array module called ``xp``.
``xp`` is NumPy or CuPy; the code does not care which, because CuPy copies
NumPy's API. This module chooses the active one and moves arrays between them.

    use("numpy") / use("cupy")   choose (also: environment variable MINIS2S_BACKEND)
    use("fakecupy")              a strict CuPy stand-in on NumPy, for machines without a GPU (fakecupy.py)
    xp()                         the active array module
    asarray(a, dtype=None)       an array on the active backend (float32 unless told)
    to_numpy(a)                  a NumPy array on the host, whatever ``a`` was
    to_float(a)                  a one-element array as a Python float (a device -> host copy on the GPU)
    transfers                    the device -> host copies made through to_numpy (and so to_float, to_bool):
                                 ``.count`` and ``.bytes`` since ``.reset()``
    rng(seed)                    a seeded random generator on the active backend

Floating point: float32 by default (fast), float64 on request (gradient checks).
"""
import os

import numpy

BACKENDS = ("numpy", "cupy", "fakecupy")
DEFAULT_DTYPE = numpy.float32

_active = None  # the chosen array module; None until first use


class Transfers:
    """Device -> host copies made through ``to_numpy``: how many, and how many bytes, since ``reset()``.
    minis2s makes its copies only there (the suite, run on the stand-in, which refuses implicit copies,
    holds it to that), so this counts a step's syncs on CuPy too."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.count, self.bytes = 0, 0


transfers = Transfers()


class BackendError(RuntimeError):
    """The requested backend cannot run on this machine (the message says why)."""


def _load_cupy():
    try:
        import cupy
    except ImportError as error:
        raise BackendError(
            "backend 'cupy' needs CuPy, which is not installed "
            "(pip install 'minis2s[gpu]': cupy-cuda13x and numba-cuda, for CUDA 13; "
            "on CUDA 12: pip install cupy-cuda12x numba-cuda)") from error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDA driver missing or broken
        raise BackendError(f"backend 'cupy': CuPy is installed but no CUDA GPU is usable ({error})") from error
    if count == 0:
        raise BackendError("backend 'cupy': CuPy is installed but no CUDA GPU was found")
    return cupy


def use(name):
    """Make ``name`` ("numpy", "cupy" or "fakecupy") the active backend and return its array module."""
    global _active
    if name == "numpy":
        _active = numpy
    elif name == "cupy":
        _active = _load_cupy()
    elif name == "fakecupy":
        from . import fakecupy
        _active = fakecupy
    else:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return _active


def xp():
    """The active array module (NumPy unless ``use`` or MINIS2S_BACKEND chose CuPy)."""
    if _active is None:
        use(os.environ.get("MINIS2S_BACKEND", "numpy") or "numpy")
    return _active


def name():
    """The active backend's name: "numpy", "cupy" or "fakecupy"."""
    return {"numpy": "numpy", "cupy": "cupy"}.get(xp().__name__, "fakecupy")


def available():
    """The backends that can run here (CuPy only where CuPy and a GPU are present; the stand-in always)."""
    names = ["numpy", "fakecupy"]
    try:
        _load_cupy()
        names.append("cupy")
    except BackendError:
        pass
    return names


def array_module(*arrays):
    """NumPy or CuPy (or the stand-in), whichever owns ``arrays`` (NumPy for plain Python values)."""
    for array in arrays:
        if array is None:
            continue
        owner = type(array).__module__
        if owner.startswith("cupy"):
            import cupy
            return cupy
        if owner == "minis2s.fakecupy":
            from . import fakecupy
            return fakecupy
    return numpy


def get_dtype(dtype=None):
    """Resolve "float32" / "float64" / a NumPy dtype; None gives the default, float32."""
    if dtype is None:
        return numpy.dtype(DEFAULT_DTYPE)
    dtype = numpy.dtype(dtype)
    if dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def asarray(a, dtype=None):
    """``a`` as an array of the active backend, of ``dtype`` if given (else its own)."""
    module = xp()
    if module is numpy:
        a = to_numpy(a)
    return module.asarray(a, dtype=None if dtype is None else numpy.dtype(dtype))


def to_numpy(a):
    """``a`` as a NumPy array on the host (a copy from the GPU for CuPy arrays)."""
    if hasattr(a, "get") and array_module(a) is not numpy:
        transfers.count += 1
        transfers.bytes += int(a.nbytes)
        return a.get()
    return numpy.asarray(a)


def to_float(a):
    """A one-element array (or a number) as a Python float: on the GPU an explicit device -> host copy,
    so write it only where the host needs the value (a log line, a gradient check, the stopping test)."""
    return float(to_numpy(a))


def to_bool(a):
    """A one-element boolean array as a Python bool: like ``to_float``, an explicit copy to the host."""
    return bool(to_numpy(a))
