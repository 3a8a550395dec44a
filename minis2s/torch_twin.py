"""The same Seq2Seq in PyTorch, for benchmarks and comparisons only (torch is never needed to run minis2s).

Architecture, as minis2s builds it for ``cell`` in {gru, lstm}, ``attention`` in {none, bahdanau},
one layer, bridge "final", one direction or both, with or without the attentional output:

    encoder   torch.nn.GRU / LSTM over the packed source (cuDNN-free CPU kernels, oneDNN where it applies);
              bidirectional: both directions, a memory of 2H, s_0 = tanh(W_b [s_fwd ; s_bwd] + b_b)
    decoder   without attention: torch.nn.GRU / LSTM over the whole teacher-forced target sequence in one
              call, as a PyTorch user writes it (d2l's Seq2SeqDecoder) and as minis2s runs it, since nothing
              feeds back into the cells; one-step sequences when decoding.
              With Bahdanau attention: torch.nn.GRUCell / LSTMCell, step by step, the attention before the
              cell, queried by the previous state: c_t = sum_s softmax_s(v^T tanh(W_q h + W_k k_s)) k_s,
              input [e_t ; c_t]
    output    torch.nn.Linear over the top hidden state, or with the attentional output over
              tanh(W_c [c_t ; h_t]) (no bias); cross-entropy mean over real target tokens

``from_minis2s(model)`` copies a minis2s model's weights, so that both compute the same loss; the
benchmark checks that before it quotes a speed. ``to_minis2s()`` is the way back: a minis2s Seq2Seq with
the twin's weights, so that a model trained in PyTorch is decoded and scored by minis2s' own code.
``Decoding`` wraps the twin in the ``start`` / ``step`` interface of ``Seq2Seq``, so that minis2s' own greedy
and beam search drive it: both columns then share the search bookkeeping and differ only in the model's
arithmetic.
"""
import numpy
import torch
import torch.nn.functional as F

from .batch import PAD
from .model import Encoded


