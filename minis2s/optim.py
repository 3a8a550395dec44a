"""Optimisers, gradient clipping and learning-rate schedules. State is plain arrays.

Every update runs in place on the parameter arrays (which the model's dicts share).
g is a gradient, p a parameter, lr the learning rate, wd the weight decay (an L2 term added
to the gradient, as in PyTorch's SGD and Adam):

SGD with momentum (PyTorch's form)
    g  = g + wd p
    b  = mu b + g                       (b = g at the first step)
    p  = p - lr b                       (Nesterov: p = p - lr (g + mu b))

Adam (Kingma & Ba 2015, bias-corrected)
    g  = g + wd p
    m  = beta1 m + (1 - beta1) g        v = beta2 v + (1 - beta2) g^2
    m^ = m / (1 - beta1^t)              v^ = v / (1 - beta2^t)
    p  = p - lr m^ / (sqrt(v^) + eps)

Global-norm clipping: n = sqrt(sum over all tensors of sum g^2); if n > c, every g *= c / n.
"""
import math

from . import backend
from .dispatch import twin
from .nn.module import views_of


class Optimizer:
    def __init__(self, params, grads, lr):
        if lr <= 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.params, self.grads, self.lr = params, grads, lr
        self.steps = 0

    def state_dict(self):
        """{'steps': int, 'lr': float, '<slot>.<param name>': array}."""
        state = {"steps": self.steps, "lr": self.lr}
        for slot in self.slots:
            for name, array in getattr(self, slot).items():
                state[f"{slot}.{name}"] = backend.to_numpy(array)
        return state

    def load_state_dict(self, state):
        self.steps, self.lr = int(state["steps"]), float(state["lr"])
        for slot in self.slots:
            for name, array in getattr(self, slot).items():
                array[...] = backend.asarray(state[f"{slot}.{name}"], dtype=array.dtype)


class SGD(Optimizer):
    slots = ("momentum_buffer",)

    def __init__(self, params, grads, lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, grads, lr)
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        xp = backend.xp()
        self.momentum_buffer = {name: xp.zeros_like(p) for name, p in params.items()} if momentum else {}

    def step(self):
        self.steps += 1
        for name, p in self.params.items():
            g = self.grads[name]
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                buffer = self.momentum_buffer[name]
                if self.steps == 1:
                    buffer[...] = g
                else:
                    buffer *= self.momentum
                    buffer += g
                g = g + self.momentum * buffer if self.nesterov else buffer
            p -= self.lr * g


