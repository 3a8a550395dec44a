"""Transformer training throughput: minis2s against torch.nn.Transformer at the same sizes, weights and threads.

    python benchmarks/transformer.py                         # small and base, 2 threads
    python benchmarks/transformer.py --configs small --repeats 9

    small   d 128, 2 + 2 layers, 4 heads, ff 512,   batch 32, length 20, vocabulary 1,000
    base    d 256, 3 + 3 layers, 4 heads, ff 1,024, batch 64, length 30, vocabulary 8,000

Both sides: pre-norm layers (with the stacks' final norms), sinusoidal positions, embeddings scaled by
sqrt(d), an output layer without bias, dropout 0 (so that the losses can be compared), a padded batch
(lengths drawn from half the length to the length; key-padding masks and the causal mask), the mean
cross-entropy over the real target tokens, and Adam. The PyTorch side is what a PyTorch user writes:
``nn.Embedding``, ``nn.Transformer(norm_first=True)``, ``nn.Linear``, ``F.cross_entropy(ignore_index=0)``,
``torch.optim.Adam``, time-major as minis2s (batch_first=False). minis2s' weights are copied into it
by name, and the two losses must agree (float32, 1e-5 relative) before anything is timed.

A training step is forward + backward + the Adam update; target tokens/s = real target tokens / step
time. The two sides take turns, an untimed step before each timed run; medians. Then the step's matrix
products alone, the same shapes on NumPy's BLAS and on PyTorch's (``Linear`` products: x W^T, dy^T x, dy W
for every layer and the output layer), taking turns: the time no step can go below on its BLAS, and what
the two BLAS builds alone make of the ratio. Then greedy decoding,
with each layer's keys and values kept and recomputing the whole prefix at every step (``Recomputing``),
the same tokens both ways. Results go to
benchmarks/results/transformer_bench.json and .md, with the machine named.
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = {
    "small": dict(d_model=128, layers=2, heads=4, ff=512, batch=32, length=20, vocab=1000),
    "base": dict(d_model=256, layers=3, heads=4, ff=1024, batch=64, length=30, vocab=8000),
}


def make_batch(config, seed=0):
    from minis2s.data import collate
    rng = numpy.random.default_rng(seed)
    length, vocab = config["length"], config["vocab"]
    lengths = rng.integers(length // 2, length + 1, size=(2, config["batch"]))
    src = [rng.integers(4, vocab, size=n - 1).tolist() for n in lengths[0]]           # + <eos>
    tgt = [rng.integers(4, vocab, size=n - 1).tolist() for n in lengths[1]]
    return collate(src, tgt)


def torch_model(torch, config):
    """The PyTorch model as its users write it: embeddings, nn.Transformer, a Linear without bias."""
    nn = torch.nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            d = config["d_model"]
            self.src_embedding = nn.Embedding(config["vocab"], d, padding_idx=0)
            self.tgt_embedding = nn.Embedding(config["vocab"], d, padding_idx=0)
            self.transformer = nn.Transformer(d, config["heads"], config["layers"], config["layers"], config["ff"],
                                              dropout=0.0, norm_first=True)
            self.out = nn.Linear(d, config["vocab"], bias=False)
            position = torch.arange(4 * config["length"]).unsqueeze(1)
            frequency = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
            table = torch.zeros(4 * config["length"], 1, d)
            table[:, 0, 0::2] = torch.sin(position * frequency)
            table[:, 0, 1::2] = torch.cos(position * frequency)
            self.register_buffer("positions", table)
            self.scale = math.sqrt(d)

        def forward(self, src, tgt_in, src_padding, tgt_padding):
            x = self.src_embedding(src) * self.scale + self.positions[:src.shape[0]]
            y = self.tgt_embedding(tgt_in) * self.scale + self.positions[:tgt_in.shape[0]]
            causal = torch.triu(torch.ones(tgt_in.shape[0], tgt_in.shape[0], dtype=torch.bool), 1)   # True: masked
            h = self.transformer(x, y, tgt_mask=causal, src_key_padding_mask=src_padding,
                                 tgt_key_padding_mask=tgt_padding, memory_key_padding_mask=src_padding,
                                 tgt_is_causal=True)
            return self.out(h)
    return Model()


def copy_weights(torch, ours, theirs):
    """minis2s' parameters into the PyTorch model, by name."""
    names = {"src_input.embedding.weight": "src_embedding.weight", "tgt_input.embedding.weight": "tgt_embedding.weight",
             "out.weight": "out.weight"}
    state = {}
    for name, value in ours.params.items():
        target = names.get(name, "transformer." + name)
        state[target] = torch.from_numpy(numpy.array(value))
    missing = set(theirs.state_dict()) - set(state) - {"positions"}
    assert not missing, missing
    theirs.load_state_dict({**theirs.state_dict(), **state})


