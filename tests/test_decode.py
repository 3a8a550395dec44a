"""Greedy and beam search: beam 1 is greedy, n-best order, a case greedy gets wrong, the options."""
import numpy
import pytest

import minis2s
from minis2s import backend, data
from minis2s.decode import beam_search, greedy, length_penalty
from minis2s.kernels import beam as batched
from minis2s.kernels import decode as on_host
from minis2s.model import Encoded


def batched_search(*args, **kwargs):
    """The twin as the dispatch runs it: on NumPy with the Numba selection (kernels/decode.py), elsewhere
    (the stand-in) all array code (kernels/beam.py)."""
    return (on_host if backend.name() == "numpy" else batched).beam_search(*args, **kwargs)


# the textbook search (one sentence at a time) and its twin (every sentence at once)
SEARCHES = {"textbook": beam_search.reference, "batched": batched_search}

A, B, C, D = 4, 5, 6, 7


class MarkovModel:
    """A hand-built 'model': the next word's distribution depends only on the last word.

    From <bos>: A 0.6, B 0.4.  After A: C 0.35, D 0.35, <eos> 0.3.  After B: <eos> 0.9, C 0.1.
    After C or D: <eos> 1.  Greedy takes A then C (or D): 0.6 x 0.35 x 1 = 0.21.
    The best sequence is B <eos>: 0.4 x 0.9 = 0.36 -- beam search with k = 2 finds it.
    """
    vocab = 8
    table = {data.BOS: {A: 0.6, B: 0.4}, A: {C: 0.35, D: 0.35, data.EOS: 0.3}, B: {data.EOS: 0.9, C: 0.1},
             C: {data.EOS: 1.0}, D: {data.EOS: 1.0}}

    def __init__(self, table=None, attention=None):
        self.table = table or self.table
        self.attention = attention

    def start(self, src, src_lengths):
        xp = backend.xp()
        size = src.shape[1]
        encoded = Encoded(memory=xp.zeros((src.shape[0], size, 1)), projected=None,
                          mask=xp.ones(src.shape, dtype=bool), state=None, context_vector=None)
        return encoded, (xp.zeros((1, size, 1)),), None

    repeat_encoded = minis2s.Seq2Seq.repeat_encoded
    select_state = minis2s.Seq2Seq.select_state

    def step(self, tokens, state, feed, encoded):
        tokens = backend.to_numpy(tokens)
        logp = numpy.full((len(tokens), self.vocab), -numpy.inf)
        for row, token in enumerate(tokens):
            for word, p in self.table.get(int(token), {data.EOS: 1.0}).items():
                logp[row, word] = numpy.log(p)
        weights = None
        if self.attention is not None:
            weights = numpy.repeat(self.attention[:, None], len(tokens), axis=1)[:encoded.mask.shape[0]]
        return backend.asarray(logp), state, feed, weights


def test_greedy_misses_what_beam_search_finds():
    model = MarkovModel()
    greedy_out = greedy(model, [[A]])[0]
    assert greedy_out.tokens in ([A, C], [A, D]) and greedy_out.logprob == pytest.approx(numpy.log(0.21))
    best = beam_search(model, [[A]], beam_size=2, normalize="none")[0][0]
    assert best.tokens == [B] and best.logprob == pytest.approx(numpy.log(0.36))


def test_nbest_lists_are_sorted_with_their_scores():
    found = beam_search(MarkovModel(), [[A], [B, C]], beam_size=3, nbest=3, normalize="none")
    for hypotheses in found:
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True) and len(hypotheses) == 3
    assert [h.tokens for h in found[0]] == [[B], [A, C], [A, D]] or [h.tokens for h in found[0]] == [[B], [A, D], [A, C]]


