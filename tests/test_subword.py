"""Subword vocabularies: our byte-pair encoding by hand and against a from-scratch recount, SentencePiece,
and the whole path train -> translate -> evaluate with words in and words out."""
import collections
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minis2s import checkpoint, data, subword
from minis2s.subword import BPE, learn_bpe

# Sennrich et al.'s example words and counts.
WORDS = {"low": 5, "lower": 2, "newest": 6, "widest": 3}
# The alphabet: l o w e r n s t i d, with the word-final forms w</w> r</w> t</w>: 11 symbols.
ALPHABET = 11


def test_hand_worked_example():
    """The counts by hand, words as  l o w</w> (5), l o w e r</w> (2), n e w e s t</w> (6), w i d e s t</w> (3):

    merge 1: (e, s) 6 + 3 = 9, tied with (s, t</w>) 9; "e" < "s"           -> es
    merge 2: (es, t</w>) 9                                                 -> est</w>
    merge 3: (l, o) 5 + 2 = 7, tied with nothing else at 7 ((o, w</w>) 5, (o, w) 2)      -> lo
    merge 4: (e, w), (n, e), (w, est</w>) all 6 in "newest"; "e" < "n" < "w"              -> ew
    """
    merges = learn_bpe(WORDS, vocab_size=4 + ALPHABET + 4)       # 4 specials, the alphabet, 4 merges
    assert merges == [("e", "s"), ("es", "t</w>"), ("l", "o"), ("e", "w")]
    bpe = BPE(merges)
    # "lowest" was never seen: l o w e s t</w> -> l o w es t</w> -> l o w est</w> -> lo w est</w>
    assert bpe.segment_word("lowest") == ["lo", "w", "est</w>"]
    assert bpe.split(["lowest", "!"]) == ["lo@@", "w@@", "est", "!"]
    assert BPE.join(["lo@@", "w@@", "est", "!"]) == ["lowest", "!"]


def naive_learn_bpe(word_counts, vocab_size, reserved=4, min_count=2):
    """The algorithm as the docstring states it, recounting every pair after every merge."""
    words = {word: subword.characters(word) for word in word_counts}
    alphabet = {s for symbols in words.values() for s in symbols}
    merges = []
    while reserved + len(alphabet) + len(merges) < vocab_size:
        counts = collections.Counter()
        for word, symbols in words.items():
            for pair in zip(symbols, symbols[1:]):
                counts[pair] += word_counts[word]
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        if counts[best] < min_count:
            break
        merges.append(best)
        words = {word: subword.merge_pair(symbols, best) for word, symbols in words.items()}
    return merges


word = st.text(alphabet="abcde", min_size=1, max_size=7)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(word, st.integers(1, 9), min_size=1, max_size=25), st.integers(5, 60))
def test_incremental_learning_equals_recounting(counts, vocab_size):
    assert learn_bpe(counts, vocab_size) == naive_learn_bpe(counts, vocab_size)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(word, min_size=1, max_size=6), min_size=1, max_size=20), st.integers(8, 40),
       st.lists(st.text(alphabet="abcdefxyz'-", min_size=1, max_size=9), min_size=1, max_size=5))
def test_split_join_round_trip_and_the_size_bound(sentences, vocab_size, unseen):
    bpe = BPE.learn(sentences, vocab_size)
    pieces = {piece for words in sentences for piece in bpe.split(words)}
    assert len(pieces) + 4 <= vocab_size or not bpe.merges     # at most vocab_size with the 4 specials
    for words in sentences + [unseen]:
        assert BPE.join(bpe.split(words)) == words


def test_learning_a_real_corpus_is_fast_and_splits_rare_words():
    pairs = small_pairs(20000)
    tokenizer = data.Tokenizer("word")
    bpe = BPE.learn((tokenizer.tokenize(t) for _, t in pairs), 2000)
    vocabulary = {p for _, t in pairs for p in bpe.split(tokenizer.tokenize(t))}
    assert 1500 < len(vocabulary) + 4 <= 2000
    assert bpe.split(["je"]) == ["je"]                           # a frequent word stays whole
    assert len(bpe.split(["anticonstitutionnellement"])) > 1     # a rare one comes in pieces


def test_sentencepiece_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)       # import sentencepiece -> ImportError
    with pytest.raises(subword.SubwordError, match=r"pip install 'minis2s\[subword\]'"):
        subword.SentencePiece.learn(["a b c"], 100)


def small_pairs(n=1500):
    from minis2s import datasets
    return datasets.load("eng-fra")[:n]


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
def test_prepare_keeps_the_word_split_and_tokenizers_round_trip(kind):
    if kind == "sentencepiece":
        pytest.importorskip("sentencepiece")
    pairs = small_pairs()
    words = data.prepare(pairs, max_len=10, valid_size=100, test_size=100)
    pieces = data.prepare(pairs, max_len=10, valid_size=100, test_size=100, subword=kind, vocab_size=600)
    assert pieces.test_text == words.test_text and len(pieces.train) == len(words.train)
    assert len(pieces.tgt_vocab) <= 600 and len(pieces.src_vocab) <= 600
    for source, target in pieces.test_text[:50]:
        expected = words.tgt_tokenizer.detokenize(words.tgt_tokenizer.tokenize(target))
        if kind == "sentencepiece":
            expected = words.tgt_tokenizer.normalize(target)
        assert pieces.tgt_tokenizer.detokenize(pieces.tgt_tokenizer.tokenize(target)) == expected
    spec = json.loads(json.dumps(pieces.tgt_tokenizer.to_dict()))            # as the checkpoint stores it
    again = data.tokenizer_from_dict(spec)
    assert again.tokenize("Où est la gare ?") == pieces.tgt_tokenizer.tokenize("Où est la gare ?")


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "minis2s", *args], input=stdin, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
def test_train_translate_evaluate_with_subwords(tmp_path, kind):
    if kind == "sentencepiece":
        pytest.importorskip("sentencepiece")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{s}\t{t}\n" for s, t in small_pairs(800)), encoding="utf-8")
    out = tmp_path / "model"
    done = run_cli("train", "--data", str(pairs), "--out", str(out), "--subword", kind, "--vocab-size", "400",
                   "--epochs", "1", "--time-limit", "5", "--hidden-size", "32", "--emb-size", "16",
                   "--valid-size", "50", "--test-size", "50", "--no-progress", "--samples", "0")
    assert done.returncode == 0, done.stderr
    assert f"({kind} pieces)" in done.stdout
    name = subword.FILE_NAMES[kind]
    assert (out / name.format(side="src")).exists() and (out / name.format(side="tgt")).exists()
    _, meta, _ = checkpoint.load(str(out / "model.npz"))
    assert meta["tgt_tokenizer"]["subword"]["kind"] == kind
    config = (out / "config.toml").read_text()
    assert f'subword = "{kind}"' in config and "vocab-size = 400" in config
    translated = run_cli("translate", "--model", str(out), "--beam", "2", stdin="I am happy.\n\nGo away!\n")
    assert translated.returncode == 0, translated.stderr
    lines = translated.stdout.split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == ""
    assert "@@" not in translated.stdout and "▁" not in translated.stdout        # words, never pieces
    evaluated = run_cli("evaluate", "--model", str(out), "--data", str(out / "test.tsv"), "--beam", "2", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    held_out = (out / "test.tsv").read_text(encoding="utf-8").count("\n")
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["pairs"] == held_out
    os.remove(out / name.format(side="src"))                       # the model file alone is enough to translate
    assert run_cli("translate", "--model", str(out), "Hello.").returncode == 0
