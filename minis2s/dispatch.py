"""One dispatch point: each reference function, or its fast twin in ``kernels/``.

The maths of minis2s is written once, in the reference functions a learner reads (``nn/``,
``loss.py``, ``decode.py``, ``optim.py``): array code only, no branch on speed. Some of them have a
fast twin in ``kernels/`` (the same equations as Numba loops) with the same arguments and the same
results. The twin is named where the reference is defined, and nowhere else, by the decorator ``twin``
on its definition: nn/rnn.py's ``direction_forward`` (a layer's time loop over the sequence) carries
``twin("rnn.direction_forward")``, and its twin is kernels/rnn.py's ``direction_forward``.

A call then goes through ``dispatch`` below, which runs the twin when

    * the kernels are on: the default; ``MINIS2S_KERNELS=0``, ``use_kernels(False)`` or
      ``with reference_path():`` turn them off,
    * the kernels can be loaded (they need Numba; without it minis2s says so once and runs the
      reference path everywhere),
    * and every array argument is a NumPy array (a twin marked ``follow="backend"``, whose arguments
      hold no array, as beam search's, follows the active backend instead). A CuPy array goes to the CUDA twin in ``kernels/cuda/`` where
      there is one (the same name), else to the reference; the strict stand-in's arrays always keep
      the reference path: no kernel ever sees them.

Otherwise it runs the reference. Inside ``with constant_weights():`` (decoding: every step reads the same
weights) a twin may keep what it derives from a weight, a transposed copy say, for the next step
(``derived``); the reference derives nothing. ``f.reference`` is the reference itself, whatever the switch says;
``f.twin_name`` names its twin. The gradient checks (``minis2s gradcheck``, the test suite) run with
the kernels off, so they check the code a learner reads; ``tests/test_kernels.py`` holds every twin
against its reference.
"""
import contextlib
import functools
import importlib
import os
import sys

import numpy

_enabled = os.environ.get("MINIS2S_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")
_kernels = None            # the module minis2s.kernels once loaded; False when it cannot be
_modules = {}              # "rnn.direction_forward" -> (the module minis2s.kernels.rnn, "direction_forward")


def use_kernels(flag=True):
    """Run the fast twins where they exist (True) or only the reference path (False)."""
    global _enabled
    _enabled = bool(flag)


def kernels_enabled():
    """Is the fast path asked for (and can it load)?"""
    return _enabled and _load() is not None


@contextlib.contextmanager
def reference_path(reference=True):
    """``with reference_path():`` runs the block on the reference functions only (then restores the switch);
    ``reference_path(False)`` runs it with the kernels on."""
    global _enabled
    before = _enabled
    _enabled = not reference
    try:
        yield
    finally:
        _enabled = before


_constant = None          # inside constant_weights(): {key: (the arrays it names, what was derived from them)}


@contextlib.contextmanager
def constant_weights():
    """``with constant_weights():`` (or ``@constant_weights()`` on a function) promises that no weight
    changes inside the block, as while decoding. Twins may then keep copies derived from weights across
    calls (``derived``); they are dropped when the outermost block ends."""
    global _constant
    outer = _constant
    if outer is None:
        _constant = {}
    try:
        yield
    finally:
        if outer is None:
            _constant = None


def derived(what, sources, make):
    """``make()``; inside ``constant_weights()`` made once and kept for the block, under ``what`` and the
    ``sources`` it is made from: arrays (by where their data lies, shape, strides and dtype) or other
    objects (by identity). The sources are held with it, so their memory cannot be reused meanwhile."""
    if _constant is None:
        return make()
    key = (what,) + tuple(_place(a) for a in sources)
    kept = _constant.get(key)
    if kept is None:
        kept = _constant[key] = (sources, make())
    return kept[1]


def _place(a):
    """What ``derived`` keys a source by: an array that owns its data by identity (the held array keeps its
    id), a view by where its data lies, its shape, strides and dtype; any other object by identity."""
    if type(a) is not numpy.ndarray or a.base is None:
        return id(a)
    return a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str


def weights_constant():
    """Are we inside ``constant_weights()``?"""
    return _constant is not None


def _load():
    """minis2s.kernels, or None when Numba cannot be imported (said once, on standard error)."""
    global _kernels
    if _kernels is None:
        try:
            _kernels = importlib.import_module("minis2s.kernels")
        except ImportError as error:
            _kernels = False
            sys.stderr.write(f"minis2s: the fast kernels cannot be loaded ({error}); "
                             "running the reference path (pip install numba for the kernels)\n")
    return _kernels or None


def _find_twin(name):
    """kernels/<module>.py's <function> for "module.function" (looked up at each call, so a test can spy on it)."""
    found = _modules.get(name)
    if found is None:
        module_name, function_name = name.split(".")
        found = _modules[name] = importlib.import_module(f"minis2s.kernels.{module_name}"), function_name
    return getattr(*found)


def _on_host(args):
    """True when every array among ``args`` is a NumPy array (and there is at least one)."""
    seen = False
    for a in args:
        kind = type(a)
        if kind is numpy.ndarray:
            seen = True
        elif hasattr(a, "__cuda_array_interface__") or (hasattr(a, "shape") and hasattr(a, "dtype")
                                                         and not isinstance(a, numpy.generic)):
            return False                      # a device array (CuPy or the stand-in): reference path
    return seen


_cuda_modules = {}         # "rnn" -> minis2s.kernels.cuda.rnn, or None where it has no CUDA twins


def _on_cupy(args):
    """True when the array arguments are CuPy's (a real GPU: the stand-in's arrays are not)."""
    arrays = [a for a in args if hasattr(a, "__cuda_array_interface__")]
    return bool(arrays) and all(type(a).__module__.startswith("cupy") for a in arrays)


def _backend_name():
    """The active backend's name (for a twin that follows the backend: its arguments hold no array)."""
    from . import backend
    return backend.name()


def _find_cuda_twin(name):
    """kernels/cuda/<module>.py's <function>, or None when there is none (or numba.cuda cannot load)."""
    module_name, function_name = name.split(".")
    if module_name not in _cuda_modules:
        try:
            _cuda_modules[module_name] = importlib.import_module(f"minis2s.kernels.cuda.{module_name}")
        except ImportError:
            _cuda_modules[module_name] = None
    return getattr(_cuda_modules[module_name], function_name, None)


def twin(name, follow="arrays"):
    """Mark a reference function as having the fast twin ``kernels/<module>.py: <function>`` (NumPy arrays)
    and, where ``kernels/cuda/<module>.py`` has one of that name, a CUDA twin (CuPy arrays).
    ``follow="backend"``: the arguments hold no array (beam search takes a model and lists of ids), so
    the active backend decides: NumPy -> the twin, CuPy -> the CUDA twin, the stand-in -> the reference."""
    if follow not in ("arrays", "backend"):
        raise ValueError(f"follow must be 'arrays' or 'backend', got {follow!r}")

    def mark(reference):
        @functools.wraps(reference)
        def dispatch(*args, **kwargs):
            where = _backend_name() if follow == "backend" else None
            if _enabled and (where == "numpy" if where else _on_host(args)) and _load() is not None:
                return _find_twin(name)(*args, **kwargs)
            if _enabled and (where == "cupy" if where else _on_cupy(args)):
                fast = _find_cuda_twin(name)
                if fast is not None:
                    return fast(*args, **kwargs)
            return reference(*args, **kwargs)

        dispatch.reference = reference
        dispatch.twin_name = name
        return dispatch
    return mark
