"""Softmax cross-entropy over padded sequences: the loss and its gradient together.

Shapes: logits a (T, B, V), targets y (T, B), lengths (B,) or mask m (T, B) with m[t, b] = [t < lengths[b]].

With label smoothing eps the target distribution is y~ = (1 - eps) onehot(y) + eps / V (as in PyTorch), and

    log p    = log_softmax(a) = a - max a - log sum_v exp(a_v - max a)      (never overflows)
    loss_tb  = -sum_v y~_v log p_v  =  -(1 - eps) log p_y - eps mean_v log p_v
    dloss_tb / da = p - y~                         (softmax minus the (smoothed) one-hot)

The derivation, step by step: docs/derivations/cross-entropy.md. ``softmax_cross_entropy`` below
writes exactly these lines; its fast twin (kernels/loss.py) computes the same in place.

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
from .dispatch import twin
from .nn.layers import length_mask, log_softmax_forward

REDUCTIONS = ("mean", "sum", "sequence")


def sequence_logprobs(log_probs, targets, lengths):
    """log_probs (T, B, V), targets (T, B), lengths (B,) -> (B,) float64: each sequence's log-probability,
    sum_t log p(y_t) over its real positions (what scoring a translation means; no smoothing)."""
    xp = backend.array_module(log_probs)
    mask = length_mask(lengths, targets.shape[0])
    picked = xp.take_along_axis(log_probs, xp.where(mask, targets, 0)[..., None], axis=-1)[..., 0]   # log p(y_t)
    return xp.where(mask, picked, 0.0).astype(xp.float64).sum(axis=0)


def cross_entropy(logits, targets, lengths=None, mask=None, reduction="mean", label_smoothing=0.0):
    """Returns (loss, dlogits). loss: a 0-d float64 array for "mean"/"sum" (``float(loss)`` on NumPy,
    ``backend.to_float(loss)`` on any backend, where the host needs the number), a (B,) array for "sequence";
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
        count = xp.maximum(mask.sum(), 1)                # N, the number of real target tokens (kept on the device)
        weight = (mask / count).astype(logits.dtype)     # (T, B): each token's share of the loss, 1/N or 0
    else:
        count, weight = 1, mask.astype(logits.dtype)
    token_loss, dlogits = softmax_cross_entropy(logits, safe_targets, mask, weight, label_smoothing)

    if reduction == "sequence":
        loss = token_loss.sum(axis=0)
    else:
        loss = token_loss.sum() / count                  # a 0-d array: on the GPU, no copy to the host here
    return loss, dlogits


@twin("loss.softmax_cross_entropy")
def softmax_cross_entropy(logits, targets, mask, weight, label_smoothing=0.0):
    """Each token's loss and the weighted gradient, zero at padded positions.

    logits a (T, B, V), targets y (T, B) (any valid id where padded), mask (T, B), weight w (T, B)
    -> token_loss (T, B) = -sum_v y~_v log p_v,  dlogits (T, B, V) = w (p - y~).
    """
    xp = backend.array_module(logits)
    vocab = logits.shape[-1]
    log_probs = log_softmax_forward(logits)                                    # log p, (T, B, V)
    onehot = (xp.arange(vocab) == targets[..., None]).astype(logits.dtype)     # onehot(y), (T, B, V)
    smoothed = (1.0 - label_smoothing) * onehot + label_smoothing / vocab      # y~
    token_loss = -(1.0 - label_smoothing) * xp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    if label_smoothing > 0.0:
        token_loss = token_loss - label_smoothing * log_probs.mean(axis=-1)   # - eps mean_v log p_v
    dlogits = weight[..., None] * (xp.exp(log_probs) - smoothed)              # w (softmax - onehot)
    # a padded position gives exactly zero loss and gradient, whatever its logits were (even inf)
    token_loss = xp.where(mask, token_loss, 0.0).astype(logits.dtype)
    dlogits = xp.where(mask[..., None], dlogits, 0.0).astype(logits.dtype)
    return token_loss, dlogits
