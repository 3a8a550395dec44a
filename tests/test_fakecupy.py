"""The strict CuPy stand-in (MINIS2S_BACKEND=fakecupy): it refuses hidden device -> host copies as CuPy
does, counts the explicit ones, and the commands run on it end to end."""
import operator
import os
import subprocess
import sys

import numpy
import pytest

from minis2s import backend, dispatch, fakecupy
from minis2s.data import collate
from minis2s.model import Seq2Seq


def test_implicit_conversions_are_refused_like_cupy():
    x = fakecupy.asarray(numpy.arange(6.0).reshape(2, 3))
    for convert in (numpy.asarray, float, int, bool, operator.index, list, numpy.array):
        with pytest.raises(TypeError, match="Implicit conversion"):
            convert(x.sum() if convert in (float, int, bool, operator.index) else x)
    with pytest.raises(TypeError, match="Unsupported type"):
        x + numpy.ones(3)                                    # a host array mixed in, as CuPy refuses


def test_results_stay_on_the_device_and_copies_are_counted():
    x = fakecupy.asarray(numpy.arange(6.0).reshape(2, 3))
    fakecupy.transfers.reset()
    for result in (x + 1, numpy.exp(x), numpy.concatenate([x, x]), x.sum(), x[0, 1], x.T @ x,
                   fakecupy.zeros((2,)), fakecupy.maximum(x, 2)):
        assert isinstance(result, fakecupy.ndarray)
    assert fakecupy.transfers.count == 0
    out = fakecupy.empty((2, 3))
    assert fakecupy.multiply(x, 2, out=out) is out
    assert x.get().tolist() == [[0, 1, 2], [3, 4, 5]] and backend.to_float(x.sum()) == 15.0
    assert fakecupy.transfers.count == 2 and fakecupy.transfers.bytes == 6 * 8 + 8
    target = fakecupy.zeros((3,))
    fakecupy.add.at(target, fakecupy.asarray(numpy.array([0, 0, 2])), 1.0)
    assert target.get().tolist() == [2.0, 0.0, 1.0]


def test_the_kernels_never_receive_device_arrays():
    backend.use("fakecupy")
    try:
        with dispatch.reference_path(False):
            model = Seq2Seq(7, 7, cell="lstm", attention="bahdanau", hidden_size=8, emb_size=4)
            batch = collate([[4, 5, 6], [5, 6]], [[6, 5, 4], [4]])
            loss = model.loss_and_grads(batch)               # a Numba kernel given these would raise TypeError
            assert isinstance(loss, fakecupy.ndarray)
    finally:
        backend.use("numpy")


def test_a_training_step_copies_nothing_to_the_host(tmp_path):
    """Forward, backward, clipping (the global norm stays on the device) and Adam: no device -> host copy.
    The Trainer keeps each step's loss on the device too, and reads them all in one copy when it shows or
    saves them."""
    from minis2s.optim import Adam, clip_grad_norm
    from minis2s.train import Trainer, TrainConfig
    backend.use("fakecupy")
    try:
        model = Seq2Seq(9, 9, cell="gru", attention="bahdanau", hidden_size=8, emb_size=4)
        optimizer = Adam(model.params, model.grads)
        batch = collate([[4, 5, 6, 7], [5, 6]], [[6, 5, 4], [4, 8]])
        fakecupy.transfers.reset()
        model.loss_and_grads(batch)
        clip_grad_norm(model.grads, 1.0)
        optimizer.step()
        assert fakecupy.transfers.count == 0
        pairs = [([4, 5, 6], [6, 5]), ([5, 6], [4, 8, 7]), ([7, 4], [5])] * 3
        trainer = Trainer(model, pairs, [], TrainConfig(batch_size=3, clip=1.0, seed=0), progress=False,
                          log=lambda line: None)
        fakecupy.transfers.reset()
        for k in range(3):
            trainer.train_step([list(range(3 * k, 3 * k + 3))])          # one batch a step
        trainer.train_step([[0, 1, 2], [3, 4, 5]])                       # two accumulated into one step
        assert fakecupy.transfers.count == 0
        trainer.read_losses()
        assert fakecupy.transfers.count == 1 and len(trainer.step_losses) == 4
    finally:
        backend.use("numpy")


