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


def test_multihead_attention_gradients_with_three_different_inputs(xp):
    """query, key and value three arrays: three projections, three gradients."""
    assert_checked(gradcheck.check(checks.multihead_problem(self_attention=False, separate_value=True)))


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
        return out, attention.backward(d, cache)[0], {k: g.copy() for k, g in attention.grads.items()}
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
    if self_attention:                                                      # x's whole gradient, once
        assert dkey is None and dvalue is None
        assert _relative(dquery, qt.grad.numpy()) <= 1e-9
    else:                                                                   # the memory's, as the key's
        assert dvalue is None
        assert _relative(dquery, qt.grad.numpy()) <= 1e-9
        assert _relative(dkey, mt.grad.numpy()) <= 1e-9
    for name, tensor in (("in_proj_weight", theirs.in_proj_weight), ("in_proj_bias", theirs.in_proj_bias),
                         ("out_proj.weight", theirs.out_proj.weight), ("out_proj.bias", theirs.out_proj.bias)):
        assert _relative(ours.grads[name], tensor.grad.numpy()) <= 1e-9, name


# ----------------------------------------------------------------------------- the layers and the model

@pytest.mark.parametrize("norm_first,dropout", [(False, 0.2), (True, 0.0), (True, 0.2)])
def test_encoder_layer_gradients(xp, norm_first, dropout):
    assert_checked(gradcheck.check(checks.encoder_layer_problem(norm_first, dropout)))


@pytest.mark.parametrize("norm_first,dropout", [(True, 0.2), (False, 0.0), (False, 0.2)])
def test_decoder_layer_gradients(xp, norm_first, dropout):
    assert_checked(gradcheck.check(checks.decoder_layer_problem(norm_first, dropout)))


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_transformer_input_gradients(xp, positional):
    assert_checked(gradcheck.check(checks.transformer_input_problem(positional)))


@pytest.mark.parametrize("norm_first,tie,positional,dropout,smoothing", [
    (True, False, "sinusoidal", 0.2, 0.0), (True, True, "learned", 0.0, 0.1),
    (False, True, "sinusoidal", 0.2, 0.0), (False, False, "learned", 0.0, 0.1)])
def test_whole_transformer_gradients(on_numpy, norm_first, tie, positional, dropout, smoothing):
    """Every parameter through loss_and_grads on a padded batch: pre and post norm, tied and untied."""
    assert_checked(gradcheck.check(checks.transformer_problem(norm_first, tie, positional, dropout, smoothing)))


def test_whole_transformer_gradients_on_every_backend(xp):
    """The same on each backend (the stand-in's arrays refuse host copies): 6 elements a tensor."""
    assert_checked(gradcheck.check(checks.transformer_problem(True, True, "learned", 0.2, 0.1, max_elements=6)))


def test_tied_embeddings_share_one_matrix_whose_two_gradients_add(on_numpy):
    """With tie_embeddings there is no out.weight: the projection reads the target embedding's table, and
    that table's gradient is the embedding's scatter plus the projection's dlogits^T h."""
    from minis2s.transformer import Transformer
    model = Transformer(9, 8, d_model=6, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, ff_size=7,
                        dropout=0.0, tie_embeddings=True, dtype="float64", seed=0)
    assert "out.weight" not in model.params
    batch = checks.random_batch(numpy.random.default_rng(0), (3, 2), (2, 3), 9, 8)
    model.loss_and_grads(batch)
    both = model.grads["tgt_input.embedding.weight"].copy()
    logits, cache = model.forward(batch, train=False)
    from minis2s.loss import cross_entropy
    _, dlogits = cross_entropy(logits, batch.tgt_out, batch.tgt_lengths)
    projection = dlogits.reshape(-1, 8).T @ cache.out.x.reshape(-1, 6)            # the output layer's share
    assert numpy.abs(both - projection).max() > 1e-3                               # the embedding's share is there
    untied = Transformer(9, 8, d_model=6, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, ff_size=7,
                         dropout=0.0, tie_embeddings=False, dtype="float64", seed=0)
    untied.load_state_dict({**{k: v for k, v in model.state_dict().items()},
                            "out.weight": model.params["tgt_input.embedding.weight"]})
    untied.loss_and_grads(batch)
    numpy.testing.assert_allclose(both, untied.grads["tgt_input.embedding.weight"] + untied.grads["out.weight"],
                                  rtol=1e-12, atol=1e-14)


def _layer_pair(ours_class, theirs_class, rng, norm_first, embed=8, heads=2, ff=12, seed=1):
    """A minis2s layer with weights drawn N(0, 1/4), and PyTorch's with them copied in by name (dropout 0)."""
    ours = ours_class(embed, heads, ff, dropout=0.0, norm_first=norm_first, dtype="float64", seed=seed)
    for value in ours.params.values():
        value[...] = 0.5 * rng.standard_normal(value.shape)
    theirs = theirs_class(embed, heads, ff, dropout=0.0, norm_first=norm_first, dtype=_torch.float64)
    theirs.load_state_dict({name: _torch.from_numpy(numpy.array(value)) for name, value in ours.params.items()})
    theirs.eval()
    return ours, theirs


