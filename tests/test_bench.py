"""benchmarks/gpu.py without a GPU: its CuPy columns' code on the stand-in, and "—" with the reason; the PyTorch
twin the benchmarks compare with."""
import importlib.util
import pathlib

import numpy
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cupy_columns_run_on_the_stand_in_and_agree(gpu_bench, monkeypatch):
    monkeypatch.setattr(gpu_bench, "GPU_BACKEND", "fakecupy")
    numpy_row = gpu_bench.measure("NumPy", "small", "gru", "none", 1)
    for column in ("CuPy reference", "CuPy + kernels"):
        row = gpu_bench.measure(column, "small", "gru", "none", 1)
        assert row["loss"] == pytest.approx(numpy_row["loss"], rel=1e-5)
        assert row["train_tok_s"] > 0 and row["greedy_sent_s"] > 0 and row["beam_sent_s"] > 0
        assert row["d2h_train"] == 0                                 # a training step never waits for the device
        assert row["launches_train"] > 100 and row["host_us_train"] > 0   # the stand-in's count of CuPy's kernels
        assert 1 <= row["d2h_greedy"] <= 20 + 4                     # the "all finished?" flag of each step (20
        assert row["d2h_beam"] >= 1                                  # at most), the lengths and results once;
        # beam search on the stand-in is the textbook search (a copy a step a sentence); its batched twin, which
        # a GPU runs, copies a flag a step: test_decode.py's test_the_batched_search_copies_one_flag_a_step
    assert "d2h_train" not in numpy_row


