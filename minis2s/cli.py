"""The ``minis2s`` command line: argument parsing and printing only.

    minis2s train [--data PAIRS.tsv] --out DIR [model and training options]
    minis2s translate --model DIR [--beam K] [--nbest N] [TEXT ...]
    minis2s evaluate --model DIR --data PAIRS.tsv [--beam K] [--json]
    minis2s score --model DIR --data PAIRS.tsv
    minis2s average MODEL_DIR ... --out DIR
    minis2s gradcheck
    minis2s bench
"""
import argparse
import json
import os
import sys
import time

from . import backend
from . import config as config_file

DEFAULT_DATA = "eng-fra"


class UsageError(ValueError):
    """A bad argument: the message names it."""


def _add_backend(parser):
    parser.add_argument("--backend", choices=backend.BACKENDS, default=None,
                        help="array backend (default: $MINIS2S_BACKEND or numpy)")


def _use_backend(args):
    if getattr(args, "backend", None):
        backend.use(args.backend)


def _seconds(text):
    """'600', '600s', '10m', '1.5h' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 600, 90s, 10m, 1h)") from None


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    parse.expects = "an integer" if kind is int else "a number"      # for run files (config.py)
    return parse


# ----------------------------------------------------------------------------- train

def add_train(commands):
    parser = commands.add_parser(
        "train", help="train a translator (default: the bundled English->French corpus)",
        description="Train a Seq2Seq translator. With no --data, the bundled English->French Tatoeba pairs "
                    "(<= 10 words a side); the defaults (GRU + Bahdanau attention, 256/256, batch 64, Adam 1e-3, "
                    "clip 1, 10 minutes) give recognisable translations of short sentences on 2 CPU cores. "
                    "Writes DIR/model.npz (best), DIR/last.npz (for --resume), DIR/test.tsv, DIR/history.json, "
                    "and DIR/config.toml, the fully resolved run.")
    parser.add_argument("--config", default=None, metavar="RUN.toml",
                        help="read the run from a TOML file whose keys are these flags' names (hidden-size = 256, "
                             "bidirectional = true); flags on the command line override it; DIR/config.toml of a "
                             "trained model runs it again")
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=None,
                      help="PAIRS.tsv (source<TAB>target, UTF-8, .gz allowed) or a bundled name: eng-fra, fra-eng, "
                           "cmn-eng, eng-cmn, toy:copy, toy:reverse, toy:sort, toy:addition, toy:dates "
                           f"(default {DEFAULT_DATA})")
    data.add_argument("--out", default=None, help="output folder for checkpoints and results (required)")
    data.add_argument("--max-len", type=int, default=10, help="drop pairs with a side longer than this (tokens)")
    data.add_argument("--min-freq", type=int, default=3, help="vocabulary: tokens seen fewer times become <unk>")
    data.add_argument("--max-vocab", type=int, default=None, help="vocabulary: at most this many tokens a side")
    data.add_argument("--no-lowercase", action="store_true", help="keep the case of the text")
    data.add_argument("--elisions", choices=("keep", "split"), default="split",
                      help="word tokenizer: split French elisions off their word (l'homme -> l' homme) or keep them")
    data.add_argument("--src-tokenizer", choices=("auto", "word", "char"), default="auto")
    data.add_argument("--tgt-tokenizer", choices=("auto", "word", "char"), default="auto")
    data.add_argument("--subword", choices=("none", "bpe", "sentencepiece"), default="none",
                      help="split words into subword pieces, a model per side learnt on the training pairs: bpe "
                           "(minis2s' own byte-pair encoding) or sentencepiece (unigram; pip install "
                           "'minis2s[subword]'); saved in the model, so translate reads and writes whole words")
    data.add_argument("--vocab-size", type=_positive(int), default=8000,
                      help="with --subword: at most this many pieces a side, special tokens included")
    data.add_argument("--valid-size", type=int, default=1000, help="held-out pairs for validation")
    data.add_argument("--test-size", type=int, default=1000, help="held-out pairs for the final test")
    data.add_argument("--split-seed", type=int, default=0,
                      help="chooses the train/valid/test split, independent of --seed: runs with different seeds "
                           "on one data file share their test set and vocabularies (so they average and ensemble)")
    model = parser.add_argument_group("model (Seq2Seq's or Transformer's constructor, in kebab case)")
    model.add_argument("--arch", choices=("rnn", "transformer"), default="rnn",
                       help="a recurrent encoder-decoder (Seq2Seq, the options below up to --label-smoothing) or a "
                            "Transformer (its options in the next group)")
    model.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="gru")
    model.add_argument("--attention", choices=("none", "bahdanau", "luong-dot", "luong-general"), default="bahdanau")
    model.add_argument("--emb-size", type=_positive(int), default=256)
    model.add_argument("--hidden-size", type=_positive(int), default=256)
    model.add_argument("--num-layers", type=_positive(int), default=None,
                       help="layers of the encoder and of the decoder (default: 1; a Transformer: 3 each)")
    model.add_argument("--bidirectional", action="store_true")
    model.add_argument("--dropout", type=float, default=None, help="default 0; a Transformer: 0.1")
    model.add_argument("--teacher-forcing", type=float, default=1.0, help="probability of feeding the reference token")
    model.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    model.add_argument("--bridge", choices=("final", "zeros"), default="final")
    model.add_argument("--input-feeding", action="store_true", help="Luong input feeding")
    model.add_argument("--no-attentional-output", dest="attentional_output", action="store_false",
                       help="Bahdanau attention: the output layer reads s_t alone, not the attentional layer "
                            "tanh(W_c [ctx_t ; s_t]) that reads the step's context too (the default since "
                            "one epoch of eng-fra went 28.2 -> 29.5 BLEU with it: docs/results.md)")
    model.add_argument("--deep-output", action="store_true",
                       help="Bahdanau attention with the attentional output: that layer reads the input token's "
                            "embedding too, tanh(W_c [ctx_t ; s_t ; emb(y_t-1)]), Bahdanau et al.'s three inputs "
                            "to their output")
    model.add_argument("--context-feeding", action="store_true", help="feed the context vector at every step")
    model.add_argument("--reverse-source", action="store_true", help="reverse the source (Sutskever et al. 2014)")
    model.add_argument("--label-smoothing", type=float, default=0.0)
    transformer = parser.add_argument_group("the Transformer (--arch transformer)")
    transformer.add_argument("--d-model", type=_positive(int), default=256, help="the residual stream's size E")
    transformer.add_argument("--num-heads", type=_positive(int), default=4)
    transformer.add_argument("--ff-size", type=_positive(int), default=1024, help="the feed-forward block's size")
    transformer.add_argument("--norm", choices=("pre", "post"), default="pre",
                             help="layer norm before each sublayer (pre, trains without a long warm-up) or after the "
                                  "residual sum (post, the 2017 paper's)")
    transformer.add_argument("--positional", choices=("sinusoidal", "learned"), default="sinusoidal")
    transformer.add_argument("--tie-embeddings", action="store_true",
                             help="the output layer is the target embedding's table (its two gradients add)")
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=_positive(int), default=30)
    training.add_argument("--batch-size", type=_positive(int), default=64,
                          help="the global batch: under mpiexec -n R each rank computes a share of it")
    training.add_argument("--accumulate", type=_positive(int), default=1,
                          help="one optimiser step per N batches, the loss a mean over all their target tokens")
    training.add_argument("--lr", type=_positive(float), default=1e-3,
                          help="the learning rate; with --lr-schedule noam its peak")
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    training.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    training.add_argument("--weight-decay", type=float, default=0.0)
    training.add_argument("--clip", type=float, default=1.0, help="global gradient-norm limit (0: off)")
    training.add_argument("--warmup-steps", type=int, default=None,
                          help="linear warm-up over N steps (default 0; a Transformer: %d)" % TRANSFORMER_WARMUP)
    training.add_argument("--lr-schedule", choices=("constant", "noam", "linear"), default=None,
                          help="constant after the warm-up; noam: lr min(step / w, sqrt(w / step)), the peak "
                               "--lr at step w = --warmup-steps; linear: after the warm-up, straight down to "
                               "about 0 at the last step of --epochs (a time limit that stops earlier stops "
                               "it part way) (default constant; a Transformer: noam)")
    training.add_argument("--decay-every", type=int, default=0, help="halve (--decay-gamma) the lr every N epochs")
    training.add_argument("--decay-gamma", type=float, default=0.5)
    training.add_argument("--plateau-patience", type=int, default=0, help="reduce the lr after N epochs w/o progress")
    training.add_argument("--early-stopping", type=int, default=0, help="stop after N epochs without improvement")
    training.add_argument("--schedule", choices=("constant", "linear", "exponential", "inverse-sigmoid"),
                          default="constant", help="scheduled sampling: how teacher forcing decays")
    training.add_argument("--schedule-k", type=float, default=0.0)
    training.add_argument("--time-limit", type=_seconds, default=600.0,
                          help="stop after this much training time, validation not counted (600, 90s, 10m, 1h; "
                               "0: no limit; default 10m)")
    training.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (0: epochs)")
    training.add_argument("--eval-every", type=int, default=500,
                          help="steps between validations (loss, BLEU) for the curves (0: at epoch ends)")
    training.add_argument("--resume", action="store_true", help="continue the run saved in --out (last.npz)")
    training.add_argument("--keep", type=int, default=0,
                          help="also keep the parameters of the last N checkpoints as DIR/step-NNNNNNN.npz, for "
                               "minis2s average (0: none)")
    output = parser.add_argument_group("output")
    output.add_argument("--beam", type=_positive(int), default=4, help="beam size for the final test")
    output.add_argument("--samples", type=int, default=5, help="sample translations to print")
    output.add_argument("--valid-bleu", type=int, default=200,
                        help="validation pairs translated (greedy) for BLEU each epoch (0: none)")
    output.add_argument("--plot", action="store_true", help="write training curves and an attention heatmap (PNG)")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_backend(parser)
    parser.set_defaults(run=cmd_train)
    return parser


TRANSFORMER_WARMUP = 1000
ARCH_DEFAULTS = {               # the flags whose default depends on --arch
    "rnn": dict(num_layers=1, dropout=0.0, warmup_steps=0, lr_schedule="constant"),
    "transformer": dict(num_layers=3, dropout=0.1, warmup_steps=TRANSFORMER_WARMUP, lr_schedule="noam"),
}


def _arch_defaults(args):
    """Fill the flags left unset with their architecture's default (in place; config.toml records them)."""
    for key, value in ARCH_DEFAULTS[args.arch].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def _build_model(args, src_vocab_size, tgt_vocab_size):
    if args.arch == "transformer":
        from .transformer import Transformer
        return Transformer(src_vocab_size, tgt_vocab_size, d_model=args.d_model, num_heads=args.num_heads,
                           num_encoder_layers=args.num_layers, num_decoder_layers=args.num_layers,
                           ff_size=args.ff_size, dropout=args.dropout, norm_first=args.norm == "pre",
                           positional=args.positional, tie_embeddings=args.tie_embeddings,
                           label_smoothing=args.label_smoothing, dtype=args.dtype, seed=args.seed,
                           max_len=max(512, 2 * args.max_len + 16))
    from .model import Seq2Seq
    return Seq2Seq(src_vocab_size, tgt_vocab_size, cell=args.cell, attention=args.attention,
                   emb_size=args.emb_size, hidden_size=args.hidden_size, num_layers=args.num_layers,
                   bidirectional=args.bidirectional, dropout=args.dropout, teacher_forcing=args.teacher_forcing,
                   dtype=args.dtype, seed=args.seed, bridge=args.bridge, input_feeding=args.input_feeding,
                   context_feeding=args.context_feeding, reverse_source=args.reverse_source,
                   label_smoothing=args.label_smoothing, attentional_output=args.attentional_output,
                   deep_output=args.deep_output)


