"""Gradient accumulation and data parallelism (minis2s/parallel.py, train.py).

In one process: accumulation equals one batch of the union; a group of ranks (threads sharing an
in-process communicator) trains exactly as one process does, on every backend, the stand-in included.
Over real MPI (``mpiexec -n 2``, skipped without mpi4py and mpiexec): the same validation losses as one
process, ranks that disagree stopped with an error naming them, a killed rank stops the run and
``--resume`` continues it.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy
import pytest

import minis2s
from minis2s import backend, datasets, parallel, train
from minis2s.train import Trainer, TrainConfig, accumulate_grads, batch_of, target_tokens


def random_pairs(rng, count, vocab=20):
    return [(rng.integers(4, vocab, size=rng.integers(1, 8)).tolist(),
             rng.integers(4, vocab, size=rng.integers(1, 9)).tolist()) for _ in range(count)]


def small_model(dtype="float64", **options):
    return minis2s.Seq2Seq(20, 20, emb_size=5, hidden_size=6, dtype=dtype, seed=1, **options)


@pytest.mark.parametrize("options", [dict(), dict(cell="lstm", attention="luong-general", input_feeding=True),
                                     dict(attention="none", label_smoothing=0.1)])
def test_accumulated_gradients_equal_one_batch_of_their_union(xp, options):
    """sum_j (N_j / N) dL_j over batches of different lengths = the gradient of the union's mean (1e-12);
    a mean of the batches' means (each weighted 1/K) is not."""
    rng = numpy.random.default_rng(0)
    pairs = random_pairs(rng, 13)
    model = small_model(**options)
    parts = [[0, 1, 2], [3, 4, 5, 6, 7, 8], [9, 10, 11, 12]]
    union = sum(parts, [])
    loss = backend.to_float(model.loss_and_grads(batch_of(pairs, union)))
    expected = backend.to_numpy(model.grads.flat).copy()
    tokens = [target_tokens(pairs, part) for part in parts]
    assert sum(tokens) == batch_of(pairs, union).num_tokens
    accumulated = accumulate_grads(model, [batch_of(pairs, part) for part in parts], tokens, sum(tokens))
    got = backend.to_numpy(model.grads.flat)
    assert abs(backend.to_float(accumulated) - loss) <= 1e-12 * loss
    assert numpy.abs(got - expected).max() <= 1e-12 * numpy.abs(expected).max()
    mean_of_means = accumulate_grads(model, [batch_of(pairs, part) for part in parts], [1] * 3, 3)
    assert abs(backend.to_float(mean_of_means) - loss) > 1e-6 * loss      # what the toolkits' bug computed