def test_a_column_that_cannot_run_is_shown_with_its_reason(gpu_bench, tmp_path, capsys):
    from minis2s import backend
    if "cupy" in backend.available():
        pytest.skip("CuPy and a GPU are present here")
    rows = gpu_bench.main(["--configs", "small", "--attentions", "none", "--repeats", "1", "--columns", "NumPy",
                           "CuPy reference", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| small | gru | none | CuPy reference | — | — | — | — | — | backend 'cupy'" in printed
    assert [r["column"] for r in rows] == ["NumPy", "CuPy reference"]
    assert not (tmp_path / "gpu.json").exists()                    # no GPU column ran: no GPU result claimed


def test_the_pytorch_cpu_column_agrees(gpu_bench):
    pytest.importorskip("torch")
    numpy_row = gpu_bench.measure("NumPy", "small", "lstm", "bahdanau", 1)
    torch_row = gpu_bench.measure("PyTorch CPU", "small", "lstm", "bahdanau", 1)
    assert torch_row["loss"] == pytest.approx(numpy_row["loss"], rel=1e-5)


def test_the_cpu_benchmark_names_the_microarchitecture_it_ran_on():
    """A virtual machine's "model name" (say "AMD EPYC") can stay the same across hosts whose speed differs:
    benchmarks/run.py's results name the microarchitecture Numba compiles for and the widest vector unit."""
    from minis2s import bench
    spec = importlib.util.spec_from_file_location("cpu_bench", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = bench.machine()
    assert info.get("cpu_arch")                                       # llvmlite comes with Numba
    info.update(threads=2, torch="-", date="today", repeats=5, numba_compile_seconds=0.1, sgemm_peak_gflop_s=1.0)
    header = module.markdown([], info).splitlines()[0]
    assert f"({info['cpu_arch']}" in header
    if "simd" in info:                                                # Linux: /proc/cpuinfo's flags
        assert info["simd"] in header


def test_the_cpu_benchmark_sets_each_training_goal_against_the_peak():
    """The last columns of benchmarks/run.py's second table: products alone at the measured peak, both steps,
    the issue's goal, and the share of the peak the products would need to fit the time the goal leaves."""
    from minis2s import bench
    spec = importlib.util.spec_from_file_location("cpu_bench", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = bench.machine()
    info.update(threads=2, torch="-", date="today", repeats=5, numba_compile_seconds=0.1, sgemm_peak_gflop_s=200.0)
    speeds = dict(reference_train_tok_s=1.0, reference_greedy_sent_s=1.0, reference_beam5_sent_s=1.0,
                  numba_greedy_sent_s=1.0, numba_beam5_sent_s=1.0, numba_loss_difference=0.0, numba_same_greedy=True)
    rows = [dict(config="base", cell="gru", attention="bahdanau", tokens=1000, numba_train_tok_s=2000.0,
                 torch_train_tok_s=1250.0, torch_greedy_sent_s=1.0, torch_beam5_sent_s=1.0, matmul_gflop=80.0,
                 **speeds),
            dict(config="base", cell="lstm", attention="none", tokens=1000, numba_train_tok_s=2000.0,
                 matmul_gflop=80.0, **speeds),
            dict(config="base", cell="gru", attention="none", tokens=1000, numba_train_tok_s=2000.0,
                 torch_train_tok_s=1250.0, torch_greedy_sent_s=1.0, torch_beam5_sent_s=1.0, matmul_gflop=80.0,
                 **speeds)]
    lines = module.markdown(rows, info).splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[-3:]]
    # 80 GFLOP at 200 GFLOP/s: 400 ms; PyTorch's step 800 ms, the goal 2x leaves 400 ms: 100% of the peak
    assert cells[0][3:] == ["1.60", "1.00", "1.00", "80.0", "80%", "400.0", "500.0", "800.0", "2x", "100%"]
    assert cells[1][-5:] == ["400.0", "500.0", "-", "1.25x", "-"]      # no PyTorch column: nothing to set it against
    assert cells[2][-2:] == ["-", "-"]                                 # base GRU without attention: the issue sets none


def test_the_profile_script_profiles_a_training_step_or_a_decode():
    """benchmarks/profile_step.py: per training step by default, per decode with --decode; each run is what it
    says (the decode's functions in one, the loss's in the other)."""
    spec = importlib.util.spec_from_file_location("profile_step", ROOT / "benchmarks" / "profile_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = {}
    for decode in (None, "greedy", "beam"):
        plain_ms, total, rows = module.profile_steps("small", "gru", "none", True, 1, 500, decode)
        assert plain_ms > 0 and total > 0
        names[decode] = {name.rsplit(":", 1)[1] for _, _, name in rows}
    assert "loss_and_grads" in names[None] and "greedy" not in names[None]
    assert "greedy" in names["greedy"] and "loss_and_grads" not in names["greedy"]
    assert "beam_search" in names["beam"] and "greedy" not in names["beam"]


def test_the_cpu_benchmark_takes_several_samples_a_turn_of_a_short_run(monkeypatch):
    """benchmarks/run.py's turns: after the pause and an untimed run, as many timed runs back to back as fit in
    the budget (9 at most), each a sample; a run longer than the budget is one sample a turn."""
    spec = importlib.util.spec_from_file_location("cpu_bench", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module.time, "sleep", lambda seconds: None)
    clock = {"now": 0.0}
    monkeypatch.setattr(module.time, "perf_counter", lambda: clock["now"])
    calls = {"short": 0, "long": 0}

    def run(name, seconds):
        def function():
            calls[name] += 1
            clock["now"] += seconds
        return function
    medians = module.interleaved({"short": (run("short", 0.02), True), "long": (run("long", 0.3), False)}, 3, 1)
    assert calls == {"short": 4 * (1 + 5), "long": 4 * (1 + 1)}        # 0.1 s / 0.02 s = 5 samples a turn
    assert medians == pytest.approx({"short": 0.02, "long": 0.3})


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention, bidirectional, attentional_output",
                         [("none", False, False), ("bahdanau", False, False), ("none", True, False),
                          ("bahdanau", True, True), ("bahdanau", False, True)])
def test_the_pytorch_twin_computes_minis2s_loss_and_greedy_output_as_a_pytorch_user_would(
        on_numpy, cell, attention, bidirectional, attentional_output):
    """Where nothing feeds back (no attention) the twin's decoder is one nn.GRU / nn.LSTM call over the whole
    target sequence, as minis2s' and a PyTorch user's; with Bahdanau attention a cell step by step. Either
    way the loss on copied weights is minis2s' (float32, 1e-5) and greedy decoding gives the same tokens,
    with a bidirectional encoder (its bridge) and the attentional output too; and the way back,
    ``to_minis2s``, gives every weight exactly."""
    torch = pytest.importorskip("torch")
    from minis2s.data import collate
    from minis2s.decode import greedy
    from minis2s.model import Seq2Seq
    from minis2s.torch_twin import Decoding, TorchSeq2Seq, tensors
    model = Seq2Seq(40, 40, cell=cell, attention=attention, emb_size=16, hidden_size=24, seed=3,
                    bidirectional=bidirectional, attentional_output=attentional_output)
    for value in model.params.values():                   # zero biases and v (minis2s' start) would hide a swap
        value += numpy.random.default_rng(value.size).normal(0, 0.3, value.shape).astype(value.dtype)
    twin = TorchSeq2Seq.from_minis2s(model)
    recurrent = torch.nn.GRU if cell == "gru" else torch.nn.LSTM
    assert isinstance(twin.decoder, recurrent) == (attention == "none")
    rng = numpy.random.default_rng(0)
    sources = [rng.integers(4, 40, size=n).tolist() for n in (5, 3, 7)]
    batch = collate(sources, [rng.integers(4, 40, size=n).tolist() for n in (4, 6, 2)])
    with torch.no_grad():
        theirs = float(twin.loss(*tensors(batch)))
    assert theirs == pytest.approx(model.loss(batch), rel=1e-5)
    ours = [h.tokens for h in greedy(model, sources, max_length=8)]
    assert [h.tokens for h in greedy(Decoding(twin), sources, max_length=8)] == ours
    back = twin.to_minis2s()
    assert {**back.config, "seed": 3} == model.config                # the seed only chose the weights
    assert all(numpy.array_equal(back.params[name], value) for name, value in model.params.items())


def test_the_transformer_benchmark_times_the_products_the_training_step_runs(monkeypatch):
    """benchmarks/transformer.py's products-alone table: its list of Linear shapes is the step's own, every
    product the model runs in a training step (rows, in, out) and no other (checked at a tiny size of the
    benchmark's layout; the base config's output layer named)."""
    from minis2s import transformer
    from minis2s.batch import collate
    from minis2s.nn import layers, multihead
    spec = importlib.util.spec_from_file_location("transformer_bench", ROOT / "benchmarks" / "transformer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = dict(d_model=8, layers=2, heads=2, ff=12, batch=3, length=5, vocab=17)
    model = transformer.Transformer(17, 17, d_model=8, num_heads=2, num_encoder_layers=2, num_decoder_layers=2,
                                    ff_size=12, dropout=0.0, seed=0)
    batch = collate([[5, 6, 7, 8]] * 3, [[9, 10, 11, 12]] * 3)          # 4 words + <eos>: 5 rows of 3
    seen = []
    real = layers.linear_forward

    def spy(x, weight, bias=None):
        seen.append((x.reshape(-1, x.shape[-1]).shape[0],) + weight.shape[::-1])
        return real(x, weight, bias)
    for where in (layers, multihead, transformer):                      # every module that calls it
        monkeypatch.setattr(where, "linear_forward", spy)
    model.loss_and_grads(batch)
    assert sorted(seen) == sorted(module.linear_shapes(config))
    assert module.linear_shapes(module.CONFIGS["base"])[-1] == (1920, 256, 8000)
