"""Weight initialisers. Each returns a NumPy array drawn from the host generator ``rng``.

Shapes follow PyTorch: a weight matrix is ``(fan_out, fan_in)`` = ``(out_features, in_features)``.

    recurrent_uniform   W ~ U(-k, k),  k = 1/sqrt(H)                    PyTorch's RNN/LSTM/GRU default
    xavier_uniform      W ~ U(-a, a),  a = gain * sqrt(6 / (fan_in + fan_out))      Glorot & Bengio 2010
    xavier_normal       W ~ N(0, s^2), s = gain * sqrt(2 / (fan_in + fan_out))
    kaiming_uniform     W ~ U(-b, b),  b = gain * sqrt(3 / fan_in)                     He et al. 2015
    kaiming_normal      W ~ N(0, s^2), s = gain / sqrt(fan_in)
                        gain = sqrt(2) for relu, sqrt(2 / (1 + a^2)) for leaky_relu of slope a, 1 for linear
                        (PyTorch's nn.Linear default is kaiming_uniform with a = sqrt(5): b = 1/sqrt(fan_in))
    orthogonal          W = gain * Q,  Q from the QR decomposition of a N(0, 1) matrix,
                        with Q's columns signed by diag(R) so that Q is uniform (Haar) over orthogonal matrices
"""
import math

import numpy


def _fans(shape):
    if len(shape) < 2:
        raise ValueError(f"fan-in/fan-out need a matrix, got shape {shape}")
    return shape[1], shape[0]


def recurrent_uniform(shape, hidden_size, rng):
    bound = 1.0 / math.sqrt(hidden_size)
    return rng.uniform(-bound, bound, size=shape)


def uniform(shape, bound, rng):
    return rng.uniform(-bound, bound, size=shape)


def xavier_uniform(shape, rng, gain=1.0):
    fan_in, fan_out = _fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def xavier_normal(shape, rng, gain=1.0):
    fan_in, fan_out = _fans(shape)
    return rng.normal(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def kaiming_gain(nonlinearity="relu", a=0.0):
    """He's gain: the factor that keeps the variance of activations constant through the nonlinearity."""
    gains = {"relu": math.sqrt(2.0), "leaky_relu": math.sqrt(2.0 / (1.0 + a * a)), "linear": 1.0}
    if nonlinearity not in gains:
        raise ValueError(f"nonlinearity must be one of {tuple(gains)}, got {nonlinearity!r}")
    return gains[nonlinearity]


def kaiming_uniform(shape, rng, nonlinearity="relu", a=0.0):
    fan_in, _ = _fans(shape)
    bound = kaiming_gain(nonlinearity, a) * math.sqrt(3.0 / fan_in)
    return rng.uniform(-bound, bound, size=shape)


def kaiming_normal(shape, rng, nonlinearity="relu", a=0.0):
    fan_in, _ = _fans(shape)
    return rng.normal(0.0, kaiming_gain(nonlinearity, a) / math.sqrt(fan_in), size=shape)


def orthogonal(shape, rng, gain=1.0):
    rows, cols = shape
    flat = rng.normal(0.0, 1.0, size=(max(rows, cols), min(rows, cols)))
    q, r = numpy.linalg.qr(flat)
    q = q * numpy.sign(numpy.diag(r))  # make the decomposition unique
    if rows < cols:
        q = q.T
    return gain * q[:rows, :cols]
