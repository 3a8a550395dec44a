"""The one dispatch point: the switch, the reference untouched by it, and minis2s without Numba."""
import os
import subprocess
import sys

import numpy
import pytest

from minis2s import dispatch
from minis2s.nn import rnn_cells

NO_NUMBA = "import sys; sys.modules['numba'] = None; from minis2s.cli import main; sys.exit(main(sys.argv[1:]))"


def run_without_numba(*args, tmp_path):
    """minis2s ARGS in a fresh interpreter where ``import numba`` fails, on NumPy (the kernels' backend: the
    message is about them, so the run means NumPy whatever MINIS2S_BACKEND the suite runs under)."""
    return subprocess.run([sys.executable, "-c", NO_NUMBA, *args], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env={**os.environ, "MINIS2S_BACKEND": "numpy"})


def test_the_switch_and_the_context_manager():
    assert not dispatch.kernels_enabled()                      # conftest: the suite runs on the reference
    with dispatch.reference_path(False):
        assert dispatch.kernels_enabled()
        with dispatch.reference_path():
            assert not dispatch.kernels_enabled()
        assert dispatch.kernels_enabled()
    assert not dispatch.kernels_enabled()


def test_a_marked_function_names_its_twin_and_keeps_its_reference():
    from minis2s.nn import rnn
    assert rnn.direction_backward.twin_name == "rnn.direction_backward"
    assert rnn.direction_backward.reference.__module__ == "minis2s.nn.rnn"
    from minis2s.kernels import rnn as fast
    assert callable(getattr(fast, "direction_backward"))
    assert not hasattr(rnn_cells.lstm_step_backward, "twin_name")      # a cell's step is the book's alone


def test_at_most_ten_twins_each_with_its_kernel():
    """The book has at most ten hooks (kernels/__init__.py lists them): every ``@twin`` in minis2s/, found by
    walking its modules, names a function that exists in kernels/."""
    import importlib
    import pkgutil
    import minis2s
    marks = {}
    for info in pkgutil.walk_packages(minis2s.__path__, "minis2s."):
        if info.name.startswith("minis2s.kernels") or info.name in ("minis2s.__main__",):
            continue
        module = importlib.import_module(info.name)
        for value in list(vars(module).values()) + [v for c in vars(module).values() if isinstance(c, type)
                                                    for v in vars(c).values()]:
            if getattr(value, "twin_name", None) and getattr(value, "__module__", None) == info.name:
                marks[value.twin_name] = value
    assert 5 <= len(marks) <= 10, sorted(marks)
    for name in marks:
        module_name, function_name = name.split(".")
        assert callable(getattr(importlib.import_module(f"minis2s.kernels.{module_name}"), function_name)), name


def test_arrays_not_from_numpy_keep_the_reference_path():
    class DeviceArray:                                          # what the dispatch sees of a GPU array
        shape, dtype = (2, 3), numpy.dtype("float32")
    assert dispatch._on_host([numpy.zeros(2), 1.5])
    assert not dispatch._on_host([numpy.zeros(2), DeviceArray()])
    assert not dispatch._on_host([1.0, "x"])                    # no array at all: nothing for a kernel


def test_reference_modules_do_not_import_numba(tmp_path):
    code = ("import sys; sys.modules['numba'] = None; import minis2s, minis2s.cli, minis2s.model, "
            "minis2s.decode, minis2s.train, minis2s.optim, minis2s.loss, minis2s.checks; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.slow   # 90 s on a 2-core VM: the whole gradcheck on the reference path in a subprocess
def test_gradcheck_and_train_run_without_numba_and_say_so_once(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    from minis2s import datasets
    pairs.write_text("".join(f"{s}\t{t}\n" for s, t in datasets.toy("reverse", 60, seed=1)), encoding="utf-8")
    trained = run_without_numba("train", "--data", str(pairs), "--out", str(tmp_path / "run"), "--epochs", "1",
                                "--emb-size", "8", "--hidden-size", "8", "--valid-size", "10", "--test-size", "10",
                                "--min-freq", "1", "--no-progress", "--valid-bleu", "0", tmp_path=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert trained.stderr.count("the fast kernels cannot be loaded") == 1, trained.stderr
    assert (tmp_path / "run" / "model.npz").exists()
    checked = run_without_numba("gradcheck", "--kernels", tmp_path=tmp_path)
    assert checked.returncode == 0 and "0 failed" in checked.stdout, checked.stdout + checked.stderr
    assert checked.stderr.count("the fast kernels cannot be loaded") == 1
    assert "the reference path" in checked.stdout.splitlines()[0]


def test_derived_copies_live_only_inside_a_constant_weights_block():
    """dispatch.derived: made at each call outside constant_weights(); inside, once per source array and
    kept until the outermost block ends (a nested block does not drop it); a view with other strides or
    another array is another key."""
    made = []

    def make():
        made.append(1)
        return len(made)
    weight = numpy.arange(12.0).reshape(3, 4)
    assert dispatch.derived("t", (weight,), make) == 1 and dispatch.derived("t", (weight,), make) == 2
    assert not dispatch.weights_constant()
    with dispatch.constant_weights():
        assert dispatch.weights_constant()
        first = dispatch.derived("t", (weight,), make)
        with dispatch.constant_weights():
            assert dispatch.derived("t", (weight,), make) == first
        assert dispatch.derived("t", (weight,), make) == first                    # still kept
        assert dispatch.derived("t", (weight[:, :2],), make) != first            # a column slice: another key
        assert dispatch.derived("t", (weight.copy(),), make) != first            # another array
        assert dispatch.derived("u", (weight,), make) != first                   # another kind of copy
    assert not dispatch.weights_constant()
    assert dispatch.derived("t", (weight,), make) == len(made)                   # dropped: made again


def test_decoding_after_the_weights_change_uses_the_new_weights():
    """The copies kept while decoding (kernels: W^T of the output layer, the decoder's operands) do not
    outlive the decode: train a step between two decodes and the kernels still give the reference's
    translations of the new weights."""
    import minis2s
    from minis2s.decode import beam_search, greedy
    rng = numpy.random.default_rng(3)
    src = [rng.integers(4, 30, size=n).tolist() for n in (4, 7, 2)]
    for attention in ("none", "luong-general"):
        model = minis2s.Seq2Seq(30, 30, cell="lstm", attention=attention, emb_size=6, hidden_size=10, seed=1)
        outputs = []
        for _ in range(2):
            with dispatch.reference_path(False):
                fast = [h.tokens for h in greedy(model, src, max_length=8)]
                fast_beam = [[h.tokens for h in hs] for hs in beam_search(model, src, beam_size=3, nbest=3, max_length=8)]
            reference = [h.tokens for h in greedy(model, src, max_length=8)]
            reference_beam = [[h.tokens for h in hs] for hs in beam_search(model, src, beam_size=3, nbest=3,
                                                                             max_length=8)]
            assert fast == reference and fast_beam == reference_beam
            outputs.append(fast_beam)
            for name, value in model.params.items():          # the weights change in place, as Adam's do
                value *= numpy.float32(-1.5) if "out" in name else numpy.float32(1.2)
        assert outputs[0] != outputs[1]                         # the change is one the translations show
