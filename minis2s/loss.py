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
from . import backend, kernels

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

    if reduction == "mean":
        count = max(int(mask.sum()), 1)
        scale = 1.0 / count
    else:
        count, scale = None, 1.0
    weight = xp.where(mask, scale, 0.0).astype(logits.dtype)         # (T, B): each token's share of the loss

    if kernels.enabled() and kernels.loss.supports(logits):          # the fused twin: kernels/loss.py
        token_loss, dlogits = kernels.loss.cross_entropy_rows(
            logits.reshape(-1, vocab), safe_targets.reshape(-1), mask.reshape(-1), weight.reshape(-1),
            label_smoothing)
        token_loss = token_loss.reshape(steps, batch).astype(logits.dtype)
        dlogits = dlogits.reshape(logits.shape)
    else:
        # log-softmax with the maximum subtracted: exp never overflows, even for logits of 1e4
        shifted = logits - logits.max(axis=-1, keepdims=True)            # a - max a
        target_shifted = xp.take_along_axis(shifted, safe_targets[..., None], axis=-1)[..., 0]
        mean_shifted = shifted.mean(axis=-1) if label_smoothing > 0.0 else None
        probs = xp.exp(shifted, out=shifted)                             # in place: becomes dlogits below
        total = probs.sum(axis=-1)
        log_norm = xp.log(total)                                         # log sum_v exp(a_v - max a)
        token_loss = -(1.0 - label_smoothing) * (target_shifted - log_norm)      # -(1-e) log p_y
        if label_smoothing > 0.0:
            token_loss = token_loss - label_smoothing * (mean_shifted - log_norm)  # - e/V sum_v log p_v
        token_loss = xp.where(mask, token_loss, 0.0)                     # (T, B)

        # dloss/dlogits = weight * (p - q), fused: normalise and weigh the exponentials in one pass
        probs *= (weight / total)[..., None]
        dlogits = probs
        flat = dlogits.reshape(-1, vocab)
        flat[xp.arange(flat.shape[0]), safe_targets.reshape(-1)] -= (weight * (1.0 - label_smoothing)).reshape(-1)
        if label_smoothing > 0.0:
            dlogits -= (weight * (label_smoothing / vocab))[..., None]
        if not bool(mask.all()):
            dlogits[~mask] = 0.0                                     # exactly 0, even where padded logits were inf

    if reduction == "mean":
        loss = float(token_loss.sum()) / count
    elif reduction == "sum":
        loss = float(token_loss.sum())
    else:
        loss = token_loss.sum(axis=0)
    return loss, dlogits