def test_length_normalisation():
    assert length_penalty(4, "avg") == 4.0
    assert length_penalty(1, "gnmt", 1.0) == 1.0
    assert length_penalty(7, "gnmt", 0.6) == pytest.approx(2.0 ** 0.6)
    # A C <eos>: 0.6 x 0.45 = 0.27, B <eos>: 0.36. Raw: B wins; averaged per token, log(0.27)/3 = -0.436
    # beats log(0.36)/2 = -0.511, so A C wins
    table = {**MarkovModel.table, A: {C: 0.45, D: 0.25, data.EOS: 0.3}}
    assert beam_search(MarkovModel(table), [[A]], beam_size=3, normalize="none")[0][0].tokens == [B]
    assert beam_search(MarkovModel(table), [[A]], beam_size=3, normalize="avg")[0][0].tokens == [A, C]
    with pytest.raises(ValueError, match="normalisation"):
        length_penalty(3, "bogus")


def test_min_length_and_max_length():
    table = {data.BOS: {A: 0.5, data.EOS: 0.5}, A: {data.EOS: 0.9, A: 0.1}}
    assert greedy(MarkovModel(table), [[A]], min_length=3)[0].tokens == [A, A, A]
    assert greedy(MarkovModel({data.BOS: {A: 1.0}, A: {A: 1.0}}), [[A]], max_length=4)[0].tokens == [A, A, A, A]


def test_block_ngram_repeat():
    loop = {data.BOS: {A: 0.9, C: 0.1}, A: {A: 0.6, B: 0.3, data.EOS: 0.1}, B: {A: 0.6, data.EOS: 0.4},
            C: {data.EOS: 1.0}}
    plain = beam_search(MarkovModel(loop), [[A]], beam_size=2, max_length=6, normalize="none")[0][0]
    assert plain.tokens[:2] == [A, A]
    blocked = beam_search(MarkovModel(loop), [[A]], beam_size=2, max_length=6, normalize="none",
                          block_ngram_repeat=1)[0][0]
    assert len(set(blocked.tokens)) == len(blocked.tokens)                   # no word twice


def test_unk_is_replaced_by_the_most_attended_source_token():
    attention = numpy.array([0.1, 0.7, 0.2])
    model = MarkovModel({data.BOS: {data.UNK: 1.0}, data.UNK: {data.EOS: 1.0}}, attention=attention)
    out = beam_search(model, [[A, B]], beam_size=2, replace_unk=True)[0][0]
    assert out.tokens == [-2]                                                # source position 1
    vocab = data.Vocab(list(data.SPECIALS) + ["x"])
    assert vocab.decode(out.tokens, source_tokens=["paris", "londres"]) == ["londres"]


def test_beam_one_is_exactly_greedy_on_a_trained_shape_model():
    """greedy() is its own plain loop; beam search of width 1, unnormalised, must find the same: tokens,
    log-probabilities and attention, also where the length limit ends a sentence before <eos>."""
    rng = numpy.random.default_rng(0)
    for cell, attention, feeding in (("gru", "bahdanau", False), ("lstm", "luong-general", True), ("rnn", "none", False)):
        model = minis2s.Seq2Seq(15, 15, cell=cell, attention=attention, emb_size=8, hidden_size=12, seed=3,
                                input_feeding=feeding)
        for value in model.params.values():                                  # sharper distributions
            value *= 3
        sources = [rng.integers(4, 15, size=rng.integers(1, 8)).tolist() for _ in range(12)]
        for max_length in (None, 3):
            plain = greedy(model, sources, max_length=max_length)
            beamed = beam_search(model, sources, beam_size=1, normalize="none", max_length=max_length)
            for g, b in zip(plain, beamed):
                assert g.tokens == b[0].tokens
                # float32 products on the copied (B*k) rows may round differently in the last bit
                numpy.testing.assert_allclose([g.logprob, g.score], [b[0].logprob, b[0].score], rtol=1e-6)
                if attention != "none":
                    numpy.testing.assert_allclose(g.attention, b[0].attention, rtol=1e-5, atol=1e-7)