class Adam(Optimizer):
    slots = ("m", "v")

    def __init__(self, params, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, grads, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        xp = backend.xp()
        flat = flat_buffers(params, grads)
        if flat is None:
            self.m = {name: xp.zeros_like(p) for name, p in params.items()}
            self.v = {name: xp.zeros_like(p) for name, p in params.items()}
            self.groups = [(p, grads[name], self.m[name], self.v[name]) for name, p in params.items()]
        else:                                     # m and v laid out as the parameters, in one buffer each
            m, v = xp.zeros_like(flat[0]), xp.zeros_like(flat[0])
            self.m = dict(zip(params, views_of(m, params.values())))
            self.v = dict(zip(params, views_of(v, params.values())))
            self.groups = [flat + (m, v)]         # the update is element by element: one call for every parameter

    def step(self):
        self.steps += 1
        correction1 = 1 - self.beta1 ** self.steps
        correction2 = 1 - self.beta2 ** self.steps
        for p, g, m, v in self.groups:            # one a tensor, or one over a flattened model's buffers
            adam_update(p, g, m, v, self.lr / correction1, self.beta1, self.beta2, correction2, self.eps,
                        self.weight_decay)


def flat_buffers(params, grads):
    """(params.flat, grads.flat) when both dicts are a flattened model's (``Module.flatten_parameters``: every
    array a view of one buffer, in the dict's order), else None."""
    flat_params, flat_grads = getattr(params, "flat", None), getattr(grads, "flat", None)
    if flat_params is None or flat_grads is None or list(params) != list(grads):
        return None
    return flat_params, flat_grads


@twin("optim.adam_update")
def adam_update(p, g, m, v, step_size, beta1, beta2, correction2, eps, weight_decay):
    """One Adam update of one parameter, in place on p, m, v (step_size = lr / (1 - beta1^t),
    correction2 = 1 - beta2^t); the gradient g itself is left as it was."""
    xp = backend.array_module(p)
    if weight_decay:
        g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * g                            # m = beta1 m + (1 - beta1) g
    v *= beta2
    g = g * g                                       # a fresh array: the gradient itself is kept
    g *= 1 - beta2
    v += g                                          # v = beta2 v + (1 - beta2) g^2
    # p -= lr * (m / c1) / (sqrt(v / c2) + eps), with the temporaries reused in place
    denominator = xp.sqrt(v, out=g)
    denominator *= 1.0 / math.sqrt(correction2)
    denominator += eps
    update = xp.divide(m, denominator, out=denominator)
    update *= step_size
    p -= update


OPTIMIZERS = {"adam": Adam, "sgd": SGD}


def clip_grad_norm(grads, max_norm):
    """Scale all gradients together so that their global L2 norm is at most max_norm; returns the norm before
    (a 0-d float64 array where the gradients are: on a GPU, nothing is copied to the host).

        norm  = sqrt(sum_p sum_i g_p,i^2)
        scale = min(1, max_norm / (norm + 1e-12))          (1: the gradients are left as they are)
        g_p  <- scale * g_p
    """
    xp = backend.xp()
    total = xp.sqrt(sum(xp.vdot(g.reshape(-1), g.reshape(-1)).astype(xp.float64) for g in grads.values()))
    if max_norm:
        scale = xp.minimum(1.0, max_norm / (total + 1e-12))
        for g in grads.values():
            g *= scale.astype(g.dtype)
    return total


# ----------------------------------------------------------------------------- learning-rate schedules

class Schedule:
    """Sets ``optimizer.lr`` from a base rate: warm-up by step, then step decay or reduce-on-plateau by epoch.

    warmup_steps w:      lr = base * min(1, step / w)                   (linear warm-up)
    kind "noam":         lr = base * min(step / w, sqrt(w / step))      (Vaswani et al. 2017: warm-up, then
                         1/sqrt(step); their lr = d^-0.5 min(step^-0.5, step w^-1.5) is this with
                         base = (d w)^-0.5, the peak, reached at step w: here ``--lr`` names the peak)
    kind "linear":       lr = base * min(step / w, (N + 1 - step) / (N - w)), step = 1 .. N: warm-up, then
                         a straight line down to base / (N - w) at the last step N = ``total_steps`` (all
                         the run's epochs; Hugging Face's linear schedule, PyTorch's LinearLR after a
                         warm-up, which take the rate of step s from s - 1 steps done). For a fixed
                         budget of steps an annealed rate ends lower than a constant one (Li et al. 2020,
                         "Budgeted training")
    decay_every k, gamma: lr = base * gamma ** (epoch // k)             (step decay)
    plateau_patience n:  lr *= factor when the validation loss has not improved by more than
                         ``threshold`` (relative) for n epochs in a row (reduce-on-plateau), never below min_lr
    """

    def __init__(self, optimizer, warmup_steps=0, decay_every=0, gamma=0.5, plateau_patience=0, factor=0.5,
                 threshold=1e-4, min_lr=0.0, kind="constant", total_steps=0):
        if kind not in ("constant", "noam", "linear"):
            raise ValueError(f"the learning-rate schedule must be 'constant', 'noam' or 'linear', got {kind!r}")
        if kind == "noam" and warmup_steps < 1:
            raise ValueError(f"the noam schedule needs --warmup-steps >= 1, got {warmup_steps}")
        if kind == "linear" and total_steps <= warmup_steps:
            raise ValueError(f"the linear schedule needs more steps in all ({total_steps}) than --warmup-steps "
                             f"({warmup_steps})")
        self.optimizer, self.base, self.kind, self.total_steps = optimizer, optimizer.lr, kind, total_steps
        self.warmup_steps, self.decay_every, self.gamma = warmup_steps, decay_every, gamma
        self.plateau_patience, self.factor, self.threshold, self.min_lr = plateau_patience, factor, threshold, min_lr
        self.plateau_scale, self.best, self.bad_epochs, self.epoch = 1.0, math.inf, 0, 0

    def rate(self, step):
        warm = min(1.0, step / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "noam":
            warm = min(step / self.warmup_steps, (self.warmup_steps / max(step, 1)) ** 0.5)
        elif self.kind == "linear" and step > self.warmup_steps:
            warm = max(0.0, (self.total_steps + 1 - step) / (self.total_steps - self.warmup_steps))
        decay = self.gamma ** (self.epoch // self.decay_every) if self.decay_every else 1.0
        return max(self.base * warm * decay * self.plateau_scale, self.min_lr)

    def on_step(self, step):
        self.optimizer.lr = self.rate(step)

    def on_epoch_end(self, epoch, valid_loss=None):
        self.epoch = epoch
        if self.plateau_patience and valid_loss is not None:
            if valid_loss < self.best * (1 - self.threshold):
                self.best, self.bad_epochs = valid_loss, 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs >= self.plateau_patience:
                    self.plateau_scale *= self.factor
                    self.bad_epochs = 0

    def state_dict(self):
        return {"plateau_scale": self.plateau_scale, "best": self.best, "bad_epochs": self.bad_epochs,
                "epoch": self.epoch}

    def load_state_dict(self, state):
        self.plateau_scale, self.best = float(state["plateau_scale"]), float(state["best"])
        self.bad_epochs, self.epoch = int(state["bad_epochs"]), int(state["epoch"])
