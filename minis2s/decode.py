"""Decoding: greedy and beam search, one step at a time on the cache-free path (``Seq2Seq.step``).

Greedy: y_t = argmax_v log p(v | y_<t, x), until <eos> or the length limit.

Beam search keeps k partial translations (beams) of a sentence, the rows of one decoder batch. At
each step every beam is extended by every word,

    score(y_<=t) = score(y_<t) + log p(y_t | y_<t, x)              (the raw log-probability)

and the k best of the k*V extensions of each sentence survive. An extension that ends in <eos>
leaves the beam for the sentence's finished list, scored with a length normalisation:

    none      score
    avg       score / |y|                                           (the plain average)
    gnmt      score / ((5 + |y|) / 6) ** alpha                      (Wu et al. 2016)

(|y| counts the <eos>). With a coverage penalty beta (GNMT's, Wu et al. 2016, as OpenNMT-py's "wu"),
a finished translation is ranked by

    score / lp(|y|) + beta * sum_s log min(sum_t alpha_t,s, 1)      (over the source's real positions s)

which costs every source word the attention has covered less than once in total. A sentence is done
when it has k finished translations, or at the length limit, where its live beams join the finished list. With k = 1 and no length normalisation it finds
exactly what greedy search finds (a test holds the two against each other). The derivation of the
scores and of the bookkeeping: docs/derivations/beam-search.md. What you read here searches one
sentence at a time; its twin (kernels/beam.py) searches every sentence of the batch at once, on the
device, and finds the same translations with the same scores.
Options: min_length (no <eos> before), max_length (default 2 * source length + 10),
block_ngram_repeat n (no n-gram twice in one translation), nbest (how many to return),
replace_unk (an <unk> in the output becomes the source token the attention weighted most).
<pad> and <bos> are never produced.

Sampling (``sample``): instead of the most likely word, a word drawn from the step's distribution,
sharpened or flattened by a temperature T, p_T(v) = softmax(log p / T)_v, and cut to the k most likely
words (top-k) or to the fewest most likely words whose probability reaches P (top-p, nucleus sampling,
Holtzman et al. 2020), renormalised. Top-k 1 is greedy search. The draws come from the counter-based
generator (rng.py): one seed gives the same translations on every backend.
"""
from typing import NamedTuple

import numpy

from . import backend, rng
from .batch import BOS, EOS, PAD, UNK, collate
from .dispatch import constant_weights, twin


class Hypothesis(NamedTuple):
    tokens: list              # output ids, without <eos>
    score: float              # the normalised score used for ranking
    logprob: float            # the raw sum of log-probabilities (with <eos> when it ended)
    attention: object         # (len(tokens) + 1, S_b) numpy array, or None without attention


def length_penalty(length, kind="gnmt", alpha=0.6):
    if kind == "gnmt":
        return ((5.0 + length) / 6.0) ** alpha
    if kind == "avg":
        return float(length)
    if kind == "none":
        return 1.0
    raise ValueError(f"length normalisation must be 'gnmt', 'avg' or 'none', got {kind!r}")


def _forbid(logp, step, min_length):
    """logp (rows, V), in place: <pad> and <bos> are never produced, <eos> not before min_length."""
    logp[:, PAD] = -numpy.inf
    logp[:, BOS] = -numpy.inf
    if step < min_length:
        logp[:, EOS] = -numpy.inf
    return logp


def _limits(src_lengths, max_length):
    """Each sentence's length limit (B,) on the host: max_length, or 2 * its source length (with its
    <eos>) + 10. src_lengths on the host."""
    return numpy.full(len(src_lengths), max_length) if max_length else 2 * src_lengths + 10


def most_likely(logp):
    """Greedy search's choice: each row's most likely word, (rows, V) -> (rows,)."""
    return logp.argmax(axis=1)


