"""The gradient checks can fail: every reference backward, broken in turn, is caught by ``minis2s gradcheck``.

A broken backward here is the real one with one of its returned gradients scaled by 1.001 (or, for a
backward that returns nothing and adds into ``.grads``, with what it adds scaled by 1.001). For each
one the default catalogue (the rows ``minis2s gradcheck`` prints, on the reference path) must report a
row over the tolerance.

The finite differences of a row run forward passes only, so they are the same whatever the backward
does: they are computed once per row and held against the analytic gradients of each broken backward.
That gives exactly the table ``minis2s gradcheck`` would print with the broken code, in seconds
instead of the catalogue's half-minute per broken function.
"""
import inspect
import sys

import numpy
import pytest

import minis2s
from minis2s import checks, gradcheck, loss, model, transformer as transformer_model
from minis2s.nn import (attention, bridge, decoder, encoder, layer_norm, layers, module, multihead, rnn, rnn_cells,
                        transformer)

FACTOR = 1.001
MODULES = (layers, rnn_cells, rnn, attention, encoder, bridge, decoder, model, loss, layer_norm, multihead, transformer,
           transformer_model)
EXTRA = [(loss, "softmax_cross_entropy"),          # returns (loss, dlogits): the gradient is its second result
         (rnn.Recurrent, "stack_weight_grads"),    # adds the decoder stack's weight gradients
         (decoder.Decoder, "weight_grads")]


def reference_backwards():
    """(owner, name) of every backward in the reference: module functions named *_backward and the methods
    named backward or *_backward of the classes defined there, plus the gradient functions named otherwise."""
    found = []
    for mod in MODULES:
        for name, obj in vars(mod).items():
            if name.startswith("_"):                 # private adapters (rnn_cells' CELLS) call the public ones
                continue
            if inspect.isfunction(obj) and obj.__module__ == mod.__name__ and name.endswith("_backward"):
                found.append((mod, name))
            elif inspect.isclass(obj) and obj.__module__ == mod.__name__:
                for attr, value in vars(obj).items():
                    if inspect.isfunction(value) and (attr == "backward" or attr.endswith("_backward")):
                        found.append((obj, attr))
    return found + EXTRA


def _is_gradient(part):
    """An array, or a list/tuple of arrays (per layer, or the (h, c) pair)."""
    if isinstance(part, numpy.ndarray):
        return True
    return isinstance(part, (list, tuple)) and any(isinstance(p, numpy.ndarray) for p in part)


def _scale(part):
    if isinstance(part, numpy.ndarray):
        return part * FACTOR
    return type(part)(_scale(p) if isinstance(p, numpy.ndarray) else p for p in part)


def _arrays_in(values):
    """Every float array reachable in values (arguments, dicts of gradients, a Module's grads)."""
    for value in values:
        if isinstance(value, numpy.ndarray) and numpy.issubdtype(value.dtype, numpy.floating):
            yield value
        elif isinstance(value, module.Module):
            yield from value.grads.values()
        elif isinstance(value, (list, tuple)):
            yield from _arrays_in(value)


def broken(function, which):
    """``function`` with one returned gradient scaled by FACTOR; for which=None, everything it adds
    into the arrays it was given is scaled by FACTOR."""
    def scaled(*args, **kwargs):
        if which is None:
            targets = list(_arrays_in(args))
            before = [t.copy() for t in targets]
            out = function(*args, **kwargs)
            for target, old in zip(targets, before):
                target += (FACTOR - 1.0) * (target - old)
            return out
        out = function(*args, **kwargs)
        if isinstance(out, numpy.ndarray):
            return out * FACTOR
        parts = list(out)
        if which < len(parts) and _is_gradient(parts[which]):       # (an option may leave it None)
            parts[which] = _scale(parts[which])
        return tuple(parts)
    return scaled


