"""Subword vocabularies: byte-pair encoding, written out here, and SentencePiece as an option.

Why: a word vocabulary cuts off the rare words: everything seen fewer than ``--min-freq`` times becomes
<unk>, and so does every word the training data never had. Subwords split words into pieces that are
frequent enough to learn ("entretenues" -> "entre@@ ten@@ ues"), so almost nothing is unknown, and the
vocabulary size is a number we choose.

Byte-pair encoding (Sennrich, Haddow & Birch 2016), learnt on the training side's words and their counts:

    1. every word is a sequence of symbols, its characters, the last one marked as the end of a word:
           "lower"  ->  l o w e r</w>
    2. count every pair of neighbouring symbols, each word's pairs weighted by how often the word occurs
    3. the most frequent pair becomes one new symbol (ties: the smaller pair in string order), and its
       *merge* is written down:  (e, r</w>) -> er</w>
    4. repeat until the vocabulary reaches ``vocab_size`` symbols, or no pair occurs twice.

Applying the merges to a word (also one never seen): start from its characters and merge, again and
again, the pair whose merge was learnt earliest, until no learnt merge applies. Frequent words end as
one symbol, rare ones as a few pieces, an unseen one at worst as its characters.

The pieces the model sees are written as in Sennrich et al.: a piece that does not end its word carries
``@@`` ("low@@ er"); undoing the segmentation joins a piece ending in ``@@`` to the next one. The
segmentation runs on the word tokeniser's output (data.Tokenizer), so the joined words are then
detokenised as usual, and BLEU is computed on the joined, detokenised text.

SentencePiece (Kudo & Richardson 2018; the ``sentencepiece`` package, ``pip install minis2s[subword]``)
learns a unigram language model over pieces of the raw (normalised) sentence, spaces included as "▁".

Vocabularies are per side: the source and the target each get their own subword model of at most
``vocab_size`` pieces (the four special tokens included).
"""
import base64
import collections
import heapq
import io

END = "</w>"          # marks a symbol that ends a word, inside the BPE model only
JOINER = "@@"         # marks a piece that does not end its word, in the pieces the model sees


class SubwordError(ValueError):
    """A subword model cannot be learnt or loaded; the message says why."""


# ----------------------------------------------------------------------------- byte-pair encoding

def merge_pair(symbols, pair):
    """Replace every occurrence of ``pair`` (two neighbouring symbols) in ``symbols`` by their concatenation."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def characters(word):
    """"lower" -> ["l", "o", "w", "e", "r</w>"]: the symbols a word starts as."""
    return list(word[:-1]) + [word[-1] + END]


def learn_bpe(word_counts, vocab_size, reserved=4, min_count=2):
    """The list of merges, in the order they were learnt, for a vocabulary of at most ``vocab_size``
    symbols (``reserved`` of them are the special tokens).

    ``word_counts``: {word: how often it occurs}. Steps 1-4 of the module docstring; to stay fast on a
    real corpus, the pair counts are not recounted from scratch after each merge: only the words that
    contain the merged pair are taken out of the counts, merged, and put back, and a heap finds the most
    frequent pair (an entry whose count has changed since it was pushed is skipped).
    """
    words = [characters(word) for word in word_counts]                          # step 1
    counts = list(word_counts.values())
    alphabet = {symbol for symbols in words for symbol in symbols}
    pair_counts = collections.Counter()
    words_with = collections.defaultdict(set)                                   # pair -> words that contain it
    heap = []

    def count_pairs(i, sign):                                                   # step 2, for word i
        for pair in zip(words[i], words[i][1:]):
            pair_counts[pair] += sign * counts[i]
            if sign > 0:
                words_with[pair].add(i)
            heapq.heappush(heap, (-pair_counts[pair], pair))

    for i in range(len(words)):
        count_pairs(i, +1)
    merges = []
    while reserved + len(alphabet) + len(merges) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)                                    # step 3
        if -negative != pair_counts[pair]:
            continue                                                            # a stale entry
        if -negative < min_count:
            break                                                               # step 4: no pair occurs twice
        merges.append(pair)
        for i in sorted(words_with.pop(pair)):
            count_pairs(i, -1)
            words[i] = merge_pair(words[i], pair)
            count_pairs(i, +1)
        del pair_counts[pair]
    return merges


class BPE:
    """Learnt merges, applied to words and undone (see the module docstring)."""

    kind = "bpe"

    def __init__(self, merges):
        self.merges = [tuple(pair) for pair in merges]
        self.rank = {pair: i for i, pair in enumerate(self.merges)}             # earlier learnt: lower rank
        self.cache = {}

    @classmethod
    def learn(cls, token_lists, vocab_size, reserved=4):
        """From an iterable of word lists (the training side, tokenised)."""
        counts = collections.Counter()
        for tokens in token_lists:
            counts.update(tokens)
        if not counts:
            raise SubwordError("no words to learn byte-pair merges from")
        return cls(learn_bpe(counts, vocab_size, reserved))

    def segment_word(self, word):
        """One word -> its pieces, in the model's own notation ("lower" -> ["low", "er</w>"])."""
        if word not in self.cache:
            symbols = characters(word)
            while len(symbols) > 1:
                pair = min(zip(symbols, symbols[1:]), key=lambda p: self.rank.get(p, len(self.rank)))
                if pair not in self.rank:
                    break
                symbols = merge_pair(symbols, pair)
            self.cache[word] = symbols
        return self.cache[word]

    def split(self, words):
        """Words -> pieces as the model sees them: ["lower", "!"] -> ["low@@", "er", "!"]."""
        pieces = []
        for word in words:
            for symbol in self.segment_word(word):
                pieces.append(symbol[:-len(END)] if symbol.endswith(END) else symbol + JOINER)
        return pieces

    @staticmethod
    def join(pieces):
        """Pieces -> words: each piece ending in @@ is glued to the next one; a dangling one ends a word."""
        words, current = [], ""
        for piece in pieces:
            if piece.endswith(JOINER):
                current += piece[:-len(JOINER)]
            else:
                words.append(current + piece)
                current = ""
        if current:
            words.append(current)
        return words

    def to_dict(self):
        return {"kind": self.kind, "merges": [list(pair) for pair in self.merges]}

    def write(self, path):
        """The merges as text, one "left right" a line, in the order they were learnt (subword-nmt's format)."""
        with open(path, "w", encoding="utf-8") as stream:
            stream.write("#version: 0.2\n")
            stream.writelines(f"{left} {right}\n" for left, right in self.merges)


