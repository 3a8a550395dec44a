"""The encoder: the source's embeddings -> the memory K and each sentence's final state.

    x          (S, B, E)       the source embeddings (after dropout), optionally with each sentence
                               reversed within its own length (Sutskever et al. 2014: the first source
                               words then sit next to the first target words)
    K, s_enc = recurrent stack(x, lengths)     nn/rnn.py, each layer over all steps at once; with
                               two directions K_s = [h_fwd,s ; h_bwd,s] (M = 2H), else M = H
    K          (S, B, M)       put back in the source's own order: what attention reads
    s_enc      tuple of (L*dirs, B, H): (h,) or (h, c), each sentence's state at its last real token

s_enc is the context vector: the whole source in a fixed size, which the bridge (nn/bridge.py) hands
to the decoder. Backward: dK in the order the stack saw it (reversed again), then the stack's BPTT
with ds_enc arriving at its final states.
"""
from .rnn import Recurrent, reverse_time


class Encoder(Recurrent):
    """A recurrent stack over the source (the arguments of ``Recurrent``); its parameters are the stack's."""

    def encode(self, x, lengths, reverse, train):
        """x (S, B, E), lengths (B,), reverse the (S, B) index that reversed x (or None) ->
        memory K (S, B, M) in the source's order, s_enc (a tuple), the stack's cache."""
        memory, state, cache = self.forward(x, lengths, None, train)
        if reverse is not None:
            memory = reverse_time(memory, reverse)                  # attention sees the source in its own order
        return memory, state if isinstance(state, tuple) else (state,), cache

    def encode_backward(self, dmemory, dstate, cache, reverse):
        """dK (S, B, M) or None, ds_enc (a tuple) or None -> dx (S, B, E); adds the stack's gradients."""
        if dmemory is not None and reverse is not None:
            dmemory = reverse_time(dmemory, reverse)
        if dstate is not None and self.cell.state_size == 1:
            dstate = dstate[0]
        dx, _ = self.backward(dmemory, dstate, cache)
        return dx