class Recomputing:
    """A Transformer decoded without its key/value cache: each step runs the whole prefix through the
    decoder again (what incremental decoding saves). The same interface as the model's."""

    def __init__(self, model):
        self.model = model

    def start(self, src, src_lengths):
        memory, padding, _, _ = self.model.encode(src, src_lengths, train=False)
        return (memory, padding), [], None                  # the decoder reads the whole memory each step

    def repeat_encoded(self, encoded, rows):
        memory, padding = encoded
        return memory[:, rows], padding[rows]

    def select_state(self, state, feed, rows):
        return [tokens[rows] for tokens in state], None

    def step(self, tokens, state, feed, encoded):
        from minis2s import backend
        from minis2s.nn.layers import linear_forward, log_softmax_forward
        model = self.model
        prefix = state + [tokens]
        y, _ = model.tgt_input.forward(backend.xp().stack(prefix), 0, train=False)          # (t, B, E)
        memory, padding = encoded
        h, (caches, _) = model.decoder.forward(y, memory, None, padding, train=False)
        logits, _ = linear_forward(h[-1], model.output_weight)
        weights = caches[-1].cross_attention.attention.weights[:, :, -1].mean(axis=1).T
        return log_softmax_forward(logits), prefix, None, weights


def decode_speed(config_name, repeats):
    """Greedy decoding of the batch's sources, with the cache and recomputing the prefix: the same
    tokens (checked), sentences/s, medians."""
    from minis2s.decode import greedy
    from minis2s.transformer import Transformer
    config = CONFIGS[config_name]
    model = Transformer(config["vocab"], config["vocab"], d_model=config["d_model"], num_heads=config["heads"],
                        num_encoder_layers=config["layers"], num_decoder_layers=config["layers"],
                        ff_size=config["ff"], dropout=0.0, seed=0)
    batch = make_batch(config)
    sources = [batch.src[:n - 1, b].tolist() for b, n in enumerate(batch.src_lengths)]      # without <eos>
    length = config["length"]
    cached = [h.tokens for h in greedy(model, sources, max_length=length)]
    again = [h.tokens for h in greedy(Recomputing(model), sources, max_length=length)]
    assert cached == again, "incremental decoding and recomputation disagree"
    times = {"cache": [], "recompute": []}
    for _ in range(repeats):
        for name, decoder in (("cache", model), ("recompute", Recomputing(model))):
            time.sleep(0.2)
            started = time.perf_counter()
            greedy(decoder, sources, max_length=length)
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    steps = max(len(tokens) for tokens in cached) + 1
    return dict(config=config_name, sentences=len(sources), steps=steps,
                cache_sent_s=len(sources) / medians["cache"], recompute_sent_s=len(sources) / medians["recompute"],
                speedup=medians["recompute"] / medians["cache"])