def _describe(args):
    if args.arch == "transformer":
        return (f"Transformer {args.num_layers} + {args.num_layers} layers, d {args.d_model}, {args.num_heads} heads, "
                f"ff {args.ff_size}, {args.norm}-norm")
    return f"{args.cell} + {args.attention} attention"


def _load_text_pairs(spec):
    from . import datasets
    from .data import DataError, read_pairs
    name = spec or DEFAULT_DATA
    if os.path.exists(name):
        return read_pairs(name)
    try:
        return datasets.load(name)
    except KeyError:
        raise DataError(f"--data {name}: no such file, and not a bundled name ({', '.join(datasets.names())})") \
            from None


def cmd_train(args):
    from . import data, metrics
    from .decode import greedy
    from .train import Trainer, TrainConfig
    from .translator import Translator
    from .parallel import from_environment
    _use_backend(args)
    comm = from_environment()                     # one process, or the ranks mpiexec started
    say = print if comm.rank == 0 else _quiet
    if not args.out:
        raise UsageError("--out DIR is required (on the command line, or out = \"DIR\" in --config)")
    last = os.path.join(args.out, "last.npz")
    options = vars(args)
    if args.resume:
        from . import checkpoint
        _, meta, _ = checkpoint.load(last)
        saved = dict(meta["cli"])
        saved.setdefault("split_seed", saved.get("seed", 0))      # runs saved before --split-seed split by --seed
        saved.setdefault("attentional_output", False)             # and had no attentional output
        saved.setdefault("deep_output", False)                    # nor a deep one
        saved.setdefault("arch", "rnn")                           # nor a Transformer
        for key, value in saved.items():              # the run continues with its own settings
            if key not in ("resume", "no_progress", "plot", "backend", "epochs", "time_limit"):
                options[key] = value
        args = argparse.Namespace(**options)
    elif os.path.exists(last):
        raise UsageError(f"--out {args.out}: a run is already saved there (use --resume, or another --out)")

    _arch_defaults(args)
    started = time.perf_counter()
    pairs = _load_text_pairs(args.data)
    corpus = data.prepare(pairs, args.src_tokenizer, args.tgt_tokenizer, not args.no_lowercase, args.max_len,
                          args.min_freq, args.max_vocab, args.valid_size, args.test_size, args.split_seed,
                          args.subword, args.vocab_size, args.elisions == "split")
    pieces = "" if args.subword == "none" else f" ({args.subword} pieces)"
    say(f"data: {args.data or DEFAULT_DATA}: {len(corpus.train):,} training, {len(corpus.valid):,} validation, "
          f"{len(corpus.test):,} test pairs; vocabularies {len(corpus.src_vocab):,} / {len(corpus.tgt_vocab):,}"
          f"{pieces}", flush=True)
    model = _build_model(args, len(corpus.src_vocab), len(corpus.tgt_vocab))
    translator = Translator(model, corpus.src_vocab, corpus.tgt_vocab, corpus.src_tokenizer, corpus.tgt_tokenizer)
    ranks = f", {comm.size} processes (data parallel)" if comm.size > 1 else ""
    say(f"model: {_describe(args)}, {model.num_params():,} parameters, "
        f"backend {backend.name()}{ranks}", flush=True)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                         momentum=args.momentum, weight_decay=args.weight_decay, clip=args.clip,
                         warmup_steps=args.warmup_steps, lr_schedule=args.lr_schedule,
                         decay_every=args.decay_every, decay_gamma=args.decay_gamma,
                         plateau_patience=args.plateau_patience, early_stopping=args.early_stopping,
                         schedule=args.schedule, schedule_k=args.schedule_k, seed=args.seed,
                         time_limit=args.time_limit, checkpoint_every=args.checkpoint_every,
                         eval_every=args.eval_every, keep=args.keep, accumulate=args.accumulate)
    valid_text = corpus.valid_text[:args.valid_bleu]       # a BLEU curve on held-out text (greedy, cheap)

    def validation_bleu(trained):
        sources = [corpus.src_vocab.encode(corpus.src_tokenizer.tokenize(s)) for s, _ in valid_text]
        outputs = [corpus.tgt_tokenizer.detokenize(corpus.tgt_vocab.decode(h.tokens)) for h in greedy(trained, sources)]
        tokenize = "zh" if corpus.tgt_tokenizer.kind == "char" else "13a"
        return {"valid_bleu": metrics.bleu(outputs, [t for _, t in valid_text], tokenize,
                                           lowercase=corpus.tgt_tokenizer.lowercase)}

    cli_meta = {key: value for key, value in vars(args).items() if key not in ("run", "train_parser")}
    trainer = Trainer(model, corpus.train, corpus.valid, config, out_dir=args.out,
                      meta=dict(translator.meta(), cli=cli_meta), evaluate=validation_bleu if valid_text else None,
                      progress=not args.no_progress, comm=comm)
    if args.resume:
        trainer.restore(last)
        say(f"resumed from {last} at epoch {trainer.epoch + 1}, step {trainer.step}", flush=True)
    if comm.rank != 0:                          # rank 0 alone writes the run folder, tests and plots
        trainer.run()
        return 0
    os.makedirs(args.out, exist_ok=True)
    config_file.write(os.path.join(args.out, "config.toml"), args, args.train_parser)
    if args.subword != "none":                 # for reading; translate uses the copy inside model.npz
        from .subword import FILE_NAMES
        for side, tokenizer in (("src", corpus.src_tokenizer), ("tgt", corpus.tgt_tokenizer)):
            tokenizer.model.write(os.path.join(args.out, FILE_NAMES[args.subword].format(side=side)))
    with open(os.path.join(args.out, "test.tsv"), "w", encoding="utf-8") as stream:
        stream.writelines(f"{s}\t{t}\n" for s, t in corpus.test_text)
    trainer.run()
    with open(os.path.join(args.out, "history.json"), "w", encoding="utf-8") as stream:
        json.dump(trainer.history, stream, indent=1)
    if trainer.interrupted:
        print(f"stopped; continue with: minis2s train --out {args.out} --resume")
        return 130
    trained_for = trainer.elapsed
    print(f"trained {trainer.step:,} steps in {trained_for / 60:.1f} min; best validation loss "
          f"{trainer.best_loss:.3f} (perplexity {metrics.perplexity(trainer.best_loss):.1f})", flush=True)

    if corpus.test_text:
        scores, hypotheses = translator.evaluate(corpus.test_text, beam_size=args.beam)
        for index in _sample_indices(corpus.test_text, args.samples):
            source, reference = corpus.test_text[index]
            print(f"  {source}\n    -> {hypotheses[index]}\n    (reference: {reference})")
        print(f"test ({len(corpus.test_text):,} held-out pairs, beam {args.beam}): {_score_line(scores)}")
        with open(os.path.join(args.out, "test_scores.json"), "w", encoding="utf-8") as stream:
            json.dump(dict(scores, train_seconds=trained_for, steps=trainer.step), stream, indent=1)
    if args.plot:
        from . import plots
        plots.training_curves(trainer.history, os.path.join(args.out, "training_curves.png"))
        if corpus.test_text and model.attention != "none":
            _heatmap(translator, corpus.test_text[0][0], os.path.join(args.out, "attention.png"), args.beam)
        print(f"pictures: {args.out}/training_curves.png" + (", attention.png" if model.attention != "none" else ""))
    print(f"total {(time.perf_counter() - started) / 60:.1f} min; translate with: minis2s translate --model {args.out}")
    return 0


