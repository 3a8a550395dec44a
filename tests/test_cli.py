"""The real command line, end to end, in a subprocess: train -> translate -> evaluate, resume, errors."""
import json
import select
import subprocess
import sys

import numpy
import pytest

from minis2s import datasets

TINY = ["--emb-size", "32", "--hidden-size", "64", "--batch-size", "16", "--valid-size", "30", "--test-size", "30",
        "--min-freq", "1", "--no-progress", "--valid-bleu", "20", "--checkpoint-every", "0"]


def minis2s(*args, stdin=None, check=True):
    result = subprocess.run([sys.executable, "-m", "minis2s", *args], capture_output=True, text=True, input=stdin,
                            timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"minis2s {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def tiny_tsv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pairs.tsv"
    pairs = datasets.toy("reverse", 400, seed=5)
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tiny_tsv, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "reverse"
    result = minis2s("train", "--data", str(tiny_tsv), "--out", str(out), "--epochs", "60", "--lr", "0.005", *TINY)
    return out, result


def test_train_prints_samples_and_test_bleu_and_writes_its_files(trained):
    out, result = trained
    assert "test (" in result.stdout and "BLEU" in result.stdout and "->" in result.stdout
    for name in ("model.npz", "last.npz", "test.tsv", "history.json", "test_scores.json"):
        assert (out / name).exists(), name
    scores = json.loads((out / "test_scores.json").read_text())
    assert scores["bleu"] > 50, scores                         # reversal is learnable in 40 small epochs


def test_translate_arguments_and_stdin(trained):
    out, _ = trained
    from_args = minis2s("translate", "--model", str(out), "a b c d e").stdout.split("\n")[0]
    from_stdin = minis2s("translate", "--model", str(out), stdin="a b c d e\n").stdout.split("\n")[0]
    assert from_args == from_stdin and from_args.split() == ["e", "d", "c", "b", "a"]
    nbest = minis2s("translate", "--model", str(out), "--beam", "3", "--nbest", "3", "a b c").stdout.splitlines()
    scores = [float(line.split("\t")[0]) for line in nbest]
    assert len(nbest) == 3 and scores == sorted(scores, reverse=True)


def test_evaluate_json_is_the_last_line(trained):
    out, _ = trained
    result = minis2s("evaluate", "--model", str(out), "--data", str(out / "test.tsv"), "--json", "--beam", "2")
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"bleu", "bleu_tokens", "chrf", "exact_match", "perplexity"} <= set(scores) and scores["beam"] == 2


def test_resume_through_the_command_line_matches_a_straight_run(tiny_tsv, tmp_path):
    common = ["--data", str(tiny_tsv), "--lr", "0.005", *TINY, "--valid-bleu", "0"]
    minis2s("train", "--out", str(tmp_path / "straight"), "--epochs", "3", *common)
    minis2s("train", "--out", str(tmp_path / "split"), "--epochs", "2", *common)
    again = minis2s("train", "--out", str(tmp_path / "split"), "--resume", "--epochs", "3", "--no-progress")
    assert "resumed from" in again.stdout
    straight = json.loads((tmp_path / "straight" / "history.json").read_text())
    split = json.loads((tmp_path / "split" / "history.json").read_text())
    assert [r["valid_loss"] for r in split] == [r["valid_loss"] for r in straight]
    refused = minis2s("train", "--out", str(tmp_path / "split"), *common, check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr


def test_bad_inputs_get_clear_errors(tmp_path, trained):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    result = minis2s("train", "--data", str(empty), "--out", str(tmp_path / "x"), check=False)
    assert result.returncode == 2 and "empty.tsv: no usable" in result.stderr
    result = minis2s("train", "--data", "nowhere.tsv", "--out", str(tmp_path / "y"), check=False)
    assert result.returncode == 2 and "--data nowhere.tsv" in result.stderr
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"a b\tb a\nno tab\n\xff\xfe\tx\n")
    result = minis2s("evaluate", "--model", str(trained[0]), "--data", str(bad), check=False)
    assert "bad.tsv:2: no tab" in result.stderr and "bad.tsv:3: not valid UTF-8" in result.stderr
    result = minis2s("translate", "--model", str(tmp_path), "hello", check=False)
    assert result.returncode == 2 and "model.npz: no such checkpoint" in result.stderr
    result = minis2s("train", "--out", str(tmp_path / "z"), "--hidden-size", "0", check=False)
    assert result.returncode == 2 and "--hidden-size" in result.stderr
    result = minis2s("translate", "--model", str(trained[0]), "--beam", "2", "--nbest", "3", "x", check=False)
    assert result.returncode == 2 and "--nbest 3" in result.stderr


