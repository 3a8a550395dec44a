"""The training loop: batches, updates, validation, early stopping, checkpoints, resume.

One step:  model.loss_and_grads(batch) -> clip the global gradient norm -> learning rate from the
schedule -> optimiser step. One epoch: every training pair once, in shuffled, length-bucketed
batches (pairs of similar length share a batch, so little compute goes to padding); then the
validation loss (mean per target token) and perplexity exp(loss).

Determinism: every random choice is derived from the seed and the position, not from a generator
that runs on: the epoch's batch order from (seed, epoch), the step's dropout masks and teacher-
forcing coins from (seed, step). A run resumed from a checkpoint therefore takes the same batches
and draws the same masks as one that was never interrupted, and gives the same losses step by step.

Gradient accumulation (``accumulate`` K, Joey NMT's batch_multiplier, OpenNMT-py's accum_count) and
data parallelism (``mpiexec -n R``, parallel.py) make one step of several batches or of several shares of
a batch. The step's loss is the mean over the real target tokens of all of them, N = sum_j N_j, so each
part's gradient (of its own mean) is weighted by N_j / N before they are added (``accumulate_grads``):
a mean of the parts' means would give a short batch the weight of a long one.

Scheduled sampling (Bengio et al. 2015): the probability of feeding the reference token at step i is

    constant         r                                  (the model's ``teacher_forcing``)
    linear           max(floor, 1 - i / k)
    exponential      max(floor, k ** i)                 (k < 1)
    inverse-sigmoid  max(floor, k / (k + exp(i / k)))   (k >= 1)
"""
import dataclasses
import math
import os
import time

import numpy

from . import backend, checkpoint
from .data import collate
from .optim import OPTIMIZERS, SGD, Adam, Schedule, clip_grad_norm
from .parallel import Single, check_agreement, fingerprint, share

SCHEDULES = ("constant", "linear", "exponential", "inverse-sigmoid")


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN or infinite loss); the message says where and what was kept."""


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip: float = 1.0                   # global gradient-norm limit; 0 turns clipping off
    warmup_steps: int = 0
    lr_schedule: str = "constant"       # constant (with the linear warm-up) | noam (warm-up, then 1/sqrt(step))
                                        # | linear (warm-up, then down to ~0 at the last step of the epochs)
    decay_every: int = 0                # epochs between learning-rate step decays; 0: none
    decay_gamma: float = 0.5
    plateau_patience: int = 0           # reduce-on-plateau after this many epochs without improvement; 0: off
    early_stopping: int = 0             # stop after this many epochs without improvement; 0: off
    schedule: str = "constant"          # teacher forcing: constant | linear | exponential | inverse-sigmoid
    schedule_k: float = 0.0             # the schedule's k (0: a default for the kind)
    schedule_floor: float = 0.0
    seed: int = 0
    time_limit: float = 0.0             # seconds of training before stopping at the next step; 0: none
    checkpoint_every: int = 0           # steps between checkpoints within an epoch; 0: at epoch ends only
    eval_every: int = 0                 # steps between validations within an epoch; 0: at epoch ends only
    keep: int = 0                       # keep the parameters of the last N checkpoints (step-NNNNNNN.npz)
    bucket: bool = True
    accumulate: int = 1                 # batches a step: one optimiser step per this many batches

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "accumulate"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def teacher_forcing_ratio(config, base_ratio, step):
    """The probability of feeding the reference token at training step ``step`` (see the module docstring)."""
    kind, floor = config.schedule, config.schedule_floor
    if kind == "constant":
        return base_ratio
    if kind == "linear":
        k = config.schedule_k or 10_000
        return max(floor, 1.0 - step / k)
    if kind == "exponential":
        k = config.schedule_k or 0.9995
        return max(floor, k ** step)
    k = config.schedule_k or 1_000
    return max(floor, k / (k + math.exp(min(step / k, 700.0))))


def make_batches(pairs, batch_size, seed, epoch, bucket=True):
    """Index lists, one per batch: shuffled by (seed, epoch); with ``bucket``, sorted within pools of
    50 batches by target length, then source length, so each batch holds pairs of similar length
    (the target first: the decoder steps and the vocabulary projection, the costly part, run over the
    target's padding), and the batches then shuffled."""
    rng = numpy.random.default_rng([seed, epoch])
    order = rng.permutation(len(pairs))
    batches = []
    pool = batch_size * 50 if bucket else batch_size
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        if bucket:
            chunk = sorted(chunk, key=lambda i: (len(pairs[i][1]), len(pairs[i][0])))
        batches += [list(chunk[i:i + batch_size]) for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))] if bucket else batches


