"""Optimisers, clipping and schedules against their formulas (and PyTorch where installed)."""
import math

import numpy
import pytest

from minis2s import optim
from minis2s.train import TrainConfig, teacher_forcing_ratio


def _problem(seed=0):
    rng = numpy.random.default_rng(seed)
    params = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    grads_seq = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(5)]
    return params, grads_seq


@pytest.mark.parametrize("name,kwargs", [("adam", dict(lr=1e-2, weight_decay=0.1)),
                                         ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
                                         ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                         ("sgd", dict(lr=0.1))])
def test_matches_pytorch(name, kwargs):
    torch = pytest.importorskip("torch")
    params, grads_seq = _problem()
    grads = {k: numpy.zeros_like(v) for k, v in params.items()}
    mine = optim.OPTIMIZERS[name](params, grads, **kwargs)
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    theirs = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name](list(tensors.values()), **kwargs)
    for step_grads in grads_seq:
        for k in params:
            grads[k][...] = step_grads[k]
            tensors[k].grad = torch.tensor(step_grads[k])
        mine.step()
        theirs.step()
    for k in params:
        numpy.testing.assert_allclose(params[k], tensors[k].detach().numpy(), rtol=1e-12, atol=1e-14)


def test_adam_first_step_is_lr_times_sign():
    """Bias correction: the first Adam step moves each weight by lr * g / (|g| + eps) ~ lr * sign(g)."""
    params = {"w": numpy.array([1.0, -2.0, 3.0])}
    grads = {"w": numpy.array([0.5, -4.0, 1e-3])}
    adam = optim.Adam(params, grads, lr=0.1)
    adam.step()
    numpy.testing.assert_allclose(params["w"], [0.9, -1.9, 2.9], rtol=1e-4)


def test_optimizer_state_round_trips():
    params, grads_seq = _problem()
    grads = {k: v.copy() for k, v in grads_seq[0].items()}
    adam = optim.Adam(params, grads)
    adam.step()
    state = adam.state_dict()
    again = optim.Adam({k: v.copy() for k, v in params.items()}, grads)
    again.load_state_dict(state)
    assert again.steps == 1
    numpy.testing.assert_array_equal(again.m["a"], adam.m["a"])


def test_clip_grad_norm_matches_formula_and_pytorch():
    params, grads_seq = _problem()
    grads = grads_seq[0]
    norm = math.sqrt(sum((g ** 2).sum() for g in grads.values()))
    before = {k: v.copy() for k, v in grads.items()}
    assert optim.clip_grad_norm(grads, 1.0) == pytest.approx(norm)
    assert math.sqrt(sum((g ** 2).sum() for g in grads.values())) == pytest.approx(1.0, rel=1e-9)
    numpy.testing.assert_allclose(grads["a"], before["a"] / norm, rtol=1e-9)
    small = {"x": numpy.array([0.1, 0.2])}
    optim.clip_grad_norm(small, 1.0)
    numpy.testing.assert_array_equal(small["x"], [0.1, 0.2])                   # under the limit: untouched


def test_schedules():
    adam = optim.Adam({"w": numpy.zeros(1)}, {"w": numpy.zeros(1)}, lr=1.0)
    warm = optim.Schedule(adam, warmup_steps=4)
    assert [warm.rate(s) for s in (1, 2, 4, 10)] == [0.25, 0.5, 1.0, 1.0]
    decay = optim.Schedule(adam, decay_every=2, gamma=0.5)
    decay.on_epoch_end(3)
    assert decay.rate(100) == 0.5
    plateau = optim.Schedule(adam, plateau_patience=2, factor=0.1)
    for loss in (1.0, 0.9, 0.95, 0.91):
        plateau.on_epoch_end(0, loss)
    assert plateau.rate(1) == pytest.approx(0.1)


