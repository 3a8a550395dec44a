"""The Transformer's layers: layer norm, scaled dot-product and multi-head attention (minis2s/nn/layer_norm.py,
multihead.py) against finite differences with a random upstream gradient, against PyTorch in float64 with
copied weights, and padding that changes nothing."""
import numpy
import pytest

from minis2s import checks, gradcheck
from conftest import assert_checked


def test_layer_norm_gradients(xp):
    assert_checked(gradcheck.check(checks.layer_norm_problem()))


@pytest.mark.parametrize("causal", [False, True])
def test_scaled_dot_product_gradients(xp, causal):
    assert_checked(gradcheck.check(checks.scaled_dot_product_problem(causal=causal)))


@pytest.mark.parametrize("self_attention,causal", [(True, False), (True, True), (False, False)])
def test_multihead_attention_gradients(xp, self_attention, causal):
    assert_checked(gradcheck.check(checks.multihead_problem(self_attention=self_attention, causal=causal)))


def test_layer_norm_with_dout_one_has_zero_input_gradient_so_the_checks_draw_dout(on_numpy):
    """The reason the checks use a random dout: with w = 1 and dout = 1, dx = 0 exactly (a shift of every
    x_i changes nothing), so a backward that returned zeros, or its transpose, would pass."""
    from minis2s.nn.layer_norm import LayerNorm
    layer = LayerNorm(6, dtype="float64")
    x = numpy.random.default_rng(0).standard_normal((4, 6))
    _, cache = layer.forward(x)
    assert numpy.abs(layer.backward(numpy.ones_like(x), cache)).max() < 1e-14


def test_masked_positions_get_exactly_zero_attention(on_numpy):
    from minis2s.nn.multihead import MultiHeadAttention
    rng = numpy.random.default_rng(1)
    attention = MultiHeadAttention(8, 2, dtype="float64", seed=3)
    x = rng.standard_normal((5, 2, 8))
    mask = checks.padding_mask([5, 3], 5)
    _, weights, _ = attention.forward(x, x, x, mask, causal=True)
    assert weights.shape == (2, 2, 5, 5)
    assert numpy.all(weights[1, :, :, 3:] == 0.0)                            # padded keys
    assert numpy.all(weights[:, :, numpy.triu_indices(5, 1)[0], numpy.triu_indices(5, 1)[1]] == 0.0)  # future
    numpy.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-12)


def test_a_sentence_alone_equals_the_same_sentence_in_a_padded_batch(on_numpy):
    """Causal self-attention with key padding: a sentence's outputs at its real positions, the gradient they
    send back and the parameters' gradients do not depend on the padding or on the other sentences: the
    batch's are the two sentences' alone (float64, 1e-12)."""
    from minis2s.nn.multihead import MultiHeadAttention
    rng = numpy.random.default_rng(2)
    attention = MultiHeadAttention(6, 3, dtype="float64", seed=1)
    batch = rng.standard_normal((5, 2, 6))
    batch[3:, 1] = 1e3                                                       # padding holds anything
    dout = rng.standard_normal((5, 2, 6))
    dout[3:, 1] = 0.0                                                        # no gradient from padded outputs

    def run(x, mask, d):
        attention.zero_grad()
        out, _, cache = attention.forward(x, x, x, mask, causal=True)
        return out, sum(attention.backward(d, cache)), {k: g.copy() for k, g in attention.grads.items()}
    out, dx, grads = run(batch, checks.padding_mask([5, 3], 5), dout)
    first = run(batch[:, :1], None, dout[:, :1])
    second = run(batch[:3, 1:2].copy(), None, dout[:3, 1:2])
    for alone, rows, column in ((first, slice(0, 5), 0), (second, slice(0, 3), 1)):
        numpy.testing.assert_allclose(out[rows, column], alone[0][:, 0], rtol=1e-12, atol=1e-12)
        numpy.testing.assert_allclose(dx[rows, column], alone[1][:, 0], rtol=1e-12, atol=1e-12)
    assert numpy.abs(dx[3:, 1]).max() == 0.0                                 # nothing reaches the padding
    for name, grad in grads.items():
        numpy.testing.assert_allclose(grad, first[2][name] + second[2][name], rtol=1e-12, atol=1e-12, err_msg=name)


# ----------------------------------------------------------------------------- against PyTorch, float64

try:
    import torch as _torch
except ImportError:                                 # pragma: no cover - torch is optional
    _torch = None
needs_torch = pytest.mark.skipif(_torch is None, reason="PyTorch is not installed (pip install torch==2.13.0)")


def _relative(a, b):
    a, b = numpy.asarray(a, dtype=numpy.float64), numpy.asarray(b, dtype=numpy.float64)
    return float(numpy.abs(a - b).max() / max(numpy.abs(b).max(), 1e-30))


