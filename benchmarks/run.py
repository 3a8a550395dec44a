"""Training and decoding throughput: minis2s' reference path, its Numba path, and PyTorch, in one run.

    python benchmarks/run.py                      # small and base, LSTM and GRU, with/without attention
    python benchmarks/run.py --configs small --repeats 3

For each configuration (see ``minis2s.bench.CONFIGS``) it builds one minis2s model and copies its
weights into the PyTorch twin. Before timing anything it checks that the reference path, the Numba path
and PyTorch give the same loss and the same greedy output, token for token. Then it times a training
step (forward + backward + Adam; target tokens/s), greedy and beam-5 decoding (sentences/s) of the
untrained model: medians over repeats, after untimed warm-up runs (where Numba compiles), the three
paths taking turns run by run. Numba's first-call compile time is reported separately (run with an
empty NUMBA_CACHE_DIR to measure it). PyTorch uses the same number of threads. Results go to
benchmarks/results/ as JSON and Markdown, with the machine named, and a PNG plot.
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numpy

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["small", "base"])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    parser.add_argument("--attentions", nargs="+", default=["none", "bahdanau"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()

    from minis2s import bench, kernels
    from minis2s.data import collate
    from minis2s.decode import beam_search, greedy
    from minis2s.model import Seq2Seq
    from minis2s.optim import Adam
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
            from minis2s.torch_twin import Decoding, TorchSeq2Seq, tensors
        except ImportError:
            torch = None

    kernels.enable(True)
    # Numba's first calls: compile every kernel (or load it from the cache; NUMBA_CACHE_DIR empty = compile)
    # on a tiny model of each cell with attention: a training step, an Adam step that takes the fused
    # update, and beam search.
    compile_started = time.perf_counter()
    for cell in ("lstm", "gru"):
        tiny = Seq2Seq(30, 30, cell=cell, attention="bahdanau", emb_size=4, hidden_size=8, seed=0)
        tiny_src, tiny_tgt = [[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14]]
        tiny.loss_and_grads(collate(tiny_src, tiny_tgt))
        sizes = {"w": kernels.optim.PARALLEL_FROM, "b": 3}                 # the parallel update and the other
        Adam({k: numpy.zeros(n, dtype=numpy.float32) for k, n in sizes.items()},
             {k: numpy.ones(n, dtype=numpy.float32) for k, n in sizes.items()}).step()
        beam_search(tiny, tiny_src, beam_size=2, max_length=4)
    compile_seconds = time.perf_counter() - compile_started
    peak = sgemm_peak()

    rows = []
    for name in args.configs:
        config = bench.CONFIGS[name]
        src, tgt = bench.make_data(config)
        batch = collate(src, tgt)
        tokens = batch.num_tokens
        for cell in args.cells:
            for attention in args.attentions:
                row = dict(config=name, cell=cell, attention=attention, tokens=tokens, **config)
                model = Seq2Seq(config["vocab"], config["vocab"], cell=cell, attention=attention,
                                emb_size=config["emb_size"], hidden_size=config["hidden_size"], seed=0)
                agreed = {}                                      # the two paths agree before anything is timed
                for flag in (False, True):
                    kernels.enable(flag)
                    outputs = greedy(model, src, max_length=config["length"])
                    agreed[flag] = (model.loss(batch), [h.tokens for h in outputs])
                kernels.enable(True)
                reference_loss, reference_greedy = agreed[False]
                row["numba_loss_difference"] = abs(agreed[True][0] - reference_loss)
                row["numba_same_greedy"] = agreed[True][1] == reference_greedy
                if row["numba_loss_difference"] > 1e-5 * abs(reference_loss):
                    sys.exit(f"{name} {cell} {attention}: Numba path loss {agreed[True][0]} "
                             f"!= reference {reference_loss}")
                train, greedy_runs, beam_runs = {}, {}, {}
                for path in ("reference", "numba"):
                    trained = Seq2Seq(config["vocab"], config["vocab"], cell=cell, attention=attention,
                                      emb_size=config["emb_size"], hidden_size=config["hidden_size"], seed=0)
                    optimizer = Adam(trained.params, trained.grads, lr=1e-3)
                    train[path] = (_train_step(trained, optimizer, batch), path == "numba")
                    greedy_runs[path] = (lambda: greedy(model, src, max_length=config["length"]), path == "numba")
                    beam_runs[path] = (lambda: beam_search(model, src, beam_size=5, max_length=config["length"]),
                                       path == "numba")
                if torch is not None:
                    twin = TorchSeq2Seq.from_minis2s(model)
                    decoding_twin = Decoding(TorchSeq2Seq.from_minis2s(model))   # untouched by training steps
                    twin_loss = twin.loss(*tensors(batch)).item()
                    with torch.no_grad():
                        twin_greedy = [h.tokens for h in greedy(decoding_twin, src, max_length=config["length"])]
                    row["torch_loss_difference"] = abs(twin_loss - reference_loss)
                    row["torch_same_greedy"] = twin_greedy == reference_greedy
                    if row["torch_loss_difference"] > 1e-3 * abs(reference_loss):
                        sys.exit(f"{name} {cell} {attention}: PyTorch loss {twin_loss} != minis2s {reference_loss}")
                    train["torch"] = (_torch_train_step(torch, twin, tensors(batch)), True)
                    # the twin decodes through minis2s' own beam search loop (its top-k kernel included):
                    # what differs is the model's step
                    greedy_runs["torch"] = (_no_grad(torch, lambda: greedy(decoding_twin, src,
                                                                           max_length=config["length"])), True)
                    beam_runs["torch"] = (_no_grad(torch, lambda: beam_search(decoding_twin, src, beam_size=5,
                                                                              max_length=config["length"])), True)
                for path, seconds in interleaved(train, args.repeats, 2).items():
                    row[f"{path}_train_tok_s"] = tokens / seconds
                decode_repeats = max(args.repeats // 2, 3)
                for path, seconds in interleaved(greedy_runs, decode_repeats, 1).items():
                    row[f"{path}_greedy_sent_s"] = len(src) / seconds
                for path, seconds in interleaved(beam_runs, decode_repeats, 1).items():
                    row[f"{path}_beam5_sent_s"] = len(src) / seconds
                row["matmul_gflop"] = matmul_flops(config, cell, attention, tokens) / 1e9
                peak = max(peak, sgemm_peak())              # the machine's best, over the whole run
                rows.append(row)
                print(json.dumps(row), flush=True)

    info = bench.machine()
    info.update(threads=args.threads, numba_compile_seconds=compile_seconds, sgemm_peak_gflop_s=peak,
                torch=None if torch is None else torch.__version__,
                date=datetime.date.today().isoformat(), repeats=args.repeats)
    stamp = f"{info['backend']}_{'-'.join(args.configs)}"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"bench_{stamp}.json"), "w", encoding="utf-8") as stream:
        json.dump({"machine": info, "rows": rows}, stream, indent=1)
    table = markdown(rows, info)
    with open(os.path.join(args.out, f"bench_{stamp}.md"), "w", encoding="utf-8") as stream:
        stream.write(table)
    print(table)
    plot(rows, os.path.join(args.out, f"bench_{stamp}.png"))


def sgemm_peak(repeats=5):
    """GFLOP/s of a large float32 matrix product on this machine (the output projection's shape at base).

    Measured at the start and after every row; the fastest is kept: on a virtual machine whose CPU is
    partly taken by neighbours (``st`` in top) one measurement may fall in a slow spell."""
    a = numpy.random.default_rng(0).random((1920, 512), dtype=numpy.float32)
    b = numpy.random.default_rng(1).random((512, 8000), dtype=numpy.float32)
    a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * 1920 * 512 * 8000 / statistics.median(times) / 1e9


def matmul_flops(config, cell, attention, tokens):
    """Multiply-adds x 2 of every matrix product in one training step of the benchmark's one-layer model,
    as the Numba path runs it.

    A product in the forward pass (x W^T) has two in the backward (dW = dy^T x, dx = dy W): 3 in all.
    N = T B tokens a side, G gates, E emb, H hidden (= memory and attention size), V vocabulary:
        encoder   3 * 2N G H (E + H)                 input side and recurrent side
        decoder   3 * 2N G H (E + [H, bahdanau] + H)  the context vector enters layer 0's input
        output    3 * 2N' H V                         N' the real target tokens (``tokens``): the Numba path
                                                      projects no padded position (PyTorch's step projects all N)
        bahdanau  3 * 2N H H * 2                      K W_k^T once, W_q q at every step
    Attention's scores and context (the (S, B, H) sums of each step) are not counted: they are not
    matrix products here.
    """
    gates = {"lstm": 4, "gru": 3}[cell]
    n, e, h, v = config["batch"] * config["length"], config["emb_size"], config["hidden_size"], config["vocab"]
    extra = h if attention == "bahdanau" else 0
    flops = 6 * n * gates * h * (e + h) + 6 * n * gates * h * (e + extra + h) + 6 * tokens * h * v
    if attention == "bahdanau":
        flops += 2 * 6 * n * h * h
    return flops


SAMPLES_BUDGET = 0.1       # seconds of back-to-back timed runs a turn: 1 to 9 samples, from the untimed run's time


def interleaved(cases, repeats, warmup):
    """cases {path: (function, kernels on?)} -> {path: median seconds}. The paths take turns, run by run,
    so that a slow spell of a shared machine slows all of them alike instead of one column. Each turn
    starts with a pause and an untimed run: the thread pools of the path before (OpenBLAS', PyTorch's
    OpenMP) keep spinning for a while after their last call, and without the pause measurably slowed
    the next path (up to 2x here). Then the turn's timed runs, back to back as in training: as many as
    fit in about ``SAMPLES_BUDGET`` seconds (1 to 9; a `small` step or decode, 6-30 ms, gets several, so
    that its median is not that of 3 or 5 values), each one a sample."""
    from minis2s import kernels
    times = {path: [] for path in cases}
    for run in range(warmup + repeats):
        for path, (function, fast) in cases.items():
            kernels.enable(fast)
            time.sleep(0.2)
            started = time.perf_counter()
            function()                                          # settle
            samples = min(9, max(1, round(SAMPLES_BUDGET / (time.perf_counter() - started))))
            for _ in range(samples):
                started = time.perf_counter()
                function()
                elapsed = time.perf_counter() - started
                if run >= warmup:
                    times[path].append(elapsed)
    kernels.enable(True)
    return {path: statistics.median(values) for path, values in times.items()}


def _train_step(model, optimizer, batch):
    def step():
        model.loss_and_grads(batch)
        optimizer.step()
    return step


def _torch_train_step(torch, twin, inputs):
    optimizer = torch.optim.Adam(twin.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad()
        twin.loss(*inputs).backward()
        optimizer.step()
    return step


def _no_grad(torch, function):
    def run():
        with torch.no_grad():
            return function()
    return run


def markdown(rows, info):
    detail = ", ".join(info[key] for key in ("cpu_arch", "simd") if key in info)
    lines = [f"Machine: {info.get('cpu', info['processor'])}{f' ({detail})' if detail else ''}, {info['cores']} cores, "
             f"{info['threads']} threads; "
             f"Python {info['python']}, NumPy {info['numpy']}, PyTorch {info['torch']}; backend {info['backend']}; "
             f"{info['date']}; medians of {info['repeats']} turns of training steps (decoding: "
             f"{max(info['repeats'] // 2, 3)} turns) after warm-up, the three paths taking turns run by run, "
             f"each turn 1 to 9 timed runs back to back (as many as fit in {SAMPLES_BUDGET:g} s), each a sample. "
             "Numba's first call (compiling the kernels, or loading them from its cache): "
             f"{info['numba_compile_seconds']:.1f} s, excluded.", "",
             "| config | cell | attention | train tok/s: reference | Numba | PyTorch | Numba/PyTorch "
             "| greedy sent/s: reference | Numba | PyTorch | beam 5 sent/s: reference | Numba | PyTorch "
             "| loss difference, same greedy output: Numba vs reference; PyTorch vs reference |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        ratio = r["numba_train_tok_s"] / r["torch_train_tok_s"] if "torch_train_tok_s" in r else float("nan")
        lines.append(f"| {r['config']} | {r['cell']} | {r['attention']} | {r['reference_train_tok_s']:,.0f} "
                     f"| {r['numba_train_tok_s']:,.0f} | {r.get('torch_train_tok_s', float('nan')):,.0f} | {ratio:.2f} "
                     f"| {r['reference_greedy_sent_s']:,.0f} | {r['numba_greedy_sent_s']:,.0f} "
                     f"| {r.get('torch_greedy_sent_s', float('nan')):,.0f} | {r['reference_beam5_sent_s']:,.0f} "
                     f"| {r['numba_beam5_sent_s']:,.0f} | {r.get('torch_beam5_sent_s', float('nan')):,.0f} "
                     f"| {r['numba_loss_difference']:.0e}, {r['numba_same_greedy']}; "
                     f"{r.get('torch_loss_difference', float('nan')):.0e}, {r.get('torch_same_greedy', '-')} |")
    peak = info["sgemm_peak_gflop_s"]
    lines += ["", f"Numba path / PyTorch; and the training step's matrix products (GFLOP, counted from the shapes, "
              "the output layer's over the real target tokens only, as the Numba path runs it) "
              f"against the machine's float32 matrix-product peak measured in the same run ({peak:.0f} GFLOP/s, "
              "the fastest of 9 medians of a 1,920 x 512 by 512 x 8,000 product): the Numba step's"
              " matrix-product GFLOP/s as a share of "
              "that peak, which is also the share of the step its products would take if all of them ran at "
              "the peak.", "",
              "The last four columns set the training goal against that peak: the step's products alone at the "
              "peak, the two steps as measured, and the share of the peak at which the products alone would "
              "take all of the time the goal leaves (PyTorch's step / the goal): above 100%, no step whose "
              "products are these reaches the goal on this machine, however little else it does.", "",
              "| config | cell | attention | training | greedy | beam 5 | matmul GFLOP / step | % of peak "
              "| ms a step: products at the peak | Numba | PyTorch | goal | % of peak the goal needs |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        step_s = r["tokens"] / r["numba_train_tok_s"]
        at_peak = r["matmul_gflop"] / peak
        goal = training_goal(r["config"], r["cell"], r["attention"])
        torch_s = r["tokens"] / r["torch_train_tok_s"] if "torch_train_tok_s" in r else None
        needs = f"{at_peak / (torch_s / goal):.0%}" if goal and torch_s else "-"
        lines.append(f"| {r['config']} | {r['cell']} | {r['attention']} "
                     + "".join(f"| {r[f'numba_{key}'] / r[f'torch_{key}']:.2f} " if f"torch_{key}" in r else "| - "
                               for key in ("train_tok_s", "greedy_sent_s", "beam5_sent_s"))
                     + f"| {r['matmul_gflop']:.1f} | {r['matmul_gflop'] / step_s / peak:.0%} "
                     + f"| {1000 * at_peak:.1f} | {1000 * step_s:.1f} | "
                     + (f"{1000 * torch_s:.1f}" if torch_s else "-")
                     + f" | {f'{goal:g}x' if goal else '-'} | {needs} |")
    return "\n".join(lines) + "\n"


def training_goal(config, cell, attention):
    """The training goal of the CPU-speed issue, Numba path / PyTorch: 2x at ``small``, 1.25x at ``base``
    LSTM without attention, 2x at ``base`` GRU + Bahdanau; None where it sets none."""
    if config == "small":
        return 2.0
    return {("lstm", "none"): 1.25, ("gru", "bahdanau"): 2.0}.get((cell, attention)) if config == "base" else None


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    labels = [f"{r['config']}\n{r['cell']}\n{r['attention']}" for r in rows]
    x = numpy.arange(len(rows))
    figure, axes = plt.subplots(figsize=(1.4 * len(rows) + 2, 4))
    for offset, (key, label) in enumerate((("reference", "minis2s reference"), ("numba", "minis2s Numba"),
                                           ("torch", "PyTorch"))):
        values = [r.get(f"{key}_train_tok_s", 0.0) for r in rows]
        axes.bar(x + (offset - 1) * 0.27, values, width=0.27, label=label)
    axes.set_xticks(x, labels, fontsize=8)
    axes.set_ylabel("training target tokens / s")
    axes.set_yscale("log")
    axes.legend()
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
