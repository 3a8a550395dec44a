"""One random generator for every backend: the same seed gives the same numbers on NumPy and on the GPU.

NumPy's default generator (PCG64) and CuPy's (XORWOW) give different numbers for one seed, so dropout
masks and scheduled-sampling coins would differ between a CPU run and a GPU run. This generator is
*counter-based*: the i-th number drawn from a seed is a fixed function of (seed, i),

    z     = key + (i + 1) * 0x9E3779B97F4A7C15                   (mod 2^64; key derived from the seed)
    z     = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z     = (z ^ (z >> 27)) * 0x94D049BB133111EB
    bits  = z ^ (z >> 31)                                          (SplitMix64's output function)
    u     = top 24 bits / 2^24 (float32)  or  top 53 bits / 2^53 (float64),   in [0, 1)

written with unsigned 64-bit integer arithmetic, which wraps identically in NumPy and CuPy. A draw of
n numbers hashes the counters i, i+1, ..., i+n-1 (in C order of the requested shape) and moves the
counter on by n; nothing is sequential, so the GPU computes all n at once.

SplitMix64 (Steele, Lea and Flood 2014) passes BigCrush as a generator; hashing a counter this way is
how Java's SplittableRandom and many GPU codes make streams. It is not cryptographic, which dropout
does not need.
"""
import numpy

from . import backend
from .dispatch import twin

_GOLDEN = numpy.uint64(0x9E3779B97F4A7C15)
_MIX1 = numpy.uint64(0xBF58476D1CE4E5B9)
_MIX2 = numpy.uint64(0x94D049BB133111EB)


def splitmix64(counters, key):
    """counters (n,) uint64, key a uint64 -> (n,) uint64 hashes."""
    z = (counters + numpy.uint64(1)) * _GOLDEN + key
    z = (z ^ (z >> numpy.uint64(30))) * _MIX1
    z = (z ^ (z >> numpy.uint64(27))) * _MIX2
    return z ^ (z >> numpy.uint64(31))


@twin("rng.uniform")
def uniform(out, start, key):
    """out (n,) float32 or float64 <- numbers start, start + 1, ..., start + n - 1 of the stream ``key``."""
    xp = backend.array_module(out)
    bits = splitmix64(xp.arange(start, start + out.shape[0], dtype=numpy.uint64), key)
    if out.dtype == numpy.float32:
        out[...] = (bits >> numpy.uint64(40)).astype(numpy.float32) * numpy.float32(2.0 ** -24)
    else:
        out[...] = (bits >> numpy.uint64(11)).astype(numpy.float64) * (2.0 ** -53)
    return out


def _key(seed):
    """A 64-bit key from any integer seed (negative and large ones included), in exact integer arithmetic."""
    return numpy.uint64(((int(seed) % (1 << 64)) * int(_MIX2) + int(_GOLDEN)) % (1 << 64))


class CounterRNG:
    """``random(shape, dtype)`` uniform in [0, 1), the only draw the layers ask for; ``counter`` is its state."""

    def __init__(self, seed=0, module=None):
        self.module = module or backend.xp()
        self.key, self.counter = _key(seed), 0

    def random(self, shape=None, dtype="float64"):
        dtype = numpy.dtype(dtype)
        if dtype not in (numpy.float32, numpy.float64):
            raise TypeError(f"CounterRNG.random: dtype must be float32 or float64, got {dtype}")
        size = int(numpy.prod(shape)) if shape is not None else 1
        u = uniform(self.module.empty(size, dtype=dtype), self.counter, self.key)
        self.counter += size
        return u.reshape(shape) if shape is not None else u[0]


def generator(seed=0, module=None):
    """A seeded random generator that draws arrays on ``module`` (default: the active backend).

    ``CounterRNG``: the same numbers for one seed on NumPy, the stand-in and CuPy (NumPy's and CuPy's own
    generators differ), so dropout masks and scheduled-sampling coins do not depend on the device. It
    offers ``random(shape, dtype)``, which is all the layers ask of it.
    """
    return CounterRNG(seed, module)
