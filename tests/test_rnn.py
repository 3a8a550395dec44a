"""RNN, LSTM and GRU: finite differences, padding invariance, PyTorch agreement."""
import numpy
import pytest
from hypothesis import given, settings, strategies as st

from minis2s import backend, checks
from conftest import assert_checked, host

CELLS = ["rnn", "rnn_relu", "lstm", "gru"]
lengths_lists = st.lists(st.integers(1, 5), min_size=1, max_size=4)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@settings(max_examples=6)
@given(lengths=lengths_lists, input_size=st.integers(1, 4), hidden_size=st.integers(1, 4),
       dropout=st.sampled_from([0.0, 0.4]), seed=st.integers(0, 10_000))
def test_gradients(xp, cell, num_layers, bidirectional, lengths, input_size, hidden_size, dropout, seed):
    # every element on NumPy; on the stand-in, which runs the same maths through the device API at 3-4x the
    # time (40 s for the two-layer GRU), a sample of 6 elements per tensor
    errors = checks.check_recurrent(cell, num_layers, bidirectional, tuple(lengths), input_size, hidden_size,
                                    dropout, seed, max_elements=None if xp is numpy else 6)
    assert_checked(errors, 1e-6 if cell == "rnn_relu" else 1e-7)    # relu: a kink within h of a pre-activation


