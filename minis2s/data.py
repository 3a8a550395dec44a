"""Text -> token ids -> padded, time-major batches.

Reading: ``read_pairs(path)`` takes a UTF-8 TSV (optionally gzipped), one ``source<TAB>target`` pair a
line, further columns ignored. A malformed line (no tab, an empty side, bad UTF-8) is reported with
its file and line number and skipped; a file with no usable pair is an error.

Normalising: Unicode NFC; the typographic spaces U+202F, U+00A0, U+2009 become plain spaces;
optionally lower case.

Tokenising, chosen per side (``"auto"`` looks at the text):
    word    words (letters, digits, with inner ' or -) and each punctuation mark on its own:
            "Don't go!" -> ["don't", "go", "!"]
    char    Chinese and Japanese, which put no spaces between words: one token per character,
            runs of Latin letters and digits kept whole: "我有3个iPad。" -> ["我", "有", "3", "个", "iPad", "。"]
Detokenising joins words with spaces and closes them up around punctuation.

Vocabulary: the special ids are fixed, <pad> 0, <bos> 1, <eos> 2, <unk> 3; then tokens by falling
frequency (ties in first-seen order), at least ``min_freq`` times, at most ``max_size`` in all.
Unknown tokens map to <unk>.

The special ids, ``Batch`` and ``collate`` (token-id lists -> padded, time-major batches) live in
batch.py, the part the model reads; they are imported here too, so that ``minis2s.data.collate`` works.
"""
import collections
import gzip
import re
import sys
import unicodedata
from typing import NamedTuple

import numpy

from .batch import BOS, EOS, PAD, SPECIALS, UNK, Batch, collate, pad  # noqa: F401 (re-exported)


# ----------------------------------------------------------------------------- reading

class DataError(ValueError):
    """Bad input data; the message names the file (and line)."""


def read_pairs(path, warn=None, max_reports=10):
    """(source, target) text pairs from a UTF-8 TSV file (``.gz`` read transparently).

    Malformed lines are skipped and reported through ``warn`` (default: standard error) as
    ``path:line: reason``; a file with no usable pair raises DataError.
    """
    warn = warn or (lambda message: print(message, file=sys.stderr))
    opener = gzip.open if str(path).endswith(".gz") else open
    pairs, bad = [], 0
    try:
        stream = opener(path, "rb")
    except OSError as error:
        raise DataError(f"{path}: cannot open: {error.strerror or error}") from error
    with stream:
        for number, raw in enumerate(stream, start=1):
            reason = None
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                line, reason = "", f"not valid UTF-8 (byte {error.start})"
            if reason is None and not line.strip():
                continue                                        # blank lines are allowed
            if reason is None:
                columns = line.split("\t")
                if len(columns) < 2:
                    reason = "no tab: expected source<TAB>target"
                elif not columns[0].strip():
                    reason = "empty source side"
                elif not columns[1].strip():
                    reason = "empty target side"
            if reason is not None:
                bad += 1
                if bad <= max_reports:
                    warn(f"{path}:{number}: {reason}; line skipped")
                continue
            pairs.append((columns[0], columns[1]))
    if bad > max_reports:
        warn(f"{path}: {bad - max_reports} more malformed lines skipped")
    if not pairs:
        raise DataError(f"{path}: no usable source<TAB>target pair" + (f" ({bad} malformed lines)" if bad else ""))
    return pairs


# ----------------------------------------------------------------------------- tokenising

TYPOGRAPHIC_SPACES = {"\u202f": " ", "\u00a0": " ", "\u2009": " "}
WORD = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
CHAR = re.compile(r"[A-Za-z0-9]+(?:['’.-][A-Za-z0-9]+)*|\S")
ELIDED = re.compile(r"(?:[cdjlmnst]|qu|jusqu|lorsqu|puisqu)['’]", re.IGNORECASE)    # French: l', qu', ...
ELISION = re.compile(r"^((?:[cdjlmnst]|qu|jusqu|lorsqu|puisqu)['’])(?=\w)", re.IGNORECASE)
CLOSE_BEFORE = set(".,;:!?%)]}»…") | set("。，、；：！？）」』")
CLOSE_AFTER = set("([{«¿¡") | set("（「『")


def normalize(text, lowercase=False):
    text = unicodedata.normalize("NFC", text)
    for space, plain in TYPOGRAPHIC_SPACES.items():
        text = text.replace(space, plain)
    return text.lower() if lowercase else text