def batch_of(pairs, indices):
    return collate([pairs[i][0] for i in indices], [pairs[i][1] for i in indices])


def target_tokens(pairs, indices):
    """The real target tokens of a batch: each target and its <eos> (what the loss is a mean over)."""
    return sum(len(pairs[i][1]) + 1 for i in indices)


def accumulate_grads(model, batches, tokens, total_tokens, teacher_forcing=None):
    """The gradient of the mean loss over the union of ``batches`` left in ``model.grads``; returns that
    loss (a 0-d array). ``tokens``: each batch's real target tokens N_j; ``total_tokens``: N, theirs and
    those of the other ranks' shares (the whole step's). A batch may be None (an empty share).

        L = sum_j (N_j / N) L_j,   dL = sum_j (N_j / N) dL_j        (L_j, dL_j: batch j's mean and its gradient)
    """
    xp = backend.xp()
    grads = model.grads.flat
    summed, loss = xp.zeros_like(grads), xp.zeros((), dtype=numpy.float64)
    for batch, count in zip(batches, tokens):
        if batch is None:
            continue
        weight = count / total_tokens                                     # N_j / N
        loss = loss + weight * model.loss_and_grads(batch, teacher_forcing=teacher_forcing)
        summed += grads.dtype.type(weight) * grads                       # loss_and_grads zeroed grads first
    grads[...] = summed
    return loss


def evaluate_loss(model, pairs, batch_size=128, comm=None):
    """Mean cross-entropy per target token over ``pairs`` (no dropout, reference inputs); with a
    communicator of R ranks, each rank scores every R-th batch and the sums are added."""
    comm = comm or Single()
    total, tokens = 0.0, 0
    for number, start in enumerate(range(0, len(pairs), batch_size)):
        if number % comm.size != comm.rank:
            continue
        indices = range(start, min(start + batch_size, len(pairs)))
        batch = batch_of(pairs, indices)
        count = batch.num_tokens
        total += model.loss(batch) * count
        tokens += count
    if comm.size > 1:
        total, tokens = comm.allreduce(numpy.array([total, tokens], dtype=numpy.float64)).tolist()
    return total / max(tokens, 1)


RANK_STREAMS = 1 << 40   # rank r draws its dropout masks from seed * 1000003 + step + r * 2^40: its own stream
SHOW_EVERY = 20        # steps between the progress bar's loss updates (each one copy from the GPU)


