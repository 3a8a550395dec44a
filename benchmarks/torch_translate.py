"""The PyTorch twin trained like ``minis2s train``: same corpus, split, vocabularies, batches, optimiser,
clipping and time limit; then beam-4 BLEU on the same held-out pairs through minis2s' own beam search
and scoring (so that only the model arithmetic differs).

    python benchmarks/torch_translate.py --time-limit 600 --out benchmarks/results/torch_eng_fra.json
    python benchmarks/torch_translate.py --epochs 1 --time-limit 0 --init minis2s     # one epoch, our initial weights

``--init minis2s`` starts from the very weights ``minis2s train`` starts from (same seed), so a difference
that remains is in the training arithmetic, not the initialisation.
"""
import argparse
import json
import math
import time

import torch

from minis2s import datasets, metrics
from minis2s.data import prepare
from minis2s.decode import beam_search
from minis2s.torch_twin import Decoding, TorchSeq2Seq, tensors
from minis2s.train import batch_of, make_batches


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="eng-fra")
    parser.add_argument("--cell", default="gru")
    parser.add_argument("--attention", default="bahdanau")
    parser.add_argument("--emb-size", type=int, default=256)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--min-freq", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=600, help="seconds of training (0: no limit)")
    parser.add_argument("--epochs", type=int, default=0, help="stop after this many epochs (0: no limit)")
    parser.add_argument("--init", choices=("torch", "minis2s"), default="torch",
                        help="PyTorch's default initialisation, or minis2s' initial weights for the same seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    corpus = prepare(datasets.load(args.data), max_len=10, min_freq=args.min_freq)
    if args.init == "minis2s":
        from minis2s.model import Seq2Seq
        twin = TorchSeq2Seq.from_minis2s(Seq2Seq(len(corpus.src_vocab), len(corpus.tgt_vocab), cell=args.cell,
                                                 attention=args.attention, emb_size=args.emb_size,
                                                 hidden_size=args.hidden_size, seed=args.seed))
    else:
        twin = TorchSeq2Seq(len(corpus.src_vocab), len(corpus.tgt_vocab), args.cell, args.attention, args.emb_size,
                            args.hidden_size)
    optimizer = torch.optim.Adam(twin.parameters(), lr=args.lr)
    started, step, epoch, tokens = time.perf_counter(), 0, 0, 0
    def out_of_time():
        return bool(args.time_limit) and time.perf_counter() - started >= args.time_limit

    while not out_of_time() and not (args.epochs and epoch >= args.epochs):
        for indices in make_batches(corpus.train, args.batch_size, args.seed, epoch):
            batch = batch_of(corpus.train, indices)
            optimizer.zero_grad()
            loss = twin.loss(*tensors(batch))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(twin.parameters(), args.clip)
            optimizer.step()
            step += 1
            tokens += batch.num_tokens
            if out_of_time():
                break
        epoch += 1
    seconds = time.perf_counter() - started
    twin.eval()
    with torch.no_grad():
        total, count = 0.0, 0
        for start in range(0, len(corpus.test), 128):
            batch = batch_of(corpus.test, range(start, min(start + 128, len(corpus.test))))
            total += twin.loss(*tensors(batch)).item() * batch.num_tokens
            count += batch.num_tokens
    sources = [corpus.src_vocab.encode(corpus.src_tokenizer.tokenize(s)) for s, _ in corpus.test_text]
    outputs = [corpus.tgt_tokenizer.detokenize(corpus.tgt_vocab.decode(found[0].tokens))
               for found in beam_search(Decoding(twin), sources, beam_size=args.beam)]
    references = [t for _, t in corpus.test_text]
    if args.out:                                      # the translations first, whatever happens next
        with open(args.out.replace(".json", "_translations.tsv"), "w", encoding="utf-8") as stream:
            stream.writelines(f"{s}\t{r}\t{o}\n" for (s, r), o in zip(corpus.test_text, outputs))
    result = dict(vars(args), steps=step, epochs_done=epoch, train_seconds=seconds, train_tokens_per_s=tokens / seconds,
                  test_perplexity=math.exp(total / count), torch=torch.__version__,
                  bleu=metrics.bleu(outputs, references),
                  bleu_case_insensitive=metrics.bleu(outputs, references, lowercase=True),
                  chrf_case_insensitive=metrics.chrf(outputs, references, lowercase=True), samples=list(zip(corpus.test_text[:5], outputs[:5])))
    print(json.dumps(result, indent=1, ensure_ascii=False))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as stream:
            json.dump(result, stream, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
