"""The bridge: from the encoder's final states to the decoder's initial state s_0.

The encoder sums the source up in its final state, the *context vector*; the bridge hands it to the
decoder (model.py chooses, with ``bridge=``):

    final, unidirectional     s_0 = s_enc                     the encoder's own final state
    final, bidirectional      s_0,k = tanh(W_b,k [s_fwd,k ; s_bwd,k] + b_b,k)   per layer k: the two
                              directions' final states joined (for the LSTM, c with its own W_b)
    zeros                     s_0 = 0                         the decoder sees the source only through
                                                              attention

``Bridge`` below is the bidirectional case's layer; the other two need no parameters. Backward, per
layer: dpre = ds_0,k (1 - s_0,k^2), d[s_fwd ; s_bwd] = dpre W_b,k, dW_b,k += dpre^T [s_fwd ; s_bwd].
"""
from .. import backend
from .layers import Linear, tanh_backward
from .module import Module


class Bridge(Module):
    """Joins a bidirectional encoder's two final states per layer: s_k = tanh(W_b [s_fwd ; s_bwd] + b_b),
    from 2 x the encoder's hidden size per direction to the decoder's hidden size."""

    def __init__(self, encoder_hidden_size, hidden_size, num_layers, state_size, dtype=None, seed=0):
        super().__init__(dtype, seed)
        self.num_layers, self.state_size = num_layers, state_size
        for j, kind in enumerate("hc"[:state_size]):
            for k in range(num_layers):
                self.add_module(f"{kind}_l{k}", Linear(2 * encoder_hidden_size, hidden_size, dtype=dtype,
                                                       seed=seed + 10 * j + k))

    def forward(self, enc_state):
        """enc_state: tuple of (2L, B, H) -> tuple of (L, B, H), cache."""
        xp = backend.array_module(enc_state[0])
        outputs, caches = [], []
        for j, kind in enumerate("hc"[:self.state_size]):
            layers = []
            for k in range(self.num_layers):
                joined = xp.concatenate([enc_state[j][2 * k], enc_state[j][2 * k + 1]], axis=1)
                pre, cache = self.modules[f"{kind}_l{k}"].forward(joined)
                layers.append(xp.tanh(pre))
                caches.append((cache, layers[-1]))
            outputs.append(xp.stack(layers))
        return tuple(outputs), caches

    def backward(self, dstate, caches):
        """tuple of (L, B, H) -> tuple of (2L, B, H)."""
        xp = backend.array_module(dstate[0])
        denc = []
        caches = iter(caches)
        for j, kind in enumerate("hc"[:self.state_size]):
            parts = []
            for k in range(self.num_layers):
                cache, out = next(caches)
                dpre = tanh_backward(dstate[j][k], out)
                djoined = self.modules[f"{kind}_l{k}"].backward(dpre, cache)
                hidden = djoined.shape[1] // 2
                parts += [djoined[:, :hidden], djoined[:, hidden:]]
            denc.append(xp.stack(parts))
        return tuple(denc)
