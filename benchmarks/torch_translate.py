"""The PyTorch twin trained like ``minis2s train``: same corpus, split, vocabularies, batches, optimiser,
clipping and time limit; then its weights copied into a minis2s model and scored by minis2s' own
``evaluate`` (beam search, `<unk>` replacement, BLEU detokenised and on tokens, perplexity) on the same
validation and test pairs, with GNMT's length penalty and with the average, so that only the training
differs.

    python benchmarks/torch_translate.py --time-limit 600 --out benchmarks/results/torch_eng_fra.json
    python benchmarks/torch_translate.py --epochs 1 --time-limit 0 --init minis2s     # one epoch, our initial weights
    python benchmarks/torch_translate.py --epochs 1 --time-limit 0 --bidirectional --save /tmp/torch_bi

The model is ``minis2s train``'s default (GRU + Bahdanau 256/256 with the attentional output;
``--no-attentional-output`` for the output reading s_t alone, ``--bidirectional`` for the encoder both
ways). ``--init minis2s`` starts from the very weights ``minis2s train`` starts from (same seed), so a
difference that remains is in the training arithmetic, not the initialisation. ``--save DIR`` writes the
trained weights as a minis2s model folder (``minis2s evaluate --model DIR`` reads it).
"""
import argparse
import json
import os
import time

import torch

from minis2s import checkpoint, datasets
from minis2s.data import prepare
from minis2s.torch_twin import TorchSeq2Seq, tensors
from minis2s.train import batch_of, make_batches
from minis2s.translator import Translator


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="eng-fra")
    parser.add_argument("--cell", default="gru")
    parser.add_argument("--attention", default="bahdanau")
    parser.add_argument("--emb-size", type=int, default=256)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--no-attentional-output", action="store_true", help="the output reads s_t alone")
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
    parser.add_argument("--out", default=None, help="the results as JSON (and the test translations beside it)")
    parser.add_argument("--save", default=None, help="a folder for the trained model, in minis2s' format")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    corpus = prepare(datasets.load(args.data), max_len=10, min_freq=args.min_freq, elisions=True)   # train's defaults
    architecture = dict(cell=args.cell, attention=args.attention, emb_size=args.emb_size, hidden_size=args.hidden_size,
                        bidirectional=args.bidirectional,
                        attentional_output=args.attention == "bahdanau" and not args.no_attentional_output)
    if args.init == "minis2s":
        from minis2s.model import Seq2Seq
        twin = TorchSeq2Seq.from_minis2s(Seq2Seq(len(corpus.src_vocab), len(corpus.tgt_vocab), seed=args.seed,
                                                 **architecture))
    else:
        twin = TorchSeq2Seq(len(corpus.src_vocab), len(corpus.tgt_vocab), **architecture)
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
    model = twin.to_minis2s()                         # decoded and scored by minis2s' own code from here on
    translator = Translator(model, corpus.src_vocab, corpus.tgt_vocab, corpus.src_tokenizer, corpus.tgt_tokenizer)
    if args.save:
        checkpoint.save(os.path.join(args.save, "model.npz"), model.state_dict(),
                        dict(translator.meta(), model=model.config, trained_in=f"PyTorch {torch.__version__}"))
    scores, outputs = {}, {}
    for split, pairs in (("valid", corpus.valid_text), ("test", corpus.test_text)):
        for penalty in ("gnmt", "avg"):
            found, hypotheses = translator.evaluate(pairs, beam_size=args.beam, normalize=penalty)
            scores[f"{split}_{penalty}"] = {k: found[k] for k in ("bleu", "bleu_case_sensitive", "bleu_tokens",
                                                                   "chrf", "exact_match", "perplexity")}
            outputs[split, penalty] = hypotheses
    if args.out:                                      # the translations first, whatever happens next
        with open(args.out.replace(".json", "_translations.tsv"), "w", encoding="utf-8") as stream:
            stream.writelines(f"{s}\t{r}\t{o}\n" for (s, r), o in zip(corpus.test_text, outputs["test", "gnmt"]))
    result = dict(vars(args), steps=step, epochs_done=epoch, train_seconds=seconds, train_tokens_per_s=tokens / seconds,
                  torch=torch.__version__, threads=torch.get_num_threads(), scores=scores,
                  samples=list(zip(corpus.test_text[:5], outputs["test", "gnmt"][:5])))
    print(json.dumps(result, indent=1, ensure_ascii=False))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as stream:
            json.dump(result, stream, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
