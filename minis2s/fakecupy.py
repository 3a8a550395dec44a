"""A strict stand-in for CuPy, on NumPy: ``MINIS2S_BACKEND=fakecupy``.

The GPU path has to be kept honest on machines without a GPU (CI, most laptops). CuPy's arrays live on
the device, and CuPy refuses to turn them into host values behind the programmer's back:
``numpy.asarray(x)`` raises ``TypeError: Implicit conversion to a NumPy array is not allowed``; the
only ways to the host are ``x.get()`` and ``cupy.asnumpy(x)``, and each is a device -> host copy that
waits for the device. This module behaves the same way, strictly, so that a hidden copy in minis2s
fails here just as it would cost time (or fail) there:

    fakecupy.ndarray         wraps a NumPy array ("on the device"); its own type, not a NumPy subclass
    numpy.asarray(x), x.__array__, float(x), int(x), bool(x), operator.index(x), iteration over x
                             TypeError, like CuPy's implicit-conversion error (CuPy itself allows float(x)
                             and bool(x) on one element, with a silent sync: here they are refused, so
                             that every transfer is visible in the code)
    x.get(), asnumpy(x), x.item(), x.tolist()
                             the only ways to the host; each counted in ``transfers`` (calls and bytes)
    asarray(numpy_array)     host -> device, counted in ``uploads``
    NumPy functions and operators on ndarrays, ``__array_ufunc__`` / ``__array_function__``
                             computed by NumPy and kept on the "device" (wrapped again); a plain NumPy
                             array mixed into them is a TypeError, as in CuPy

``fakecupy.transfers.reset()`` and ``.count`` / ``.bytes`` let tests hold code to a sync budget.
``fakecupy.launches.count`` counts the operations that would each be a kernel launch on CuPy (a ufunc, a
reduction, a copy, a fancy index or an assignment; not a view such as reshape or a basic slice).
"""
import types

import numpy



class Counter:
    """How many device -> host copies (and bytes) since the last reset."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.count, self.bytes, self.largest = 0, 0, 0           # largest: the most elements in one copy

    def add(self, array):
        self.count += 1
        self.bytes += int(array.nbytes)
        self.largest = max(self.largest, int(array.size))


class Launches:
    """How many operations that would each launch a kernel on CuPy, since the last reset."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.count = 0


transfers = Counter()          # device -> host
uploads = Counter()            # host -> device
launches = Launches()          # kernels CuPy would have launched
_VIEWS = frozenset(("reshape", "view", "transpose", "swapaxes", "squeeze"))    # no kernel on CuPy

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy "
            "array explicitly. (minis2s.fakecupy, the CuPy stand-in)")


