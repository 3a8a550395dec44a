"""The base of every layer: a holder of named parameters and their gradients.

A ``Module`` keeps two flat dicts with the same keys and shapes:

    params[name]   the parameter array
    grads[name]    dLoss/dparam, which backward passes *add* into

Sub-modules are registered under a name; their arrays appear in the parent's
dicts under dotted names (``encoder.weight_ih_l0``) -- the *same* array objects,
so an update through either dict is seen by both. Arrays are therefore only
ever changed in place (``p[...] = ...``, ``g += ...``), never rebound.

Modules hold no hidden state between forward and backward: everything backward
needs travels in the explicit cache that forward returns.
"""
import numpy

from .. import backend


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
        self.rng = backend.rng(seed + 1)

    def reseed(self, seed):
        """Restart this module's (and its sub-modules') dropout generator at ``seed``."""
        self.rng = backend.rng(seed)
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
        """Set every gradient to zero, in place."""
        for grad in self.grads.values():
            grad[...] = 0

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