class Trainer:
    """Trains ``model`` on (source ids, target ids) pairs; writes ``last.npz`` and ``model.npz`` to ``out_dir``."""

    def __init__(self, model, train_pairs, valid_pairs, config, out_dir=None, meta=None, evaluate=None,
                 progress=True, log=print, comm=None):
        if not train_pairs:
            raise ValueError("no training pairs")
        self.comm = comm or Single()
        self.root = self.comm.rank == 0                  # rank 0 alone writes, logs and evaluates
        self.model, self.train_pairs, self.valid_pairs = model, train_pairs, valid_pairs
        self.config, self.out_dir, self.meta = config, out_dir if self.root else None, dict(meta or {})
        self.evaluate, self.progress = (evaluate, progress) if self.root else (None, False)
        if not self.root:
            log = _silent
        if log is print and progress:
            from tqdm import tqdm
            log = tqdm.write                          # a line of its own, not into the progress bar
        self.log = log
        if config.optimizer == "sgd":
            self.optimizer = SGD(model.params, model.grads, lr=config.lr, momentum=config.momentum,
                                 weight_decay=config.weight_decay)
        else:
            self.optimizer = Adam(model.params, model.grads, lr=config.lr, weight_decay=config.weight_decay)
        total = 0                                        # the run's steps, for a schedule that ends with it
        if config.lr_schedule == "linear":
            batches = len(make_batches(train_pairs, config.batch_size, config.seed, 0, config.bucket))
            total = config.epochs * -(-batches // config.accumulate)
        self.schedule = Schedule(self.optimizer, config.warmup_steps, config.decay_every, config.decay_gamma,
                                 config.plateau_patience, kind=config.lr_schedule, total_steps=total)
        self.base_ratio = model.teacher_forcing
        self.epoch, self.batch_index, self.step = 0, 0, 0
        self.history, self.step_losses, self.pending_losses = [], [], []
        self.best_loss, self.bad_epochs = math.inf, 0
        self.elapsed = 0.0

    # ------------------------------------------------------------------ checkpoints

    def path(self, name):
        return os.path.join(self.out_dir, name) if self.out_dir else None

    def save(self, name="last.npz"):
        if not self.out_dir:
            return
        self.read_losses()                                        # a non-finite loss stops before the write
        position = dict(epoch=self.epoch, batch_index=self.batch_index, step=self.step, best_loss=self.best_loss,
                        bad_epochs=self.bad_epochs, elapsed=self.elapsed, schedule=self.schedule.state_dict(),
                        ranks=self.comm.size)
        meta = dict(self.meta, model=self.model.config, train=dataclasses.asdict(self.config), position=position,
                    history=self.history,
                    random=("derived: batch order from default_rng([seed, epoch]); dropout and teacher-forcing "
                            "coins from model.reseed(seed * 1000003 + step + rank * 2**40)"))
        checkpoint.save(self.path(name), self.model.state_dict(), meta, self.optimizer.state_dict())
        if name == "last.npz" and self.config.keep > 0:           # parameters only, for minis2s average
            checkpoint.save(self.path(f"step-{self.step:07d}.npz"), self.model.state_dict(),
                            {k: v for k, v in meta.items() if k not in ("history", "position")})
            kept = sorted(f for f in os.listdir(self.out_dir) if f.startswith("step-") and f.endswith(".npz"))
            for old in kept[:-self.config.keep]:
                os.remove(self.path(old))

    def restore(self, path):
        """Load parameters, optimiser state and training position from a checkpoint written by ``save``."""
        params, meta, optimizer_state = checkpoint.load(path)
        self.model.load_state_dict(params, where=path)
        self.optimizer.load_state_dict(optimizer_state)
        position = meta["position"]
        if position.get("ranks", 1) != self.comm.size:
            raise TrainingError(f"{path} was written by a run of {position.get('ranks', 1)} process(es); resume it "
                                f"with as many (mpiexec -n {position.get('ranks', 1)}), not {self.comm.size}, so that "
                                "it continues exactly")
        self.epoch, self.batch_index, self.step = position["epoch"], position["batch_index"], position["step"]
        self.best_loss, self.bad_epochs = position["best_loss"], position["bad_epochs"]
        self.elapsed = position.get("elapsed", 0.0)
        self.schedule.load_state_dict(position["schedule"])
        self.history = meta.get("history", [])
        return meta

    # ------------------------------------------------------------------ the loop

    def train_step(self, group):
        """One optimiser step on ``group``, the index lists of the step's batches (one, or ``accumulate``),
        of which this rank computes its share. Returns the step's loss (where the model runs)."""
        config, model, comm = self.config, self.model, self.comm
        model.reseed(config.seed * 1_000_003 + self.step + comm.rank * RANK_STREAMS)
        ratio = teacher_forcing_ratio(config, self.base_ratio, self.step)
        if len(group) == 1 and comm.size == 1:
            loss = model.loss_and_grads(batch_of(self.train_pairs, group[0]), teacher_forcing=ratio)
        else:
            shares = [share(indices, comm) for indices in group]
            batches = [batch_of(self.train_pairs, part) if part else None for part in shares]
            tokens = [target_tokens(self.train_pairs, part) for part in shares]
            total = sum(target_tokens(self.train_pairs, indices) for indices in group)    # N: every rank knows it
            loss = accumulate_grads(model, batches, tokens, total, ratio)
            comm.allreduce(model.grads.flat)                        # the one collective of the gradients
            loss = comm.allreduce(backend.xp().asarray(loss).reshape(1).copy())[0]
        if config.clip:
            clip_grad_norm(model.grads, config.clip)
        self.schedule.on_step(self.step + 1)
        self.optimizer.step()
        self.step += 1
        self.pending_losses.append((self.epoch, self.step, loss))
        return loss

    def read_losses(self):
        """The losses of the steps since the last read, as numbers in ``step_losses``: one copy to the host
        for all of them (a step itself copies nothing, so on a GPU it never waits for the device). Called
        whenever something is shown or saved; a loss that is not finite stops training there, before a
        checkpoint could keep what followed it."""
        if not self.pending_losses:
            return
        epochs, steps, losses = zip(*self.pending_losses)
        self.pending_losses = []
        values = backend.to_numpy(backend.array_module(losses[0]).stack(losses)).tolist()
        for epoch, step, value in zip(epochs, steps, values):
            if not math.isfinite(value):
                kept = f"; the last good checkpoint is {self.path('last.npz')}" if self.out_dir else ""
                raise TrainingError(f"loss became {value} at epoch {epoch + 1}, step {step} "
                                    f"(try a lower --lr or --clip){kept}")
            self.step_losses.append(value)

    def run(self):
        """Train until the epochs, the time limit or early stopping end it. Returns the history (a list of
        per-epoch dicts). Ctrl-C saves ``last.npz`` at the current position and returns (``interrupted``)."""
        self.interrupted = False
        try:
            self._run()
        except KeyboardInterrupt:
            self.interrupted = True
            self.save()
            self.log(f"interrupted at epoch {self.epoch + 1}, step {self.step}: saved {self.path('last.npz')}")
        return self.history

    def _agreed(self, seconds):
        """Rank 0's training time, on every rank (the time limit must stop them all at the same step)."""
        if self.comm.size == 1:
            return seconds
        return float(self.comm.broadcast(numpy.array([seconds], dtype=numpy.float64))[0])

    def start_ranks(self):
        """Data parallel only: every rank must train on the same pairs with the same model and settings
        (a ParallelError on every rank, naming the ones that differ), and starts from rank 0's parameters."""
        if self.comm.size == 1:
            return
        check_agreement(self.comm, "the training data", fingerprint(self.train_pairs, self.valid_pairs))
        check_agreement(self.comm, "the model and training options",
                        fingerprint(self.model.config, dataclasses.asdict(self.config), self.model.num_params()))
        self.comm.broadcast(self.model.params.flat)

    def _run(self):
        """``elapsed`` counts training steps only (not validation or checkpoint writing): the time limit
        is on training time, whatever the evaluation costs."""
        config = self.config
        self.start_ranks()
        while self.epoch < config.epochs:
            batches = make_batches(self.train_pairs, config.batch_size, config.seed, self.epoch, config.bucket)
            bar = self._bar(len(batches))
            tokens, seconds = 0, 0.0
            while self.batch_index < len(batches):
                group = batches[self.batch_index:self.batch_index + config.accumulate]     # one step's batches
                started = time.perf_counter()
                self.train_step(group)
                took = time.perf_counter() - started
                self.elapsed = self._agreed(self.elapsed + took)           # every rank stops at the same step
                seconds += took
                self.batch_index += len(group)
                tokens += sum(target_tokens(self.train_pairs, indices) for indices in group)
                if bar is not None:
                    if self.step % SHOW_EVERY == 0:                # the bar's loss: one host copy per SHOW_EVERY
                        self.read_losses()
                        bar.set_postfix(loss=f"{numpy.mean(self.step_losses[-SHOW_EVERY:]):.3f}",
                                        tok_s=f"{tokens / max(seconds, 1e-9):,.0f}", lr=f"{self.optimizer.lr:.2g}")
                    bar.update(len(group))
                if config.time_limit and self.elapsed >= config.time_limit:
                    break
                if config.eval_every and self.step % config.eval_every == 0 and self.batch_index < len(batches):
                    self._record(tokens, seconds, self.epoch + self.batch_index / len(batches))
                elif config.checkpoint_every and self.step % config.checkpoint_every == 0:
                    self.save()
            if bar is not None:
                bar.close()
            stop_for_time = bool(config.time_limit and self.elapsed >= config.time_limit)
            position = self.epoch + self.batch_index / len(batches)
            finished_epoch = self.batch_index >= len(batches)
            if finished_epoch:
                self.epoch, self.batch_index = self.epoch + 1, 0
            improved = self._end_epoch(tokens, seconds, position)
            if stop_for_time:
                self.log(f"time limit of {config.time_limit:.0f} s reached after {self.step} steps")
                break
            if config.early_stopping and not improved and self.bad_epochs >= config.early_stopping:
                self.log(f"early stopping: no improvement for {self.bad_epochs} epochs")
                break
        self.read_losses()
        if self.out_dir and os.path.exists(self.path("model.npz")):
            params, _, _ = checkpoint.load(self.path("model.npz"))
            self.model.load_state_dict(params, where=self.path("model.npz"))

    def _end_epoch(self, tokens, seconds, position):
        """Validation at the end of an epoch (or where training stops): also drives the learning-rate
        schedule and early stopping."""
        record, improved = self._record(tokens, seconds, position)
        if self.valid_pairs:
            if not improved:
                self.bad_epochs += 1
            self.schedule.on_epoch_end(self.epoch, record["valid_loss"])
        else:
            self.schedule.on_epoch_end(self.epoch)
        return improved

    def _record(self, tokens, seconds, position):
        """Validation loss, perplexity (and the ``evaluate`` callback's scores) at ``position`` (in epochs);
        keeps ``model.npz`` when the validation loss improved; writes ``last.npz``."""
        self.read_losses()
        record = dict(epoch=round(position, 3), step=self.step,
                      train_loss=float(numpy.mean(self.step_losses[-50:])) if self.step_losses else None,
                      tokens_per_s=tokens / max(seconds, 1e-9), elapsed=self.elapsed, lr=self.optimizer.lr)
        improved = False
        if self.valid_pairs:
            valid = evaluate_loss(self.model, self.valid_pairs, comm=self.comm)
            record.update(valid_loss=valid, valid_ppl=math.exp(min(valid, 700.0)))
            improved = valid < self.best_loss
            if improved:
                self.best_loss, self.bad_epochs = valid, 0
        if self.evaluate is not None:
            record.update(self.evaluate(self.model))
        self.history.append(record)
        self.log("epoch {epoch:g}: step {step}, train loss {train}, valid loss {valid}, ppl {ppl}, {rate:,.0f} tok/s"
                 .format(epoch=record["epoch"], step=self.step, train=_fmt(record["train_loss"]),
                         valid=_fmt(record.get("valid_loss")), ppl=_fmt(record.get("valid_ppl")),
                         rate=record["tokens_per_s"])
                 + "".join(f", {k} {_fmt(v)}" for k, v in record.items() if k.startswith("valid_bleu")))
        if improved or not self.valid_pairs:
            self.save("model.npz")
        self.save()
        return record, improved

    def _bar(self, total):
        if not self.progress:
            return None
        from tqdm import tqdm
        return tqdm(total=total, initial=self.batch_index, desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
                    unit="batch", leave=False, dynamic_ncols=True)


def _silent(*args, **kwargs):
    """The log of a rank other than 0."""


def _fmt(value):
    return "-" if value is None else f"{value:.4g}"