def run(*args, stdin=None):
    environment = dict(os.environ, MINIS2S_BACKEND="fakecupy")
    return subprocess.run([sys.executable, "-m", "minis2s", *args], input=stdin, capture_output=True, text=True,
                          env=environment, timeout=300)


def test_train_and_translate_on_the_stand_in(tmp_path):
    """(minis2s gradcheck runs there too, 23 passed, but takes minutes: the layer and model gradient tests
    that take the ``xp`` fixture check the same code on the stand-in.)"""
    out = str(tmp_path / "model")
    trained = run("train", "--data", "toy:reverse", "--out", out, "--epochs", "1", "--time-limit", "3",
                  "--hidden-size", "16", "--emb-size", "8", "--no-progress", "--samples", "0")
    assert trained.returncode == 0, trained.stderr
    assert "backend fakecupy" in trained.stdout
    translated = run("translate", "--model", out, "--beam", "3", stdin="a b c\n\nd e\n")
    assert translated.returncode == 0, translated.stderr
    assert translated.stdout.count("\n") == 3


@pytest.mark.parametrize("search", ["greedy", "beam"])
@pytest.mark.parametrize("attention", ["none", "bahdanau"])
def test_decoding_copies_one_flag_a_step_and_never_the_log_probabilities(search, attention):
    """Greedy and beam search on the stand-in: a step copies one flag to the host ("all done?"); the
    histories come over once at the end (a handful of copies); no copy is as large as the (B*k, V)
    log-probabilities. The translations are those found on NumPy. (Beam search: its batched twin, what a
    GPU runs; the textbook search copies each sentence's step.)"""
    from minis2s.decode import greedy
    from minis2s.kernels.beam import beam_search
    src = [[4, 5, 6, 7], [5, 6], [7, 8, 9, 4, 5]]
    vocab, k, max_length = 40, 3, 6

    def decode():
        model = Seq2Seq(12, vocab, cell="gru", attention=attention, hidden_size=8, emb_size=4, seed=1)
        if search == "greedy":
            return [h.tokens for h in greedy(model, src, max_length=max_length)]
        return [[h.tokens for h in hs] for hs in beam_search(model, src, beam_size=k, nbest=2,
                                                            max_length=max_length)]
    on_numpy = decode()
    backend.use("fakecupy")
    try:
        fakecupy.transfers.reset()
        assert decode() == on_numpy
        assert fakecupy.transfers.count <= max_length + 6
        assert fakecupy.transfers.largest < len(src) * k * vocab
    finally:
        backend.use("numpy")


def test_a_checkpoint_written_on_the_device_loads_on_numpy_and_back(tmp_path):
    """The same file on both backends: parameters and Adam's moments, the same loss after loading."""
    from minis2s import checkpoint
    from minis2s.optim import Adam
    batch_lists = ([[4, 5, 6, 7], [5, 6]], [[6, 5, 4], [4, 8]])
    path = str(tmp_path / "m.npz")
    backend.use("fakecupy")
    try:
        model = Seq2Seq(9, 9, cell="lstm", attention="luong-general", hidden_size=8, emb_size=4, seed=4)
        optimizer = Adam(model.params, model.grads)
        model.loss_and_grads(collate(*batch_lists))
        optimizer.step()
        checkpoint.save(path, model.state_dict(), {"note": "device"}, optimizer.state_dict())
        on_device = model.loss(collate(*batch_lists))
    finally:
        backend.use("numpy")
    params, meta, optimizer_state = checkpoint.load(path)
    host_model = Seq2Seq(9, 9, cell="lstm", attention="luong-general", hidden_size=8, emb_size=4, seed=0)
    host_model.load_state_dict(params, where=path)
    Adam(host_model.params, host_model.grads).load_state_dict(optimizer_state)
    assert meta["note"] == "device"
    assert host_model.loss(collate(*batch_lists)) == pytest.approx(on_device, rel=1e-6)
    backend.use("fakecupy")
    try:
        again = Seq2Seq(9, 9, cell="lstm", attention="luong-general", hidden_size=8, emb_size=4, seed=0)
        again.load_state_dict(params, where=path)
        assert again.loss(collate(*batch_lists)) == pytest.approx(on_device, rel=1e-6)
    finally:
        backend.use("numpy")


def test_bench_on_the_stand_in():
    result = run("bench", "--config", "small", "--cell", "gru", "--attention", "none", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    assert "backend fakecupy" in result.stdout and "small  gru" in result.stdout
