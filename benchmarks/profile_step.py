"""Where a training step's (or a decode's) time goes: cProfile of the reference path and of the Numba path.

    python benchmarks/profile_step.py                              # small GRU+Bahdanau and base LSTM, no attention
    python benchmarks/profile_step.py --config base --cell gru --attention bahdanau
    python benchmarks/profile_step.py --config base --cell lstm --attention none --decode beam

For each path: one untimed warm-up (Numba compiles), then ``--steps`` training steps (forward, backward,
Adam) under cProfile; the functions with the most time of their own (tottime: matrix products written
with ``@`` count towards the function that runs them), per step. Writes
benchmarks/results/profile_<config>_<cell>_<attention>.md. With ``--decode greedy`` or ``--decode beam``
the benchmark's decoding of its sentences instead (beam 5, up to the config's length; the untrained
model ends no sentence early, so every decode runs that many steps), per decode, into
benchmarks/results/profile_<decode>_<config>_<cell>_<attention>.md.
"""
import argparse
import cProfile
import os
import pstats
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def profile_steps(config_name, cell, attention, fast, steps, top, decode=None):
    from minis2s import bench, kernels
    from minis2s.data import collate
    from minis2s.decode import beam_search, greedy
    from minis2s.model import Seq2Seq
    from minis2s.optim import Adam
    kernels.enable(fast)
    config = bench.CONFIGS[config_name]
    model = Seq2Seq(config["vocab"], config["vocab"], cell=cell, attention=attention, emb_size=config["emb_size"],
                    hidden_size=config["hidden_size"], seed=0)
    optimizer = Adam(model.params, model.grads, lr=1e-3)
    src, tgt = bench.make_data(config)
    batch = collate(src, tgt)

    def step():
        if decode == "greedy":
            greedy(model, src, max_length=config["length"])
        elif decode == "beam":
            beam_search(model, src, beam_size=5, max_length=config["length"])
        else:
            model.loss_and_grads(batch)
            optimizer.step()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    plain_ms = 1000 * (time.perf_counter() - started) / steps
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    kernels.enable(True)
    stats = pstats.Stats(profiler).stats
    rows = []
    for (filename, line, function), (_, calls, tottime, _, _) in stats.items():
        where = filename.replace("\\", "/")
        for marker in ("/minis2s/", "/kernels/"):
            if marker in where:
                where = marker.strip("/") + "/" + where.split(marker, 1)[1]
                break
        else:
            where = os.path.basename(where) if where.startswith("/") else where
        rows.append((tottime / steps * 1000, calls / steps, f"{where}:{function}"))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    return plain_ms, total, rows[:top]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--cell", default="gru")
    parser.add_argument("--attention", default="bahdanau")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--top", type=int, default=14)
    parser.add_argument("--decode", choices=("greedy", "beam"), default=None,
                        help="profile the benchmark's decoding (beam 5) instead of a training step")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    from minis2s import bench
    cases = ([(args.config, args.cell, args.attention)] if args.config
             else [("small", "gru", "bahdanau"), ("base", "lstm", "none")])
    info = bench.machine()
    for config_name, cell, attention in cases:
        steps = args.steps or (20 if config_name == "small" else 5)
        what = {"greedy": "greedy decode", "beam": "beam-5 decode", None: "training step"}[args.decode]
        unit = "decode" if args.decode else "step"
        config = bench.CONFIGS[config_name]
        detail = (f" ({config['batch']} sentences of {config['length']} words, up to {config['length']} steps)"
                  if args.decode else "")
        command = "python benchmarks/profile_step.py" + (
            f" --config {config_name} --cell {cell} --attention {attention} --decode {args.decode}" if args.decode else "")
        lines = [f"# Profile of a {what}: {config_name}, {cell}, attention {attention}{detail}", "",
                 f"Machine: {info.get('cpu', info['processor'])}, {info['cores']} cores; Python {info['python']}, "
                 f"NumPy {info['numpy']}. cProfile over {steps} {unit}s after a warm-up; milliseconds per {unit} of "
                 "each function's own time (a matrix product written with `@` counts towards the function that runs "
                 f"it). `{command}` reproduces it.", ""]
        for label, fast in (("reference path (MINIS2S_KERNELS=0)", False), ("Numba path", True)):
            plain_ms, total, rows = profile_steps(config_name, cell, attention, fast, steps, args.top, args.decode)
            lines += [f"## {label}: {plain_ms:.1f} ms a {unit} without the profiler, {total:.1f} ms under it", "",
                      f"| ms / {unit} | calls / {unit} | function |", "| ---: | ---: | --- |"]
            lines += [f"| {ms:.2f} | {calls:g} | `{name}` |" for ms, calls, name in rows]
            lines.append("")
        text = "\n".join(lines)
        print(text)
        os.makedirs(args.out, exist_ok=True)
        prefix = f"profile_{args.decode}_" if args.decode else "profile_"
        with open(os.path.join(args.out, f"{prefix}{config_name}_{cell}_{attention}.md"), "w",
                  encoding="utf-8") as stream:
            stream.write(text)


if __name__ == "__main__":
    main()