def test_accumulate_makes_one_step_per_group_of_batches():
    rng = numpy.random.default_rng(1)
    pairs = random_pairs(rng, 50)
    trainer = Trainer(small_model("float32"), pairs, pairs[:5], TrainConfig(epochs=1, batch_size=8, accumulate=3),
                      progress=False, log=lambda *a: None)
    trainer.run()
    batches = len(train.make_batches(pairs, 8, 0, 0))
    assert trainer.step == -(-batches // 3) and batches == 7


class ThreadGroup:
    """R communicators over threads of one process: each allreduce adds the ranks' arrays in rank order,
    on their own backend (no copy to the host), so the same sum reaches every rank."""

    def __init__(self, size):
        self.size, self.slots, self.barrier = size, [None] * size, threading.Barrier(size)

    def member(self, rank):
        group = self

        class Member:
            def __init__(self):
                self.rank, self.size = rank, group.size

            def allreduce(self, array):
                group.slots[rank] = array.copy()
                group.barrier.wait()
                total = group.slots[0]
                for other in group.slots[1:]:
                    total = total + other
                group.barrier.wait()
                array[...] = total
                return array

            def broadcast(self, array):
                group.slots[rank] = array
                group.barrier.wait()
                if rank:
                    array[...] = group.slots[0]
                group.barrier.wait()
                return array

            def gather(self, obj):
                group.slots[rank] = obj
                group.barrier.wait()
                values = list(group.slots)
                group.barrier.wait()
                return values
        return Member()


def run_ranks(size, make_trainer):
    """make_trainer(comm) on ``size`` threads; returns their trainers once all have run."""
    group, trainers, errors = ThreadGroup(size), [None] * size, []

    def work(rank):
        try:
            trainers[rank] = make_trainer(group.member(rank))
            trainers[rank].run()
        except BaseException as error:                  # noqa: BLE001 - reported below
            errors.append(error)
            group.barrier.abort()
    threads = [threading.Thread(target=work, args=(rank,)) for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]
    return trainers


@pytest.mark.parametrize("accumulate", [1, 2])
def test_ranks_train_as_one_process_with_the_same_global_batch(xp, accumulate):
    """Two ranks, each a share of every batch, give one process' validation losses (float64, dropout 0, 1e-9)
    and identical parameters on both ranks; rank 0 alone keeps the history's BLEU-like callback."""
    rng = numpy.random.default_rng(2)
    pairs, valid = random_pairs(rng, 60), random_pairs(rng, 9)
    config = TrainConfig(epochs=2, batch_size=8, lr=3e-3, eval_every=3, accumulate=accumulate)

    def make(comm=None):
        return Trainer(small_model(), pairs, valid, config, progress=False, log=lambda *a: None, comm=comm,
                       evaluate=lambda model: {"valid_bleu": 1.0})
    alone = make()
    alone.run()
    ranks = run_ranks(2, make)
    expected = [record["valid_loss"] for record in alone.history]
    for trainer in ranks:
        got = [record["valid_loss"] for record in trainer.history]
        numpy.testing.assert_allclose(got, expected, rtol=1e-9)
        assert trainer.step == alone.step
    assert "valid_bleu" in ranks[0].history[0] and "valid_bleu" not in ranks[1].history[0]
    numpy.testing.assert_array_equal(backend.to_numpy(ranks[0].model.params.flat),
                                     backend.to_numpy(ranks[1].model.params.flat))


def test_ranks_that_disagree_on_the_data_are_stopped_naming_them():
    rng = numpy.random.default_rng(3)
    pairs = random_pairs(rng, 30)
    config = TrainConfig(epochs=1, batch_size=8)

    def make(comm):
        mine = pairs if comm.rank == 0 else pairs[1:]
        return Trainer(small_model("float32"), mine, pairs[:4], config, progress=False, log=lambda *a: None,
                       comm=comm)
    with pytest.raises(parallel.ParallelError, match=r"ranks disagree on the training data: rank\(s\) 1 differ"):
        run_ranks(2, make)


def test_one_process_never_imports_mpi4py_and_a_missing_extra_is_named(monkeypatch):
    assert parallel.launched_ranks({}) == 1 and isinstance(parallel.from_environment(), parallel.Single)
    code = ("import sys; from minis2s import cli; cli.main(['train', '--data', 'toy:copy', '--out', sys.argv[1], "
            "'--epochs', '1', '--emb-size', '8', '--hidden-size', '8', '--no-progress', '--valid-bleu', '0', "
            "'--samples', '0', '--time-limit', '2']); assert 'mpi4py' not in sys.modules, 'imported'")
    env = {k: v for k, v in os.environ.items() if k not in parallel._SIZE_VARIABLES}
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", code, os.path.join(out, "run")], capture_output=True,
                              text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)                  # as if the extra were not installed
    with pytest.raises(parallel.ParallelError, match=r"pip install 'minis2s\[mpi\]'"):
        parallel.from_environment()


# ----------------------------------------------------------------------------- real MPI: mpiexec -n 2

MPIEXEC = shutil.which("mpiexec") or shutil.which(os.path.join(os.path.dirname(sys.executable), "mpiexec"))
try:
    import mpi4py  # noqa: F401
    HAVE_MPI = MPIEXEC is not None
except ImportError:
    HAVE_MPI = False
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs mpi4py and mpiexec: pip install 'minis2s[mpi]'")

# one thread a rank, and NumPy (MPI sends NumPy arrays; on CuPy it would be NCCL), whatever the suite runs on
ONE_THREAD = dict(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", MKL_NUM_THREADS="1",
                  MINIS2S_BACKEND="numpy")
TINY = ["--emb-size", "16", "--hidden-size", "24", "--batch-size", "16", "--valid-size", "30", "--test-size", "30",
        "--min-freq", "1", "--no-progress", "--valid-bleu", "0", "--samples", "0"]


@pytest.fixture(scope="module")
def tiny_tsv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pairs.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in datasets.toy("reverse", 400, seed=5)), encoding="utf-8")
    return path


def run(ranks, *args, timeout=300, check=True):
    env = {**os.environ, **ONE_THREAD}
    command = [sys.executable, "-m", "minis2s", *args]
    if ranks:
        command = [MPIEXEC, "-n", str(ranks)] + command
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def valid_losses(out):
    return [record["valid_loss"] for record in json.loads((out / "history.json").read_text())]