def test_teacher_forcing_schedules_decay_from_one():
    for kind in ("linear", "exponential", "inverse-sigmoid"):
        config = TrainConfig(schedule=kind)
        ratios = [teacher_forcing_ratio(config, 1.0, step) for step in (0, 1000, 5000, 50_000)]
        assert ratios[0] == pytest.approx(1.0, abs=1e-3) and ratios == sorted(ratios, reverse=True)
        assert ratios[-1] < 0.1
    assert teacher_forcing_ratio(TrainConfig(), 0.7, 12345) == 0.7
    assert teacher_forcing_ratio(TrainConfig(schedule="linear", schedule_floor=0.25), 1.0, 10 ** 6) == 0.25


def _model(dtype="float64"):
    from minis2s.model import Seq2Seq
    return Seq2Seq(20, 18, cell="lstm", attention="bahdanau", emb_size=4, hidden_size=6, dtype=dtype, seed=3)


def test_a_models_parameters_are_views_of_one_buffer():
    """Seq2Seq flattens its parameters when built: each array (here and in its sub-modules, the same objects)
    is a view of params.flat, in the dict's order, its gradient a view of grads.flat; values as built."""
    from minis2s.model import Seq2Seq
    model = _model()
    unflat = Seq2Seq.__new__(Seq2Seq)                                   # the same model, its arrays as built
    unflat.flatten_parameters = lambda: None
    Seq2Seq.__init__(unflat, 20, 18, cell="lstm", attention="bahdanau", emb_size=4, hidden_size=6,
                     dtype="float64", seed=3)
    assert list(model.params) == list(unflat.params) == list(model.grads)
    offset = 0
    for name, p in model.params.items():
        assert numpy.array_equal(p, unflat.params[name])
        assert numpy.shares_memory(p, model.params.flat) and numpy.shares_memory(model.grads[name], model.grads.flat)
        p.reshape(-1)[0] += 1.0                                         # each view is its own slice of the buffer
        assert model.params.flat[offset] == unflat.params[name].reshape(-1)[0] + 1.0
        offset += p.size
    assert offset == model.params.flat.size == model.num_params()
    assert model.decoder.rnn.params["weight_ih_l0"] is model.params["decoder.rnn.weight_ih_l0"]
    assert model.decoder.attention.grads["v"] is model.grads["decoder.attention.v"]
    model.grads.flat[...] = 1.0
    model.zero_grad()                                                   # one pass over the buffer
    assert not any(g.any() for g in model.grads.values())


@pytest.mark.parametrize("kernels", [False, True])
def test_adam_over_the_flat_buffer_is_adam_tensor_by_tensor(kernels):
    """Adam on a flattened model makes one update call over every parameter, with the same result, bit for
    bit, as the per-tensor updates of the same arrays held in a plain dict (reference path and kernels)."""
    from minis2s import dispatch
    model = _model("float32")
    rng = numpy.random.default_rng(0)
    copies = {name: p.copy() for name, p in model.params.items()}
    copy_grads = {name: numpy.zeros_like(p) for name, p in copies.items()}
    calls = []
    original = optim.adam_update

    def counted(*args):
        calls.append(args[0].shape)
        return original(*args)
    with dispatch.reference_path(not kernels):
        flat, per_tensor = optim.Adam(model.params, model.grads, lr=1e-2, weight_decay=0.1), \
            optim.Adam(copies, copy_grads, lr=1e-2, weight_decay=0.1)
        assert len(flat.groups) == 1 and len(per_tensor.groups) == len(copies)
        for _ in range(3):
            for name, g in model.grads.items():
                g[...] = rng.standard_normal(g.shape)
                copy_grads[name][...] = g
            optim.adam_update, calls[:] = counted, []
            try:
                flat.step()
            finally:
                optim.adam_update = original
            assert calls == [(model.num_params(),)]                    # one call, the whole buffer
            per_tensor.step()
    for name, p in model.params.items():
        assert numpy.array_equal(p, copies[name])
        assert numpy.array_equal(flat.m[name], per_tensor.m[name]) and numpy.array_equal(flat.v[name], per_tensor.v[name])
    state = flat.state_dict()                                           # the state names stay per tensor
    assert set(state) == set(per_tensor.state_dict())
