"""Scores of translations against references, on detokenised text.

BLEU and chrF are sacrebleu's corpus scores (with its standard tokenisation: "13a", or "zh" for
Chinese targets), so that they can be compared with published figures. A model trained on lower-cased
text is scored case-insensitively (sacrebleu's ``lowercase=True``): it cannot know that a reference
starts with a capital or spells "Tom". Exact match compares the normalised strings. Perplexity is
exp(mean cross-entropy per target token).
"""
import math

from .data import normalize


def bleu(hypotheses, references, tokenize="13a", lowercase=False):
    import sacrebleu
    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize, lowercase=lowercase).score


def chrf(hypotheses, references, lowercase=False):
    from sacrebleu.metrics import CHRF
    return CHRF(lowercase=lowercase).corpus_score(list(hypotheses), [list(references)]).score


def exact_match(hypotheses, references, lowercase=True):
    pairs = list(zip(hypotheses, references))
    same = sum(" ".join(normalize(h, lowercase).split()) == " ".join(normalize(r, lowercase).split()) for h, r in pairs)
    return 100.0 * same / max(len(pairs), 1)


def perplexity(mean_loss):
    return math.exp(min(mean_loss, 700.0))