def _random_batch(rng, lengths, input_size):
    steps = max(lengths)
    x = rng.standard_normal((steps, len(lengths), input_size))
    return x


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_changes_nothing(xp, cell, bidirectional):
    """Each sequence gets the same outputs, final state, dx and parameter gradients alone as in the batch."""
    rng = numpy.random.default_rng(5)
    lengths = [5, 2, 4, 1]
    layer = checks.make_recurrent(cell, 3, 4, num_layers=2, bidirectional=bidirectional)
    x = _random_batch(rng, lengths, 3)
    pad = numpy.arange(5)[:, None] >= numpy.array(lengths)[None, :]
    x[pad] = 1e3                                                   # garbage in the padding
    dout = rng.standard_normal((5, 4, layer.num_directions * 4))
    dh = rng.standard_normal((2 * layer.num_directions, 4, 4))
    dstate = (dh, dh[::-1].copy()) if cell == "lstm" else dh
    out, state, cache = layer.forward(backend.asarray(x), backend.asarray(numpy.array(lengths)))
    h_n = host(state[0] if cell == "lstm" else state)
    assert (host(out)[pad] == 0).all()
    for b, n in enumerate(lengths):
        layer.zero_grad()
        alone_out, alone_state, alone_cache = layer.forward(backend.asarray(x[:n, b:b + 1]))
        alone_dstate = tuple(backend.asarray(d[:, b:b + 1]) for d in dstate) if cell == "lstm" \
            else backend.asarray(dstate[:, b:b + 1])
        dx_alone, _ = layer.backward(backend.asarray(dout[:n, b:b + 1]), alone_dstate, alone_cache)
        grads_alone = {k: host(v).copy() for k, v in layer.grads.items()}
        numpy.testing.assert_allclose(host(alone_out)[:, 0], host(out)[:n, b], rtol=1e-12, atol=1e-14)
        alone_h = host(alone_state[0] if cell == "lstm" else alone_state)
        numpy.testing.assert_allclose(alone_h[:, 0], h_n[:, b], rtol=1e-12, atol=1e-14)
        # the batch, with upstream gradient on sequence b only
        only_b = numpy.zeros_like(dout)
        only_b[:, b] = dout[:, b]
        dstate_b = tuple(numpy.where(numpy.arange(4)[None, :, None] == b, d, 0) for d in dstate) \
            if cell == "lstm" else numpy.where(numpy.arange(4)[None, :, None] == b, dstate, 0)
        layer.zero_grad()
        dx, _ = layer.backward(backend.asarray(only_b),
                               tuple(backend.asarray(d) for d in dstate_b) if cell == "lstm"
                               else backend.asarray(dstate_b), cache)
        numpy.testing.assert_allclose(host(dx)[:n, b], host(dx_alone)[:, 0], rtol=1e-12, atol=1e-14)
        assert (host(dx)[n:, b] == 0).all()
        for name, grad in layer.grads.items():
            numpy.testing.assert_allclose(host(grad), grads_alone[name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_reverse_direction_starts_at_each_sequences_last_token(xp):
    layer = checks.make_recurrent("gru", 2, 3, bidirectional=True)
    x = numpy.random.default_rng(0).standard_normal((4, 2, 2))
    out, _, _ = layer.forward(backend.asarray(x), backend.asarray(numpy.array([4, 2])))
    alone, _, _ = layer.forward(backend.asarray(x[:2, 1:2]))
    numpy.testing.assert_allclose(host(out)[:2, 1, 3:], host(alone)[:, 0, 3:], rtol=1e-12)


def test_dropout_only_between_layers(xp):
    x = backend.asarray(numpy.random.default_rng(0).standard_normal((3, 2, 4)))
    one = checks.make_recurrent("lstm", 4, 3, num_layers=1, dropout=0.5)
    assert numpy.array_equal(host(one.forward(x, train=True)[0]), host(one.forward(x, train=False)[0]))
    two = checks.make_recurrent("lstm", 4, 3, num_layers=2, dropout=0.5)
    assert not numpy.array_equal(host(two.forward(x, train=True)[0]), host(two.forward(x, train=False)[0]))


def test_parameter_names_shapes_and_orthogonal_init():
    from minis2s.nn import LSTM, GRU
    layer = LSTM(3, 5, num_layers=2, bidirectional=True)
    assert layer.params["weight_ih_l0"].shape == (20, 3)
    assert layer.params["weight_ih_l1_reverse"].shape == (20, 10)
    assert layer.params["weight_hh_l1"].shape == (20, 5)
    assert layer.params["bias_hh_l0_reverse"].shape == (20,)
    assert set(layer.params) == set(layer.grads) and len(layer.params) == 16
    assert numpy.abs(layer.params["weight_hh_l0"]).max() <= 1 / 5 ** 0.5       # U(-1/sqrt(H), 1/sqrt(H))
    ortho = GRU(3, 5, init_method="orthogonal", dtype="float64")
    for block in numpy.split(ortho.params["weight_hh_l0"], 3):
        numpy.testing.assert_allclose(block @ block.T, numpy.eye(5), atol=1e-12)


def test_bad_arguments_are_named():
    from minis2s.nn import RNN, LSTM
    with pytest.raises(ValueError, match="num_layers"):
        LSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        LSTM(3, 4, dropout=1.0)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_agrees_with_pytorch(cell, num_layers, bidirectional):
    """Outputs, final states and all gradients against torch.nn.{RNN,LSTM,GRU} on packed sequences."""
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(11)
    steps, batch, inputs, hidden = 6, 4, 3, 5
    lengths = numpy.array([6, 2, 4, 1])
    layer = checks.make_recurrent(cell, inputs, hidden, num_layers, bidirectional)
    reference = {"rnn": torch.nn.RNN, "rnn_relu": lambda *a, **k: torch.nn.RNN(*a, nonlinearity="relu", **k),
                 "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        inputs, hidden, num_layers=num_layers, bidirectional=bidirectional).double()
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.copy_(torch.from_numpy(layer.params[name]))
    x = rng.standard_normal((steps, batch, inputs))
    states = num_layers * layer.num_directions
    h0, c0 = rng.standard_normal((2, states, batch, hidden))
    tx, th0, tc0 = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    packed = torch.nn.utils.rnn.pack_padded_sequence(tx, torch.tensor(lengths), enforce_sorted=False)
    t_out, t_state = reference(packed, (th0, tc0) if cell == "lstm" else th0)
    t_out, _ = torch.nn.utils.rnn.pad_packed_sequence(t_out, total_length=steps)
    t_state = t_state if cell == "lstm" else (t_state,)

    out, state, cache = layer.forward(x, lengths, (h0, c0) if cell == "lstm" else h0)
    state = state if cell == "lstm" else (state,)
    dout = rng.standard_normal(out.shape)
    dstate = tuple(rng.standard_normal(s.shape) for s in state)
    objective = (t_out * torch.from_numpy(dout)).sum() + sum((s * torch.from_numpy(d)).sum()
                                                            for s, d in zip(t_state, dstate))
    objective.backward()
    dx, dstate0 = layer.backward(dout, dstate if cell == "lstm" else dstate[0], cache)
    dstate0 = dstate0 if cell == "lstm" else (dstate0,)

    tol = dict(rtol=1e-10, atol=1e-12)
    numpy.testing.assert_allclose(out, t_out.detach().numpy(), **tol)
    for mine, theirs in zip(state, t_state):
        numpy.testing.assert_allclose(mine, theirs.detach().numpy(), **tol)
    numpy.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    numpy.testing.assert_allclose(dstate0[0], th0.grad.numpy(), **tol)
    if cell == "lstm":
        numpy.testing.assert_allclose(dstate0[1], tc0.grad.numpy(), **tol)
    for name, p in reference.named_parameters():
        numpy.testing.assert_allclose(layer.grads[name], p.grad.numpy(), err_msg=name, **tol)
