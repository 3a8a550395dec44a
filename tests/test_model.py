"""The whole Seq2Seq model: gradients for every option, masked attention, padding invariance."""
import itertools

import numpy
import pytest

import minis2s
from minis2s import checks, data
from conftest import assert_checked, host

ATTENTION_OPTIONS = [("none", False), ("bahdanau", False), ("luong-dot", False), ("luong-dot", True),
                     ("luong-general", False), ("luong-general", True)]
GRID = [(cell, attention, feeding, bidirectional, context, ratio)
        for cell, (attention, feeding), bidirectional, context, ratio in itertools.product(
            ["rnn", "lstm", "gru"], ATTENTION_OPTIONS, [False, True], [False, True], [1.0, 0.5])]


@pytest.mark.parametrize("cell,attention,input_feeding,bidirectional,context_feeding,teacher_forcing", GRID)
def test_whole_model_gradients(cell, attention, input_feeding, bidirectional, context_feeding, teacher_forcing):
    """Every parameter (up to 12 sampled entries per tensor), float64, fourth-order central differences, on the
    reference path (conftest.py); test_kernels.py holds the kernels against it. Luong dot with a bidirectional
    encoder gives each direction hidden_size / 2."""
    errors = checks.check_seq2seq(cell, attention, bidirectional, input_feeding, context_feeding, teacher_forcing,
                                  tgt_lengths=(2, 4, 3), seed=len(cell) + len(attention), max_elements=12)
    assert_checked(errors)


@pytest.mark.parametrize("options", [dict(num_layers=2, dropout=0.3), dict(reverse_source=True),
                                     dict(bridge="zeros"), dict(label_smoothing=0.2),
                                     dict(num_layers=2, bidirectional=True, bridge="zeros", context_feeding=True),
                                     dict(attentional_output=True), dict(attentional_output=True, teacher_forcing=0.5,
                                                                         context_feeding=True),
                                     dict(attentional_output=True, num_layers=2, bidirectional=True, dropout=0.2),
                                     dict(attentional_output=True, deep_output=True, dropout=0.2),
                                     dict(attentional_output=True, deep_output=True, teacher_forcing=0.5)])
def test_model_options_gradients(options):
    assert_checked(checks.check_seq2seq("lstm", "bahdanau", max_elements=12, **options))


def test_gradients_on_the_active_backend(xp):
    assert_checked(checks.check_seq2seq("gru", "luong-general", bidirectional=True, max_elements=6))


def _pairs(rng, count, vocab=12):
    src = [rng.integers(4, vocab, size=rng.integers(1, 7)).tolist() for _ in range(count)]
    tgt = [rng.integers(4, vocab, size=rng.integers(1, 6)).tolist() for _ in range(count)]
    return src, tgt


@pytest.mark.parametrize("attention", ["bahdanau", "luong-dot", "luong-general"])
def test_padded_source_positions_get_exactly_zero_weight(xp, attention):
    model = minis2s.Seq2Seq(12, 12, cell="gru", attention=attention, emb_size=5, hidden_size=6)
    src, tgt = _pairs(numpy.random.default_rng(0), 5)
    batch = data.collate(src, tgt)
    _, cache = model.forward(batch, train=False)
    weights = host(cache.weights)                                      # (T, S, B)
    real = host(batch.src) != data.PAD
    assert (weights[:, ~real] == 0).all()
    numpy.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("cell,attention,bidirectional", [("gru", "bahdanau", True), ("lstm", "luong-general", False),
                                                          ("rnn", "none", True)])