@constant_weights()               # the weights stay fixed while decoding (a fast path may keep copies of them)
def greedy(model, src_seqs, max_length=None, min_length=0, choose=most_likely):
    """src_seqs: lists of source ids -> one Hypothesis per sentence.

    The decoder runs one step at a time on its own output: y_t = argmax_v log p(v | y_<t, x), fed back
    as the next input (autoregressive), until <eos> or the length limit. (``choose`` picks each step's
    words from the log-probabilities: the argmax here; ``sample`` below passes a random draw.) A sentence that has ended
    leaves the batch (its rows of the state and of the encoder's output are dropped), so later steps
    run on the sentences still going only. Everything stays where the model runs (on the GPU with
    CuPy): a step copies one (B,) flag to the host ("which just ended?"), and the chosen words come
    over once, at the end.
    """
    xp = backend.xp()
    batch = collate(src_seqs)
    size = len(src_seqs)
    encoded, state, feed = model.start(batch.src, batch.src_lengths)
    src_lengths = backend.to_numpy(batch.src_lengths)
    limits = _limits(src_lengths, max_length)                                   # one copy, before the loop
    limit = backend.asarray(limits)
    alive = numpy.arange(size)                                # the sentences still decoding, on the host
    tokens = xp.full((size,), BOS, dtype=xp.int64)            # every sentence starts from <bos>
    words_per_step, attention_per_step = [], []               # (B,), (B, S) a step: <pad>, 0 once ended
    logprob = xp.zeros(size)                                  # sums in float64
    steps = xp.zeros(size, dtype=xp.int64)                    # words chosen so far, <eos> included
    for step in range(int(limits.max())):
        logp, state, feed, weights = model.step(tokens, state, feed, encoded)   # (A, V): the A alive ones
        logp = _forbid(logp, step, min_length)
        words = choose(logp)                                  # the most likely next word, (A,)
        rows = backend.asarray(alive)
        logprob[rows] += logp[xp.arange(len(alive)), words]
        steps[rows] += 1
        words_per_step.append(_full((size,), PAD, rows, words))
        attention_per_step.append(None if weights is None else _full((size, weights.shape[0]), 0, rows, weights.T))
        ended = backend.to_numpy((words == EOS) | (step + 1 >= limit[rows]))    # one copy a step
        if ended.all():
            break
        tokens = words                                        # the output becomes the next input
        if ended.any():                                       # the ended sentences leave the batch
            keep = backend.asarray(numpy.flatnonzero(~ended))
            alive = alive[~ended]
            tokens = words[keep]
            state, feed = model.select_state(state, feed, keep)
            encoded = model.repeat_encoded(encoded, keep)

    words_per_step = backend.to_numpy(xp.stack(words_per_step))          # (T, B), once, at the end
    attention = None if attention_per_step[0] is None else backend.to_numpy(xp.stack(attention_per_step))
    logprob, steps = backend.to_numpy(logprob), backend.to_numpy(steps)
    hypotheses = []
    for b in range(size):
        words = [int(w) for w in words_per_step[:steps[b], b]]
        weights = None if attention is None else attention[:steps[b], b, :src_lengths[b]]   # (|y|, S_b)
        if words[-1] == EOS:
            words = words[:-1]
        hypotheses.append(Hypothesis(words, float(logprob[b]), float(logprob[b]), weights))
    return hypotheses