class TorchSeq2Seq(torch.nn.Module):
    def __init__(self, src_vocab_size, tgt_vocab_size, cell="gru", attention="bahdanau", emb_size=256,
                 hidden_size=256, bidirectional=False, attentional_output=False):
        super().__init__()
        if cell not in ("gru", "lstm") or attention not in ("none", "bahdanau"):
            raise ValueError("the twin covers cell gru/lstm and attention none/bahdanau")
        if attentional_output and attention != "bahdanau":
            raise ValueError("the twin's attentional output needs attention='bahdanau'")
        self.cell_kind, self.attention = cell, attention
        self.config = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, cell=cell,
                           attention=attention, emb_size=emb_size, hidden_size=hidden_size, bidirectional=bidirectional,
                           attentional_output=attentional_output)
        self.src_embedding = torch.nn.Embedding(src_vocab_size, emb_size, padding_idx=PAD)
        self.tgt_embedding = torch.nn.Embedding(tgt_vocab_size, emb_size, padding_idx=PAD)
        recurrent, step = (torch.nn.GRU, torch.nn.GRUCell) if cell == "gru" else (torch.nn.LSTM, torch.nn.LSTMCell)
        self.encoder = recurrent(emb_size, hidden_size, bidirectional=bidirectional)
        memory = 2 * hidden_size if bidirectional else hidden_size
        kinds = ("h", "c") if cell == "lstm" else ("h",)           # the bridge: tanh(W_b [fwd ; bwd] + b_b) each
        self.bridge = torch.nn.ModuleDict({k: torch.nn.Linear(memory, hidden_size) for k in kinds}) \
            if bidirectional else None
        if attention == "bahdanau":                    # the context feeds the cell: one step at a time
            self.decoder = step(emb_size + memory, hidden_size)
        else:                                          # nothing feeds back: one call over the whole sequence
            self.decoder = recurrent(emb_size, hidden_size)
        if attention == "bahdanau":
            self.W_q = torch.nn.Linear(hidden_size, hidden_size, bias=False)
            self.W_k = torch.nn.Linear(memory, hidden_size, bias=False)
            self.v = torch.nn.Parameter(torch.zeros(hidden_size))
        self.combine = torch.nn.Linear(memory + hidden_size, hidden_size, bias=False) if attentional_output else None
        self.out = torch.nn.Linear(hidden_size, tgt_vocab_size)

    @classmethod
    def from_minis2s(cls, model, device="cpu"):
        """The twin with ``model``'s weights, on ``device`` ("cpu", or "cuda": cuDNN's GRU/LSTM for the
        encoder, the decoder's cell step by step as a user would write it)."""
        from . import backend
        config = model.config
        if config["num_layers"] != 1 or config["bridge"] != "final" or config["deep_output"] or any(
                config[k] for k in ("input_feeding", "context_feeding", "reverse_source")):
            raise ValueError("the twin covers one layer, bridge 'final', no feeding, reversal or deep output")
        twin = cls(**{k: config[k] for k in ("src_vocab_size", "tgt_vocab_size", "cell", "attention", "emb_size",
                                             "hidden_size", "bidirectional", "attentional_output")})
        state = model.state_dict()
        with torch.no_grad():
            for name, tensor in twin.minis2s_names().items():
                tensor.copy_(torch.from_numpy(numpy.asarray(backend.to_numpy(state[name]), dtype=numpy.float32)))
        return twin.to(device)

    def minis2s_names(self):
        """minis2s' parameter name -> the twin's tensor holding it (every parameter, each once)."""
        names = {"src_embedding.weight": self.src_embedding.weight, "tgt_embedding.weight": self.tgt_embedding.weight,
                 "decoder.out.weight": self.out.weight, "decoder.out.bias": self.out.bias}
        for name, tensor in self.encoder.named_parameters():           # weight_ih_l0, ..., weight_ih_l0_reverse
            names[f"encoder.{name}"] = tensor
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            names[f"decoder.rnn.{name}"] = getattr(self.decoder, name if self.attention == "none" else name[:-3])
        for kind, linear in (self.bridge or {}).items():
            names[f"bridge.{kind}_l0.weight"], names[f"bridge.{kind}_l0.bias"] = linear.weight, linear.bias
        if self.attention == "bahdanau":
            names.update({"decoder.attention.W_q": self.W_q.weight, "decoder.attention.W_k": self.W_k.weight,
                          "decoder.attention.v": self.v})
        if self.combine is not None:
            names["decoder.combine.weight"] = self.combine.weight
        return names

    def to_minis2s(self):
        """A minis2s Seq2Seq (float32, on the current backend) holding the twin's weights."""
        from . import backend
        from .model import Seq2Seq
        model = Seq2Seq(**self.config)
        model.load_state_dict({name: backend.xp().asarray(tensor.detach().cpu().numpy())
                               for name, tensor in self.minis2s_names().items()})
        return model

    @property
    def device(self):
        return self.out.weight.device

    def encode(self, src, src_lengths):
        emb = self.src_embedding(src)
        packed = torch.nn.utils.rnn.pack_padded_sequence(emb, src_lengths.cpu(), enforce_sorted=False)
        memory, state = self.encoder(packed)
        memory, _ = torch.nn.utils.rnn.pad_packed_sequence(memory, total_length=src.shape[0])
        if self.bridge is not None:                    # (2, B, H) forward, backward -> tanh(W_b [fwd ; bwd] + b_b)
            state = tuple(torch.tanh(self.bridge[kind](torch.cat([s[0], s[1]], dim=1)))
                          for kind, s in zip(("h", "c"), state if self.cell_kind == "lstm" else (state,)))
        else:
            state = (state[0][0], state[1][0]) if self.cell_kind == "lstm" else (state[0],)
        mask = torch.arange(src.shape[0], device=src.device)[:, None] < src_lengths[None, :]
        projected = self.W_k(memory) if self.attention == "bahdanau" else None
        return memory, projected, mask, state

    def decode_step(self, emb, state, memory, projected, mask):
        """One step -> (the new state, the attention weights or None, the output the projection reads)."""
        if self.attention == "bahdanau":
            scores = torch.tanh(projected + self.W_q(state[0])) @ self.v                 # (S, B)
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=0)
            context = (weights[:, :, None] * memory).sum(dim=0)
            emb = torch.cat([emb, context], dim=1)
        else:                                          # the whole-sequence module, over one step
            _, state = self.decoder(emb[None], self._layered(state))
            state = (state[0][0], state[1][0]) if self.cell_kind == "lstm" else (state[0],)
            return state, None, state[0]
        state = self.decoder(emb, state) if self.cell_kind == "lstm" else (self.decoder(emb, state[0]),)
        output = state[0] if self.combine is None else torch.tanh(self.combine(torch.cat([context, state[0]], dim=1)))
        return state, weights, output

    def _layered(self, state):
        """(h,) or (h, c) of (B, H) -> nn.GRU's h (1, B, H) or nn.LSTM's (h, c)."""
        return (state[0][None], state[1][None]) if self.cell_kind == "lstm" else state[0][None]

    def loss(self, src, src_lengths, tgt_in, tgt_out, tgt_lengths):
        memory, projected, mask, state = self.encode(src, src_lengths)
        embedded = self.tgt_embedding(tgt_in)
        if self.attention == "none":                   # every step's input is known: one call
            outputs, _ = self.decoder(embedded, self._layered(state))
        else:
            steps = []
            for t in range(tgt_in.shape[0]):
                state, _, output = self.decode_step(embedded[t], state, memory, projected, mask)
                steps.append(output)
            outputs = torch.stack(steps)
        logits = self.out(outputs)
        real = torch.arange(tgt_in.shape[0], device=tgt_in.device)[:, None] < tgt_lengths[None, :]
        targets = tgt_out.masked_fill(~real, -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def tensors(batch, device="cpu"):
    """A minis2s Batch (on any backend) as int64 tensors on ``device``."""
    from . import backend
    return [torch.from_numpy(numpy.asarray(backend.to_numpy(a))).to(device)
            for a in (batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, batch.tgt_lengths)]


class Decoding:
    """The twin behind Seq2Seq's ``start`` / ``step``, so that minis2s' greedy and beam search drive it."""

    def __init__(self, twin):
        self.twin = twin

    @torch.no_grad()
    def start(self, src, src_lengths):
        device = self.twin.device
        memory, projected, mask, state = self.twin.encode(torch.from_numpy(numpy.asarray(src)).to(device),
                                                          torch.from_numpy(numpy.asarray(src_lengths)).to(device))
        encoded = Encoded(_Rows(memory), None if projected is None else _Rows(projected), _Rows(mask), None, None)
        return encoded, tuple(_Rows(s[None]) for s in state), None

    def repeat_encoded(self, encoded, rows):
        return encoded._replace(memory=encoded.memory[:, rows], mask=encoded.mask[:, rows],
                                projected=None if encoded.projected is None else encoded.projected[:, rows])

    def select_state(self, state, feed, rows):
        return tuple(s[:, rows] for s in state), None

    @torch.no_grad()
    def step(self, tokens, state, feed, encoded):
        emb = self.twin.tgt_embedding(torch.from_numpy(numpy.asarray(tokens)).to(self.twin.device))
        new_state, weights, output = self.twin.decode_step(
            emb, tuple(s.tensor[0] for s in state), encoded.memory.tensor,
            None if encoded.projected is None else encoded.projected.tensor, encoded.mask.tensor)
        logp = torch.log_softmax(self.twin.out(output), dim=1)
        return (logp.cpu().numpy(), tuple(_Rows(s[None]) for s in new_state), None,   # the search runs on the host
                None if weights is None else weights.cpu().numpy())


class _Rows:
    """A tensor that beam search can index with NumPy arrays (rows along axis 1, or 0 for 2-D)."""

    def __init__(self, tensor):
        self.tensor = tensor
        self.shape = tuple(tensor.shape)

    def __getitem__(self, index):
        device = self.tensor.device
        if isinstance(index, tuple):
            return _Rows(self.tensor[:, torch.from_numpy(numpy.asarray(index[1])).to(device)])
        return _Rows(self.tensor[torch.from_numpy(numpy.asarray(index)).to(device)])