@needs_torch
def test_layer_norm_equals_pytorchs(on_numpy):
    from minis2s.nn.layer_norm import LayerNorm
    rng = numpy.random.default_rng(4)
    ours = LayerNorm(7, dtype="float64")
    ours.params["weight"][...] = rng.standard_normal(7)
    ours.params["bias"][...] = rng.standard_normal(7)
    theirs = _torch.nn.LayerNorm(7, dtype=_torch.float64)
    with _torch.no_grad():
        theirs.weight.copy_(_torch.from_numpy(ours.params["weight"]))
        theirs.bias.copy_(_torch.from_numpy(ours.params["bias"]))
    x = rng.standard_normal((3, 4, 7))
    dout = rng.standard_normal((3, 4, 7))
    y, cache = ours.forward(x)
    dx = ours.backward(dout, cache)
    xt = _torch.from_numpy(x).requires_grad_()
    yt = theirs(xt)
    yt.backward(_torch.from_numpy(dout))
    assert _relative(y, yt.detach().numpy()) <= 1e-12
    assert _relative(dx, xt.grad.numpy()) <= 1e-9
    assert _relative(ours.grads["weight"], theirs.weight.grad.numpy()) <= 1e-9
    assert _relative(ours.grads["bias"], theirs.bias.grad.numpy()) <= 1e-9


@needs_torch
@pytest.mark.parametrize("self_attention,causal", [(True, False), (True, True), (False, False)])
def test_multihead_attention_equals_pytorchs(on_numpy, self_attention, causal):
    """torch.nn.MultiheadAttention (batch_first=False) with copied weights, key_padding_mask and a causal
    attn_mask: outputs at the real positions, the per-head weights, the inputs' and every parameter's
    gradient within 1e-9 relative."""
    from minis2s.nn.multihead import MultiHeadAttention
    rng = numpy.random.default_rng(5)
    embed, heads, steps, source, batch = 8, 2, 5, 6, 3
    keys = steps if self_attention else source
    lengths = [keys, 2, keys - 1]
    ours = MultiHeadAttention(embed, heads, dtype="float64", seed=2)
    for name in ("in_proj_bias", "out_proj.bias"):
        ours.params[name][...] = 0.3 * rng.standard_normal(ours.params[name].shape)
    theirs = _torch.nn.MultiheadAttention(embed, heads, dtype=_torch.float64)
    with _torch.no_grad():
        theirs.in_proj_weight.copy_(_torch.from_numpy(ours.params["in_proj_weight"]))
        theirs.in_proj_bias.copy_(_torch.from_numpy(ours.params["in_proj_bias"]))
        theirs.out_proj.weight.copy_(_torch.from_numpy(ours.params["out_proj.weight"]))
        theirs.out_proj.bias.copy_(_torch.from_numpy(ours.params["out_proj.bias"]))
    query = rng.standard_normal((steps, batch, embed))
    memory = query if self_attention else rng.standard_normal((source, batch, embed))
    mask = checks.padding_mask(lengths, keys)
    real = numpy.ones((steps, batch), dtype=bool)
    if self_attention:
        real = ~mask.T                                                      # padded queries' outputs: unused
    dout = rng.standard_normal((steps, batch, embed)) * real[..., None]
    out, weights, cache = ours.forward(query, memory, memory, mask, causal)
    dquery, dkey, dvalue = ours.backward(dout, cache)

    qt = _torch.from_numpy(query.copy()).requires_grad_()
    mt = qt if self_attention else _torch.from_numpy(memory.copy()).requires_grad_()
    attn_mask = _torch.triu(_torch.ones(steps, keys, dtype=_torch.bool), 1) if causal else None
    ot, wt = theirs(qt, mt, mt, key_padding_mask=_torch.from_numpy(mask), attn_mask=attn_mask,
                    need_weights=True, average_attn_weights=False)
    ot.backward(_torch.from_numpy(dout))
    assert _relative(out[real], ot.detach().numpy()[real]) <= 1e-12
    assert _relative(weights, wt.detach().numpy()) <= 1e-12
    if self_attention:
        assert _relative(dquery + dkey + dvalue, qt.grad.numpy()) <= 1e-9
    else:
        assert _relative(dquery, qt.grad.numpy()) <= 1e-9
        assert _relative(dkey + dvalue, mt.grad.numpy()) <= 1e-9
    for name, tensor in (("in_proj_weight", theirs.in_proj_weight), ("in_proj_bias", theirs.in_proj_bias),
                         ("out_proj.weight", theirs.out_proj.weight), ("out_proj.bias", theirs.out_proj.bias)):
        assert _relative(ours.grads[name], tensor.grad.numpy()) <= 1e-9, name
