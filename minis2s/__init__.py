"""minis2s: sequence-to-sequence models from scratch on NumPy and CuPy, every gradient by hand."""
from . import backend, data, nn
from .model import Seq2Seq
from .transformer import Transformer

__version__ = "0.1.0"
__all__ = ["backend", "data", "nn", "Seq2Seq", "Transformer"]
