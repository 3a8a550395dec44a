"""Throughput benchmark: training (forward + backward + Adam step, target tokens/s) and decoding
(greedy and beam 5, sentences/s) on the active backend, for fixed configurations:

    small   emb 64,  hidden 128, batch 32, length 20, vocabulary 1,000
    base    emb 256, hidden 512, batch 64, length 30, vocabulary 8,000

each with LSTM and GRU, with and without Bahdanau attention. Every timing is the median of
``repeats`` runs after ``warmup`` untimed ones (which is when Numba compiles and CuPy loads its
kernels); the GPU is synchronised before each clock is read. Random token ids of full length
(no padding), the same for every column.

``benchmarks/run.py`` calls this and writes the committed results.
"""
import json
import platform
import statistics
import time

import numpy

from . import backend

CONFIGS = {
    "small": dict(emb_size=64, hidden_size=128, batch=32, length=20, vocab=1000),
    "base": dict(emb_size=256, hidden_size=512, batch=64, length=30, vocab=8000),
    "large": dict(emb_size=512, hidden_size=1024, batch=128, length=50, vocab=16000),
}


def synchronize():
    if backend.name() == "cupy":
        backend.xp().cuda.Device().synchronize()


def median_time(function, repeats, warmup):
    for _ in range(warmup):
        function()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_data(config, seed=0, decode_batch=None):
    rng = numpy.random.default_rng(seed)
    batch, length, vocab = config["batch"], config["length"], config["vocab"]
    src = rng.integers(4, vocab, size=(batch, length)).tolist()
    tgt = rng.integers(4, vocab, size=(batch, length - 1)).tolist()   # + <eos> = length target tokens
    return src, tgt


def bench_minis2s(name, cell, attention, repeats=5, warmup=2, decode=True, dtype="float32"):
    """One row of the table for minis2s on the active backend: a dict of measurements."""
    from .batch import collate
    from .decode import beam_search, greedy
    from .model import Seq2Seq
    from .optim import Adam
    config = CONFIGS[name]
    model = Seq2Seq(config["vocab"], config["vocab"], cell=cell, attention=attention, emb_size=config["emb_size"],
                    hidden_size=config["hidden_size"], dtype=dtype, seed=0)
    optimizer = Adam(model.params, model.grads, lr=1e-3)
    src, tgt = make_data(config)
    batch = collate(src, tgt)
    tokens = batch.num_tokens

    def train_step():
        model.loss_and_grads(batch)
        optimizer.step()

    seconds = median_time(train_step, repeats, warmup)
    row = dict(config=name, cell=cell, attention=attention, train_tokens_per_s=tokens / seconds,
               train_step_ms=1000 * seconds, loss=model.loss(batch))
    if decode:
        max_length = config["length"]
        greedy_s = median_time(lambda: greedy(model, src, max_length=max_length), max(repeats // 2, 1), 1)
        beam_s = median_time(lambda: beam_search(model, src, beam_size=5, max_length=max_length),
                             max(repeats // 2, 1), 1)
        row.update(greedy_sentences_per_s=len(src) / greedy_s, beam5_sentences_per_s=len(src) / beam_s)
    return row


def machine():
    info = dict(python=platform.python_version(), numpy=numpy.__version__, backend=backend.name(),
                processor=platform.processor() or platform.machine(), system=platform.platform())
    flags = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name") and "cpu" not in info:
                    info["cpu"] = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    # a virtual machine's "model name" can stay the same across different hosts: the microarchitecture as
    # LLVM sees it (what Numba compiles for) and the widest vector instructions tell them apart
    try:
        import llvmlite.binding
        info["cpu_arch"] = llvmlite.binding.get_host_cpu_name()
    except Exception:              # llvmlite comes with Numba; without it the line just says less
        pass
    if flags:
        info["simd"] = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE/other"
    import os
    info["cores"] = os.cpu_count()
    if backend.name() == "cupy":
        cupy = backend.xp()
        info["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        info["cupy"] = cupy.__version__
    return info


def add_arguments(parser):
    parser.add_argument("--config", choices=tuple(CONFIGS) + ("all",), default="small")
    parser.add_argument("--cell", choices=("lstm", "gru", "all"), default="all")
    parser.add_argument("--attention", choices=("none", "bahdanau", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--no-decode", action="store_true", help="time training only")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")


def run_cli(args):
    configs = list(CONFIGS) if args.config == "all" else [args.config]
    cells = ["lstm", "gru"] if args.cell == "all" else [args.cell]
    attentions = ["none", "bahdanau"] if args.attention == "all" else [args.attention]
    info = machine()
    print(f"minis2s bench on {info.get('cpu', info['processor'])} ({info['cores']} cores), backend {info['backend']}"
          + (f", GPU {info['gpu']}" if "gpu" in info else ""))
    print(f"{'config':<7}{'cell':<6}{'attention':<10}{'train tok/s':>13}{'step ms':>10}"
          + ("" if args.no_decode else f"{'greedy sent/s':>15}{'beam5 sent/s':>14}"))
    rows = []
    for name in configs:
        for cell in cells:
            for attention in attentions:
                row = bench_minis2s(name, cell, attention, args.repeats, decode=not args.no_decode)
                rows.append(row)
                line = f"{name:<7}{cell:<6}{attention:<10}{row['train_tokens_per_s']:>13,.0f}{row['train_step_ms']:>10.1f}"
                if not args.no_decode:
                    line += f"{row['greedy_sentences_per_s']:>15,.1f}{row['beam5_sentences_per_s']:>14,.1f}"
                print(line, flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump({"machine": info, "rows": rows}, stream, indent=1)
    return 0