def measure(config_name, repeats, threads):
    import torch
    from minis2s import backend
    from minis2s.optim import Adam
    from minis2s.transformer import Transformer
    torch.set_num_threads(threads)
    config = CONFIGS[config_name]
    ours = Transformer(config["vocab"], config["vocab"], d_model=config["d_model"], num_heads=config["heads"],
                       num_encoder_layers=config["layers"], num_decoder_layers=config["layers"],
                       ff_size=config["ff"], dropout=0.0, norm_first=True, seed=0)
    theirs = torch_model(torch, config)
    copy_weights(torch, ours, theirs)
    batch = make_batch(config)
    tokens = int(batch.num_tokens)
    src, tgt_in = torch.from_numpy(batch.src), torch.from_numpy(batch.tgt_in)
    tgt_out = torch.from_numpy(batch.tgt_out)
    src_padding = torch.from_numpy(numpy.arange(batch.src.shape[0])[None, :] >= batch.src_lengths[:, None])
    tgt_padding = torch.from_numpy(numpy.arange(batch.tgt_in.shape[0])[None, :] >= batch.tgt_lengths[:, None])

    def torch_loss():
        logits = theirs(src, tgt_in, src_padding, tgt_padding)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1),
                                                 ignore_index=0)
    with torch.no_grad():
        theirs_loss = float(torch_loss())
    ours_loss = ours.loss(batch)
    agreement = abs(ours_loss - theirs_loss) / abs(theirs_loss)
    if agreement > 1e-5:
        sys.exit(f"{config_name}: the losses differ: minis2s {ours_loss:.7f}, PyTorch {theirs_loss:.7f}")

    optimizer = Adam(ours.params, ours.grads, lr=1e-4)
    torch_optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-4)

    def ours_step():
        ours.loss_and_grads(batch)
        optimizer.step()

    def torch_step():
        torch_optimizer.zero_grad(set_to_none=True)
        torch_loss().backward()
        torch_optimizer.step()

    times = {"minis2s": [], "PyTorch": []}
    for _ in range(repeats):
        for name, step in (("minis2s", ours_step), ("PyTorch", torch_step)):
            time.sleep(0.2)                                  # let the other side's BLAS threads stop spinning
            step()                                           # untimed
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return dict(config=config_name, **config, target_tokens=tokens, loss_minis2s=ours_loss,
                loss_torch=theirs_loss, loss_agreement=agreement, parameters=ours.num_params(),
                minis2s_tok_s=tokens / medians["minis2s"], torch_tok_s=tokens / medians["PyTorch"],
                minis2s_step_ms=1e3 * medians["minis2s"], torch_step_ms=1e3 * medians["PyTorch"],
                ratio=medians["PyTorch"] / medians["minis2s"], repeats=repeats, backend=backend.name())


def linear_shapes(config):
    """(rows, in, out) of every Linear in a training step of ``config``: the encoder layers' packed
    in-projection, out-projection and feed-forward pair, the decoder layers' with the cross-attention's
    query, packed key-value and out-projections, and the output layer; rows = batch x length."""
    d, ff, rows = config["d_model"], config["ff"], config["batch"] * config["length"]
    encoder = [(d, 3 * d), (d, d), (d, ff), (ff, d)]
    decoder = encoder + [(d, d), (d, 2 * d), (d, d)]
    layers = (encoder + decoder) * config["layers"]
    return [(rows, n_in, n_out) for n_in, n_out in layers + [(d, config["vocab"])]]


def products_speed(config_name, repeats, threads):
    """The step's products alone (forward x W^T, then dW = dy^T x and dx = dy W) on NumPy's BLAS and on
    PyTorch's, float32, the two taking turns as in ``measure``: milliseconds a step, medians."""
    import torch
    torch.set_num_threads(threads)
    shapes = linear_shapes(CONFIGS[config_name])
    rng = numpy.random.default_rng(0)
    ours = [tuple(rng.standard_normal(shape, dtype=numpy.float32) for shape in ((n, i), (o, i), (n, o)))
            for n, i, o in shapes]
    theirs = [tuple(torch.from_numpy(a) for a in arrays) for arrays in ours]

    def products(arrays):
        for x, weight, dy in arrays:
            x @ weight.T, dy.T @ x, dy @ weight

    times = {"NumPy": [], "PyTorch": []}
    for _ in range(repeats):
        for name, arrays in (("NumPy", ours), ("PyTorch", theirs)):
            time.sleep(0.2)
            products(arrays)                                 # untimed
            started = time.perf_counter()
            products(arrays)
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    gflop = sum(6 * n * i * o for n, i, o in shapes) / 1e9
    numpy_blas, torch_blas = blas_names()
    return dict(config=config_name, linears=len(shapes), gflop=gflop, numpy_ms=1e3 * medians["NumPy"],
                torch_ms=1e3 * medians["PyTorch"], ratio=medians["PyTorch"] / medians["NumPy"],
                numpy_blas=numpy_blas, torch_blas=torch_blas)


