"""minis2s: sequence-to-sequence models from scratch on NumPy and CuPy, every gradient by hand.

The package has three parts; each imports only from itself and the parts above it in this list
(tests/test_imports.py holds it so):

    the book          the maths, a forward beside its backward: nn/ (layers, cells, recurrent layers,
                      attention, the decoder, layer norm, multi-head attention, Transformer layers),
                      model.py (Seq2Seq), transformer.py, loss.py, decode.py (greedy, beam search),
                      optim.py, batch.py (the special ids, padded batches); and what they run on:
                      backend.py (NumPy or CuPy), rng.py, dispatch.py (the one switch to kernels/)
    the application   commands and what they drive: cli.py, config.py, train.py, parallel.py,
                      translator.py, ensemble.py, checkpoint.py, metrics.py, plots.py; the data:
                      data.py (text -> ids), subword.py, datasets/
    the scaffolding   what checks the book: gradcheck.py and checks.py (the gradient-check catalogue),
                      fakecupy.py (the strict CuPy stand-in, a backend.py choice), torch_twin.py (the
                      PyTorch twin), bench.py (the benchmark harness)

The fast twins live outside, in kernels/ (installed as minis2s.kernels); only dispatch.py loads them.
"""
from . import backend, data, nn
from .model import Seq2Seq
from .transformer import Transformer

__version__ = "0.1.0"
__all__ = ["backend", "data", "nn", "Seq2Seq", "Transformer"]
