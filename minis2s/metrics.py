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


def token_bleu(hypotheses, references, tokenizer):
    """BLEU on the words a word tokenizer makes of both sides (``data.Tokenizer``: punctuation apart, French
    elisions split, lower-cased as the model is), taken as they are (sacrebleu's tokenize="none"): the
    "tokenized BLEU" of multi-bleu.perl and of torchtext's bleu_score over token lists. Higher than BLEU
    on detokenised text, whose 13a tokenizer keeps "j'ai" one word; the two are not comparable."""
    import sacrebleu
    def words(text):
        return " ".join(tokenizer.tokenize(text))
    return sacrebleu.corpus_bleu([words(h) for h in hypotheses], [[words(r) for r in references]],
                                 tokenize="none", force=True).score


def chrf(hypotheses, references, lowercase=False):
    from sacrebleu.metrics import CHRF
    return CHRF(lowercase=lowercase).corpus_score(list(hypotheses), [list(references)]).score


def exact_match(hypotheses, references, lowercase=True):
    pairs = list(zip(hypotheses, references))
    same = sum(" ".join(normalize(h, lowercase).split()) == " ".join(normalize(r, lowercase).split()) for h, r in pairs)
    return 100.0 * same / max(len(pairs), 1)


def perplexity(mean_loss):
    return math.exp(min(mean_loss, 700.0))
