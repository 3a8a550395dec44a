"""Checking hand-written gradients against central finite differences (use float64).

For a function with outputs out_k and a random upstream gradient dout_k, the scalar

    L(x) = sum_k <out_k(x), dout_k>

has dL/dx = the backward pass fed with dout. Each element of x is nudged both ways, twice
(the five-point central stencil, fourth order):

    dL/dx_i  ~  (-L(x + 2h e_i) + 8 L(x + h e_i) - 8 L(x - h e_i) + L(x - 2h e_i)) / (12 h)

Its truncation error is O(h^4) instead of the two-point stencil's O(h^2), so h can be larger and
the rounding error, about eps |L| / h, smaller: about 1e-11 in float64 at h = 1e-5, where the
two-point formula (L(x + h) - L(x - h)) / 2h at h = 1e-6 leaves about 1e-10. That matters for
tensors whose gradient is small (attention weights deep in a model).

The error of one tensor is measured against its own scale, so that tiny entries
(where finite differences are all rounding noise) do not dominate:

    rel_error(a, n) = max_i |a_i - n_i| / max(max_i |a_i|, max_i |n_i|, 1e-2)

(the floor 1e-2 judges a tensor whose true gradient is zero, or nearly, by its absolute error:
rounding noise of 1e-10 passes, a wrong gradient of 1e-9 or more still fails at 1e-7).

A correct float64 backward gives about 1e-9 .. 1e-11; a wrong one gives 1e-2 .. 1.

A check is a ``Problem`` (the objective, the tensors, the backward) run in two halves: the finite
differences, which only run forward passes, and the backward pass. The test that proves the checks
can fail (tests/test_gradcheck.py) computes the first half once and the second under each broken backward.
"""
from typing import Callable, NamedTuple

import numpy

from . import backend

TOLERANCE = 1e-7
SCALE_FLOOR = 1e-2


def relative_error(analytic, numeric):
    """Max absolute difference, relative to the larger of the two tensors' max magnitudes (floored at 1e-2)."""
    analytic = backend.to_numpy(analytic).astype(numpy.float64)
    numeric = backend.to_numpy(numeric).astype(numpy.float64)
    scale = max(numpy.abs(analytic).max(initial=0.0), numpy.abs(numeric).max(initial=0.0), SCALE_FLOOR)
    return float(numpy.abs(analytic - numeric).max() / scale)


def sample_indices(size, max_elements, rng):
    """All indices of a tensor of ``size`` elements, or ``max_elements`` of them drawn at random."""
    if max_elements is None or size <= max_elements:
        return numpy.arange(size)
    return numpy.sort(rng.choice(size, size=max_elements, replace=False))


def numerical_gradient(objective, x, indices=None, h=1e-5):
    """Five-point central differences of ``objective()`` (a float that reads ``x``) at ``indices`` of x.

    ``x`` is perturbed in place and restored; entries not in ``indices`` are left NaN.
    """
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient perturbs x through a flat view: x must be C-contiguous")
    flat = x.reshape(-1)  # a view: writing flat[i] writes x
    grad = numpy.full(x.size, numpy.nan)
    indices = numpy.arange(x.size) if indices is None else indices
    for i in indices:
        i = int(i)
        old = flat[i].item()
        values = []
        for step in (2, 1, -1, -2):
            flat[i] = old + step * h
            values.append(backend.to_float(objective()))       # the loss on the host: a copy on the GPU
        flat[i] = old
        plus2, plus1, minus1, minus2 = values
        grad[i] = (-plus2 + 8.0 * plus1 - 8.0 * minus1 + minus2) / (12.0 * h)
    return grad.reshape(x.shape)


class Problem(NamedTuple):
    """One gradient check, set up and not yet run.

    objective()   the scalar L, a float; it reads ``arrays`` and runs forward passes only
    arrays        {name: array} the tensors L is differentiated with respect to (perturbed in place)
    analytic()    {name: dL/d array} from the hand-written backward pass (a fresh run at each call)
    """
    objective: Callable
    arrays: dict
    analytic: Callable
    max_elements: object = None
    h: float = 1e-5
    seed: int = 0


def numeric(problem):
    """{name: (indices, finite differences at those indices)}: the half of a check that needs no backward."""
    rng = numpy.random.default_rng(problem.seed)
    result = {}
    for name, x in problem.arrays.items():
        indices = sample_indices(x.size, problem.max_elements, rng)
        result[name] = (indices, numerical_gradient(problem.objective, x, indices, problem.h).reshape(-1)[indices])
    return result


def errors(numeric_gradients, analytic):
    """{name: max relative error} between the backward's gradients and the finite differences."""
    return {name: relative_error(backend.to_numpy(analytic[name]).reshape(-1)[indices], values)
            for name, (indices, values) in numeric_gradients.items()}


def check(problem):
    """Run a Problem: {name: max relative error} for every tensor."""
    return errors(numeric(problem), problem.analytic())


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def function_problem(forward, backward, inputs, module=None, seed=0, max_elements=None, h=1e-5):
    """The Problem of any forward/backward pair, and of the parameters of ``module`` if given.

    forward(*inputs)            -> (outputs, cache); outputs an array or a tuple of arrays (None allowed)
    backward(douts, cache)      -> the gradients of ``inputs``, in order (None where not differentiable);
                                   it must add parameter gradients into ``module.grads``
    inputs: dict name -> float64 array (integer arrays are passed through and not checked)
    L = sum_k <out_k, dout_k> with a random upstream gradient dout_k drawn once.
    """
    xp = backend.array_module(*inputs.values())
    rng = numpy.random.default_rng(seed + 1)
    args = list(inputs.values())
    outputs, _ = forward(*args)
    tupled = isinstance(outputs, tuple)
    douts = tuple(None if out is None else backend.asarray(rng.standard_normal(out.shape), dtype=out.dtype)
                  for out in _as_tuple(outputs))

    def objective():
        outs, _ = forward(*args)
        return backend.to_float(sum((out * dout).sum() for out, dout in zip(_as_tuple(outs), douts)
                                    if out is not None))

    arrays = {name: x for name, x in inputs.items()
              if x is not None and numpy.issubdtype(x.dtype, numpy.floating)}
    if module is not None:
        arrays.update(module.params)

    def analytic():
        _, cache = forward(*args)
        if module is not None:
            module.zero_grad()
        dinputs = _as_tuple(backward(douts if tupled else douts[0], cache))
        gradients = {name: (dx.copy() if dx is not None else xp.zeros_like(x))
                     for (name, x), dx in zip(inputs.items(), dinputs) if name in arrays}
        if module is not None:
            gradients.update({name: grad.copy() for name, grad in module.grads.items()})
        return gradients

    return Problem(objective, arrays, analytic, max_elements, h, seed)


def check_function(forward, backward, inputs, module=None, seed=0, max_elements=None, h=1e-5):
    """Gradient-check any forward/backward pair (see ``function_problem``): {name: max relative error}."""
    return check(function_problem(forward, backward, inputs, module, seed, max_elements, h))