def test_decoding_matches_the_training_forward_pass():
    """The cache-free step path gives the same log-probabilities as the training forward pass."""
    model = minis2s.Seq2Seq(15, 15, cell="lstm", attention="luong-dot", emb_size=6, hidden_size=7,
                            input_feeding=True, context_feeding=True, dtype="float64")
    src, tgt = [[5, 6, 7], [8, 9]], [[4, 5], [6, 7, 8]]
    batch = data.collate(src, tgt)
    logits, _ = model.forward(batch, train=False)
    encoded, state, feed = model.start(batch.src, batch.src_lengths)
    for t in range(batch.tgt_in.shape[0]):
        logp, state, feed, _ = model.step(batch.tgt_in[t], state, feed, encoded)
        expected = logits[t] - numpy.log(numpy.exp(logits[t]).sum(axis=1, keepdims=True))
        numpy.testing.assert_allclose(backend.to_numpy(logp), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("attention,eos_bias", [("none", 0.5), ("bahdanau", 2.0)])
def test_every_beam_hypothesis_is_its_own_words_scored_by_the_model(attention, eos_bias, search):
    """Each n-best translation read back from the histories (decode._backtrack) is what the model gives
    its words: stepping the model through them, teacher forced, returns the reported log-probability
    (with <eos> when it ended, without when the length limit ended it), the length-normalised score and,
    step by step, the attention weights. Sentences of different lengths in one batch, k = 4, all 4 kept."""
    model = minis2s.Seq2Seq(13, 13, cell="gru", attention=attention, emb_size=5, hidden_size=6, seed=2,
                            dtype="float64")
    for value in model.params.values():
        value *= 2.5
    model.params["decoder.out.bias"][data.EOS] += eos_bias             # some end by <eos>, some at the limit
    rng = numpy.random.default_rng(5)
    sources = [rng.integers(4, 13, size=rng.integers(1, 7)).tolist() for _ in range(5)]
    found = SEARCHES[search](model, sources, beam_size=4, nbest=4, max_length=6, normalize="avg")
    ended_early = 0
    for source, hypotheses in zip(sources, found):
        assert len(hypotheses) == 4
        for h in hypotheses:
            batch = data.collate([source])
            encoded, state, feed = model.start(batch.src, batch.src_lengths)
            inputs = [data.BOS] + h.tokens
            ended = len(h.tokens) < 6                       # within the limit only by its <eos>
            ended_early += ended
            targets = h.tokens + ([data.EOS] if ended else [])
            logprob, weights = 0.0, []
            for word, target in zip(inputs, targets):
                logp, state, feed, w = model.step(backend.asarray([word]), state, feed, encoded)
                logprob += float(logp[0, target])
                weights.append(None if w is None else backend.to_numpy(w)[:, 0])
            assert h.logprob == pytest.approx(logprob, rel=1e-12, abs=1e-12)
            assert h.score == pytest.approx(logprob / len(targets), rel=1e-12, abs=1e-12)
            if attention == "none":
                assert h.attention is None
            else:
                alone = numpy.stack(weights)                # (steps, S_b): the batch pads S with zeros
                numpy.testing.assert_allclose(h.attention[:, :alone.shape[1]], alone, rtol=1e-12, atol=1e-12)
                assert not h.attention[:, alone.shape[1]:].any()
    assert 0 < ended_early < 20                             # both kinds of ending are met


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("attention,scale,eos_bias", [("none", 2.0, 0.0), ("luong-general", 3.0, 0.1)])
def test_a_batch_decodes_as_its_sentences_do_one_by_one(attention, scale, eos_bias, search):
    """Sentences end at different steps and leave the batch as they do (their rows of the state and of
    the encoder's output dropped): each sentence's translations, scores and attention are still those
    it gets decoded alone, for greedy and for beam search (with n-gram blocking, which reads the
    histories by sentence)."""
    model = minis2s.Seq2Seq(14, 14, cell="lstm", attention=attention, emb_size=5, hidden_size=7, seed=6,
                            dtype="float64")
    for value in model.params.values():
        value *= scale
    model.params["decoder.out.bias"][data.EOS] += eos_bias           # some end by <eos>, some at their limit
    rng = numpy.random.default_rng(2)
    sources = [rng.integers(4, 14, size=rng.integers(1, 8)).tolist() for _ in range(7)]

    def same(batched, alone):
        assert batched.tokens == alone.tokens
        assert batched.logprob == pytest.approx(alone.logprob, rel=1e-12, abs=1e-12)
        assert batched.score == pytest.approx(alone.score, rel=1e-12, abs=1e-12)
        if attention != "none":
            width = alone.attention.shape[1]
            numpy.testing.assert_allclose(batched.attention[:, :width], alone.attention, rtol=1e-12, atol=1e-12)
    together = greedy(model, sources)
    assert len({len(h.tokens) for h in together}) > 3                 # they do end at different steps
    for source, batched in zip(sources, together):
        same(batched, greedy(model, [source])[0])
    beamed = SEARCHES[search](model, sources, beam_size=3, nbest=3, block_ngram_repeat=2, normalize="avg")
    for source, hypotheses in zip(sources, beamed):
        alone = SEARCHES[search](model, [source], beam_size=3, nbest=3, block_ngram_repeat=2,
                                 normalize="avg")[0]
        assert len(hypotheses) == len(alone)
        for batched, single in zip(hypotheses, alone):
            same(batched, single)


def _models():
    """Shapes of model beam search meets: RNNs with each attention, a Transformer, an ensemble of two."""
    from minis2s.ensemble import Ensemble
    rnn = dict(emb_size=5, hidden_size=6, dtype="float64")
    models = {"gru+bahdanau": minis2s.Seq2Seq(14, 14, cell="gru", attention="bahdanau", seed=2,
                                              attentional_output=True, **rnn),
              "gru+bahdanau, deep output": minis2s.Seq2Seq(14, 14, cell="gru", attention="bahdanau", seed=6,
                                                           attentional_output=True, deep_output=True, **rnn),
              "lstm+luong, feeding": minis2s.Seq2Seq(14, 14, cell="lstm", attention="luong-general", seed=3,
                                                     input_feeding=True, **rnn),
              "rnn, none": minis2s.Seq2Seq(14, 14, cell="rnn", attention="none", seed=4, **rnn),
              "transformer": minis2s.Transformer(14, 14, d_model=8, num_heads=2, num_encoder_layers=1,
                                                 num_decoder_layers=1, ff_size=16,
                                                 dropout=0.0, dtype="float64", seed=5)}
    for model in models.values():
        for value in model.params.values():                  # sharper distributions: beams that differ
            value *= 2.5
        if "decoder.out.bias" in model.params:
            model.params["decoder.out.bias"][data.EOS] += 0.3    # some end by <eos>, some at the limit
    models["ensemble"] = Ensemble([models["gru+bahdanau"], models["transformer"]])
    return models


@pytest.mark.parametrize("options", [dict(), dict(nbest=4, normalize="avg"), dict(min_length=3, normalize="none"),
                                     dict(nbest=2, block_ngram_repeat=2), dict(coverage_penalty=0.4, nbest=3),
                                     dict(replace_unk=True, max_length=4, nbest=4)])
def test_the_batched_twin_finds_what_the_textbook_search_finds(options, xp):
    """kernels/beam.py's search (every sentence at once, the shrinking batch, the histories read back once)
    against the textbook one (a sentence at a time, its beams as Python objects): the same n-best lists,
    in the same order, with the same scores (float64, 1e-12) and attention, for every model shape and
    option, on each backend (the batched search is array code: the stand-in runs it as CuPy would)."""
    rng = numpy.random.default_rng(7)
    sources = [rng.integers(3, 14, size=rng.integers(1, 8)).tolist() for _ in range(6)]
    for name, model in _models().items():
        if options.get("coverage_penalty") and name == "rnn, none":
            continue                                         # coverage needs attention (tested elsewhere)
        with_options = dict(beam_size=4, **options)
        fast = batched_search(model, sources, **with_options)
        textbook = beam_search.reference(model, sources, **with_options)
        for found, expected in zip(fast, textbook):
            assert [h.tokens for h in found] == [h.tokens for h in expected], name
            numpy.testing.assert_allclose([h.score for h in found], [h.score for h in expected], rtol=1e-12)
            numpy.testing.assert_allclose([h.logprob for h in found], [h.logprob for h in expected], rtol=1e-12)
            for h, e in zip(found, expected):
                if e.attention is None:
                    assert h.attention is None
                else:
                    width = e.attention.shape[1]               # the batch pads the source with zeros
                    numpy.testing.assert_allclose(h.attention[:, :width], e.attention, rtol=1e-12, atol=1e-12)
                    assert not h.attention[:, width:].any()


def test_the_batched_search_copies_one_flag_a_step():
    """On the stand-in (a GPU's arrays, counted), the batched search copies to the host one (B,) flag a step
    and the histories once at the end, never a step's log-probabilities; the textbook search copies each
    sentence's every step."""
    from minis2s import fakecupy
    backend.use("fakecupy")
    try:
        model = _models()["gru+bahdanau"]
        sources = [[4, 5, 6], [7, 8], [9, 10, 11, 12], [4]]
        fakecupy.transfers.reset()
        batched.beam_search(model, sources, beam_size=3, max_length=6)
        assert 1 <= fakecupy.transfers.count <= 6 + 5       # <= 6 flags; the lengths, 3 histories, attention once
        fakecupy.transfers.reset()
        beam_search.reference(model, sources, beam_size=3, max_length=6)
        assert fakecupy.transfers.count > 6 + 6
    finally:
        backend.use("numpy")


def test_beam_search_runs_its_twin_where_the_kernels_are_on(on_numpy):
    """The dispatch sends beam search (its arguments are a model and lists of ids, no array) to its twin
    on NumPy with the kernels on, to the textbook search with them off; on the stand-in, always the
    textbook search."""
    from minis2s import dispatch, kernels
    model = _models()["gru+bahdanau"]
    calls = []
    original = kernels.decode.beam_search
    try:
        kernels.decode.beam_search = lambda *a, **k: calls.append(1) or original(*a, **k)
        with dispatch.reference_path(False):
            beam_search(model, [[4, 5]], beam_size=2)
            assert calls
        calls.clear()
        beam_search(model, [[4, 5]], beam_size=2)
        assert not calls
        backend.use("fakecupy")
        try:
            with dispatch.reference_path(False):
                beam_search(_models()["gru+bahdanau"], [[4, 5]], beam_size=2)   # the stand-in: no kernel
            assert not calls
        finally:
            backend.use("numpy")
    finally:
        kernels.decode.beam_search = original


# ----------------------------------------------------------------------------- the decoding toolbox

def test_sampling_draws_from_the_distribution_worked_by_hand():
    """From <bos> the Markov model says A 0.6, B 0.4: 4,000 draws give A about 0.6 of the time (3 sigma:
    +-0.023); at temperature 1/2 p(A) = 0.36 / (0.36 + 0.16) = 0.692; every draw's logprob is the model's
    own, untempered (A C <eos>: log 0.6 x 0.35)."""
    from minis2s.decode import sample
    sources = [[A]] * 4000
    drawn = sample(MarkovModel(), sources, seed=1)
    first = numpy.array([h.tokens[0] for h in drawn])
    assert abs((first == A).mean() - 0.6) < 0.023
    sharp = numpy.array([h.tokens[0] for h in sample(MarkovModel(), sources, temperature=0.5, seed=2)])
    assert abs((sharp == A).mean() - 0.36 / 0.52) < 0.022
    for h in drawn[:50]:
        expected = {(A, C): 0.6 * 0.35, (A, D): 0.6 * 0.35, (A,): 0.6 * 0.3, (B,): 0.4 * 0.9, (B, C): 0.4 * 0.1}
        assert h.logprob == pytest.approx(numpy.log(expected[tuple(h.tokens)]))


def test_top_k_and_top_p_cut_the_distribution_as_worked_by_hand():
    """top-p 0.5: after <bos> the nucleus is A alone (0.6 >= 0.5); after A it is C and D (0.35 + 0.35 >= 0.5,
    <eos> left out), so every draw is A C or A D, both of them; top-k 2 after A: C and D, never <eos>."""
    from minis2s.decode import sample
    nucleus = {tuple(h.tokens) for h in sample(MarkovModel(), [[A]] * 200, top_p=0.5, seed=3)}
    assert nucleus == {(A, C), (A, D)}
    two = {tuple(h.tokens) for h in sample(MarkovModel(), [[A]] * 300, top_k=2, seed=4)}
    assert (A,) not in two and {(A, C), (A, D), (B,), (B, C)} >= two and (B,) in two


def test_sampling_is_reproducible_and_top_k_one_is_greedy():
    from minis2s.decode import sample
    model = minis2s.Seq2Seq(30, 25, cell="gru", attention="bahdanau", emb_size=6, hidden_size=8, dtype="float64",
                            seed=3)
    rng = numpy.random.default_rng(0)
    sources = [rng.integers(4, 30, size=n).tolist() for n in (3, 6, 4, 8, 5)]
    once, again = (sample(model, sources, temperature=1.5, seed=7) for _ in range(2))
    assert [h.tokens for h in once] == [h.tokens for h in again]
    other = sample(model, sources, temperature=1.5, seed=8)
    assert [h.tokens for h in once] != [h.tokens for h in other]
    assert [h.tokens for h in sample(model, sources, top_k=1, seed=9)] == [h.tokens for h in greedy(model, sources)]


def test_coverage_penalty_worked_by_hand():
    """Every step attends [0.1, 0.7, 0.2] over the source A B <eos>. B <eos> (2 steps) covers
    [0.2, 1.4, 0.4]: beta (log 0.2 + log 0.4) = -2.526 beta; A C <eos> (3 steps) covers [0.3, 2.1, 0.6]:
    beta (log 0.3 + log 0.6) = -1.715 beta. Raw log 0.36 = -1.022 beats log 0.21 = -1.561; with beta = 1,
    -1.561 - 1.715 = -3.276 beats -1.022 - 2.526 = -3.548: the better-covering translation wins."""
    model = MarkovModel(attention=numpy.array([0.1, 0.7, 0.2]))
    plain = beam_search(model, [[A, B]], beam_size=3, nbest=3, normalize="none")[0]
    assert plain[0].tokens == [B]
    covered = beam_search(model, [[A, B]], beam_size=3, nbest=3, normalize="none", coverage_penalty=1.0)[0]
    assert covered[0].tokens in ([A, C], [A, D])
    assert covered[0].score == pytest.approx(numpy.log(0.21) + numpy.log(0.3) + numpy.log(0.6))
    b_eos = next(h for h in covered if h.tokens == [B])
    assert b_eos.score == pytest.approx(numpy.log(0.36) + numpy.log(0.2) + numpy.log(0.4))
    with pytest.raises(ValueError, match="attention"):
        beam_search(MarkovModel(), [[A]], beam_size=2, coverage_penalty=0.2)


def test_a_pairs_score_is_its_log_probability_step_by_step():
    """Seq2Seq.sequence_logprobs (what minis2s score prints) = sum over the reference of log p(y_t | y_<t, x)
    read off model.step one word at a time, fed the reference (float64, 1e-10); label smoothing left out."""
    for attention in ("bahdanau", "none"):
        model = minis2s.Seq2Seq(20, 18, cell="lstm", attention=attention, emb_size=5, hidden_size=7,
                                dtype="float64", seed=4, label_smoothing=0.1)
        rng = numpy.random.default_rng(5)
        src = [rng.integers(4, 20, size=n).tolist() for n in (4, 2, 6)]
        tgt = [rng.integers(4, 18, size=n).tolist() for n in (3, 5, 1)]
        batch = data.collate(src, tgt)
        scored = backend.to_numpy(model.sequence_logprobs(batch))
        for b in range(3):
            encoded, state, feed = model.start(*(a[:, [b]] if a.ndim == 2 else a[[b]]
                                                 for a in (batch.src[:len(src[b]) + 1], batch.src_lengths)))
            total, previous = 0.0, data.BOS
            for word in tgt[b] + [data.EOS]:
                logp, state, feed, _ = model.step(backend.asarray(numpy.array([previous])), state, feed, encoded)
                total += float(backend.to_numpy(logp)[0, word])
                previous = word
            assert scored[b] == pytest.approx(total, rel=1e-10)
