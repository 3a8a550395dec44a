"""Layers: each forward beside its backward, the maths in each module's docstring."""
from . import init
from .layers import Dropout, Embedding, Linear
from .module import Module

__all__ = ["Module", "Embedding", "Linear", "Dropout", "init"]