def guess_kind(texts, sample=2000):
    """"char" if CJK characters make up more than a fifth of the non-space characters, else "word"."""
    joined = "".join(texts[:sample])
    letters = sum(1 for ch in joined if not ch.isspace())
    return "char" if letters and len(CJK.findall(joined)) > letters / 5 else "word"


class Tokenizer:
    """``elisions``: split French elisions off the word they lean on ("l'homme" -> "l'", "homme"; "qu'il" ->
    "qu'", "il"), so that the article or pronoun and the word are each one vocabulary entry, not one entry
    per combination."""

    def __init__(self, kind="word", lowercase=True, elisions=False):
        if kind not in ("word", "char"):
            raise ValueError(f"tokenizer must be 'word', 'char' or 'auto', got {kind!r}")
        self.kind, self.lowercase, self.elisions = kind, lowercase, elisions and kind == "word"

    def normalize(self, text):
        return normalize(text, self.lowercase)

    def tokenize(self, text):
        tokens = (WORD if self.kind == "word" else CHAR).findall(self.normalize(text))
        if self.elisions:
            tokens = [part for token in tokens for part in ELISION.split(token, maxsplit=1) if part]
        return tokens

    def detokenize(self, tokens):
        out, previous = "", ""
        for token in tokens:
            if not out:
                out = token
            elif self.elisions and ELIDED.fullmatch(previous):
                out += token
            elif self.kind == "char":
                latin = token[:1].isascii() and token[:1].isalnum() and out[-1:].isascii() and out[-1:].isalnum()
                out += (" " if latin else "") + token
            elif token in CLOSE_BEFORE or out[-1] in CLOSE_AFTER:
                out += token
            else:
                out += " " + token
            previous = token
        return out

    def to_dict(self):
        return {"kind": self.kind, "lowercase": self.lowercase, "elisions": self.elisions}


def tokenizer_from_dict(spec):
    """A Tokenizer (or, when ``spec`` has a ``subword`` model, a subword.SubwordTokenizer) from ``to_dict()``."""
    spec = dict(spec)
    model = spec.pop("subword", None)
    tokenizer = Tokenizer(**spec)
    if model is None:
        return tokenizer
    from . import subword
    return subword.SubwordTokenizer(tokenizer, subword.from_dict(model))


# ----------------------------------------------------------------------------- vocabulary

