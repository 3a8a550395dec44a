"""Reading, normalising, tokenising, vocabularies, splits."""
import gzip

import pytest
from hypothesis import given, strategies as st

from minis2s import data, datasets, metrics

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzéèçà", min_size=1, max_size=8)
punct = st.sampled_from([".", ",", "!", "?", ";", ":"])
token_lists = st.lists(st.one_of(words, punct), min_size=1, max_size=12)


@given(tokens=token_lists)
def test_word_tokens_survive_detokenising(tokens):
    tokenizer = data.Tokenizer("word")
    assert tokenizer.tokenize(tokenizer.detokenize(tokens)) == tokens


@given(chars=st.lists(st.sampled_from(list("我你他是的了吗。，？") + ["ipad", "3"]), min_size=1, max_size=12))
def test_char_tokens_survive_detokenising(chars):
    tokenizer = data.Tokenizer("char")
    joined = tokenizer.detokenize(chars)
    assert tokenizer.tokenize(joined) == data.Tokenizer("char").tokenize(joined)
    assert "".join(tokenizer.tokenize(joined)) == "".join(chars).replace(" ", "")


@given(tokens=st.lists(words, min_size=1, max_size=20), extra=st.lists(words, min_size=1, max_size=5))
def test_vocab_round_trip_and_unknowns(tokens, extra):
    vocab = data.Vocab.build([tokens])
    assert vocab.tokens[:4] == list(data.SPECIALS)
    assert vocab.decode(vocab.encode(tokens)) == tokens
    unknown = [t for t in extra if t not in vocab.index]
    assert all(i == data.UNK for i in vocab.encode(unknown))
    assert data.Vocab(vocab.tokens).encode(tokens) == vocab.encode(tokens)      # as saved in checkpoints


def test_vocab_min_freq_and_max_size():
    vocab = data.Vocab.build([["a", "a", "a", "b", "b", "c"]], min_freq=2)
    assert vocab.tokens == list(data.SPECIALS) + ["a", "b"]
    assert data.Vocab.build([["a", "a", "b"]], max_size=5).tokens == list(data.SPECIALS) + ["a"]


elided = st.sampled_from(["l'", "d'", "j'", "qu'", "n'", "s'", "c'", "jusqu'"])


@given(tokens=st.lists(st.one_of(words, punct, st.tuples(elided, words)), min_size=1, max_size=12))
def test_split_elisions_survive_detokenising(tokens):
    tokens = [part for token in tokens for part in (token if isinstance(token, tuple) else (token,))]
    tokenizer = data.Tokenizer("word", elisions=True)
    assert tokenizer.tokenize(tokenizer.detokenize(tokens)) == tokens


def test_elisions():
    split = data.Tokenizer("word", elisions=True)
    assert split.tokenize("Qu'est-ce que l'homme qu'il a vu jusqu'à aujourd'hui ?") == \
        ["qu'", "est-ce", "que", "l'", "homme", "qu'", "il", "a", "vu", "jusqu'", "à", "aujourd'hui", "?"]
    assert split.detokenize(split.tokenize("J'ai froid, n'est-ce pas ?")) == "j'ai froid, n'est-ce pas?"
    assert split.tokenize("I don't know.") == ["i", "don't", "know", "."]          # English keeps its own
    assert data.Tokenizer("word").tokenize("l'homme") == ["l'homme"]                # the default keeps them
    assert data.tokenizer_from_dict({"kind": "word", "lowercase": True}).elisions is False     # older models


def test_splitting_elisions_keeps_the_same_pairs_and_split():
    pairs = datasets.load("eng-fra")[:3000]
    kept = data.prepare(pairs, max_len=10, valid_size=100, test_size=100)
    split = data.prepare(pairs, max_len=10, valid_size=100, test_size=100, elisions=True)
    assert split.test_text == kept.test_text and len(split.train) == len(kept.train)
    assert "l'" in split.tgt_vocab.index and len(split.tgt_vocab) < len(kept.tgt_vocab)


def test_normalisation():
    assert data.normalize("Va\u202f!\u00a0Oui\u2009?") == "Va ! Oui ?"
    assert data.normalize("e\u0301t\u00e9", lowercase=False) == "\u00e9t\u00e9"        # NFC
    assert data.Tokenizer("word").tokenize("Qu'est-ce que C'EST ?") == ["qu'est-ce", "que", "c'est", "?"]
    assert data.Tokenizer("word", lowercase=False).tokenize("Tom") == ["Tom"]


def test_kind_is_guessed_per_side():
    assert data.guess_kind(["我喜欢你。", "你好"]) == "char"
    assert data.guess_kind(["I like you.", "Hi"]) == "word"


def test_malformed_lines_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"hello\tbonjour\textra column\nno tab here\n\n\tempty source\nempty target\t \n"
                     b"bad \xff byte\tx\ncat\tchat\n")
    messages = []
    pairs = data.read_pairs(str(path), warn=messages.append)
    assert pairs == [("hello", "bonjour"), ("cat", "chat")]
    assert messages == [f"{path}:2: no tab: expected source<TAB>target; line skipped",
                        f"{path}:4: empty source side; line skipped",
                        f"{path}:5: empty target side; line skipped",
                        f"{path}:6: not valid UTF-8 (byte 4); line skipped"]


