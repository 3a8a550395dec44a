"""CPU against GPU, side by side: NumPy | Numba | CuPy reference | CuPy + kernels | PyTorch CPU | PyTorch CUDA.

    python benchmarks/gpu.py                                  # small, base and large; GRU + Bahdanau
    python benchmarks/gpu.py --configs small --cells lstm --attentions none --repeats 3
    python benchmarks/gpu.py --stand-in --out OUT                # the CuPy columns on the stand-in (a dry run)

For each configuration one minis2s model is built (seed 0) and copied into every column: minis2s on
NumPy (the reference path, then the Numba kernels), on CuPy (the reference path, then the CUDA
kernels), and the PyTorch twin on the CPU and on CUDA (cuDNN's GRU/LSTM for the encoder, the
decoder's cell step by step, TF32 off: `torch.backends.cuda.matmul.allow_tf32 = False`, the default).
Every column's loss on the same batch must agree with the NumPy reference's before any time is quoted.
Measured per column: training target tokens/s (forward, backward, Adam), greedy and beam-5
sentences/s (minis2s' search drives every model), medians of ``--repeats`` after a warm-up; on the GPU
the clock stops only after the device has finished (CUDA events, the device synchronised). For the CuPy
columns, the device -> host copies (and bytes) of one training step, one greedy and one beam decode
(``backend.transfers``), and the kernel launches of each with the host's time a launch (the call's time
until it returns, the device not waited for, over its launches: what a launch costs the CPU); these in
the table, not in gpu.json, whose rows keep API.md's keys. A column
that cannot run here is printed as "—" with the reason, never dropped. With at least one GPU column
measured, the rows go to benchmarks/results/gpu.json ({"config", "column", "train_tok_s",
"greedy_sent_s", "beam_sent_s", "device", "versions"}), gpu.md and gpu.png; without one, only the
table is printed (no GPU result is claimed).
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = ("NumPy", "Numba", "CuPy reference", "CuPy + kernels", "PyTorch CPU", "PyTorch CUDA")
GPU_BACKEND = "cupy"      # the CuPy columns' backend; tests put the stand-in here to run their code without a GPU


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["small", "base", "large"])
    parser.add_argument("--cells", nargs="+", default=["gru"])
    parser.add_argument("--attentions", nargs="+", default=["bahdanau"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--columns", nargs="+", default=list(COLUMNS), choices=COLUMNS)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--stand-in", action="store_true",
                        help="run the CuPy columns on the strict stand-in (fakecupy): a dry run of their code, "
                             "no GPU figure (the rows name the stand-in as their device)")
    args = parser.parse_args(argv)
    global GPU_BACKEND
    if args.stand_in:
        if os.path.abspath(args.out) == os.path.join(HERE, "results"):
            parser.error("--stand-in writes no GPU result into benchmarks/results: give --out")
        GPU_BACKEND = "fakecupy"
    rows, reasons = [], {}
    for config in args.configs:
        for cell in args.cells:
            for attention in args.attentions:
                reference_loss = None
                for column in args.columns:
                    why = unavailable(column)
                    if why:
                        reasons[column] = why
                        rows.append(dict(config=config, cell=cell, attention=attention, column=column, why=why))
                        continue
                    row = measure(column, config, cell, attention, args.repeats)
                    if reference_loss is None:
                        reference_loss = row["loss"]
                    elif abs(row["loss"] - reference_loss) > 1e-3 * abs(reference_loss):
                        sys.exit(f"{config} {cell} {attention}: {column} loss {row['loss']} != {reference_loss}")
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    table = markdown(rows)
    print(table)
    measured_on_gpu = [r for r in rows if "why" not in r and r["column"] in ("CuPy reference", "CuPy + kernels",
                                                                            "PyTorch CUDA")]
    if not measured_on_gpu:
        print("no GPU column ran here: nothing written (a GPU result is one that ran on a GPU)")
        return rows
    os.makedirs(args.out, exist_ok=True)
    keys = ("config", "column", "train_tok_s", "greedy_sent_s", "beam_sent_s", "device", "versions")   # as API.md fixes them
    with open(os.path.join(args.out, "gpu.json"), "w", encoding="utf-8") as stream:
        json.dump([{k: r.get(k) for k in keys} for r in rows if "why" not in r], stream, indent=1)
    with open(os.path.join(args.out, "gpu.md"), "w", encoding="utf-8") as stream:
        stream.write(table)
    plot(rows, os.path.join(args.out, "gpu.png"))
    return rows


def unavailable(column):
    """Why ``column`` cannot run on this machine, or None."""
    if column == "Numba":
        try:
            import minis2s.kernels  # noqa: F401
        except ImportError as error:
            return f"Numba cannot be loaded ({error})"
    if column.startswith("CuPy"):
        from minis2s import backend
        try:
            backend.use(GPU_BACKEND)
        except backend.BackendError as error:
            return str(error)
        finally:
            backend.use("numpy")
    if column.startswith("PyTorch"):
        try:
            import torch
        except ImportError:
            return "PyTorch is not installed (pip install torch==2.13.0)"
        if column == "PyTorch CUDA" and not torch.cuda.is_available():
            return f"PyTorch {torch.__version__} sees no CUDA device"
    return None


def measure(column, config_name, cell, attention, repeats):
    """One column of one row: the loss on the benchmark batch and the three rates."""
    from minis2s import backend, bench, dispatch
    from minis2s.data import collate
    from minis2s.decode import beam_search, greedy
    from minis2s.model import Seq2Seq
    from minis2s.optim import Adam
    config = bench.CONFIGS[config_name]
    src, tgt = bench.make_data(config)
    on_gpu = column == "PyTorch CUDA" or (column.startswith("CuPy") and GPU_BACKEND == "cupy")
    backend.use(GPU_BACKEND if column.startswith("CuPy") else "numpy")
    try:
        with dispatch.reference_path(column in ("NumPy", "CuPy reference")):
            model = Seq2Seq(config["vocab"], config["vocab"], cell=cell, attention=attention,
                            emb_size=config["emb_size"], hidden_size=config["hidden_size"], seed=0)
            batch = collate(src, tgt)
            if column.startswith("PyTorch"):
                import torch
                from minis2s.torch_twin import Decoding, TorchSeq2Seq, tensors
                device = "cuda" if column == "PyTorch CUDA" else "cpu"
                twin = TorchSeq2Seq.from_minis2s(model, device)
                inputs = tensors(batch, device)
                loss = twin.loss(*inputs).item()
                optimizer = torch.optim.Adam(twin.parameters(), lr=1e-3)
                decoder = Decoding(TorchSeq2Seq.from_minis2s(model, device))

                def train():
                    optimizer.zero_grad()
                    twin.loss(*inputs).backward()
                    optimizer.step()
                versions = dict(torch=torch.__version__)
                name = torch.cuda.get_device_name() if on_gpu else bench.machine().get("cpu", "CPU")
            else:
                loss = model.loss(batch)
                optimizer = Adam(model.params, model.grads, lr=1e-3)
                decoder = model

                def train():
                    model.loss_and_grads(batch)
                    optimizer.step()
                info = bench.machine()
                versions = {k: info[k] for k in ("numpy", "cupy") if k in info}
                name = info.get("gpu") or info.get("cpu", "CPU")
                if column.startswith("CuPy") and GPU_BACKEND == "fakecupy":
                    name = "fakecupy stand-in on the CPU (no GPU)"
            runs = dict(train=train, greedy=lambda: greedy(decoder, src, max_length=config["length"]),
                        beam=lambda: beam_search(decoder, src, beam_size=5, max_length=config["length"]))
            train_s = timed(runs["train"], repeats, on_gpu)
            greedy_s = timed(runs["greedy"], max(repeats // 2, 1), on_gpu)
            beam_s = timed(runs["beam"], max(repeats // 2, 1), on_gpu)
            copies = {}
            if column.startswith("CuPy"):          # device -> host copies and launches of one call each, untimed
                for what, run in runs.items():
                    backend.transfers.reset()
                    run()
                    copies[f"d2h_{what}"] = backend.transfers.count
                    copies[f"d2h_{what}_bytes"] = backend.transfers.bytes
                    copies[f"launches_{what}"], copies[f"host_us_{what}"] = launches(run, on_gpu)
    finally:
        backend.use("numpy")
    return dict(config=config_name, cell=cell, attention=attention, column=column, loss=float(loss),
                train_tok_s=batch.num_tokens / train_s, greedy_sent_s=len(src) / greedy_s,
                beam_sent_s=len(src) / beam_s, device=name, versions=versions, **copies)


def launches(function, on_gpu):
    """(kernel launches of one call, the host's microseconds a launch) or (None, None) where they cannot be
    counted. On the stand-in its own count of the operations CuPy would launch; on a GPU the CUDA kernels that
    CUPTI saw (through PyTorch's profiler, which traces every kernel of the process, CuPy's too)."""
    synchronize(on_gpu)
    started = time.perf_counter()
    function()
    host_seconds = time.perf_counter() - started          # until the call returns; the device not waited for
    synchronize(on_gpu)
    count = None
    if GPU_BACKEND == "fakecupy":
        from minis2s import fakecupy
        fakecupy.launches.reset()
        function()
        count = fakecupy.launches.count
    elif on_gpu:
        try:
            import torch
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CUDA]) as traced:
                function()
                synchronize(True)
            count = sum(1 for event in traced.events() if event.device_type == torch.autograd.DeviceType.CUDA)
        except Exception as error:                          # noqa: BLE001 - no PyTorch or no CUPTI: say so
            print(f"kernel launches not counted ({type(error).__name__}: {error})", file=sys.stderr)
    if not count:
        return None, None
    return count, 1e6 * host_seconds / count


def timed(function, repeats, on_gpu):
    """Median seconds of ``function`` after one untimed call; on the GPU between CUDA events, with the
    device synchronised, so that the time includes all the work the call queued."""
    function()
    synchronize(on_gpu)
    times = []
    for _ in range(repeats):
        if on_gpu:
            times.append(_cuda_event_seconds(function))
        else:
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def synchronize(on_gpu):
    if on_gpu:
        import cupy
        cupy.cuda.Device().synchronize()


def _cuda_event_seconds(function):
    import cupy
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    function()
    end.record()
    end.synchronize()
    cupy.cuda.Device().synchronize()        # PyTorch's work is on its own stream: wait for it too
    return cupy.cuda.get_elapsed_time(start, end) / 1000.0


def markdown(rows):
    """The table; "device -> host" gives the copies (and bytes) of one training step, one greedy and one beam
    decode of the batch, for the columns on a device (kernel launches are not counted: CuPy keeps no count)."""
    lines = ["| config | cell | attention | column | train tok/s | greedy sent/s | beam 5 sent/s "
             "| device -> host: train step, greedy, beam | launches (host µs a launch): train step, greedy, beam "
             "| device |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | --- | --- | --- |"]
    for r in rows:
        if "why" in r:
            lines.append(f"| {r['config']} | {r['cell']} | {r['attention']} | {r['column']} | — | — | — | — | — "
                         f"| {r['why']} |")
            continue
        copies = "; ".join(f"{r[f'd2h_{w}']} ({r[f'd2h_{w}_bytes']:,} B)" for w in ("train", "greedy", "beam")
                           ) if "d2h_train" in r else "—"
        counted = "; ".join("—" if r.get(f"launches_{w}") is None else
                            f"{r[f'launches_{w}']:,} ({r[f'host_us_{w}']:.1f})" for w in ("train", "greedy", "beam")
                            ) if "d2h_train" in r else "—"
        lines.append(f"| {r['config']} | {r['cell']} | {r['attention']} | {r['column']} | {r['train_tok_s']:,.0f} "
                     f"| {r['greedy_sent_s']:,.1f} | {r['beam_sent_s']:,.1f} | {copies} | {counted} | {r['device']} |")
    return "\n".join(lines) + "\n"


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    measured = [r for r in rows if "why" not in r]
    groups = sorted({(r["config"], r["cell"], r["attention"]) for r in measured})
    columns = [c for c in COLUMNS if any(r["column"] == c for r in measured)]
    figure, axes = plt.subplots(figsize=(2 + 2 * len(groups), 4))
    width = 0.8 / max(len(columns), 1)
    for k, column in enumerate(columns):
        values = [next((r["train_tok_s"] for r in measured if (r["config"], r["cell"], r["attention"]) == g
                        and r["column"] == column), 0.0) for g in groups]
        axes.bar(numpy.arange(len(groups)) + (k - len(columns) / 2) * width, values, width=width, label=column)
    axes.set_xticks(numpy.arange(len(groups)), [" ".join(g) for g in groups])
    axes.set_ylabel("training target tokens / s")
    axes.set_yscale("log")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
