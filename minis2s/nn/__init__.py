"""Layers: each forward beside its backward, the maths in each module's docstring."""
from . import init
from .layer_norm import LayerNorm
from .layers import Dropout, Embedding, Linear
from .module import Module
from .multihead import MultiHeadAttention
from .rnn import GRU, LSTM, RNN
from .transformer import (TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                          TransformerEncoderLayer, TransformerInput)

__all__ = ["Module", "Embedding", "Linear", "Dropout", "RNN", "LSTM", "GRU", "LayerNorm", "MultiHeadAttention",
           "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder",
           "TransformerInput", "init"]
