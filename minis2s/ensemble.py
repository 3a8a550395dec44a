"""Two cheap gains at decoding time: an ensemble of models, and the average of checkpoints.

Ensemble (``minis2s translate --model A --model B``): the models read the same source and, at each
step, their next-word log-probabilities are averaged,

    log p_ens(v | y_<t, x) = (1 / n) sum_i log p_i(v | y_<t, x)

(as OpenNMT-py does); greedy and beam search then run on that as on one model. ``Ensemble`` offers the
interface decoding uses (``start``, ``step``, ``repeat_encoded``, ``select_state``) and ``loss`` (the
mean cross-entropy per target token of the averaged log-probabilities) for perplexity.

Averaging (``minis2s average DIR ... --out DIR``): the element-wise mean of the parameters of models of
identical architecture and vocabularies, typically the last checkpoints of one run (``train --keep N``):
one model, decoded at the cost of one, often a little better than any of them.
"""
import numpy

from . import backend, checkpoint
from .loss import sequence_logprobs
from .model import full_config
from .nn.layers import log_softmax_forward


class Ensemble:
    """Several Seq2Seq models with the same target vocabulary, decoded together."""

    def __init__(self, models):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = list(models)
        self.attention = next((m.attention for m in self.models if m.attention != "none"), "none")

    def start(self, src, src_lengths):
        started = [model.start(src, src_lengths) for model in self.models]
        return [s[0] for s in started], [s[1] for s in started], [s[2] for s in started]

    def repeat_encoded(self, encoded, rows):
        return [model.repeat_encoded(e, rows) for model, e in zip(self.models, encoded)]

    def select_state(self, state, feed, rows):
        selected = [model.select_state(s, f, rows) for model, s, f in zip(self.models, state, feed)]
        return [s for s, _ in selected], [f for _, f in selected]

    def step(self, tokens, state, feed, encoded):
        """-> the mean of the models' log-probabilities (B, V), their states and feeds, the mean attention."""
        results = [model.step(tokens, s, f, e) for model, s, f, e in zip(self.models, state, feed, encoded)]
        logp = sum(r[0] for r in results) / len(results)
        weights = [r[3] for r in results if r[3] is not None]
        attention = sum(weights) / len(weights) if weights else None
        return logp, [r[1] for r in results], [r[2] for r in results], attention

    def sequence_logprobs(self, batch):
        """(B,) each target's log-probability under the averaged log-probabilities (teacher forced), as the
        ensemble scores a translation while decoding."""
        logp = sum(log_softmax_forward(model.forward(batch, train=False)[0]) for model in self.models) / len(self.models)
        return sequence_logprobs(logp, batch.tgt_out, batch.tgt_lengths)

    def loss(self, batch):
        """Mean cross-entropy per target token of the averaged log-probabilities (teacher forced, no dropout)."""
        return -backend.to_float(self.sequence_logprobs(batch).sum()) / max(batch.num_tokens, 1)  # one host copy


def same_vocabularies(metas, names):
    """Raise ValueError unless every checkpoint has the same vocabularies and tokenisers."""
    for key in ("src_vocab", "tgt_vocab", "src_tokenizer", "tgt_tokenizer"):
        for meta, name in zip(metas[1:], names[1:]):
            if meta.get(key) != metas[0].get(key):
                raise ValueError(f"{name} has another {key.replace('_', ' ')} than {names[0]}: "
                                 f"the models must share their vocabularies and tokenisers")


def average(paths, out_path):
    """Write the element-wise mean of the checkpoints at ``paths`` to ``out_path``; returns its meta."""
    loaded = [checkpoint.load(path) for path in paths]
    metas = [meta for _, meta, _ in loaded]
    same_vocabularies(metas, paths)
    first_params = loaded[0][0]
    for (params, meta, _), path in zip(loaded[1:], paths[1:]):
        architecture = {k: v for k, v in full_config(meta.get("model", {})).items()    # options left out: defaults
                        if k not in ("seed", "teacher_forcing", "dropout", "label_smoothing")}
        expected = {k: v for k, v in full_config(metas[0].get("model", {})).items() if k in architecture}
        if architecture != expected or set(params) != set(first_params) or any(
                params[name].shape != first_params[name].shape for name in params):
            differs = sorted(k for k in set(architecture) | set(expected) if architecture.get(k) != expected.get(k))
            raise ValueError(f"{path} does not have the architecture of {paths[0]}"
                             + (f" ({', '.join(differs)} differ)" if differs else " (its parameters differ)"))
    mean = {name: numpy.mean([params[name].astype(numpy.float64) for params, _, _ in loaded], axis=0)
            .astype(first_params[name].dtype) for name in first_params}
    meta = {key: value for key, value in metas[0].items()
            if key not in ("format", "version", "position", "history", "train")}
    meta["averaged_from"] = [str(path) for path in paths]
    checkpoint.save(out_path, mean, meta)
    return meta