def test_a_file_with_no_usable_pair_is_an_error(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(data.DataError, match="empty.tsv: no usable"):
        data.read_pairs(str(empty))
    broken = tmp_path / "broken.tsv"
    broken.write_text("one\ntwo\n")
    with pytest.raises(data.DataError, match=r"broken.tsv: no usable.*2 malformed"):
        data.read_pairs(str(broken), warn=lambda m: None)
    with pytest.raises(data.DataError, match="missing.tsv: cannot open"):
        data.read_pairs(str(tmp_path / "missing.tsv"))


def test_gzip_is_read_transparently(tmp_path):
    path = tmp_path / "pairs.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        stream.write("a\tb\n")
    assert data.read_pairs(str(path)) == [("a", "b")]


def test_split_is_deterministic_and_keeps_sources_apart():
    pairs = [(f"s{i % 50}", f"t{i}") for i in range(300)]
    first = data.split_by_source(pairs, 20, 20, seed=1)
    assert first == data.split_by_source(pairs, 20, 20, seed=1)
    train, valid, test = ({pairs[i][0] for i in part} for part in first)
    assert not (train & test) and not (train & valid) and not (valid & test)
    assert sum(len(p) for p in first) == 300


def test_vocabulary_ties_sort_by_token_not_by_arrival():
    """Tokens seen equally often come in their own order, whatever order the pairs arrived in."""
    first = data.Vocab.build([["b", "a", "c"], ["c"]])
    second = data.Vocab.build([["c"], ["c", "a", "b"]])
    assert first.tokens == second.tokens == list(data.SPECIALS) + ["c", "a", "b"]


def test_the_split_and_vocabularies_do_not_move_with_the_models_seed():
    """prepare's split depends on split_seed alone; the pairs' order (as a seed-dependent subset would
    bring them) does not change the vocabularies."""
    pairs = [(f"s{i % 70} w{i % 7}", f"t{i % 11} u{i % 5}") for i in range(400)]
    one = data.prepare(pairs, valid_size=20, test_size=20)
    again = data.prepare(pairs, valid_size=20, test_size=20, split_seed=0)
    other = data.prepare(pairs, valid_size=20, test_size=20, split_seed=3)
    assert one.test_text == again.test_text and one.src_vocab.tokens == again.src_vocab.tokens
    assert one.tgt_vocab.tokens == again.tgt_vocab.tokens
    assert other.test_text != one.test_text                      # the split seed does move the split


def test_prepare_filters_by_length_and_builds_vocab_on_training_only():
    pairs = [("a b c", "x y"), ("a " * 20, "x"), ("b c", "y z")] * 20 + [("q", "w")]
    corpus = data.prepare(pairs, max_len=5, valid_size=2, test_size=2)
    assert all(len(s) <= 5 for s, _ in corpus.train)
    assert len(corpus.train) + len(corpus.valid) + len(corpus.test) == 41


def test_bundled_corpora_and_toy_tasks():
    eng_fra = datasets.load("eng-fra")
    assert len(eng_fra) == 140_558 and eng_fra[0] == ("Go.", "Va !")
    cmn = datasets.load("cmn-eng")
    assert cmn[0] == ("嗨。", "Hi.")
    for task in datasets.TOY:
        pairs = datasets.toy(task, 20, seed=2)
        assert len(pairs) == 20 and pairs == datasets.toy(task, 20, seed=2)
    reverse = datasets.toy("reverse", 5)
    assert all(s.split()[::-1] == t.split() for s, t in reverse)
    addition = datasets.toy("addition", 5)
    assert all(eval(s.replace(" ", "")) == int(t.replace(" ", "")) for s, t in addition)


def test_bleu_and_chrf_equal_sacrebleu_on_fixtures():
    hypotheses = ["the cat sat on the mat .", "il fait beau aujourd'hui !", "hello there"]
    references = ["the cat sat on a mat.", "Il fait beau aujourd'hui !", "hello there"]
    # reference values printed by sacrebleu 2.6.0 corpus_bleu / corpus_chrf with default settings
    assert metrics.bleu(hypotheses, references) == pytest.approx(56.774, abs=0.001)
    assert metrics.chrf(hypotheses, references) == pytest.approx(87.788, abs=0.001)
    assert metrics.exact_match(hypotheses, references) == pytest.approx(200 / 3)          # case-insensitive
    assert metrics.exact_match(hypotheses, references, lowercase=False) == pytest.approx(100 / 3)
    assert metrics.bleu(["我 喜欢 你"], ["我喜欢你"], tokenize="zh") == pytest.approx(100.0)


def test_token_bleu_scores_the_word_tokenizers_words():
    """On the model's tokens "j'ai" is two words and a final "." one of its own, as multi-bleu.perl and
    torchtext's bleu_score would see them: worked against sacrebleu on the hand-tokenised strings."""
    from minis2s.data import Tokenizer
    import sacrebleu
    tokenizer = Tokenizer("word", lowercase=True, elisions=True)
    hypotheses, references = ["J'ai froid.", "tom n'aime pas le fromage."], ["j'ai très froid.", "Tom n'aime pas ça."]
    by_hand = sacrebleu.corpus_bleu(["j' ai froid .", "tom n' aime pas le fromage ."],
                                    [["j' ai très froid .", "tom n' aime pas ça ."]], tokenize="none", force=True)
    assert metrics.token_bleu(hypotheses, references, tokenizer) == pytest.approx(by_hand.score, abs=1e-9)
    assert metrics.token_bleu(hypotheses, references, tokenizer) != pytest.approx(
        metrics.bleu(hypotheses, references, lowercase=True), abs=0.1)