class Catalogue:
    """The finite differences of each row of ``minis2s gradcheck``, computed on first use. A row's Problem
    is built anew for every broken backward (it is built from the same seeds, so its tensors are the same),
    so that it calls the functions as they are at that moment."""

    def __init__(self):
        self.numerics = {}

    def numeric(self, row):
        if row not in self.numerics:
            self.numerics[row] = gradcheck.numeric(checks.CATALOGUE[row]())
        return self.numerics[row]


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue()


def patch_everywhere(monkeypatch, owner, name, replacement):
    """Replace owner.name, and every binding of the same function in minis2s' modules (from-imports)."""
    original = getattr(owner, name)
    monkeypatch.setattr(owner, name, replacement)
    if not inspect.isclass(owner):
        for mod_name, mod in list(sys.modules.items()):
            if mod_name.startswith("minis2s") and mod is not owner and getattr(mod, name, None) is original:
                monkeypatch.setattr(mod, name, replacement)


def caught_by(catalogue, monkeypatch, owner, name, which):
    """The first catalogue row whose check fails with the broken backward, or None."""
    original = getattr(owner, name)
    patch_everywhere(monkeypatch, owner, name, broken(original, which))
    try:
        for row in checks.CATALOGUE:
            errors = gradcheck.errors(catalogue.numeric(row), checks.CATALOGUE[row]().analytic())
            if max(errors.values()) > gradcheck.TOLERANCE:
                return row
        return None
    finally:
        monkeypatch.undo()


def returned_gradients(owner, name, monkeypatch):
    """The positions of the gradients the backward returns anywhere in the catalogue (an option may fill
    one that others leave None), [None] for a backward that returns none, None when it never runs."""
    seen = set()
    called = []
    original = getattr(owner, name)

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        called.append(True)
        parts = out if isinstance(out, tuple) else (out,)
        seen.update(i for i, part in enumerate(parts) if _is_gradient(part))
        return out
    patch_everywhere(monkeypatch, owner, name, spy)
    try:
        for row in checks.CATALOGUE:
            checks.CATALOGUE[row]().analytic()
    finally:
        monkeypatch.undo()
    if not called:
        return None
    return sorted(seen) or [None]


def test_every_reference_backward_is_found():
    names = {f"{getattr(owner, '__name__', owner)}.{name}" for owner, name in reference_backwards()}
    for expected in ("minis2s.nn.rnn_cells.lstm_step_backward", "minis2s.nn.rnn_cells.gru_step_backward",
                     "minis2s.nn.rnn_cells.rnn_step_backward", "minis2s.nn.rnn.direction_backward",
                     "minis2s.nn.attention.softmax_context_backward", "Attention.scores_backward",
                     "Decoder.step_backward", "Decoder.combine_backward", "Bridge.backward", "Encoder.encode_backward",
                     "minis2s.nn.layers.linear_backward", "minis2s.nn.layers.embedding_backward"):
        assert expected in names, expected
    assert len(names) >= 25


@pytest.mark.slow   # the whole catalogue's finite differences once, then a check per broken backward: minutes
@pytest.mark.parametrize("owner,name", reference_backwards(),
                         ids=[f"{getattr(o, '__name__', o)}.{n}".replace("minis2s.", "") for o, n in
                              reference_backwards()])
def test_a_broken_backward_is_caught_by_the_default_gradcheck(owner, name, catalogue, monkeypatch):
    """Each returned gradient in turn (or what it adds, for one that returns nothing), scaled by 1.001."""
    assert not minis2s.dispatch.kernels_enabled()               # the checks run on the reference path
    if name == "softmax_cross_entropy":
        positions = [1]                                         # (token_loss, dlogits): dlogits is the gradient
    else:
        positions = returned_gradients(owner, name, monkeypatch)
    assert positions is not None, f"{name} never runs in the gradient checks"
    for which in positions:
        row = caught_by(catalogue, monkeypatch, owner, name, which)
        assert row is not None, f"{name} with result {which} scaled by {FACTOR} passes every gradient check"