@pytest.mark.parametrize("command", ["train", "translate", "evaluate", "gradcheck", "bench"])
def test_every_command_has_help(command):
    assert "usage: minis2s " + command in minis2s(command, "--help").stdout


def test_translate_is_line_true(trained):
    """One output line per input line, in order, blank for blank (also with --nbest: N lines each)."""
    out, _ = trained
    lines = ["a b c", "", "   ", "d e f g", "a"]
    plain = minis2s("translate", "--model", str(out), "--batch-size", "2", stdin="\n".join(lines) + "\n").stdout
    assert plain.count("\n") == len(lines)
    outputs = plain.split("\n")[:-1]
    assert [bool(o.strip()) for o in outputs] == [bool(line.strip()) for line in lines]
    alone = [minis2s("translate", "--model", str(out), line).stdout.strip() for line in ("a b c", "d e f g", "a")]
    assert [outputs[0], outputs[3], outputs[4]] == alone                 # the same as translated one by one
    nbest = minis2s("translate", "--model", str(out), "--beam", "2", "--nbest", "2",
                    stdin="\n".join(lines) + "\n").stdout.split("\n")[:-1]
    assert len(nbest) == 2 * len(lines) and nbest[2:6] == ["", "", "", ""] and nbest[0] and nbest[6]
    blanks = minis2s("translate", "--model", str(out), stdin="\n\n\n")
    assert blanks.returncode == 0 and blanks.stdout == "\n\n\n"


def test_translate_writes_each_batch_as_it_comes(trained):
    """A pipe sees the first translation before the input has ended."""
    out, _ = trained
    process = subprocess.Popen([sys.executable, "-m", "minis2s", "translate", "--model", str(out), "--batch-size",
                                "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        process.stdin.write("a b c\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 120)  # nothing would come if output waited for EOF
        assert ready, "no output while the input is still open"
        first = process.stdout.readline()
        assert first.strip().split() == ["c", "b", "a"]
        process.stdin.write("\n")
        process.stdin.close()
        assert process.stdout.read() == "\n"
    finally:
        process.kill()
        process.wait()


def test_a_run_file_gives_the_run_flags_override_it_and_the_resolved_run_reproduces_it(tiny_tsv, tmp_path):
    run = tmp_path / "run.toml"
    run.write_text(f'data = "{tiny_tsv.as_posix()}"\nemb-size = 16\nhidden-size = 24\nbatch-size = 16\n'
                   'valid-size = 30\ntest-size = 30\nmin-freq = 1\nno-progress = true\nvalid-bleu = 0\n'
                   'checkpoint-every = 0\nepochs = 1\ncell = "gru"\n', encoding="utf-8")
    first = minis2s("train", "--config", str(run), "--out", str(tmp_path / "a"), "--cell", "lstm")
    assert "model: lstm + bahdanau" in first.stdout                     # the flag overrides the file
    resolved = (tmp_path / "a" / "config.toml").read_text(encoding="utf-8")
    assert "hidden-size = 24\n" in resolved and 'cell = "lstm"\n' in resolved and "lr = 0.001\n" in resolved
    minis2s("train", "--config", str(tmp_path / "a" / "config.toml"), "--out", str(tmp_path / "b"))
    scores = [json.loads((tmp_path / name / "test_scores.json").read_text()) for name in ("a", "b")]
    assert scores[0]["loss"] == scores[1]["loss"] and scores[0]["bleu"] == scores[1]["bleu"]
    histories = [json.loads((tmp_path / name / "history.json").read_text()) for name in ("a", "b")]
    timeless = [[{k: v for k, v in row.items() if k not in ("elapsed", "tokens_per_s")} for row in h] for h in histories]
    assert timeless[0] == timeless[1]                                     # the same run, step by step


@pytest.mark.parametrize("content,message", [
    ("hiden-size = 64\n", "unknown key 'hiden-size'; did you mean 'hidden-size'?"),
    ('hidden-size = "big"\n', "key 'hidden-size': expected an integer, got 'big' (str)"),
    ("bidirectional = 1\n", "key 'bidirectional': expected true or false"),
    ('cell = "transformer"\n', "key 'cell': 'transformer' is not one of rnn, lstm, gru"),
    ("lr = -1\n", "key 'lr': must be > 0"),
    ("hidden-size = \n", "not valid TOML"),
])
def test_a_bad_run_file_is_a_clear_error_naming_file_and_key(tmp_path, content, message):
    run = tmp_path / "bad.toml"
    run.write_text(content, encoding="utf-8")
    result = minis2s("train", "--config", str(run), "--out", str(tmp_path / "x"), check=False)
    assert result.returncode == 2 and str(run) in result.stderr and message in result.stderr, result.stderr


def test_an_unreadable_run_file_is_named(tmp_path):
    result = minis2s("train", "--config", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "x"), check=False)
    assert result.returncode == 2 and "missing.toml: cannot read it" in result.stderr, result.stderr