@needs_torch
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_equals_pytorchs(on_numpy, norm_first):
    """torch.nn.TransformerEncoderLayer (ReLU, dropout 0, norm_first both ways) with the weights copied by
    name: outputs at the real positions, the input's and every parameter's gradient within 1e-9."""
    from minis2s.nn.transformer import TransformerEncoderLayer
    rng = numpy.random.default_rng(6)
    embed, steps, batch = 8, 6, 3
    ours, theirs = _layer_pair(TransformerEncoderLayer, _torch.nn.TransformerEncoderLayer, rng, norm_first)
    mask = checks.padding_mask([6, 3, 5], steps)
    real = ~mask.T
    x = rng.standard_normal((steps, batch, embed))
    dout = rng.standard_normal((steps, batch, embed)) * real[..., None]
    y, cache = ours.forward(x, mask)
    dx = ours.backward(dout, cache)
    xt = _torch.from_numpy(x.copy()).requires_grad_()
    yt = theirs(xt, src_key_padding_mask=_torch.from_numpy(mask))
    yt.backward(_torch.from_numpy(dout))
    assert _relative(y[real], yt.detach().numpy()[real]) <= 1e-12
    assert _relative(dx, xt.grad.numpy()) <= 1e-9
    for name, tensor in theirs.named_parameters():
        assert _relative(ours.grads[name], tensor.grad.numpy()) <= 1e-9, name


@needs_torch
@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_equals_pytorchs(on_numpy, norm_first):
    """torch.nn.TransformerDecoderLayer with a causal tgt_mask and both key-padding masks."""
    from minis2s.nn.transformer import TransformerDecoderLayer
    rng = numpy.random.default_rng(7)
    embed, steps, source, batch = 8, 5, 6, 3
    ours, theirs = _layer_pair(TransformerDecoderLayer, _torch.nn.TransformerDecoderLayer, rng, norm_first, seed=2)
    tgt_mask, src_mask = checks.padding_mask([5, 2, 4], steps), checks.padding_mask([6, 3, 5], source)
    real = ~tgt_mask.T
    y0, memory = rng.standard_normal((steps, batch, embed)), rng.standard_normal((source, batch, embed))
    dout = rng.standard_normal((steps, batch, embed)) * real[..., None]
    out, cache = ours.forward(y0, memory, tgt_mask, src_mask)
    dy, dmemory = ours.backward(dout, cache)
    yt = _torch.from_numpy(y0.copy()).requires_grad_()
    mt = _torch.from_numpy(memory.copy()).requires_grad_()
    causal = _torch.triu(_torch.ones(steps, steps, dtype=_torch.bool), 1)
    ot = theirs(yt, mt, tgt_mask=causal, tgt_key_padding_mask=_torch.from_numpy(tgt_mask),
                memory_key_padding_mask=_torch.from_numpy(src_mask))
    ot.backward(_torch.from_numpy(dout))
    assert _relative(out[real], ot.detach().numpy()[real]) <= 1e-12
    assert _relative(dy, yt.grad.numpy()) <= 1e-9
    assert _relative(dmemory, mt.grad.numpy()) <= 1e-9
    for name, tensor in theirs.named_parameters():
        assert _relative(ours.grads[name], tensor.grad.numpy()) <= 1e-9, name


def _tiny(norm_first=True, **options):
    from minis2s.transformer import Transformer
    return Transformer(9, 8, d_model=8, num_heads=2, num_encoder_layers=2, num_decoder_layers=2, ff_size=12,
                       norm_first=norm_first, dtype="float64", seed=0, **options)


@pytest.mark.parametrize("norm_first", [True, False])
def test_incremental_decoding_equals_recomputing_the_whole_prefix(on_numpy, norm_first):
    """step() with the kept keys and values gives, at every position, the log-probabilities of the whole
    teacher-forced forward (which recomputes every position of the prefix), float64, 1e-12."""
    from minis2s.data import collate
    from minis2s.nn.layers import log_softmax_forward
    rng = numpy.random.default_rng(8)
    model = _tiny(norm_first, dropout=0.1)
    batch = collate([rng.integers(4, 9, size=n).tolist() for n in (3, 1, 4)],
                    [rng.integers(4, 8, size=6).tolist() for _ in range(3)])
    full = log_softmax_forward(model.forward(batch, train=False)[0])            # (T, B, V)
    encoded, state, feed = model.start(batch.src, batch.src_lengths)
    for t in range(batch.tgt_in.shape[0]):
        logp, state, feed, weights = model.step(batch.tgt_in[t], state, feed, encoded)
        numpy.testing.assert_allclose(logp, full[t], rtol=1e-12, atol=1e-12)
    assert state.past[0][0].shape == (3, 2, batch.tgt_in.shape[0], 4)           # (B, h, t, d) kept
    numpy.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-12)         # (S, B) over the source
    assert numpy.all(weights[batch.src_lengths[1]:, 1] == 0.0)                    # the padded source positions


