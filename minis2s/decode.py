"""Decoding: greedy and beam search, one step at a time on the cache-free path (``Seq2Seq.step``).

Greedy: y_t = argmax_v log p(v | y_<t, x), until <eos> or the length limit.

Beam search, batched over sentences: each sentence keeps k partial translations (beams), B*k rows
through the decoder at once. At each step every beam is extended by every word,

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
scores and of the bookkeeping: docs/derivations/beam-search.md.
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
from .data import BOS, EOS, PAD, UNK, collate
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
    limits = _limits(backend.to_numpy(batch.src_lengths), max_length)          # one copy, before the loop
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
        weights = None if attention is None else attention[:steps[b], b]
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


@twin("decode.top_k")
def top_k(scores, logp, done):
    """The k best extensions of each sentence's beams.

    scores (B, k) the beams' scores (-inf: no live beam there), logp (B*k, V), done (B,) ->
    best (B, k) indices j*V + v into each sentence's k*V candidates, best_scores (B, k), best first.
    """
    xp = backend.array_module(logp)
    size, k = scores.shape
    candidates = (scores.reshape(-1, 1) + logp.astype(xp.float64)).reshape(size, -1)   # score + log p
    candidates = xp.where(done[:, None], -numpy.inf, candidates)       # a finished sentence extends nothing
    best = xp.argpartition(-candidates, k - 1, axis=1)[:, :k]           # the k best, unordered: O(kV)
    best_scores = xp.take_along_axis(candidates, best, axis=1)
    order = xp.argsort(-best_scores, axis=1, kind="stable")             # then only those k sorted
    return xp.take_along_axis(best, order, axis=1), xp.take_along_axis(best_scores, order, axis=1)


@constant_weights()
def beam_search(model, src_seqs, beam_size=5, nbest=1, max_length=None, min_length=0, normalize="gnmt",
                alpha=0.6, block_ngram_repeat=0, replace_unk=False, coverage_penalty=0.0):
    """src_seqs: lists of source ids -> per sentence a list of ``nbest`` Hypothesis, best first.

    The bookkeeping is array code over all sentences and beams at once, where the model runs: a step
    copies one (B,) flag to the host ("which sentences are done?"), never the (B*k, V) log-probabilities;
    a done sentence leaves the batch (its k rows of the state and of the encoder's output are dropped).
    Each step records, per beam, the word, the parent beam (back-pointer) and, where the extension
    finished, its score;
    after the loop these come to the host once and each finished translation is read back along its
    back-pointers. (Only ``block_ngram_repeat`` reads the histories during the search, on the host.)
    """
    if beam_size < 1 or nbest < 1 or nbest > beam_size:
        raise ValueError(f"need 1 <= nbest <= beam_size, got nbest={nbest}, beam_size={beam_size}")
    xp = backend.xp()
    batch = collate(src_seqs)
    size, k = len(src_seqs), beam_size
    encoded, state, feed = model.start(batch.src, batch.src_lengths)
    # every sentence's rows repeated k times: row b*k + j is beam j of sentence b
    rows = xp.repeat(xp.arange(size), k)
    encoded = model.repeat_encoded(encoded, rows)
    state, feed = model.select_state(state, feed, rows)
    src_lengths = backend.to_numpy(batch.src_lengths)                           # one copy, before the loop
    limits = _limits(src_lengths, max_length)
    limit = backend.asarray(limits)

    alive = numpy.arange(size)                           # the sentences still decoding, on the host
    scores = xp.full((size, k), -numpy.inf)
    scores[:, 0] = 0.0                                   # one live beam to start with
    tokens = xp.full((size * k,), BOS, dtype=xp.int64)
    words_per_step, back_per_step, finished_per_step, attention_per_step = [], [], [], []   # (B, k) a step
    finished = xp.zeros(size, dtype=xp.int64)           # finished translations per sentence
    for step in range(int(limits.max())):
        logp, state, feed, weights = model.step(tokens, state, feed, encoded)   # (A*k, V): the A alive ones
        logp = _forbid(logp, step, min_length)
        if block_ngram_repeat:
            logp = _block_repeats(logp, words_per_step, back_per_step, block_ngram_repeat, k, alive)
        active = len(alive)
        best, best_scores = top_k(scores, logp, xp.zeros(active, dtype=bool))   # none done: those left
        vocab = logp.shape[1]
        back, words = best // vocab, best % vocab                        # parent beam, new word: (A, k)
        rows = backend.asarray(alive)
        at_limit = step + 1 >= limit[rows]                               # (A,)
        live = xp.isfinite(best_scores)
        ends = live & ((words == EOS) | at_limit[:, None])              # these leave for the finished list
        words_per_step.append(_full((size, k), PAD, rows, words))
        back_per_step.append(_full((size, k), 0, rows, back))
        finished_per_step.append(_full((size, k), -numpy.inf, rows, xp.where(ends, best_scores, -numpy.inf)))
        attention_per_step.append(None if weights is None else
                                  _full((size, k, weights.shape[0]), 0, rows, weights.T.reshape(active, k, -1)))
        scores = xp.where(ends, -numpy.inf, best_scores)                # the slot is free again
        finished += ends.sum(axis=1)
        done = backend.to_numpy((finished >= k) | at_limit)             # one copy a step
        if done.all():
            break
        parents = xp.arange(active)[:, None] * k + back                  # each beam's parent row, (A, k)
        tokens = words
        if done.any():                                                   # the done sentences leave the batch
            keep = backend.asarray(numpy.flatnonzero(~done))
            alive = alive[~done]
            parents, tokens, scores, finished = parents[keep], words[keep], scores[keep], finished[keep]
            encoded = model.repeat_encoded(encoded, (keep[:, None] * k + xp.arange(k)).reshape(-1))
        state, feed = model.select_state(state, feed, parents.reshape(-1))   # each beam's parent
        tokens = tokens.reshape(-1)

    # to the host, once: (T, B, k) words, back-pointers, finished scores; (T, B, k, S) attention
    words_per_step, back_per_step, finished_per_step = (backend.to_numpy(xp.stack(history)) for history in
                                                        (words_per_step, back_per_step, finished_per_step))
    attention = None if attention_per_step[0] is None else backend.to_numpy(xp.stack(attention_per_step))
    src_host = backend.to_numpy(batch.src) if replace_unk else None
    hypotheses = _backtrack(words_per_step, back_per_step, finished_per_step, attention, normalize, alpha)
    if coverage_penalty:
        if attention is None:
            raise ValueError("coverage_penalty needs a model with attention (it scores the attention's coverage)")
        hypotheses = [[h._replace(score=h.score + coverage(h.attention, src_lengths[b], coverage_penalty))
                       for h in found] for b, found in enumerate(hypotheses)]
    results = []
    for b in range(size):
        ranked = sorted(hypotheses[b], key=lambda h: -h.score)[:nbest]     # stable: ties in the order they ended
        if replace_unk:
            ranked = [_replace_unk(h, src_host[:src_lengths[b], b]) for h in ranked]
        results.append(ranked)
    return results


def _backtrack(words, back, finished, attention, normalize, alpha):
    """Every finished translation read back from the histories, all at once, on the host.

    words, back, finished (T, B, k): each step's word, parent beam and, where that extension finished,
    its raw score (-inf elsewhere); attention (T, B, k, S) or None. A translation that ended at step t_h
    in beam j of sentence b sat, at step t_h - 1, in beam back[t_h, b, j], and so on down to step 0: one
    loop over the steps, from the last, moves every translation's beam index to its parent at once.
    Returns per sentence its Hypothesis list, in the order they ended (by step, then beam).
    """
    ended_t, ended_b, ended_j = numpy.nonzero(numpy.isfinite(finished))      # (H,) each, step-major
    steps = words.shape[0]
    beam = numpy.zeros((len(ended_t), steps), dtype=numpy.int64)           # beam index at each step
    j = ended_j.copy()
    for t in reversed(range(steps)):
        here = ended_t >= t                                                 # translations as long as t
        beam[here, t] = j[here]
        j = numpy.where(here, back[t, ended_b, j], j)                       # to the parent beam
    tokens = words[numpy.arange(steps), ended_b[:, None], beam]             # (H, T), valid up to t_h
    if attention is not None:                  # step t ran on the parent beam of the word chosen at t
        parent = back[numpy.arange(steps), ended_b[:, None], beam]
        attention = attention[numpy.arange(steps), ended_b[:, None], parent]   # (H, T, S)
    hypotheses = [[] for _ in range(words.shape[1])]
    for h, (t, b, row) in enumerate(zip(ended_t.tolist(), ended_b.tolist(), tokens.tolist())):
        length = t + 1                                                      # with the <eos>, when it ended
        logprob = float(finished[t, b, ended_j[h]])
        hypotheses[b].append(Hypothesis(row[:length - 1] if row[t] == EOS else row[:length],
                                        logprob / length_penalty(length, normalize, alpha), logprob,
                                        None if attention is None else attention[h, :length]))
    return hypotheses


def coverage(attention, source_length, beta):
    """GNMT's coverage penalty of one translation: attention (|y|, S) its weights at each output step ->
    beta * sum_s log min(sum_t alpha_t,s, 1) over the source's real positions (its <eos> included): 0 when
    every source word got at least a whole unit of attention in total, below 0 for each one that did not."""
    covered = attention[:, :source_length].sum(axis=0)                     # (S_b,): sum over the outputs
    return beta * float(numpy.log(numpy.minimum(covered, 1.0)).sum())


def _path(history_back, b, j):
    """The beam index, at every step from the first, of the hypothesis now in beam j of sentence b
    (following the back-pointers from the last step to the first)."""
    beams = []
    for t in reversed(range(len(history_back))):
        beams.append(j)
        j = history_back[t][b][j]
    return beams[::-1]


def _block_repeats(logp, words_per_step, back_per_step, n, k, alive):
    """Forbid any word that would complete an n-gram already in the beam's own translation. It walks
    every beam's history, so it works on the host: logp comes over and goes back each step. Row
    b * k + j of logp is beam j of sentence alive[b] of the histories."""
    if len(words_per_step) < n - 1:
        return logp
    history_tokens = [backend.to_numpy(w) for w in words_per_step]
    history_back = [backend.to_numpy(p) for p in back_per_step]
    logp = backend.to_numpy(logp).copy()
    size = logp.shape[0] // k
    for b in range(size):
        for j in range(k):
            row = b * k + j
            if not numpy.isfinite(logp[row]).any():
                continue
            sentence = alive[b]
            words = [int(history_tokens[t][sentence, beam]) for t, beam in enumerate(_path(history_back, sentence, j))]
            if len(words) < n - 1:
                continue
            prefix = tuple(words[len(words) - n + 1:]) if n > 1 else ()
            for i in range(len(words) - n + 1):
                if tuple(words[i:i + n - 1]) == prefix:
                    logp[row, words[i + n - 1]] = -numpy.inf
    return backend.asarray(logp)


def _replace_unk(hypothesis, source_ids):
    """Each <unk> output becomes a marker for the source position the attention weighted most:
    returned as a negative id -(position + 1), which ``Vocab.decode`` turns into that source token."""
    if hypothesis.attention is None or UNK not in hypothesis.tokens:
        return hypothesis
    replaced = [(-(int(hypothesis.attention[t, :len(source_ids)].argmax()) + 1) if word == UNK else word)
                for t, word in enumerate(hypothesis.tokens)]
    return hypothesis._replace(tokens=replaced)
