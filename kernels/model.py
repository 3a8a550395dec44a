"""The decoding step: the fast twin of ``minis2s.model.Seq2Seq.step`` (greedy and beam search call it once a
step). The same four stages as the book's, each on its kernel:

    xw_emb = E[y_t-1] W_emb^T + b_ih0     layers.embedding_linear_forward: inside a decode, a token's row made
                                          the first time it comes up and gathered after that
    o_t, state, feed, alpha_t             decoder.decode_step: the decoder's fused loop run for one step
                                          (without attention, the sequence kernel for one step)
    logits = o_t W_out^T + b_out          layers.linear_forward: inside a decode, on a kept contiguous W_out^T
    log p  = log_softmax(logits)          layers.log_softmax_forward: one pass a row

The results are the book's (tests/test_kernels.py's decode-step test holds them equal to the tolerance its
error bound gives).
"""
from . import decoder as fast_decoder
from . import layers as fast_layers


def step(model, tokens, state, feed, encoded):
    """The twin of ``Seq2Seq.step``: tokens (B,) -> log-probabilities (B, V), new state, new feed, attention
    weights (S, B) or None."""
    decoder = model.decoder
    params, out = decoder.rnn.params, decoder.out.params
    xw_emb = fast_layers.embedding_linear_forward(model.tgt_embedding.params["weight"], tokens,
                                                  params["weight_ih_l0"][:, :decoder.emb_size], params["bias_ih_l0"])
    emb = model.tgt_embedding.params["weight"][tokens] if decoder.deep_output else None   # the deep output reads E[y]
    output, state, feed, weights = fast_decoder.decode_step(decoder, xw_emb, state, feed, encoded, emb)
    logits, _ = fast_layers.linear_forward(output, out["weight"], out.get("bias"))
    return fast_layers.log_softmax_forward(logits), state, feed, weights