# ----------------------------------------------------------------------------- SentencePiece

def _sentencepiece():
    try:
        import sentencepiece
    except ImportError:
        raise SubwordError("--subword sentencepiece needs the sentencepiece package: "
                           "pip install 'minis2s[subword]' (or pip install sentencepiece)") from None
    return sentencepiece


class SentencePiece:
    """A SentencePiece unigram model, kept as its serialised bytes (stored in the checkpoint's JSON)."""

    kind = "sentencepiece"

    def __init__(self, model_bytes):
        self.model_bytes = bytes(model_bytes)
        self.processor = _sentencepiece().SentencePieceProcessor(model_proto=self.model_bytes)

    @classmethod
    def learn(cls, sentences, vocab_size, reserved=4, cjk=False):
        """From an iterable of normalised sentences (the training side)."""
        spm = _sentencepiece()
        stream = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=stream, model_type="unigram",
                vocab_size=vocab_size - reserved + 3,         # its own <unk>, <s>, </s> are never emitted as pieces
                hard_vocab_limit=False, character_coverage=0.9995 if cjk else 1.0,
                normalization_rule_name="identity", minloglevel=2, num_threads=2)
        except RuntimeError as error:
            raise SubwordError(f"sentencepiece could not learn a vocabulary of {vocab_size}: {error}") from None
        return cls(stream.getvalue())

    def split(self, text):
        return self.processor.encode(text, out_type=str)

    def join(self, pieces):
        return self.processor.decode_pieces(list(pieces))

    def to_dict(self):
        return {"kind": self.kind, "model": base64.b64encode(self.model_bytes).decode("ascii")}

    def write(self, path):
        with open(path, "wb") as stream:
            stream.write(self.model_bytes)


# ----------------------------------------------------------------------------- a tokenizer that segments

class SubwordTokenizer:
    """A word tokenizer followed by a subword model: the same ``tokenize`` / ``detokenize`` / ``to_dict``
    as data.Tokenizer, so training, translation and scoring use it unchanged."""

    def __init__(self, tokenizer, model):
        self.tokenizer, self.model = tokenizer, model
        self.kind, self.lowercase = tokenizer.kind, tokenizer.lowercase

    def tokenize(self, text):
        if self.model.kind == "bpe":
            return self.model.split(self.tokenizer.tokenize(text))
        return self.model.split(self.tokenizer.normalize(text))

    def detokenize(self, pieces):
        if self.model.kind == "bpe":
            return self.tokenizer.detokenize(self.model.join(pieces))
        return self.model.join(pieces)

    def to_dict(self):
        return dict(self.tokenizer.to_dict(), subword=self.model.to_dict())


def from_dict(spec):
    """A subword model from its ``to_dict()``."""
    if spec.get("kind") == "bpe":
        return BPE(spec["merges"])
    if spec.get("kind") == "sentencepiece":
        return SentencePiece(base64.b64decode(spec["model"]))
    raise SubwordError(f"unknown subword model {spec.get('kind')!r}")


FILE_NAMES = {"bpe": "{side}.bpe", "sentencepiece": "{side}.spm.model"}
