"""tanh and exp of one scalar, for the loops inside kernels, in a form LLVM vectorises.

Numba compiles ``math.tanh`` and ``math.exp`` to calls of the C library's scalar functions, one
element at a time: llvmlite has had no SVML (Intel's vector maths library) since LLVM 20, Numba 0.62,
so installing Intel's runtime changes nothing (``numba -s``: "SVML Operational: False"). Measured
here, a loop of ``math.tanh`` costs 16 ns an element and NumPy's whole-array ``tanh`` 2.7 ns. The
float32 versions below are plain arithmetic, which LLVM turns into SIMD code in a loop compiled with
``fastmath=True, error_model="numpy"`` (kernels/rnn.py's ``_KERNEL``):

    tanh_of  a rational minimax approximation, the one in Eigen: x p(x^2) / q(x^2), x clamped to
             +-7.905 (beyond it tanh rounds to +-1). 0.36 ns an element; error at most 3e-7 over [-20, 20].
    exp_of   Cephes' expf: x = n ln 2 + r with |r| <= ln2 / 2 (ln 2 in two parts, so that r is exact),
             e^r by a degree-7 polynomial, 2^n put straight into the float's exponent bits.
             0.36 ns an element against NumPy's 2.3; relative error at most 3e-7 (x clamped to
             [-87.3, 88.7], where float32's exp is normal).

In float64, where the kernels are held to the reference at 1e-12, both are ``math``'s.

    max_of   the larger of two floats, as LLVM's ``maxnum``: a running maximum over a row
             (``top = max_of(top, row[v])``) then compiles to SIMD code. Numba's ``max`` and the
             written-out ``x if x > top else top`` both stay scalar in such a loop (LLVM does not take
             their compare-and-select for a reduction it may reorder): measured on 160 x 1,000 float32
             rows, 83 us against 7 us. Exact: a maximum rounds nothing, so float64 is held to the
             reference as before. (maxnum returns the other operand where one is NaN; the kernels
             that use it then meet the NaN in their next pass, as the reference does.)
"""
import math

import numba
import numpy
from llvmlite import ir
from numba.extending import intrinsic, overload

_F32 = numpy.float32
_ONE, _HALF = _F32(1), _F32(0.5)

_TANH_CLAMP = _F32(7.90531110763549805)
_P13, _P11, _P9, _P7, _P5, _P3, _P1 = (_F32(v) for v in (
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03))
_Q6, _Q4, _Q2, _Q0 = (_F32(v) for v in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                                         4.89352518554385e-03))

_LOG2E, _LN2_HI, _LN2_LO = _F32(1.44269504088896341), _F32(0.693359375), _F32(-2.12194440e-4)
_EXP_LO, _EXP_HI = _F32(-87.33654), _F32(88.72283)
_E5, _E4, _E3, _E2, _E1, _E0 = (_F32(v) for v in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                                  4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))


def tanh_of(x):
    """tanh of one scalar inside a kernel: float32 by a rational function, float64 by math.tanh."""
    return math.tanh(x)


@overload(tanh_of)
def _tanh_of(x):
    if x == numba.types.float32:
        def rational(x):
            x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
            x2 = x * x
            p = ((((((_P13 * x2 + _P11) * x2 + _P9) * x2 + _P7) * x2 + _P5) * x2 + _P3) * x2 + _P1)
            q = (((_Q6 * x2 + _Q4) * x2 + _Q2) * x2 + _Q0)
            return x * p / q
        return rational
    return lambda x: math.tanh(x)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits`` (a bitcast: no conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return numba.types.float32(numba.types.int32), codegen


def _maxnum(real):
    """The LLVM intrinsic maxnum for float32 or float64, as a Numba function of two scalars."""
    width = {numba.types.float32: ir.FloatType(), numba.types.float64: ir.DoubleType()}[real]

    @intrinsic
    def maxnum(typingctx, x, y):
        def codegen(context, builder, signature, args):
            name = f"llvm.maxnum.{'f32' if real == numba.types.float32 else 'f64'}"
            function = builder.module.globals.get(name) or ir.Function(
                builder.module, ir.FunctionType(width, [width, width]), name)
            return builder.call(function, args)
        return real(real, real), codegen
    return maxnum


_maxnum32, _maxnum64 = _maxnum(numba.types.float32), _maxnum(numba.types.float64)


def max_of(x, y):
    """The larger of two floats inside a kernel, in a form LLVM vectorises in a running maximum."""
    return max(x, y)


@overload(max_of)
def _max_of(x, y):
    if x == numba.types.float32 and y == numba.types.float32:
        return lambda x, y: _maxnum32(x, y)
    if x == numba.types.float64 and y == numba.types.float64:
        return lambda x, y: _maxnum64(x, y)
    return lambda x, y: max(x, y)


def exp_of(x):
    """exp of one scalar inside a kernel: float32 by Cephes' expf (range reduction + polynomial), float64
    by math.exp."""
    return math.exp(x)


@overload(exp_of)
def _exp_of(x):
    if x == numba.types.float32:
        def reduced(x):
            x = min(max(x, _EXP_LO), _EXP_HI)
            n = numpy.floor(_LOG2E * x + _HALF)                  # x = n ln 2 + r
            r = (x - n * _LN2_HI) - n * _LN2_LO
            e_r = (((((_E5 * r + _E4) * r + _E3) * r + _E2) * r + _E1) * r + _E0) * (r * r) + r + _ONE
            two_n = _float32_from_bits((numpy.int32(n) + numpy.int32(127)) << numpy.int32(23))   # 2^n
            return e_r * two_n
        return reduced
    return lambda x: math.exp(x)
