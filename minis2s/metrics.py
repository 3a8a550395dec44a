"""Scores of translations against references, on detokenised text.

BLEU and chrF are sacrebleu's corpus scores (with its standard tokenisation: "13a", or "zh" for
Chinese targets), so that they can be compared with published figures. Exact match compares the
normalised strings. Perplexity is exp(mean cross-entropy per target token).
"""
import math

from .data import normalize


def bleu(hypotheses, references, tokenize="13a"):
    import sacrebleu
    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score


def chrf(hypotheses, references):
    import sacrebleu
    return sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score


def exact_match(hypotheses, references, lowercase=True):
    pairs = list(zip(hypotheses, references))
    same = sum(" ".join(normalize(h, lowercase).split()) == " ".join(normalize(r, lowercase).split()) for h, r in pairs)
    return 100.0 * same / max(len(pairs), 1)


def perplexity(mean_loss):
    return math.exp(min(mean_loss, 700.0))