def blas_names():
    """(NumPy's BLAS, PyTorch's) as their builds name them."""
    import torch
    try:
        ours = numpy.__config__.CONFIG["Build Dependencies"]["blas"]
        ours = f"{ours['name']} {ours.get('version', '')}".strip()
    except (AttributeError, KeyError, TypeError):
        ours = "unknown"
    return ours, "MKL" if torch.backends.mkl.is_available() else "not MKL"


def machine():
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            name = next(line.split(":", 1)[1].strip() for line in stream if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["small", "base"], choices=tuple(CONFIGS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    import numpy as np
    import torch
    rows = [measure(name, args.repeats, args.threads) for name in args.configs]
    blas = [products_speed(name, args.repeats, args.threads) for name in args.configs]
    decoding = [decode_speed(name, max(3, args.repeats // 2)) for name in args.configs]
    meta = dict(date=datetime.date.today().isoformat(), machine=machine(), threads=args.threads,
                numpy=np.__version__, torch=torch.__version__, python=platform.python_version())
    lines = [f"# Transformer training: minis2s against torch.nn.Transformer ({meta['date']})", "",
             f"{meta['machine']}, {args.threads} threads; NumPy {meta['numpy']}, PyTorch {meta['torch']}, "
             f"Python {meta['python']}; medians of {args.repeats} steps a side, taking turns.", "",
             "| config | parameters | target tokens | loss minis2s / PyTorch | minis2s tok/s | PyTorch tok/s | "
             "minis2s / PyTorch |", "| --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row['config']} | {row['parameters']:,} | {row['target_tokens']:,} | "
                     f"{row['loss_minis2s']:.5f} / {row['loss_torch']:.5f} | {row['minis2s_tok_s']:,.0f} | "
                     f"{row['torch_tok_s']:,.0f} | {row['ratio']:.2f}x |")
    lines += ["", f"The step's matrix products alone, the same shapes (x W^T, dy^T x, dy W for each Linear), "
              f"NumPy's BLAS ({blas[0]['numpy_blas']}) against PyTorch's ({blas[0]['torch_blas']}):", "",
              "| config | Linears | GFLOP a step | NumPy ms | PyTorch ms | NumPy / PyTorch (speed) |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in blas:
        lines.append(f"| {row['config']} | {row['linears']} | {row['gflop']:.1f} | {row['numpy_ms']:.1f} | "
                     f"{row['torch_ms']:.1f} | {row['ratio']:.2f}x |")
    lines += ["", "Greedy decoding of the batch's sources (untrained weights, at most `length` steps), the "
              "same tokens both ways:", "",
              "| config | sentences | steps | with the key/value cache (sent/s) | recomputing the prefix (sent/s) | "
              "speed-up |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in decoding:
        lines.append(f"| {row['config']} | {row['sentences']} | {row['steps']} | {row['cache_sent_s']:,.1f} | "
                     f"{row['recompute_sent_s']:,.1f} | {row['speedup']:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "transformer_bench.json"), "w", encoding="utf-8") as stream:
        json.dump(dict(meta, rows=rows, products=blas, decoding=decoding), stream, indent=1)
    with open(os.path.join(args.out, "transformer_bench.md"), "w", encoding="utf-8") as stream:
        stream.write(text)


if __name__ == "__main__":
    main()