def test_padding_changes_no_sequence_loss_or_gradient(cell, attention, bidirectional):
    """batch loss x N = sum of n_b x (loss alone); batch grads x N = sum of n_b x (grads alone)."""
    rng = numpy.random.default_rng(3)
    model = minis2s.Seq2Seq(12, 12, cell=cell, attention=attention, emb_size=4, hidden_size=5,
                            bidirectional=bidirectional, dtype="float64", input_feeding=attention != "bahdanau"
                            and attention != "none", context_feeding=True)
    src, tgt = _pairs(rng, 4)
    batch = data.collate(src, tgt)
    total = model.loss_and_grads(batch) * batch.num_tokens
    batch_grads = {k: v * batch.num_tokens for k, v in model.grads.items()}
    summed_loss, summed = 0.0, {k: numpy.zeros_like(v) for k, v in model.grads.items()}
    for s, t in zip(src, tgt):
        alone = data.collate([s], [t])
        summed_loss += model.loss_and_grads(alone) * alone.num_tokens
        for k, v in model.grads.items():
            summed[k] += v * alone.num_tokens
    assert total == pytest.approx(summed_loss, rel=1e-12)
    for k in summed:
        numpy.testing.assert_allclose(batch_grads[k], summed[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_loss_is_deterministic_and_has_no_dropout():
    model = minis2s.Seq2Seq(12, 12, emb_size=4, hidden_size=5, dropout=0.5)
    batch = data.collate(*_pairs(numpy.random.default_rng(1), 3))
    assert model.loss(batch) == model.loss(batch)
    assert model.loss_and_grads(batch) != model.loss(batch)


def test_parameter_names_follow_the_contract():
    model = minis2s.Seq2Seq(10, 11, cell="lstm", attention="bahdanau", emb_size=4, hidden_size=5, bidirectional=True)
    for name in ("encoder.weight_ih_l0", "encoder.weight_hh_l0_reverse", "decoder.attention.v",
                 "decoder.rnn.weight_hh_l0", "decoder.out.weight", "src_embedding.weight", "bridge.h_l0.weight",
                 "bridge.c_l0.weight"):
        assert name in model.params and model.grads[name].shape == model.params[name].shape
    assert model.params["decoder.out.weight"].shape == (11, 5)
    assert model.params["encoder.weight_ih_l0"].dtype == numpy.float32


def test_luong_dot_with_a_bidirectional_encoder_splits_the_hidden_size():
    model = minis2s.Seq2Seq(7, 8, cell="lstm", attention="luong-dot", bidirectional=True, emb_size=5, hidden_size=6,
                            num_layers=2)
    assert model.params["encoder.weight_hh_l1_reverse"].shape == (4 * 3, 3)          # 6 / 2 per direction
    assert model.params["bridge.h_l0.weight"].shape == (6, 6)                        # [h_fwd ; h_bwd] -> H
    batch = data.collate([[4, 5, 6], [5]], [[4, 5], [6, 7, 4]])
    logits, cache = model.forward(batch, train=False)
    assert logits.shape == (4, 2, 8) and cache.encoded.memory.shape == (4, 2, 6)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="cell"):
        minis2s.Seq2Seq(5, 5, cell="transformer")
    with pytest.raises(ValueError, match="attention"):
        minis2s.Seq2Seq(5, 5, attention="multihead")
    with pytest.raises(ValueError, match="input_feeding"):
        minis2s.Seq2Seq(5, 5, attention="bahdanau", input_feeding=True)
    with pytest.raises(ValueError, match="hidden_size must be even, got 7"):
        minis2s.Seq2Seq(5, 5, attention="luong-dot", bidirectional=True, hidden_size=7)
    with pytest.raises(ValueError, match="teacher_forcing"):
        minis2s.Seq2Seq(5, 5, teacher_forcing=1.5)


@pytest.mark.parametrize("cell,options", [("rnn", dict()), ("lstm", dict(num_layers=2)),
                                          ("lstm", dict(num_layers=2, dropout=0.3)),      # the same masks too
                                          ("gru", dict(attention="luong-general", dropout=0.2)),
                                          ("gru", dict(bidirectional=True, num_layers=2)),
                                          ("lstm", dict(reverse_source=True, label_smoothing=0.1)),
                                          ("gru", dict(attention="luong-dot")),
                                          ("lstm", dict(attention="luong-general", num_layers=2)),
                                          ("gru", dict(attention="luong-dot", bidirectional=True,
                                                       reverse_source=True))])
def test_decoder_over_whole_sequences_equals_the_decoder_step_by_step(cell, options, monkeypatch):
    """Without Bahdanau attention and feeding, the decoder's stack can run layer by layer over all steps
    (nn/decoder.py's forward_whole_sequences, which the twins choose), then Luong's attention for all steps
    at once; the step-by-step loop gives the same loss, gradients and attention weights."""
    from minis2s import model as model_module
    from minis2s.nn import decoder as decoder_module
    rng = numpy.random.default_rng(3)
    batch = checks.random_batch(rng, (4, 2, 5), (3, 5, 1), 11, 12)

    def run():
        model = minis2s.Seq2Seq(11, 12, cell=cell, emb_size=5, hidden_size=6, dtype="float64", seed=2,
                                **{"attention": "none", **options})
        loss = model.loss_and_grads(batch)
        _, cache = model.forward(batch, train=False)
        return loss, {name: host(g).copy() for name, g in model.grads.items()}, cache.weights

    step_loss, step_grads, step_weights = run()                       # the reference: the step loop
    taken = []
    monkeypatch.setattr(model_module, "steps_forward", lambda *args: taken.append(1)
                        or decoder_module.forward_whole_sequences(*args))
    monkeypatch.setattr(model_module, "steps_backward", decoder_module.backward_whole_sequences)
    loss, grads, weights = run()
    assert taken                                                      # the whole-sequence variant ran
    assert abs(float(loss) - float(step_loss)) <= 1e-12 * abs(float(step_loss))
    for name, g in step_grads.items():
        numpy.testing.assert_allclose(grads[name], g, rtol=1e-10, atol=1e-13, err_msg=name)
    assert (weights is None) == (step_weights is None)
    if weights is not None:                                           # (T, S, B), for the heatmaps
        numpy.testing.assert_allclose(host(weights), host(step_weights), rtol=1e-12, atol=1e-15)
