"""Beam search over every sentence at once: the twin of the textbook ``minis2s.decode.beam_search``.

The textbook search decodes one sentence at a time, its k beams as Python objects, and copies each
step's (k, V) log-probabilities to the host. This one runs the same search for the whole batch as
array code where the model runs (NumPy, or CuPy on a GPU), B*k rows through the decoder in one call:

    * the beams' scores are a (B, k) array (-inf: no live beam in that slot), each step's k best
      extensions of every sentence come from ``select``: the array code ``top_k`` below, or the one-pass
      kernel that kernels/decode.py (CPU) and kernels/cuda/decode.py (GPU) pass in, never a full sort;
    * a step records, per slot, the word, the parent slot (the back-pointer) and, where the extension
      finished, its score; the histories come to the host once, after the loop, and ``_backtrack`` reads
      every finished translation back along its back-pointers at once;
    * a sentence that is done leaves the batch (its k rows of the state and of the encoder's output are
      dropped); a step copies one (B,) flag to the host ("which sentences are done?").

Only ``block_ngram_repeat`` reads the histories during the search, on the host. tests/test_decode.py
holds this search equal to the textbook one (tokens, scores, n-best lists, attention).
"""
import numpy

from minis2s import backend, decode
from minis2s.data import BOS, EOS, PAD, collate


def top_k(scores, logp):
    """The k best extensions of each sentence's beams, as array code.

    scores (B, k) the beams' scores (-inf: no live beam there), logp (B*k, V) ->
    best (B, k) indices j*V + v into each sentence's k*V candidates, best_scores (B, k), best first.
    """
    xp = backend.array_module(logp)
    size, k = scores.shape
    candidates = (scores.reshape(-1, 1) + logp.astype(xp.float64)).reshape(size, -1)   # score + log p
    best = xp.argpartition(-candidates, k - 1, axis=1)[:, :k]           # the k best, unordered: O(kV)
    best_scores = xp.take_along_axis(candidates, best, axis=1)
    order = xp.argsort(-best_scores, axis=1, kind="stable")             # then only those k sorted
    return xp.take_along_axis(best, order, axis=1), xp.take_along_axis(best_scores, order, axis=1)


def beam_search(model, src_seqs, beam_size=5, nbest=1, max_length=None, min_length=0, normalize="gnmt",
                alpha=0.6, block_ngram_repeat=0, replace_unk=False, coverage_penalty=0.0, select=top_k):
    """The twin of ``minis2s.decode.beam_search``: the same arguments, the same translations and scores
    (the module docstring says how). ``select(scores, logp)``: each step's k best, ``top_k`` above or a
    kernel of its signature (kernels/decode.py and kernels/cuda/decode.py pass theirs)."""
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
    limits = decode._limits(src_lengths, max_length)
    limit = backend.asarray(limits)

    alive = numpy.arange(size)                           # the sentences still decoding, on the host
    scores = xp.full((size, k), -numpy.inf)
    scores[:, 0] = 0.0                                   # one live beam to start with
    tokens = xp.full((size * k,), BOS, dtype=xp.int64)
    words_per_step, back_per_step, finished_per_step, attention_per_step = [], [], [], []   # (B, k) a step
    finished = xp.zeros(size, dtype=xp.int64)           # finished translations per sentence
    for step in range(int(limits.max())):
        logp, state, feed, weights = model.step(tokens, state, feed, encoded)   # (A*k, V): the A alive ones
        logp = decode._forbid(logp, step, min_length)
        if block_ngram_repeat:
            logp = _block_repeats(logp, words_per_step, back_per_step, block_ngram_repeat, k, alive)
        active = len(alive)
        best, best_scores = select(scores, logp)                         # the k best extensions
        vocab = logp.shape[1]
        back, words = best // vocab, best % vocab                        # parent beam, new word: (A, k)
        rows = backend.asarray(alive)
        at_limit = step + 1 >= limit[rows]                               # (A,)
        live = xp.isfinite(best_scores)
        ends = live & ((words == EOS) | at_limit[:, None])              # these leave for the finished list
        words_per_step.append(decode._full((size, k), PAD, rows, words))
        back_per_step.append(decode._full((size, k), 0, rows, back))
        finished_per_step.append(decode._full((size, k), -numpy.inf, rows, xp.where(ends, best_scores, -numpy.inf)))
        attention_per_step.append(None if weights is None else
                                  decode._full((size, k, weights.shape[0]), 0, rows, weights.T.reshape(active, k, -1)))
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
    hypotheses = _backtrack(words_per_step, back_per_step, finished_per_step, attention, src_lengths, normalize,
                            alpha)
    if coverage_penalty:
        if attention is None:
            raise ValueError("coverage_penalty needs a model with attention (it scores the attention's coverage)")
        hypotheses = [[h._replace(score=h.score + decode.coverage(h.attention, src_lengths[b], coverage_penalty))
                       for h in found] for b, found in enumerate(hypotheses)]
    results = []
    for b in range(size):
        ranked = sorted(hypotheses[b], key=lambda h: -h.score)[:nbest]     # stable: ties in the order they ended
        if replace_unk:
            ranked = [decode._replace_unk(h, src_host[:src_lengths[b], b]) for h in ranked]
        results.append(ranked)
    return results


def _backtrack(words, back, finished, attention, src_lengths, normalize, alpha):
    """Every finished translation read back from the histories, all at once, on the host.

    words, back, finished (T, B, k): each step's word, parent beam and, where that extension finished,
    its raw score (-inf elsewhere); attention (T, B, k, S) or None, cut to each sentence's own source
    length (src_lengths (B,)). A translation that ended at step t_h
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
        hypotheses[b].append(decode.Hypothesis(row[:length - 1] if row[t] == EOS else row[:length],
                                        logprob / decode.length_penalty(length, normalize, alpha), logprob,
                                        None if attention is None else attention[h, :length, :src_lengths[b]]))
    return hypotheses


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
