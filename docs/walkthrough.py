"""The walkthrough (docs/walkthrough.md), runnable: a tiny seq2seq model learns to reverse letters.

    python docs/walkthrough.py                          the six parts, under a minute on 2 cores
    python docs/walkthrough.py --break-gradient         exercise 1: a wrong backward, caught by the check
    python docs/walkthrough.py --teacher-forcing 0.5    exercise 2: half the decoder inputs its own guesses
    python docs/walkthrough.py --beam 3                 exercise 3: beam search instead of greedy

tests/test_docs.py runs it (and the first exercise) and checks what it prints.
"""
import argparse
import sys

import numpy

import minis2s
from minis2s import backend, checks, data, datasets, dispatch
from minis2s.decode import beam_search, greedy
from minis2s.loss import cross_entropy
from minis2s.nn import rnn_cells
from minis2s.train import TrainConfig, Trainer


def part(title):
    print(f"\n== {title}")


def show_forward(model, pairs):
    """One forward pass over a batch of 2 sentences, every shape printed."""
    batch = data.collate([s for s, _ in pairs[:2]], [t for _, t in pairs[:2]])
    print(f"source ids src          {batch.src.shape}   (S, B): time-major, padded with <pad> = 0")
    print(f"target in / out         {batch.tgt_in.shape} / {batch.tgt_out.shape}   (T, B): <bos> y  /  y <eos>")
    emb, _ = model.src_embedding.forward(batch.src)
    print(f"source embeddings       {emb.shape}   (S, B, E)")
    encoded, _ = model.encode(batch.src, batch.src_lengths)
    print(f"encoder outputs K       {encoded.memory.shape}   (S, B, M): attention's memory")
    print(f"context vector (h_S)    {encoded.state[0].shape}   (L, B, H): the decoder's first state")
    logits, cache = model.forward(batch, train=False)
    print(f"logits                  {logits.shape}   (T, B, V)")
    print(f"attention weights       {cache.weights.shape}   (T, S, B): each step's alpha over the source")
    loss, dlogits = cross_entropy(logits, batch.tgt_out, batch.tgt_lengths)
    print(f"loss                    {backend.to_float(loss):.4f}   mean cross-entropy per target token (about log V = "
          f"{numpy.log(logits.shape[-1]):.4f} before training)")
    print(f"dlogits = (p - onehot)/N {dlogits.shape}")


def gradient_by_hand(cell):
    """One weight, deep in the encoder, its gradient from the backward pass against finite differences."""
    model = minis2s.Seq2Seq(9, 8, cell=cell, attention="bahdanau", emb_size=3, hidden_size=4, dtype="float64",
                            seed=0)
    batch = checks.random_batch(numpy.random.default_rng(0), (3, 1, 4), (2, 3, 1), 9, 8)
    name, index, h = "encoder.weight_hh_l0", (1, 2), 1e-6
    model.loss_and_grads(batch)
    analytic = backend.to_float(model.grads[name][index])     # (on a GPU: a copy to the host, as every print)
    weight = model.params[name]
    weight[index] += h
    up = model.loss(batch)
    weight[index] -= 2 * h
    down = model.loss(batch)
    weight[index] += h
    numeric = (up - down) / (2 * h)
    print(f"d loss / d {name}{list(index)}: backward {analytic:+.10f}, "
          f"(L(w+h) - L(w-h)) / 2h {numeric:+.10f}, difference {abs(analytic - numeric):.1e}")
    errors = checks.check_seq2seq(cell, "bahdanau")
    worst = max(errors, key=errors.get)
    print(f"every parameter (central differences): worst relative error {errors[worst]:.1e} ({worst}) -> "
          f"{'pass' if errors[worst] <= 1e-7 else 'FAIL: the gradient check caught a wrong backward'}")
    return errors[worst]


def break_gradient():
    """Exercise 1: the GRU's backward with its reset-gate term 1% wrong."""
    right = rnn_cells.gru_step_backward

    def wrong(dh_next, cache):
        dxw, dgh, dh = right(dh_next, cache)
        hidden = dh.shape[1]
        dxw, dgh = dxw.copy(), dgh.copy()
        dxw[:, :hidden] *= 1.01                      # da_r, 1% off
        dgh[:, :hidden] *= 1.01
        return dxw, dgh, dh
    rnn_cells.gru_step_backward = wrong
    return right