def test_keep_average_and_ensemble(tiny_tsv, tmp_path, trained):
    """train --keep 3 leaves the last 3 checkpoints; average makes one model of them that translates; two
    models decode as an ensemble; mismatched models are refused with the file named."""
    out = tmp_path / "kept"
    minis2s("train", "--data", str(tiny_tsv), "--out", str(out), "--epochs", "3", "--keep", "3",
            "--eval-every", "10", "--emb-size", "32", "--hidden-size", "48", "--batch-size", "16",
            "--valid-size", "30", "--test-size", "30", "--min-freq", "1", "--no-progress", "--valid-bleu", "0",
            "--checkpoint-every", "0")
    kept = sorted(out.glob("step-*.npz"))
    assert len(kept) == 3
    averaged = tmp_path / "averaged"
    minis2s("average", *map(str, kept), "--out", str(averaged))
    from minis2s import checkpoint
    params = [checkpoint.load(str(path))[0] for path in kept]
    mean, _, _ = checkpoint.load(str(averaged / "model.npz"))
    numpy.testing.assert_allclose(mean["decoder.out.weight"],
                                  numpy.mean([p["decoder.out.weight"] for p in params], axis=0), rtol=1e-6)
    assert minis2s("translate", "--model", str(averaged), "a b c").stdout.strip()
    model, _ = trained
    one = minis2s("evaluate", "--model", str(model), "--data", str(model / "test.tsv"), "--json").stdout
    both = minis2s("evaluate", "--model", str(model), "--model", str(model), "--data", str(model / "test.tsv"),
                   "--json").stdout
    first, second = json.loads(one.splitlines()[-1]), json.loads(both.splitlines()[-1])
    assert abs(first["loss"] - second["loss"]) < 1e-5 and first["bleu"] == second["bleu"]   # A with A is A
    mixed = minis2s("translate", "--model", str(model), "--model", str(out), "a b c").stdout.strip()
    assert mixed                                       # an ensemble may mix sizes: it shares only vocabularies
    refused = minis2s("average", str(model), str(out), "--out", str(tmp_path / "no"), check=False)
    assert refused.returncode == 2 and "hidden_size differ" in refused.stderr and str(out) in refused.stderr, \
        refused.stderr


def test_two_seeds_on_one_data_file_share_the_split_and_average_and_ensemble(tiny_tsv, tmp_path):
    """--seed moves the weights, not the data: two seeds get the same test set and vocabularies, so their
    models average and decode as an ensemble; --split-seed moves the split."""
    outs = [tmp_path / f"seed{seed}" for seed in (1, 2)]
    for seed, out in zip((1, 2), outs):
        minis2s("train", "--data", str(tiny_tsv), "--out", str(out), "--epochs", "1", "--seed", str(seed),
                "--emb-size", "16", "--hidden-size", "16", "--batch-size", "32", "--valid-size", "30",
                "--test-size", "30", "--min-freq", "1", "--no-progress", "--valid-bleu", "0")
    assert (outs[0] / "test.tsv").read_text() == (outs[1] / "test.tsv").read_text()
    from minis2s import checkpoint
    metas = [checkpoint.load(str(out / "model.npz"))[1] for out in outs]
    assert metas[0]["src_vocab"] == metas[1]["src_vocab"] and metas[0]["tgt_vocab"] == metas[1]["tgt_vocab"]
    minis2s("average", *map(str, outs), "--out", str(tmp_path / "avg"))
    assert minis2s("translate", "--model", str(outs[0]), "--model", str(outs[1]), "a b c").stdout.strip()
    moved = tmp_path / "split3"
    minis2s("train", "--data", str(tiny_tsv), "--out", str(moved), "--epochs", "1", "--split-seed", "3",
            "--emb-size", "16", "--hidden-size", "16", "--batch-size", "32", "--valid-size", "30",
            "--test-size", "30", "--min-freq", "1", "--no-progress", "--valid-bleu", "0")
    assert (moved / "test.tsv").read_text() != (outs[0] / "test.tsv").read_text()