@needs_mpi
@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-9), ("float32", 1e-5)])
def test_mpiexec_two_ranks_give_one_process_validation_losses(tiny_tsv, tmp_path, dtype, tolerance):
    args = ["train", "--data", str(tiny_tsv), *TINY, "--dtype", dtype, "--epochs", "2", "--eval-every", "5"]
    run(None, *args, "--out", str(tmp_path / "one"))
    two = run(2, *args, "--out", str(tmp_path / "two"))
    assert "2 processes (data parallel)" in two.stdout and two.stdout.count("data:") == 1   # rank 0 alone prints
    numpy.testing.assert_allclose(valid_losses(tmp_path / "two"), valid_losses(tmp_path / "one"), rtol=tolerance)
    assert len(valid_losses(tmp_path / "one")) == 8


@needs_mpi
def test_mpiexec_ranks_on_different_data_stop_with_an_error(tiny_tsv, tmp_path):
    other = tmp_path / "other.tsv"
    other.write_text("".join(tiny_tsv.read_text().splitlines(keepends=True)[:-7]), encoding="utf-8")
    common = [*TINY, "--epochs", "1", "--out", str(tmp_path / "run")]
    command = [MPIEXEC, "-n", "1", sys.executable, "-m", "minis2s", "train", "--data", str(tiny_tsv), *common, ":",
               "-n", "1", sys.executable, "-m", "minis2s", "train", "--data", str(other), *common]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, timeout=300)
    assert done.returncode != 0
    assert "ranks disagree on the training data: rank(s) 1 differ from rank 0" in done.stderr, done.stderr


@pytest.mark.slow   # a 2-rank training run killed and resumed: 16 s on a 2-core VM
@needs_mpi
def test_a_killed_rank_stops_the_run_and_resume_continues_it(tiny_tsv, tmp_path):
    """Rank 1 killed mid-run: mpiexec ends rank 0 too and says so; --resume with 2 ranks finishes the run from
    the last checkpoint with the validation losses of a run that was never interrupted."""
    args = ["train", "--data", str(tiny_tsv), *TINY, "--epochs", "40", "--checkpoint-every", "4",
            "--eval-every", "8", "--dtype", "float64"]
    out = tmp_path / "killed"
    env = {**os.environ, **ONE_THREAD}
    launcher = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "minis2s", *args, "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (out / "last.npz").exists() and time.time() < deadline:
        time.sleep(0.2)
    victim = rank_pid(1, str(out))
    assert victim, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "BAD TERMINATION" in stdout + stderr and "Killed" in stdout + stderr, stdout[-2000:] + stderr[-2000:]
    resumed = run(2, "train", "--out", str(out), "--resume", "--epochs", "40")
    assert "resumed from" in resumed.stdout
    straight = tmp_path / "straight"
    run(2, *args, "--out", str(straight))
    numpy.testing.assert_allclose(valid_losses(out), valid_losses(straight), rtol=1e-12)


def rank_pid(rank, marker):
    """The pid of the minis2s process of MPI rank ``rank`` whose command line names ``marker``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                cmdline = stream.read().decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as stream:
                environ = dict(item.split("=", 1) for item in stream.read().decode(errors="replace").split("\0")
                               if "=" in item)
        except OSError:
            continue
        if "minis2s" in cmdline and marker in cmdline and "mpiexec" not in cmdline \
                and environ.get("PMI_RANK") == str(rank):
            return int(pid)
    return None


def test_a_checkpoint_from_before_the_attentional_output_averages_with_one_that_says_false(tmp_path):
    """A checkpoint written before attentional_output existed has no such key: it means False, and averages with
    a model whose config says False (as the two seeds' runs of docs/results.md needed)."""
    from minis2s import checkpoint
    from minis2s.ensemble import average
    paths = []
    for seed, drop_key in ((1, True), (2, False)):
        model = minis2s.Seq2Seq(9, 8, emb_size=3, hidden_size=4, seed=seed)
        config = dict(model.config)
        if drop_key:
            config.pop("attentional_output")
        paths.append(str(tmp_path / f"m{seed}.npz"))
        checkpoint.save(paths[-1], model.state_dict(), {"model": config, "src_vocab": ["a"], "tgt_vocab": ["b"]})
    average(paths, str(tmp_path / "avg.npz"))
    assert (tmp_path / "avg.npz").exists()
