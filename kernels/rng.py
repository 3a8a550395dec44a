"""The counter-based generator in one Numba loop: the twin of ``minis2s.rng.uniform``.

The reference makes about ten passes over the counters, each with a temporary; here each number is
hashed and turned into a float in one pass. Every constant is a uint64, so Numba keeps the arithmetic
in wrapping unsigned 64-bit integers, bit for bit the reference's.
"""
import numba
import numpy

_ONE = numpy.uint64(1)
_GOLDEN = numpy.uint64(0x9E3779B97F4A7C15)
_MIX1 = numpy.uint64(0xBF58476D1CE4E5B9)
_MIX2 = numpy.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = numpy.uint64(30), numpy.uint64(27), numpy.uint64(31)
_S40, _S11 = numpy.uint64(40), numpy.uint64(11)
_TO32, _TO64 = numpy.float32(2.0 ** -24), 2.0 ** -53


@numba.njit(cache=True)
def _hash(i, key):
    z = (i + _ONE) * _GOLDEN + key
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@numba.njit(cache=True)
def _fill32(out, start, key):
    for n in range(out.shape[0]):
        out[n] = numpy.float32(_hash(start + numpy.uint64(n), key) >> _S40) * _TO32


@numba.njit(cache=True)
def _fill64(out, start, key):
    for n in range(out.shape[0]):
        out[n] = numpy.float64(_hash(start + numpy.uint64(n), key) >> _S11) * _TO64


def uniform(out, start, key):
    (_fill32 if out.dtype == numpy.float32 else _fill64)(out, numpy.uint64(start), numpy.uint64(key))
    return out
