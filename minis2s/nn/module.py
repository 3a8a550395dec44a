"""The base of every layer: a holder of named parameters and their gradients.

A ``Module`` keeps two flat dicts with the same keys and shapes:

    params[name]   the parameter array
    grads[name]    dLoss/dparam, which backward passes *add* into

Sub-modules are registered under a name; their arrays appear in the parent's
dicts under dotted names (``encoder.weight_ih_l0``) -- the *same* array objects,
so an update through either dict is seen by both. Arrays are therefore only
ever changed in place (``p[...] = ...``, ``g += ...``), never rebound -- but
once: a model, when built, moves all its parameters into one buffer and all
its gradients into another (``flatten_parameters``), so that an optimiser
can update every parameter in one call.

Modules hold no hidden state between forward and backward: everything backward
needs travels in the explicit cache that forward returns.
"""
import numpy

from .. import backend, rng


class Module:
    def __init__(self, dtype=None, seed=0):
        self.dtype = backend.get_dtype(dtype)
        self.seed = seed
        self.params = {}
        self.grads = {}
        self.modules = {}
        # Host generator for initial weights: the same numbers on NumPy and CuPy.
        self.init_rng = numpy.random.default_rng(seed)
        # Backend generator for dropout masks; reseed with ``reseed`` for fixed masks.
        self.rng = rng.generator(seed + 1)

    def reseed(self, seed):
        """Restart this module's (and its sub-modules') dropout generator at ``seed``."""
        self.rng = rng.generator(seed)
        for offset, module in enumerate(self.modules.values(), start=1):
            module.reseed(seed + 7919 * offset)

    def add_param(self, name, value):
        """Register ``value`` (any array-like) as parameter ``name``, with a zero gradient."""
        array = backend.asarray(value, dtype=self.dtype)
        self.params[name] = array
        self.grads[name] = backend.xp().zeros_like(array)
        return array

    def add_module(self, name, module):
        """Register ``module`` under ``name``; its parameters join ours as ``name.<key>``."""
        self.modules[name] = module
        for key in module.params:
            self.params[f"{name}.{key}"] = module.params[key]
            self.grads[f"{name}.{key}"] = module.grads[key]
        return module

    def zero_grad(self):
        """Set every gradient to zero, in place (one pass over the buffer once flattened)."""
        flat = getattr(self.grads, "flat", None)
        if flat is not None:
            flat[...] = 0
            return
        for grad in self.grads.values():
            grad[...] = 0

    def flatten_parameters(self):
        """Move every parameter into one contiguous 1-D buffer, and every gradient into another, in the order
        of ``params``: each array becomes a view of its buffer, with the same name, shape and values, here and
        in every sub-module. Work that is the same for every element of every parameter (Adam's update,
        ``zero_grad``) is then one call over one array, ``params.flat`` / ``grads.flat``, instead of one a
        tensor. Called once, when the model is built, before anything else holds its arrays (arrays are
        changed in place from then on, never rebound)."""
        xp = backend.xp()
        arrays = list(self.params.values())            # held to the end: no old array is freed, no id reused
        if not arrays or len({a.dtype for a in arrays}) != 1 or len({id(a) for a in arrays}) != len(arrays):
            return                                         # nothing to do, mixed dtypes, or a shared array
        flat_params = xp.empty(sum(a.size for a in arrays), dtype=arrays[0].dtype)
        flat_grads = xp.zeros_like(flat_params)
        moved = {}                                         # id(old parameter) -> (its view, its gradient's view)
        for name, p, view, grad in zip(self.params, arrays, views_of(flat_params, arrays),
                                       views_of(flat_grads, arrays)):
            view[...] = p
            grad[...] = self.grads[name]
            moved[id(p)] = view, grad
        for module in self._tree():
            for key in module.params:
                module.params[key], module.grads[key] = moved[id(module.params[key])]
        self.params, self.grads = FlatDict(self.params, flat_params), FlatDict(self.grads, flat_grads)

    def _tree(self):
        yield self
        for module in self.modules.values():
            yield from module._tree()

    def num_params(self):
        return int(sum(p.size for p in self.params.values()))

    def state_dict(self):
        """The parameters as host NumPy arrays (for checkpoints)."""
        return {name: backend.to_numpy(value) for name, value in self.params.items()}

    def load_state_dict(self, arrays, where="state"):
        """Copy ``arrays`` (name -> array) into the parameters; names and shapes must match exactly."""
        missing = sorted(set(self.params) - set(arrays))
        unexpected = sorted(set(arrays) - set(self.params))
        if missing or unexpected:
            raise ValueError(f"{where}: parameter names do not match the model "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        for name, value in arrays.items():
            if tuple(value.shape) != tuple(self.params[name].shape):
                raise ValueError(f"{where}: parameter {name} has shape {tuple(value.shape)}, "
                                 f"the model expects {tuple(self.params[name].shape)}")
            self.params[name][...] = backend.asarray(value, dtype=self.dtype)


class FlatDict(dict):
    """A ``params`` or ``grads`` dict whose arrays are consecutive views of one 1-D buffer, ``flat``, in the
    dict's order (``Module.flatten_parameters``). Still a plain dict to read and to index."""

    def __init__(self, arrays, flat):
        super().__init__(arrays)
        self.flat = flat


def views_of(buffer, like):
    """Consecutive views of the 1-D ``buffer``, one with the shape of each array in ``like``, in order."""
    views, offset = [], 0
    for a in like:
        views.append(buffer[offset:offset + a.size].reshape(a.shape))
        offset += a.size
    return views