def train(corpus, args):
    model = minis2s.Seq2Seq(len(corpus.src_vocab), len(corpus.tgt_vocab), cell="gru", attention="bahdanau",
                            emb_size=32, hidden_size=64, teacher_forcing=args.teacher_forcing, seed=0)
    print(f"GRU + Bahdanau attention, {sum(p.size for p in model.params.values()):,} parameters, "
          f"{len(corpus.train)} training pairs, teacher forcing {args.teacher_forcing}")
    config = TrainConfig(epochs=args.epochs, batch_size=16, lr=3e-3, decay_every=10, decay_gamma=0.5, seed=0)
    history = []
    Trainer(model, corpus.train, corpus.valid, config, progress=False,
            log=lambda line: history.append(line)).run()
    for line in history[:: max(len(history) // 4, 1)] + history[-1:]:
        print("  " + line)
    return model


def accuracy(model, pairs, beam):
    sources = [s for s, _ in pairs]
    if beam > 1:
        outputs = [hyps[0].tokens for hyps in beam_search(model, sources, beam_size=beam)]
    else:
        outputs = [h.tokens for h in greedy(model, sources)]
    return float(numpy.mean([out == t for out, (_, t) in zip(outputs, pairs)]))


def show_attention(model, corpus):
    source = "a b c d e f"
    ids = corpus.src_vocab.encode(corpus.src_tokenizer.tokenize(source))
    hypothesis = greedy(model, [ids])[0]
    words = corpus.tgt_vocab.decode(hypothesis.tokens) + ["<eos>"]
    print(f"{source!r} -> {' '.join(words[:-1])!r}; attention (rows: output words, columns: source words)")
    tokens = source.split() + ["<eos>"]                       # collate ends every source with <eos>
    print("        " + " ".join(f"{t:>5}" for t in tokens))
    for word, row in zip(words, backend.to_numpy(hypothesis.attention)):
        print(f"  {word:>5} " + " ".join(f"{w:5.2f}" for w in row[:len(tokens)]))
    return words, hypothesis.attention


def train_transformer(corpus, epochs):
    """Part 6: the same task without recurrence."""
    model = minis2s.Transformer(len(corpus.src_vocab), len(corpus.tgt_vocab), d_model=64, num_heads=2,
                                num_encoder_layers=1, num_decoder_layers=1, ff_size=128, dropout=0.0, seed=0)
    print(f"Transformer, 1 + 1 layers, d 64, 2 heads, ff 128, pre-norm: {model.num_params():,} parameters")
    config = TrainConfig(epochs=epochs, batch_size=16, lr=3e-3, warmup_steps=200, lr_schedule="noam", seed=0)
    history = []
    Trainer(model, corpus.train, corpus.valid, config, progress=False,
            log=lambda line: history.append(line)).run()
    for line in history[:: max(len(history) // 3, 1)][:3] + history[-1:]:
        print("  " + line)
    return model


def show_head(model, corpus, head=0):
    """One head's weights over the source in the decoder's attention, for the model's own translation
    (teacher forced on it: the same weights greedy decoding saw, all steps at once)."""
    source = "a b c d e f"
    ids = corpus.src_vocab.encode(corpus.src_tokenizer.tokenize(source))
    output = greedy(model, [ids])[0].tokens
    batch = data.collate([ids], [output])
    _, cache = model.forward(batch, train=False)
    layers, _ = cache.decoder
    weights = backend.to_numpy(layers[-1].cross_attention.attention.weights)[0, head]     # (T, S)
    words = corpus.tgt_vocab.decode(output) + ["<eos>"]
    print(f"{source!r} -> {' '.join(words[:-1])!r}; head {head} of the decoder's attention over the source")
    tokens = source.split() + ["<eos>"]
    print("        " + " ".join(f"{t:>5}" for t in tokens))
    for word, row in zip(words, weights):
        print(f"  {word:>5} " + " ".join(f"{w:5.2f}" for w in row[:len(tokens)]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--teacher-forcing", type=float, default=1.0)
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--break-gradient", action="store_true")
    parser.add_argument("--check-only", action="store_true", help="stop after part 3")
    parser.add_argument("--transformer-epochs", type=int, default=150, help="part 6 (0: skip it)")
    args = parser.parse_args(argv)
    dispatch.use_kernels(False)                          # the walkthrough reads the reference path

    part("1. The data: toy:reverse")
    pairs = datasets.toy("reverse", 600, seed=0)
    corpus = data.prepare(pairs, valid_size=60, test_size=60)
    print(f"{len(corpus.train)} / {len(corpus.valid)} / {len(corpus.test)} pairs; e.g. {pairs[0][0]!r} -> "
          f"{pairs[0][1]!r}; ids {corpus.train[0][0]} -> {corpus.train[0][1]}; vocabulary {len(corpus.tgt_vocab)} "
          f"(4 specials: <pad> <bos> <eos> <unk>)")

    part("2. A tiny model, one forward pass, shapes")
    model = minis2s.Seq2Seq(len(corpus.src_vocab), len(corpus.tgt_vocab), cell="gru", attention="bahdanau",
                            emb_size=32, hidden_size=64, seed=0)
    show_forward(model, corpus.train)

    part("3. One gradient by hand, then all of them")
    restore = break_gradient() if args.break_gradient else None
    worst = gradient_by_hand("gru")
    if restore is not None:
        rnn_cells.gru_step_backward = restore
    if args.check_only:
        return 0 if worst <= 1e-7 else 1

    part("4. Training to 100%")
    model = train(corpus, args)
    train_acc = accuracy(model, corpus.train, args.beam)
    test_acc = accuracy(model, corpus.test, args.beam)
    print(f"exact match ({'greedy' if args.beam == 1 else f'beam {args.beam}'}): training {train_acc:.1%}, "
          f"held-out {test_acc:.1%}")

    part("5. Looking at the attention")
    show_attention(model, corpus)

    if args.transformer_epochs:
        part("6. Attention without recurrence: a tiny Transformer")
        model = train_transformer(corpus, args.transformer_epochs)
        print(f"exact match (greedy): training {accuracy(model, corpus.train, 1):.1%}, "
              f"held-out {accuracy(model, corpus.test, 1):.1%}")
        show_head(model, corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