class Vocab:
    def __init__(self, tokens):
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}")
        self.tokens = list(tokens)
        self.index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, token_lists, min_freq=1, max_size=None):
        counts = collections.Counter()
        for tokens in token_lists:
            counts.update(tokens)
        # most frequent first, ties in the tokens' own order: the vocabulary depends on the counts alone,
        # not on the order the pairs came in (two runs on one data file always get the same vocabulary)
        ranked = [t for t, c in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if c >= min_freq
                  and t not in SPECIALS]
        if max_size:
            ranked = ranked[:max(max_size - len(SPECIALS), 0)]
        return cls(list(SPECIALS) + ranked)

    def __len__(self):
        return len(self.tokens)

    def encode(self, tokens):
        return [self.index.get(token, UNK) for token in tokens]

    def decode(self, ids, source_tokens=None):
        """Ids -> tokens, stopping at <eos>; a negative id -(i + 1) (from <unk> replacement) is source token i."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i < 0 and source_tokens is not None:
                position = -i - 1
                out.append(source_tokens[position] if position < len(source_tokens) else SPECIALS[UNK])
            elif i not in (PAD, BOS):
                out.append(self.tokens[i] if 0 <= i < len(self.tokens) else SPECIALS[UNK])
        return out


# ----------------------------------------------------------------------------- from text to training pairs

class Corpus(NamedTuple):
    train: list       # (source ids, target ids) pairs
    valid: list
    test: list
    valid_text: list  # (source text, target text) of the validation pairs, for a BLEU curve
    test_text: list   # (source text, target text) of the test pairs, for BLEU on detokenised text
    src_vocab: Vocab
    tgt_vocab: Vocab
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer


def split_by_source(pairs, valid_size, test_size, seed=0):
    """Deterministic train/valid/test index lists. Pairs that share a source sentence stay together,
    so no test source is seen in training with another translation."""
    groups = collections.OrderedDict()
    for i, (source, _) in enumerate(pairs):
        groups.setdefault(source, []).append(i)
    keys = list(groups)
    order = numpy.random.default_rng(seed).permutation(len(keys))
    parts, filled = ([], [], []), [test_size, valid_size]
    for position in order:
        members = groups[keys[position]]
        if len(parts[2]) < filled[0]:
            parts[2].extend(members)
        elif len(parts[1]) < filled[1]:
            parts[1].extend(members)
        else:
            parts[0].extend(members)
    return [sorted(p) for p in parts]


def prepare(pairs, src_kind="auto", tgt_kind="auto", lowercase=True, max_len=None, min_freq=1, max_vocab=None,
            valid_size=1000, test_size=1000, split_seed=0, subword="none", vocab_size=8000, elisions=False):
    """Tokenise, filter by length (``max_len`` words a side, an elided l'homme one word), split by source,
    build vocabularies on the training part, and encode. Returns a Corpus.

    ``split_seed`` alone chooses the split (the model's seed does not): runs with different seeds on one
    data file get the same training, validation and test pairs and the same vocabularies, so that their
    scores compare and their models average and ensemble.

    ``subword`` "bpe" or "sentencepiece": each side's subword model (at most ``vocab_size`` pieces) is
    learnt on the training part, after the length filter and the split, so that the pairs and the split
    are the same as with words; the vocabulary is then every piece (``min_freq`` and ``max_vocab`` do not
    apply), and the corpus' tokenizers are subword.SubwordTokenizers."""
    src_kind = guess_kind([s for s, _ in pairs]) if src_kind == "auto" else src_kind
    tgt_kind = guess_kind([t for _, t in pairs]) if tgt_kind == "auto" else tgt_kind
    src_words, tgt_words = Tokenizer(src_kind, lowercase), Tokenizer(tgt_kind, lowercase)
    src_tok, tgt_tok = Tokenizer(src_kind, lowercase, elisions), Tokenizer(tgt_kind, lowercase, elisions)
    tokenized, texts = [], []
    for source, target in pairs:         # the filter counts words (l'homme one word), whatever the tokens
        s, t = src_words.tokenize(source), tgt_words.tokenize(target)
        if s and t and (not max_len or (len(s) <= max_len and len(t) <= max_len)):
            tokenized.append((src_tok.tokenize(source), tgt_tok.tokenize(target)) if elisions else (s, t))
            texts.append((source, target))
    if not tokenized:
        raise DataError(f"no pair is left after tokenising and the length filter (max_len={max_len})")
    valid_size = min(valid_size, len(tokenized) // 10)
    test_size = min(test_size, len(tokenized) // 10)
    train_idx, valid_idx, test_idx = split_by_source(texts, valid_size, test_size, split_seed)
    if subword != "none":
        src_tok, tgt_tok, tokenized = learn_subwords(subword, vocab_size, src_tok, tgt_tok, texts, train_idx)
        min_freq, max_vocab = 1, None
    src_vocab = Vocab.build((tokenized[i][0] for i in train_idx), min_freq, max_vocab)
    tgt_vocab = Vocab.build((tokenized[i][1] for i in train_idx), min_freq, max_vocab)

    def encode(indices):
        return [(src_vocab.encode(tokenized[i][0]), tgt_vocab.encode(tokenized[i][1])) for i in indices]

    return Corpus(encode(train_idx), encode(valid_idx), encode(test_idx), [texts[i] for i in valid_idx],
                  [texts[i] for i in test_idx], src_vocab, tgt_vocab, src_tok, tgt_tok)


def learn_subwords(kind, vocab_size, src_tok, tgt_tok, texts, train_idx):
    """Each side's subword model, learnt on the training texts -> the two SubwordTokenizers and every pair
    segmented with them."""
    from . import subword
    if kind not in ("bpe", "sentencepiece"):
        raise ValueError(f"subword must be 'none', 'bpe' or 'sentencepiece', got {kind!r}")
    tokenizers = []
    for side, tokenizer in enumerate((src_tok, tgt_tok)):
        if kind == "bpe":
            model = subword.BPE.learn((tokenizer.tokenize(texts[i][side]) for i in train_idx), vocab_size)
        else:
            model = subword.SentencePiece.learn((tokenizer.normalize(texts[i][side]) for i in train_idx),
                                                vocab_size, cjk=tokenizer.kind == "char")
        tokenizers.append(subword.SubwordTokenizer(tokenizer, model))
    src_tok, tgt_tok = tokenizers
    return src_tok, tgt_tok, [(src_tok.tokenize(s), tgt_tok.tokenize(t)) for s, t in texts]