def _quiet(*args, **kwargs):
    """print for a rank other than 0: nothing."""


def _sample_indices(pairs, count):
    """Up to ``count`` indices spread evenly over ``pairs``, each with a different source sentence."""
    chosen, seen = [], set()
    for index in range(0, len(pairs), max(len(pairs) // max(count, 1), 1)):
        if len(chosen) < count and pairs[index][0] not in seen:
            chosen.append(index)
            seen.add(pairs[index][0])
    return chosen


def _score_line(scores):
    case = " (case-insensitive; case-sensitive {:.1f})".format(scores["bleu_case_sensitive"]) \
        if scores["case_insensitive"] else ""
    return (f"BLEU {scores['bleu']:.1f}{case}, on the model's tokens {scores['bleu_tokens']:.1f}, "
            f"chrF {scores['chrf']:.1f}, exact match {scores['exact_match']:.1f}%, perplexity {scores['perplexity']:.2f}")


def _heatmap(translator, text, path, beam):
    from . import plots
    translation, _, attention, source_tokens, words = translator.translate([text], beam_size=beam)[0][0]
    plots.attention_heatmap(source_tokens, words, attention, path, title=f"{text} -> {translation}")


# ----------------------------------------------------------------------------- translate / evaluate

def _decode_options(parser):
    parser.add_argument("--beam", type=_positive(int), default=4, help="beam size (1: greedy)")
    parser.add_argument("--max-length", type=_positive(int), default=None,
                        help="longest output (default 2 x source + 10)")
    parser.add_argument("--min-length", type=int, default=0, help="no <eos> before this many tokens")
    parser.add_argument("--length-penalty", choices=("gnmt", "avg", "none"), default="gnmt")
    parser.add_argument("--alpha", type=float, default=0.6, help="GNMT length penalty exponent")
    parser.add_argument("--block-ngram-repeat", type=int, default=0, help="no n-gram of this size twice (0: off)")
    parser.add_argument("--no-replace-unk", action="store_true", help="keep <unk> instead of copying from the source")
    parser.add_argument("--coverage-penalty", type=float, default=0.0, metavar="BETA",
                        help="GNMT's coverage penalty: finished translations ranked by score / lp + BETA * "
                             "sum_s log min(attention to s, 1) (0: off; 0.2 is a usual value)")
    sampling = parser.add_argument_group("sampling (instead of beam search)")
    sampling.add_argument("--sample", action="store_true",
                          help="draw each translation from the model's distribution, word by word")
    sampling.add_argument("--temperature", type=_positive(float), default=1.0,
                          help="divides the log-probabilities before the draw (< 1 sharper, > 1 flatter)")
    sampling.add_argument("--top-k", type=int, default=0, help="draw among the K most likely words only (0: all)")
    sampling.add_argument("--top-p", type=float, default=1.0,
                          help="draw among the fewest most likely words whose probability reaches P (1: all)")
    sampling.add_argument("--seed", type=int, default=0, help="the draws' seed: the same seed, the same outputs")


def _decoding(args):
    options = dict(beam_size=args.beam, max_length=args.max_length, min_length=args.min_length,
                   normalize=args.length_penalty, alpha=args.alpha, block_ngram_repeat=args.block_ngram_repeat,
                   replace_unk=not args.no_replace_unk, coverage_penalty=args.coverage_penalty)
    if args.sample:
        if args.top_k < 0 or not 0.0 < args.top_p <= 1.0:
            raise UsageError(f"--top-k must be >= 0 and --top-p in (0, 1], got {args.top_k} and {args.top_p}")
        if getattr(args, "nbest", 1) > 1:
            raise UsageError("--nbest needs beam search: --sample draws one translation per sentence")
        options["sampling"] = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                   seed=args.seed)
    return options


def add_translate(commands):
    parser = commands.add_parser(
        "translate", help="translate TEXT, or each line of standard input",
        description="Translate with a trained model (beam search). Line-true: one output line per input line, "
                    "in order, a blank line for a blank line; with --nbest N, N lines per input line "
                    "(score TAB translation; N blank lines for a blank one). Output is written and flushed "
                    "batch by batch (line by line at a terminal), so a pipe sees results as they come.")
    parser.add_argument("--model", required=True, action="append",
                        help="a folder written by minis2s train (or its model.npz); give it several times to decode "
                             "an ensemble (log-probabilities averaged at each step)")
    parser.add_argument("--nbest", type=_positive(int), default=1, help="print the N best, with their scores")
    parser.add_argument("--batch-size", type=_positive(int), default=64,
                        help="sentences decoded together (standard input from a terminal: 1)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="attention heatmap of the first sentence")
    parser.add_argument("text", nargs="*", help="sentences to translate (default: standard input, one a line)")
    _decode_options(parser)
    _add_backend(parser)
    parser.set_defaults(run=cmd_translate)


def _batches(lines, size):
    """Lists of at most ``size`` lines (line ends removed), as they arrive."""
    batch = []
    for line in lines:
        batch.append(line.rstrip("\r\n"))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def cmd_translate(args):
    from .translator import Translator
    _use_backend(args)
    if args.nbest > args.beam:
        raise UsageError(f"--nbest {args.nbest} is larger than --beam {args.beam}")
    translator = Translator.load(args.model)
    decoding = _decoding(args)
    from_terminal = not args.text and sys.stdin.isatty()
    first = None
    for batch in _batches(args.text or sys.stdin, 1 if from_terminal else args.batch_size):
        texts = [text for text in batch if text.strip()]            # blank lines are not translated...
        rows = iter(translator.translate(texts, nbest=args.nbest, **decoding) if texts else [])
        out = []
        for text in batch:
            if not text.strip():
                out += [""] * args.nbest                             # ...but keep their place in the output
            elif args.nbest == 1:
                out.append(next(rows)[0][0])
            else:
                out += [f"{score:.4f}\t{translation}" for translation, score, *_ in next(rows)]
        sys.stdout.write("".join(line + "\n" for line in out))
        sys.stdout.flush()
        first = first or (texts[0] if texts else None)
    if args.plot and first:
        _heatmap(translator, first, args.plot, args.beam)
    return 0


def add_evaluate(commands):
    parser = commands.add_parser("evaluate", help="BLEU, chrF, exact match and perplexity on PAIRS.tsv",
                                 description="Score a trained model on held-out pairs (sacrebleu BLEU and chrF).")
    parser.add_argument("--model", required=True, action="append",
                        help="a trained model folder; several: an ensemble")
    parser.add_argument("--data", required=True, help="PAIRS.tsv or a bundled name")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--limit", type=int, default=0, help="only the first N pairs")
    _decode_options(parser)
    _add_backend(parser)
    parser.set_defaults(run=cmd_evaluate)


def cmd_evaluate(args):
    from .translator import Translator
    _use_backend(args)
    translator = Translator.load(args.model)
    pairs = _load_text_pairs(args.data)
    if args.limit:
        pairs = pairs[:args.limit]
    options = _decoding(args)
    scores, _ = translator.evaluate(pairs, options.pop("beam_size"), **options)
    how = "sampled" if args.sample else f"beam {args.beam}"
    print(f"{len(pairs):,} pairs, {how}: {_score_line(scores)}")
    if args.json:
        print(json.dumps(scores))
    return 0


def add_score(commands):
    parser = commands.add_parser(
        "score", help="each pair's log-probability under the model, then the corpus perplexity",
        description="Score given translations: for each pair of PAIRS.tsv, log p(target | source) under the "
                    "model (teacher forced; the sum over the target's tokens and its <eos>), printed as "
                    "'LOGPROB<TAB>TOKENS<TAB>source<TAB>target', one line a pair in order; then the corpus "
                    "perplexity exp(-sum log p / sum tokens), the same as evaluate's.")
    parser.add_argument("--model", required=True, action="append",
                        help="a trained model folder; several: an ensemble (its mean log-probabilities)")
    parser.add_argument("--data", required=True, help="PAIRS.tsv or a bundled name")
    parser.add_argument("--batch-size", type=_positive(int), default=64)
    _add_backend(parser)
    parser.set_defaults(run=cmd_score)


def cmd_score(args):
    from .translator import Translator, perplexity_of
    _use_backend(args)
    translator = Translator.load(args.model)
    pairs = _load_text_pairs(args.data)
    scored = translator.score(pairs, args.batch_size)
    for (logprob, tokens), (source, target) in zip(scored, pairs):
        sys.stdout.write(f"{logprob:.4f}\t{tokens}\t{source}\t{target}\n")
    print(f"{len(pairs):,} pairs, {sum(n for _, n in scored):,} target tokens: perplexity {perplexity_of(scored):.4f}")
    return 0


# ----------------------------------------------------------------------------- gradcheck / bench

def add_average(commands):
    parser = commands.add_parser(
        "average", help="the element-wise mean of the parameters of identical models",
        description="Average the parameters of models with identical architecture and vocabularies (for example "
                    "the last checkpoints of one run: minis2s train --keep 5, then minis2s average DIR/step-*.npz "
                    "--out DIR-avg). The result translates and evaluates like any trained model.")
    parser.add_argument("models", nargs="+", metavar="MODEL", help="model folders (their model.npz) or .npz files")
    parser.add_argument("--out", required=True, help="folder for the averaged model.npz")
    parser.set_defaults(run=cmd_average)


def cmd_average(args):
    from .ensemble import average
    paths = [m if m.endswith(".npz") else os.path.join(m, "model.npz") for m in args.models]
    if len(paths) < 2:
        raise UsageError("average needs at least two models")
    average(paths, os.path.join(args.out, "model.npz"))         # a mismatch is a ValueError naming the file
    print(f"averaged {len(paths)} models into {os.path.join(args.out, 'model.npz')}")
    return 0


def add_gradcheck(commands):
    parser = commands.add_parser("gradcheck", help="finite-difference check of every layer and the whole model",
                                 description="Check every hand-written gradient against central finite "
                                             "differences in float64 and print a table of max relative errors. "
                                             "By default the reference path is checked: the functions in "
                                             "minis2s/ that the docs derive, not the fast kernels.")
    parser.add_argument("--kernels", action="store_true",
                        help="check the fast path instead (the Numba kernels where a twin exists)")
    _add_backend(parser)
    parser.set_defaults(run=cmd_gradcheck)


def cmd_gradcheck(args):
    from . import checks, dispatch, gradcheck
    _use_backend(args)
    with dispatch.reference_path(not args.kernels):
        path = ("the fast path (kernels where they exist)" if dispatch.kernels_enabled()
                else "the reference path (no kernels)")
        width = max(len(name) for name in checks.CATALOGUE) + 2
        print(f"finite-difference gradient check of {path}, float64, backend {backend.name()}, "
              f"pass if max relative error <= {gradcheck.TOLERANCE:.0e}")
        print(f"{'layer':<{width}}{'max rel. error':>16}  {'worst tensor':<32}result")
        failures = 0
        for name, errors in checks.run_catalogue():
            worst = max(errors, key=errors.get)
            ok = errors[worst] <= gradcheck.TOLERANCE
            failures += not ok
            print(f"{name:<{width}}{errors[worst]:>16.2e}  {worst:<32}{'pass' if ok else 'FAIL'}", flush=True)
    print(f"{len(checks.CATALOGUE) - failures} passed, {failures} failed")
    return 1 if failures else 0


def add_bench(commands):
    from .bench import add_arguments
    parser = commands.add_parser("bench", help="training and decoding throughput on the chosen backend",
                                 description="Time training (forward + backward + Adam, target tokens/s) and "
                                             "decoding (greedy and beam 5, sentences/s).")
    add_arguments(parser)
    _add_backend(parser)
    parser.set_defaults(run=cmd_bench)


def cmd_bench(args):
    from .bench import run_cli
    _use_backend(args)
    return run_cli(args)


# ----------------------------------------------------------------------------- main

def build_parser():
    parser = argparse.ArgumentParser(prog="minis2s", description="Sequence-to-sequence models from scratch on "
                                                                 "NumPy and CuPy, every gradient by hand.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.train_parser = add_train(commands)
    for add in (add_translate, add_evaluate, add_score, add_average, add_gradcheck, add_bench):
        add(commands)
    return parser


def main(argv=None):
    from .checkpoint import CheckpointError
    from .data import DataError
    from .parallel import ParallelError, abort
    from .train import TrainingError
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            if args.config:                          # the file's values become defaults: flags still override
                parser.train_parser.set_defaults(**config_file.read(args.config, parser.train_parser))
                args = parser.parse_args(argv)
            args.train_parser = parser.train_parser
        return args.run(args)
    except (backend.BackendError, DataError, CheckpointError, TrainingError, UsageError, ParallelError,
            config_file.ConfigError) as error:
        print(f"minis2s {args.command}: error: {error}", file=sys.stderr, flush=True)
        abort(2)                                          # under mpiexec: the other ranks stop too
        return 2
    except ValueError as error:                           # a constructor's check of an option
        print(f"minis2s {args.command}: error: {error}", file=sys.stderr, flush=True)
        abort(2)
        return 2
    except Exception:
        abort(1, show_traceback=True)                     # under mpiexec; in one process Python shows it
        raise
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