def _unwrap(value):
    """Device arrays -> their NumPy array, inside tuples, lists and dicts; a NumPy array is refused."""
    if isinstance(value, ndarray):
        return value._array
    if isinstance(value, numpy.ndarray):
        raise TypeError(f"Unsupported type {type(value)} mixed with fakecupy arrays (use fakecupy.asarray)")
    if isinstance(value, (tuple, list)):
        return type(value)(_unwrap(v) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    return value


def _wrap(value):
    """NumPy results -> device arrays (a NumPy scalar becomes a 0-d device array, as CuPy returns)."""
    if isinstance(value, numpy.ndarray):
        return ndarray(value)
    if isinstance(value, numpy.generic):
        return ndarray(numpy.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class ndarray(numpy.lib.mixins.NDArrayOperatorsMixin):      # noqa: N801  (CuPy's name)
    """An array "on the device": a NumPy array that refuses to leave implicitly."""

    __slots__ = ("_array",)

    def __init__(self, array):
        self._array = array

    # --- what stays on the device
    shape = property(lambda self: self._array.shape)
    dtype = property(lambda self: self._array.dtype)
    ndim = property(lambda self: self._array.ndim)
    size = property(lambda self: self._array.size)
    nbytes = property(lambda self: self._array.nbytes)
    itemsize = property(lambda self: self._array.itemsize)
    strides = property(lambda self: self._array.strides)
    T = property(lambda self: ndarray(self._array.T))
    flags = property(lambda self: self._array.flags)

    def __len__(self):
        return len(self._array)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        launches.count += 1
        result = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        out = kwargs.get("out")
        if out is not None:
            return out[0] if isinstance(out, tuple) and len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        launches.count += 1
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def __getitem__(self, key):
        if _gathers(key):
            launches.count += 1
        return _wrap(self._array[_unwrap(key)])

    def __setitem__(self, key, value):
        launches.count += 1
        self._array[_unwrap(key)] = _unwrap(value)

    def __getattr__(self, name):                   # methods: sum, max, reshape, astype, argmax, ...
        if name.startswith("__"):
            raise AttributeError(name)
        attribute = getattr(self._array, name)
        if not callable(attribute):
            return _wrap(attribute)

        def method(*args, **kwargs):
            if name not in _VIEWS:
                launches.count += 1
            return _wrap(attribute(*_unwrap(args), **_unwrap(kwargs)))
        return method

    def copy(self, order="C"):
        launches.count += 1
        return ndarray(self._array.copy(order=order))

    # --- the only ways to the host
    def get(self, stream=None, order="C", out=None):
        transfers.add(self._array)
        return numpy.array(self._array, order=order)

    def item(self):
        transfers.add(self._array)
        return self._array.item()

    def tolist(self):
        transfers.add(self._array)
        return self._array.tolist()

    # --- refused, like CuPy's implicit conversions
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT)

    def _refuse(self, *args):
        raise TypeError(f"{IMPLICIT} (a device value used as a Python number, truth value or sequence: "
                        f"call .get() or .item() where a host value is meant)")

    __float__ = __int__ = __bool__ = __index__ = __complex__ = __iter__ = _refuse

    def __repr__(self):
        return f"fakecupy.ndarray(shape={self.shape}, dtype={self.dtype})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("fakecupy arrays are not pickled (minis2s never pickles)")


# ----------------------------------------------------------------------------- the module's functions

def asarray(a, dtype=None, order=None):
    """Host -> device (counted), or a device array as it is (cast if asked)."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == numpy.dtype(dtype) else ndarray(a._array.astype(dtype))
    host = numpy.asarray(a, dtype=dtype, order=order)
    uploads.add(host)
    return ndarray(host.copy())


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(a, ndarray):
        return ndarray(numpy.array(a._array, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    host = numpy.array(_unwrap(a), dtype=dtype, order=order, ndmin=ndmin)
    uploads.add(host)
    return ndarray(host)


def asnumpy(a, stream=None, order="C", out=None):
    if isinstance(a, ndarray):
        return a.get(order=order)
    return numpy.asarray(a, order=order)


def get_array_module(*arrays):
    import sys
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in arrays) else numpy


def _gathers(key):
    """Does indexing with ``key`` gather (fancy or boolean indexing: a kernel), rather than take a view?"""
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (ndarray, numpy.ndarray, list)) for k in keys)


def _device_function(function):
    def on_device(*args, **kwargs):
        launches.count += 1
        return _wrap(function(*_unwrap(args), **_unwrap(kwargs)))
    on_device.__name__ = getattr(function, "__name__", "function")
    on_device.__doc__ = getattr(function, "__doc__", None)
    return on_device


class _Ufunc:
    """A NumPy ufunc that takes and gives device arrays, with ``at`` as CuPy 13+ has it."""

    def __init__(self, ufunc):
        self.ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        launches.count += 1
        out = kwargs.get("out")
        result = self.ufunc(*_unwrap(args), **_unwrap(kwargs))
        return out if out is not None else _wrap(result)

    def at(self, a, indices, b=None):
        launches.count += 1
        self.ufunc.at(_unwrap(a), _unwrap(indices), *(() if b is None else (_unwrap(b),)))

    def reduce(self, *args, **kwargs):
        launches.count += 1
        return _wrap(self.ufunc.reduce(*_unwrap(args), **_unwrap(kwargs)))


class _Stream:
    null = None

    def synchronize(self):
        pass


def _synchronize():
    pass


cuda = types.SimpleNamespace(
    Device=lambda *args: types.SimpleNamespace(synchronize=_synchronize, id=0),
    get_current_stream=lambda: _Stream(),
    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, deviceSynchronize=_synchronize))

# Constants and dtypes as NumPy has them.
for _name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_", "intp",
              "inf", "nan", "pi", "e", "newaxis", "dtype", "finfo", "iinfo", "integer", "floating", "ndim",
              "result_type", "can_cast", "promote_types"):
    globals()[_name] = getattr(numpy, _name)
bool = numpy.bool_                          # noqa: A001   cupy.bool (NumPy 2 has it too)


def __getattr__(name):
    """Every other NumPy function, computed on the host copy and kept on the "device"."""
    attribute = getattr(numpy, name)
    if isinstance(attribute, numpy.ufunc):
        return _Ufunc(attribute)
    if callable(attribute):
        return _device_function(attribute)
    raise AttributeError(f"module 'minis2s.fakecupy' has no attribute {name!r}")
