"""The one dispatch point: the switch, the reference untouched by it, and minis2s without Numba."""
import subprocess
import sys

import numpy

from minis2s import dispatch
from minis2s.nn import rnn_cells

NO_NUMBA = "import sys; sys.modules['numba'] = None; from minis2s.cli import main; sys.exit(main(sys.argv[1:]))"


def run_without_numba(*args, tmp_path):
    """minis2s ARGS in a fresh interpreter where ``import numba`` fails."""
    return subprocess.run([sys.executable, "-c", NO_NUMBA, *args], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)


def test_the_switch_and_the_context_manager():
    assert not dispatch.kernels_enabled()                      # conftest: the suite runs on the reference
    with dispatch.reference_path(False):
        assert dispatch.kernels_enabled()
        with dispatch.reference_path():
            assert not dispatch.kernels_enabled()
        assert dispatch.kernels_enabled()
    assert not dispatch.kernels_enabled()


def test_a_marked_function_names_its_twin_and_keeps_its_reference():
    assert rnn_cells.lstm_step_backward.twin_name == "rnn.lstm_step_backward"
    assert rnn_cells.lstm_step_backward.reference.__module__ == "minis2s.nn.rnn_cells"
    from minis2s.kernels import rnn
    assert callable(getattr(rnn, "lstm_step_backward"))


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