def test_beam_search_scores_are_the_models_log_probabilities(on_numpy):
    """Beam search reorders the key/value cache along its back-pointers and drops finished sentences: every
    n-best translation's score (length penalty off) is its log-probability, recomputed teacher forced."""
    from minis2s.data import collate
    from minis2s.decode import beam_search
    model = _tiny(dropout=0.0)
    sources = [[4, 5, 6], [7], [5, 5, 8, 4], [6, 7]]
    results = beam_search(model, sources, beam_size=3, nbest=3, max_length=6, normalize="none")
    for source, hypotheses in zip(sources, results):
        assert len(hypotheses) == 3
        batch = collate([source] * 3, [h.tokens for h in hypotheses])
        numpy.testing.assert_allclose(model.sequence_logprobs(batch), [h.score for h in hypotheses], rtol=1e-10)


def test_a_sentence_alone_equals_the_same_sentence_in_a_padded_transformer_batch(on_numpy):
    """Each sentence's log-probability and the summed parameter gradients of a padded batch are the
    sentences' alone (float64, 1e-12): padding changes nothing."""
    from minis2s.data import collate
    rng = numpy.random.default_rng(9)
    model = _tiny(dropout=0.0)
    sources = [rng.integers(4, 9, size=n).tolist() for n in (5, 2)]
    targets = [rng.integers(4, 8, size=n).tolist() for n in (2, 4)]

    def run(src, tgt):
        batch = collate(src, tgt)
        model.zero_grad()
        logits, cache = model.forward(batch, train=True)
        from minis2s.loss import cross_entropy
        _, dlogits = cross_entropy(logits, batch.tgt_out, batch.tgt_lengths, reduction="sum")
        model.backward(dlogits, cache)
        return model.sequence_logprobs(batch), {k: g.copy() for k, g in model.grads.items()}
    both, grads = run(sources, targets)
    first, second = run(sources[:1], targets[:1]), run(sources[1:], targets[1:])
    numpy.testing.assert_allclose(both, [first[0][0], second[0][0]], rtol=1e-12)
    for name, grad in grads.items():
        numpy.testing.assert_allclose(grad, first[1][name] + second[1][name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_sinusoidal_positions_as_the_paper_writes_them(on_numpy):
    from minis2s.nn.transformer import sinusoidal_positions
    table = sinusoidal_positions(7, 6, numpy, numpy.float64)
    pos, i = 5, 2                                                                # columns 2i and 2i + 1
    assert table[pos, 2 * i] == pytest.approx(numpy.sin(pos / 10000 ** (2 * i / 6)), abs=1e-15)
    assert table[pos, 2 * i + 1] == pytest.approx(numpy.cos(pos / 10000 ** (2 * i / 6)), abs=1e-15)
    assert numpy.all(table[0, 0::2] == 0.0) and numpy.all(table[0, 1::2] == 1.0)


def test_learned_positions_end_at_max_len_with_a_clear_error(on_numpy):
    model = _tiny(positional="learned", max_len=4)
    encoded, state, feed = model.start(numpy.array([[4], [5]]), numpy.array([2]))
    for _ in range(4):
        _, state, feed, _ = model.step(numpy.array([1]), state, feed, encoded)
    with pytest.raises(ValueError, match="max_len 4"):
        model.step(numpy.array([1]), state, feed, encoded)


def test_the_noam_schedule_worked_by_hand():
    """lr = peak min(step / w, sqrt(w / step)): w = 4, peak 1e-3: 2.5e-4 at step 1, the peak at 4, half of
    it at step 16; Vaswani's d^-0.5 min(step^-0.5, step w^-1.5) is the same curve scaled."""
    from minis2s.optim import SGD, Schedule
    params = {"w": numpy.zeros(1)}
    optimizer = SGD(params, {"w": numpy.zeros(1)}, lr=1e-3)
    schedule = Schedule(optimizer, warmup_steps=4, kind="noam")
    assert [schedule.rate(s) for s in (1, 4, 16)] == pytest.approx([2.5e-4, 1e-3, 5e-4])
    d, w = 256, 4
    vaswani = [d ** -0.5 * min(s ** -0.5, s * w ** -1.5) for s in (1, 2, 4, 9, 16)]
    ours = [schedule.rate(s) for s in (1, 2, 4, 9, 16)]
    assert numpy.allclose(numpy.array(ours) / numpy.array(vaswani), ours[0] / vaswani[0])
    with pytest.raises(ValueError, match="warmup"):
        Schedule(optimizer, warmup_steps=0, kind="noam")