def test_score_prints_each_pairs_log_probability_and_evaluates_perplexity(trained):
    """minis2s score: a line per pair, LOGPROB TAB TOKENS TAB source TAB target, then the corpus perplexity
    exp(-sum / tokens), which equals evaluate's."""
    out, _ = trained
    result = minis2s("score", "--model", str(out), "--data", str(out / "test.tsv")).stdout.splitlines()
    pairs = (out / "test.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in result[:-1]]
    assert len(rows) == len(pairs) and all(f"{s}\t{t}" == line for (_, _, s, t), line in zip(rows, pairs))
    logprobs, tokens = [float(r[0]) for r in rows], [int(r[1]) for r in rows]
    assert all(lp <= 0 for lp in logprobs) and tokens[0] == len(pairs[0].split("\t")[1].split()) + 1
    perplexity = float(result[-1].rsplit(" ", 1)[1])
    assert perplexity == pytest.approx(numpy.exp(-sum(logprobs) / sum(tokens)), rel=1e-3)
    evaluated = json.loads(minis2s("evaluate", "--model", str(out), "--data", str(out / "test.tsv"),
                                   "--json").stdout.splitlines()[-1])
    assert perplexity == pytest.approx(evaluated["perplexity"], abs=1e-4)


def test_sampling_and_coverage_from_the_command_line(trained):
    out, _ = trained
    text = ["a b c d e", "e d c", "b a"]
    first = minis2s("translate", "--model", str(out), "--sample", "--temperature", "2", "--seed", "3", *text).stdout
    again = minis2s("translate", "--model", str(out), "--sample", "--temperature", "2", "--seed", "3", *text).stdout
    assert first == again and len(first.splitlines()) == 3
    greedy = minis2s("translate", "--model", str(out), "--beam", "1", "--length-penalty", "none", *text).stdout
    assert minis2s("translate", "--model", str(out), "--sample", "--top-k", "1", *text).stdout == greedy
    covered = minis2s("evaluate", "--model", str(out), "--data", str(out / "test.tsv"), "--coverage-penalty", "0.2",
                      "--json").stdout.splitlines()[-1]
    assert json.loads(covered)["bleu"] > 50
    refused = minis2s("translate", "--model", str(out), "--sample", "--nbest", "2", "--beam", "2", "a", check=False)
    assert refused.returncode == 2 and "--nbest needs beam search" in refused.stderr


def test_the_transformer_trains_resumes_translates_averages_and_ensembles_with_an_rnn(tiny_tsv, tmp_path, trained):
    """--arch transformer through every command: a run resumed after an epoch has the straight run's
    losses; translate (beam, n-best), evaluate, score; the kept checkpoints average; a Transformer and a
    GRU on the same data decode as one ensemble; config.toml records the architecture's defaults."""
    common = ["--data", str(tiny_tsv), "--arch", "transformer", "--d-model", "16", "--num-heads", "2",
              "--num-layers", "1", "--ff-size", "32", "--warmup-steps", "20", "--lr", "0.003", "--batch-size", "16",
              "--valid-size", "30", "--test-size", "30", "--min-freq", "1", "--no-progress", "--valid-bleu", "0",
              "--checkpoint-every", "0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    result = minis2s("train", "--out", str(straight), "--epochs", "2", "--keep", "2", "--eval-every", "10", *common)
    assert "model: Transformer 1 + 1 layers, d 16, 2 heads, ff 32, pre-norm" in result.stdout, result.stdout
    minis2s("train", "--out", str(split), "--epochs", "1", "--eval-every", "10", *common)
    minis2s("train", "--out", str(split), "--resume", "--epochs", "2", "--no-progress")
    history = [json.loads((out / "history.json").read_text()) for out in (straight, split)]
    assert [r["valid_loss"] for r in history[1]] == [r["valid_loss"] for r in history[0]]
    config = (straight / "config.toml").read_text()
    assert 'arch = "transformer"' in config and 'lr-schedule = "noam"' in config and "dropout = 0.1" in config
    nbest = minis2s("translate", "--model", str(straight), "--beam", "3", "--nbest", "2", "a b c").stdout.splitlines()
    assert len(nbest) == 2
    scores = json.loads(minis2s("evaluate", "--model", str(straight), "--data", str(straight / "test.tsv"),
                                "--json").stdout.splitlines()[-1])
    assert scores["perplexity"] > 1
    assert len(minis2s("score", "--model", str(straight), "--data", str(straight / "test.tsv")).stdout.splitlines()) > 30
    kept = sorted(straight.glob("step-*.npz"))
    minis2s("average", *map(str, kept), "--out", str(tmp_path / "avg"))
    assert minis2s("translate", "--model", str(tmp_path / "avg"), "a b c").stdout.strip()
    rnn, _ = trained
    both = minis2s("translate", "--model", str(rnn), "--model", str(straight), "--beam", "2", "a b c d").stdout
    assert both.strip()
