"""The decoder's time loop on a GPU: where nothing feeds back into the cells, the twin of
``minis2s.nn.decoder.steps_forward`` / ``steps_backward`` runs it over whole sequences.

A decoder whose cells see only the embedding (no attention, or Luong's without input feeding; no
context feeding) is a recurrent layer over the shifted targets: ``forward_whole_sequences`` (array
code, in the book beside the loop) runs each layer over all steps and Luong's attention for all steps
at once, a few large launches instead of a dozen small ones a step. Every other decoder keeps the
reference's step loop, its cells and attention as the book's CuPy array code (no fused step:
not measured on a GPU).
"""


def steps_forward(decoder, emb, encoded, train):
    from minis2s.nn import decoder as book
    if decoder.extra_size == 0:
        return book.forward_whole_sequences(decoder, emb, encoded, train)
    return book.steps_forward.reference(decoder, emb, encoded, train)


def steps_backward(decoder, doutputs, emb, caches, encoded):
    from minis2s.nn import decoder as book
    if isinstance(caches, book.WholeSequenceCache):
        return book.backward_whole_sequences(decoder, doutputs, emb, caches, encoded)
    return book.steps_backward.reference(decoder, doutputs, emb, caches, encoded)
