"""What the model reads: the special token ids and time-major, padded batches.

The special ids are fixed: <pad> 0, <bos> 1, <eos> 2, <unk> 3 (a vocabulary numbers its tokens after
them, data.py). collate(src_seqs, tgt_seqs) builds a Batch from lists of token-id lists:

    src        (S, B)  source ids + <eos>, padded with <pad>      src_lengths (B,) = len + 1
    tgt_in     (T, B)  <bos> + target ids  (the decoder's inputs)
    tgt_out    (T, B)  target ids + <eos>  (what it must predict)  tgt_lengths (B,) = len + 1

Time-major (S, B), as the recurrent layers step through time; the lengths give the masks
(nn/layers.py's ``length_mask``).
"""
from typing import NamedTuple

import numpy

from . import backend

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class Batch(NamedTuple):
    src: object
    src_lengths: object
    tgt_in: object
    tgt_out: object
    tgt_lengths: object

    @property
    def num_tokens(self):
        """Real target tokens (with each sentence's <eos>): what the loss is averaged over."""
        return int(backend.to_numpy(self.tgt_lengths).sum())


def pad(seqs, before=(), after=()):
    """Lists of ids -> (T, B) int64 array padded with PAD, and lengths (B,)."""
    seqs = [list(before) + list(s) + list(after) for s in seqs]
    lengths = numpy.array([len(s) for s in seqs], dtype=numpy.int64)
    out = numpy.full((max(lengths.max(initial=1), 1), len(seqs)), PAD, dtype=numpy.int64)
    for b, s in enumerate(seqs):
        out[:len(s), b] = s
    return out, lengths


def collate(src_seqs, tgt_seqs=None):
    """Lists of token-id lists -> Batch on the active backend (targets optional, for translation)."""
    if tgt_seqs is not None and len(src_seqs) != len(tgt_seqs):
        raise ValueError(f"collate: {len(src_seqs)} sources but {len(tgt_seqs)} targets")
    if not len(src_seqs):
        raise ValueError("collate: no sequences")
    src, src_lengths = pad(src_seqs, after=(EOS,))
    arrays = [src, src_lengths]
    if tgt_seqs is None:
        arrays += [None, None, None]
    else:
        tgt_in, tgt_lengths = pad(tgt_seqs, before=(BOS,))
        tgt_out, _ = pad(tgt_seqs, after=(EOS,))
        arrays += [tgt_in, tgt_out, tgt_lengths]
    return Batch(*(None if a is None else backend.asarray(a) for a in arrays))