class Sampler:
    """``choose`` for ``greedy``: a word drawn from each row's distribution at temperature T, cut to its
    top-k words (k = 0: all) and to its top-p nucleus (p = 1: all), renormalised."""

    def __init__(self, temperature=1.0, top_k=0, top_p=1.0, seed=0):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k < 0 or not 0.0 < top_p <= 1.0:
            raise ValueError(f"need top_k >= 0 and 0 < top_p <= 1, got top_k={top_k}, top_p={top_p}")
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.rng = rng.generator(seed)

    def __call__(self, logp):
        xp = backend.array_module(logp)
        rows, vocab = logp.shape
        order = xp.argsort(-logp, axis=1, kind="stable")                 # words, most likely first (ties: lower id)
        ranked = xp.take_along_axis(logp, order, axis=1).astype(xp.float64) / self.temperature
        probs = xp.exp(ranked - ranked[:, :1])                           # softmax(log p / T), unnormalised
        probs = probs / probs.sum(axis=1, keepdims=True)
        keep = xp.ones((rows, vocab), dtype=bool)
        if self.top_k:
            keep &= xp.arange(vocab)[None, :] < self.top_k               # the k most likely
        if self.top_p < 1.0:
            before = xp.cumsum(probs, axis=1) - probs                   # the mass of the words ranked above
            keep &= before < self.top_p                                  # the nucleus (always the first word)
        cumulative = xp.cumsum(xp.where(keep, probs, 0.0), axis=1)       # renormalised by the draw's scale:
        u = self.rng.random((rows,), dtype="float64") * cumulative[:, -1]  # u ~ U(0, kept mass)
        picked = (cumulative <= u[:, None]).sum(axis=1)                  # the first word whose cumulative > u
        picked = xp.minimum(picked, keep.sum(axis=1) - 1)                # (u at the very top: the last kept)
        return xp.take_along_axis(order, picked[:, None], axis=1)[:, 0]


def sample(model, src_seqs, temperature=1.0, top_k=0, top_p=1.0, seed=0, max_length=None, min_length=0):
    """src_seqs: lists of source ids -> one sampled Hypothesis per sentence (its score the model's own
    log-probability of it, untempered). ``top_k=1`` is greedy search."""
    return greedy(model, src_seqs, max_length, min_length, choose=Sampler(temperature, top_k, top_p, seed))


def _full(shape, fill, rows, values):
    """A (B, ...) array of ``fill`` holding ``values`` at the alive sentences' ``rows``: a step's record
    for every sentence of the batch."""
    full = backend.xp().full(shape, fill, dtype=values.dtype)
    full[rows] = values
    return full


class Beam(NamedTuple):
    """A partial translation in the beam."""
    tokens: list              # the words so far (ids; the last may be <eos>)
    logprob: float            # the sum of their log-probabilities
    attention: list           # each step's attention weights (S,), or None without attention


@constant_weights()               # the weights stay fixed while decoding (a fast path may keep copies of them)
@twin("decode.beam_search", follow="backend")    # kernels/beam.py: every sentence at once, on the device
def beam_search(model, src_seqs, beam_size=5, nbest=1, max_length=None, min_length=0, normalize="gnmt",
                alpha=0.6, block_ngram_repeat=0, replace_unk=False, coverage_penalty=0.0):
    """src_seqs: lists of source ids -> per sentence a list of ``nbest`` Hypothesis, best first.

    One sentence at a time: its live beams are the rows of one decoder batch. At each step every beam
    is extended by every word, the k best extensions (of all the beams' k*V) are kept, and those that
    end (in <eos>, or at the length limit) move to the finished list. The sentence is done when k
    translations have finished, or at the limit.
    """
    if beam_size < 1 or nbest < 1 or nbest > beam_size:
        raise ValueError(f"need 1 <= nbest <= beam_size, got nbest={nbest}, beam_size={beam_size}")
    found = []
    for source in src_seqs:
        batch = collate([source])                                        # one sentence, with its <eos>
        ended = _beams_of_one(model, batch, beam_size, max_length, min_length, block_ngram_repeat)
        source_ids = backend.to_numpy(batch.src)[:, 0]
        hypotheses = []
        for beam in ended:
            words = beam.tokens[:-1] if beam.tokens[-1] == EOS else beam.tokens
            attention = None if beam.attention is None else numpy.stack(beam.attention)   # (|y|, S)
            score = beam.logprob / length_penalty(len(beam.tokens), normalize, alpha)     # |y| counts the <eos>
            if coverage_penalty:
                if attention is None:
                    raise ValueError("coverage_penalty needs a model with attention "
                                     "(it scores the attention's coverage)")
                score += coverage(attention, len(source_ids), coverage_penalty)
            hypotheses.append(Hypothesis(words, score, beam.logprob, attention))
        ranked = sorted(hypotheses, key=lambda h: -h.score)[:nbest]       # stable: ties in the order they ended
        if replace_unk:
            ranked = [_replace_unk(h, source_ids) for h in ranked]
        found.append(ranked)
    return found


