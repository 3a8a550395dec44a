"""A trained model with its vocabularies and tokenisers: text in, text out.

``Translator.load(DIR)`` reads ``DIR/model.npz`` (the best checkpoint of ``minis2s train``);
``Translator.load([DIR1, DIR2])`` decodes the models as an ensemble (ensemble.py).
"""
import os

from . import backend, checkpoint, metrics
from .data import Vocab, collate, tokenizer_from_dict
from .decode import beam_search, sample
from .ensemble import Ensemble, same_vocabularies
from .model import build


class Translator:
    def __init__(self, model, src_vocab, tgt_vocab, src_tokenizer, tgt_tokenizer):
        self.model, self.src_vocab, self.tgt_vocab = model, src_vocab, tgt_vocab
        self.src_tokenizer, self.tgt_tokenizer = src_tokenizer, tgt_tokenizer

    def meta(self):
        """The JSON part of a checkpoint that rebuilds this translator (besides the weights)."""
        return {"src_vocab": self.src_vocab.tokens, "tgt_vocab": self.tgt_vocab.tokens,
                "src_tokenizer": self.src_tokenizer.to_dict(), "tgt_tokenizer": self.tgt_tokenizer.to_dict()}

    @classmethod
    def load(cls, directory, dtype=None):
        """A model folder (or its .npz); a list of several gives an ensemble (they must share vocabularies)."""
        directories = [directory] if isinstance(directory, str) else list(directory)
        models, metas, paths = [], [], []
        for folder in directories:
            path = folder if folder.endswith(".npz") else os.path.join(folder, "model.npz")
            params, meta, _ = checkpoint.load(path)
            for key in ("model", "src_vocab", "tgt_vocab", "src_tokenizer", "tgt_tokenizer"):
                if key not in meta:
                    raise checkpoint.CheckpointError(f"{path}: no '{key}' in the checkpoint: not a translation model")
            config = dict(meta["model"])
            if dtype:
                config["dtype"] = dtype
            model = build(config)
            model.load_state_dict(params, where=path)
            models.append(model)
            metas.append(meta)
            paths.append(path)
        try:
            same_vocabularies(metas, paths)
        except ValueError as error:
            raise checkpoint.CheckpointError(str(error)) from None
        meta = metas[0]
        return cls(models[0] if len(models) == 1 else Ensemble(models), Vocab(meta["src_vocab"]),
                   Vocab(meta["tgt_vocab"]), tokenizer_from_dict(meta["src_tokenizer"]),
                   tokenizer_from_dict(meta["tgt_tokenizer"]))

    def encode_sources(self, texts):
        tokens = [self.src_tokenizer.tokenize(text) or ["<unk>"] for text in texts]
        return tokens, [self.src_vocab.encode(t) for t in tokens]

    def translate(self, texts, beam_size=4, nbest=1, batch_size=64, max_length=None, replace_unk=True,
                  sampling=None, **options):
        """texts -> per text a list of ``nbest`` (translation, score, attention, source tokens, output tokens).
        ``sampling``: a dict of ``decode.sample``'s options (temperature, top_k, top_p, seed) to draw one
        translation per text instead of searching (each batch draws from its own stream: seed, batch)."""
        results = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            tokens, ids = self.encode_sources(chunk)
            if sampling is not None:
                drawn = dict(sampling, seed=sampling.get("seed", 0) * 1_000_003 + start)
                hypotheses = [[h] for h in sample(self.model, ids, max_length=max_length,
                                                  min_length=options.get("min_length", 0), **drawn)]
            else:
                hypotheses = beam_search(self.model, ids, beam_size=beam_size, nbest=nbest, max_length=max_length,
                                         replace_unk=replace_unk, **options)
            for source_tokens, found in zip(tokens, hypotheses):
                row = []
                for hypothesis in found:
                    words = self.tgt_vocab.decode(hypothesis.tokens, source_tokens)
                    row.append((self.tgt_tokenizer.detokenize(words), hypothesis.score, hypothesis.attention,
                                source_tokens, words))
                results.append(row)
        return results

    def evaluate(self, pairs, beam_size=4, batch_size=64, **options):
        """pairs of (source text, reference text) -> BLEU, chrF, exact match, perplexity, and the hypotheses.
        ``options`` are beam search's (``replace_unk``, ``normalize``, ...)."""
        hypotheses = [row[0][0] for row in self.translate([s for s, _ in pairs], beam_size, batch_size=batch_size,
                                                          **options)]
        references = [t for _, t in pairs]
        tokenize = "zh" if self.tgt_tokenizer.kind == "char" else "13a"
        lower = self.tgt_tokenizer.lowercase              # a lower-cased model is scored case-insensitively
        words = getattr(self.tgt_tokenizer, "tokenizer", self.tgt_tokenizer)   # a subword model's word tokenizer
        scored = self.score(pairs, batch_size)                 # log p(reference | source), tokens: per pair
        loss = -sum(lp for lp, _ in scored) / sum(n for _, n in scored) if scored else float("nan")
        return {"bleu": metrics.bleu(hypotheses, references, tokenize, lowercase=lower),
                "bleu_case_sensitive": metrics.bleu(hypotheses, references, tokenize),
                "bleu_tokens": metrics.token_bleu(hypotheses, references, words),
                "chrf": metrics.chrf(hypotheses, references, lowercase=lower),
                "exact_match": metrics.exact_match(hypotheses, references, lowercase=lower),
                "perplexity": metrics.perplexity(loss), "loss": loss, "case_insensitive": lower,
                "pairs": len(pairs), "beam": beam_size}, hypotheses

    def score(self, pairs, batch_size=64):
        """pairs of (source text, reference text) -> per pair (log p(reference | source), its target tokens
        with <eos>): the sum over the reference's tokens of log p(y_t | y_<t, x), teacher forced, no label
        smoothing (for an ensemble, of the models' mean log-probabilities, as it decodes). Perplexity over
        a corpus: exp(-sum log p / sum tokens) (``evaluate``'s)."""
        results = []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            src = [self.src_vocab.encode(self.src_tokenizer.tokenize(s) or ["<unk>"]) for s, _ in chunk]
            tgt = [self.tgt_vocab.encode(self.tgt_tokenizer.tokenize(t)) for _, t in chunk]
            batch = collate(src, tgt)
            logprobs = backend.to_numpy(self.model.sequence_logprobs(batch)).tolist()    # one copy a batch
            results += [(float(lp), len(t) + 1) for lp, t in zip(logprobs, tgt)]
        return results


def perplexity_of(scored):
    """exp(-sum log p / sum tokens) over ``Translator.score``'s (log p, tokens) pairs: ``evaluate``'s."""
    return metrics.perplexity(-sum(lp for lp, _ in scored) / max(sum(n for _, n in scored), 1))
