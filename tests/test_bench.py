"""benchmarks/gpu.py without a GPU: its CuPy columns' code on the stand-in, and "—" with the reason."""
import importlib.util
import pathlib

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
        for search in ("d2h_greedy", "d2h_beam"):                   # the "all finished?" flag of each step (20
            assert 1 <= row[search] <= 20 + 4                        # at most), the lengths and results once
    assert "d2h_train" not in numpy_row


def test_a_column_that_cannot_run_is_shown_with_its_reason(gpu_bench, tmp_path, capsys):
    from minis2s import backend
    if "cupy" in backend.available():
        pytest.skip("CuPy and a GPU are present here")
    rows = gpu_bench.main(["--configs", "small", "--attentions", "none", "--repeats", "1", "--columns", "NumPy",
                           "CuPy reference", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| small | gru | none | CuPy reference | — | — | — | — | backend 'cupy'" in printed
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
