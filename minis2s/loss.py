"""Softmax cross-entropy over padded sequences, loss and gradient in one fused step.

Shapes: logits a (T, B, V), targets y (T, B), lengths (B,) or mask m (T, B) with m[t, b] = [t < lengths[b]].

With label smoothing e the target distribution is q = (1 - e) onehot(y) + e / V (as in PyTorch), and

    p        = softmax(a)                          computed as exp(a - max a - log sum exp(a - max a))
    loss_tb  = -sum_v q_v log p_v  =  log sum_v exp(a_v) - sum_v q_v a_v
    dloss_tb / da = p - q                          (softmax minus the (smoothed) one-hot)

Padded positions (m = 0) contribute exactly zero loss and exactly zero gradient, whatever
their logits or targets are. Reductions:

    "mean"      (the default) sum over real tokens / number of real tokens N = sum m.
                This is the mean per *target token*, not per sentence: a batch of long
                sentences does not weigh more than a batch of short ones.
    "sum"       the sum over real tokens.
    "sequence"  a (B,) vector, each sequence's summed loss; dlogits is the gradient of the sum
                of that vector.
"""
from . import backend

REDUCTIONS = ("mean", "sum", "sequence")


def length_mask(lengths, steps):
    """(T, B) boolean mask: True where t < lengths[b]."""
    xp = backend.array_module(lengths)
    return xp.arange(steps)[:, None] < lengths[None, :]


def cross_entropy(logits, targets, lengths=None, mask=None, reduction="mean", label_smoothing=0.0):
    """Returns (loss, dlogits). loss: a float for "mean"/"sum", a (B,) array for "sequence";
    dlogits: (T, B, V), the gradient of loss with respect to logits."""
    xp = backend.array_module(logits)
    steps, batch, vocab = logits.shape
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if mask is None:
        mask = length_mask(lengths, steps) if lengths is not None else xp.ones((steps, batch), dtype=bool)
    mask = mask.astype(bool)
    safe_targets = xp.where(mask, targets, 0)           # padded targets may be anything, even out of range

    # log-softmax with the maximum subtracted: exp never overflows, even for logits of 1e4
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probs = xp.exp(shifted)                             # (T, B, V), becomes dlogits in place below
    total = probs.sum(axis=-1, keepdims=True)
    log_norm = xp.log(total)[..., 0]                    # log sum_v exp(a_v - max a)
    target_log_prob = xp.take_along_axis(shifted, safe_targets[..., None], axis=-1)[..., 0] - log_norm
    token_loss = -(1.0 - label_smoothing) * target_log_prob
    if label_smoothing > 0.0:                           # - e/V sum_v log p_v
        token_loss = token_loss - label_smoothing * (shifted.mean(axis=-1) - log_norm)
    token_loss = xp.where(mask, token_loss, 0.0)        # (T, B)

    # dloss/dlogits = p - q, fused: the exponentials already computed, normalised in place
    probs /= total
    dlogits = probs
    flat = dlogits.reshape(-1, vocab)
    flat[xp.arange(flat.shape[0]), safe_targets.reshape(-1)] -= 1.0 - label_smoothing
    if label_smoothing > 0.0:
        dlogits -= label_smoothing / vocab

    if reduction == "mean":
        count = max(int(mask.sum()), 1)
        loss = float(token_loss.sum()) / count
        scale = 1.0 / count
    elif reduction == "sum":
        loss = float(token_loss.sum())
        scale = 1.0
    else:
        loss = token_loss.sum(axis=0)
        scale = 1.0
    dlogits *= xp.where(mask, scale, 0.0).astype(dlogits.dtype)[..., None]
    dlogits[~mask] = 0.0                                # exactly zero, even where padded logits were inf
    return loss, dlogits
