"""Data-parallel training: several processes, one model, each process a share of every batch.

The design is ChainerMN's (and Horovod's, and PyTorch DDP's without its bucketing): every process
("rank" r of R) holds the same parameters and computes the gradient of its share of the global batch;
one allreduce of the flat gradient buffer sums the shares; then every rank clips and steps the optimiser
on the same summed gradient, so the parameters stay identical without ever being sent again.

Why the sum is the global batch's gradient. The loss is the mean over the N real target tokens of the
global batch, L = (1/N) sum_i l_i. Rank r's share has N_r tokens and ``loss_and_grads`` gives the gradient
of its own mean, g_r = (1/N_r) sum_{i in r} dl_i. So

    dL = sum_r (N_r / N) g_r          (each share weighted by its tokens: not a mean of means)

and N is known to every rank without a message: every rank reads the same data in the same order and
knows the whole global batch. Gradient accumulation (``--accumulate K``) is the same sum over K batches
in one process; the two combine: a step's K global batches, each split over the R ranks.

    Single()                 one process: the default; nothing is imported, nothing is sent
    MPICommunicator()        mpiexec -n R minis2s train ...: mpi4py's COMM_WORLD (pip install 'minis2s[mpi]');
                             CuPy arrays are reduced through NCCL (cupy.cuda.nccl), bootstrapped over MPI
    from_environment()       Single(), or MPICommunicator() when started by mpiexec with more than one rank

A communicator offers ``rank``, ``size``, ``allreduce(array)`` (an in-place sum of an array on its device),
``broadcast(array)`` (rank 0's values into every rank's array, in place) and ``gather(obj)`` (every
rank's Python object, a list on every rank), which is all the training loop asks of it.
"""
import hashlib
import os
import sys
import traceback

import numpy

from . import backend

# the variables an MPI launcher sets in each process: MPICH / Intel MPI (hydra), Open MPI, Slurm's PMI-2
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


class ParallelError(RuntimeError):
    """Data-parallel training cannot go on (a missing extra, ranks that disagree); the message says which."""


class Single:
    """The communicator of a run in one process: every collective is the identity."""
    rank, size = 0, 1

    def allreduce(self, array):
        return array

    def broadcast(self, array):
        return array

    def gather(self, obj):
        return [obj]


class MPICommunicator:
    """Over mpi4py's COMM_WORLD. NumPy arrays go through MPI's own Allreduce / Bcast; CuPy arrays through
    NCCL (made on first use, its unique id broadcast over MPI), which reads and writes the device memory
    directly: no copy to the host."""

    def __init__(self, comm=None):
        try:
            from mpi4py import MPI
        except ImportError as error:
            raise ParallelError("started by mpiexec with several ranks, but mpi4py cannot be imported "
                                f"({error}): pip install 'minis2s[mpi]' (mpi4py and the mpich wheel)") from error
        self.MPI = MPI
        self.comm = comm or MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._nccl = None
        _started.append(self)

    def _nccl_communicator(self):
        if self._nccl is None:
            from cupy.cuda import nccl
            uid = self.comm.bcast(nccl.get_unique_id() if self.rank == 0 else None, root=0)
            self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        return self._nccl

    def _on_gpu(self, array):
        return type(array).__module__.startswith("cupy")

    def allreduce(self, array):
        if self._on_gpu(array):
            import cupy
            from cupy.cuda import nccl
            kinds = {numpy.dtype(numpy.float32): nccl.NCCL_FLOAT32, numpy.dtype(numpy.float64): nccl.NCCL_FLOAT64}
            self._nccl_communicator().allReduce(array.data.ptr, array.data.ptr, array.size, kinds[array.dtype],
                                                nccl.NCCL_SUM, cupy.cuda.get_current_stream().ptr)
            return array
        if backend.array_module(array) is not numpy:
            raise ParallelError("MPI reduces NumPy or CuPy arrays; the stand-in's arrays cannot be sent")
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        return array

    def broadcast(self, array):
        if self._on_gpu(array):
            import cupy
            from cupy.cuda import nccl
            kinds = {numpy.dtype(numpy.float32): nccl.NCCL_FLOAT32, numpy.dtype(numpy.float64): nccl.NCCL_FLOAT64}
            self._nccl_communicator().bcast(array.data.ptr, array.size, kinds[array.dtype], 0,
                                            cupy.cuda.get_current_stream().ptr)
            return array
        self.comm.Bcast(array, root=0)
        return array

    def gather(self, obj):
        return self.comm.allgather(obj)


_started = []              # the MPICommunicator made in this process, if any (for abort)


def abort(code, show_traceback=False):
    """After an error on one rank: end every rank (MPI_Abort) instead of leaving the others waiting in a
    collective forever, with the exception's traceback first if asked. Nothing happens outside MPI."""
    if _started:
        if show_traceback:
            traceback.print_exc()
        sys.stderr.flush()
        _started[0].comm.Abort(code)


def launched_ranks(environ=None):
    """How many ranks the MPI launcher started this process among (1 outside mpiexec)."""
    environ = os.environ if environ is None else environ
    for name in _SIZE_VARIABLES:
        if environ.get(name, "").strip().isdigit():
            return int(environ[name])
    return 1


def from_environment():
    """Single() in one process (mpi4py is never imported), MPICommunicator() under mpiexec -n R, R > 1."""
    return MPICommunicator() if launched_ranks() > 1 else Single()


def check_agreement(comm, what, value):
    """Every rank must hold the same ``value`` (a fingerprint of its data, or its model): a ParallelError
    on every rank, naming the ranks that differ from rank 0, if not."""
    values = comm.gather(value)
    differ = [rank for rank, v in enumerate(values) if v != values[0]]
    if differ:
        raise ParallelError(f"ranks disagree on {what}: rank(s) {', '.join(map(str, differ))} differ from rank 0 "
                            f"({values[differ[0]]!r} against {values[0]!r}); start every rank with the same "
                            "data and options")


def share(indices, comm):
    """Rank r's share of a global batch (its index list): every R-th pair from the r-th."""
    return indices[comm.rank::comm.size]


def fingerprint(*things):
    """A short digest of Python values (the training pairs, the model's configuration) to compare ranks by."""
    return hashlib.sha1(repr(things).encode("utf-8")).hexdigest()[:16]