def _beams_of_one(model, batch, k, max_length, min_length, block_ngram_repeat):
    """The search for one sentence -> its finished Beams, in the order they ended."""
    encoded, state, feed = model.start(batch.src, batch.src_lengths)
    first = encoded
    limit = int(_limits(backend.to_numpy(batch.src_lengths), max_length)[0])
    live, finished = [Beam([], 0.0, [])], []                              # one live beam: the empty one
    for step in range(limit):
        tokens = backend.asarray([beam.tokens[-1] if beam.tokens else BOS for beam in live], dtype="int64")
        logp, state, feed, weights = model.step(tokens, state, feed, encoded)          # (n, V): a row a beam
        logp = _forbid(backend.to_numpy(logp).astype(numpy.float64), step, min_length)
        weights = None if weights is None else backend.to_numpy(weights)               # (S, n)
        if block_ngram_repeat:
            for row, beam in enumerate(live):
                logp[row, _repeating(beam.tokens, block_ngram_repeat)] = -numpy.inf
        candidates = numpy.array([beam.logprob for beam in live])[:, None] + logp      # score + log p, (n, V)
        best = numpy.argsort(-candidates, axis=None, kind="stable")[:k]               # the k best (ties: lower index)
        survivors = []
        for index in best:
            parent, word = divmod(int(index), logp.shape[1])                            # which beam, which word
            if candidates[parent, word] == -numpy.inf:
                break                                                                   # fewer than k possible
            beam = live[parent]
            grown = Beam(beam.tokens + [word], float(candidates[parent, word]),
                         None if weights is None else beam.attention + [weights[:, parent]])
            if word == EOS or step + 1 >= limit:
                finished.append(grown)                                                  # it ends here
            else:
                survivors.append((parent, grown))
        if len(finished) >= k or step + 1 >= limit or not survivors:
            break
        rows = backend.asarray([parent for parent, _ in survivors], dtype="int64")
        state, feed = model.select_state(state, feed, rows)               # each survivor's parent's state
        if len(survivors) != len(live):                                   # the source once per live beam
            encoded = model.repeat_encoded(first, backend.xp().zeros(len(survivors), dtype="int64"))
        live = [beam for _, beam in survivors]
    return finished


def _repeating(words, n):
    """The words that would complete an n-gram already in ``words`` (block_ngram_repeat)."""
    if len(words) < n - 1:
        return []
    prefix = words[len(words) - n + 1:] if n > 1 else []
    return [words[i + n - 1] for i in range(len(words) - n + 1) if words[i:i + n - 1] == prefix]


def coverage(attention, source_length, beta):
    """GNMT's coverage penalty of one translation: attention (|y|, S) its weights at each output step ->
    beta * sum_s log min(sum_t alpha_t,s, 1) over the source's real positions (its <eos> included): 0 when
    every source word got at least a whole unit of attention in total, below 0 for each one that did not."""
    covered = attention[:, :source_length].sum(axis=0)                     # (S_b,): sum over the outputs
    return beta * float(numpy.log(numpy.minimum(covered, 1.0)).sum())


def _replace_unk(hypothesis, source_ids):
    """Each <unk> output becomes a marker for the source position the attention weighted most:
    returned as a negative id -(position + 1), which ``Vocab.decode`` turns into that source token."""
    if hypothesis.attention is None or UNK not in hypothesis.tokens:
        return hypothesis
    replaced = [(-(int(hypothesis.attention[t, :len(source_ids)].argmax()) + 1) if word == UNK else word)
                for t, word in enumerate(hypothesis.tokens)]
    return hypothesis._replace(tokens=replaced)
