"""Attention over the encoder outputs, one decoder step at a time.

Shapes: memory K (S, B, M) the encoder outputs (M = dirs*H), mask (S, B) true at real source
positions, query q (B, Q) a decoder hidden state, A the attention size (Bahdanau).

Scores e_s for each source position s:

    bahdanau        e_s = v^T tanh(W_q q + W_k k_s)          (additive; Bahdanau et al. 2015)
                    K W_k^T does not depend on the step: ``project_memory`` computes it once
    luong-dot       e_s = k_s . q                            (Luong et al. 2015; needs Q == M)
    luong-general   e_s = k_s . (W_a q)                      W_a: (M, Q)

Then the masked softmax and the context vector:

    alpha_s = exp(e_s - max e) [s real] / sum over real s'    (padded positions get exactly 0)
    c       = sum_s alpha_s k_s                              (B, M)

Backward (dc from above):

    dalpha_s = dc . k_s                dK_s += alpha_s dc
    de_s     = alpha_s (dalpha_s - sum_s' alpha_s' dalpha_s')    (softmax backward; 0 where alpha is 0)
    luong-dot:      dq = sum_s de_s k_s,          dK_s += de_s q
    luong-general:  du = sum_s de_s k_s (u = W_a q),  dW_a += du^T q,  dq = du W_a,  dK_s += de_s u
    bahdanau:       da_s = de_s v * (1 - t_s^2)  with t_s = tanh(W_q q + W_k k_s)
                    dv += sum_s,b de_s t_s,  dW_q += (sum_s da_s)^T q,  dq = (sum_s da_s) W_q,
                    dKW_s += da_s   (the projected memory's gradient, summed over all steps, then
                                     ``project_memory_backward``: dW_k += dKW^T K,  dK += dKW W_k)
"""
from typing import NamedTuple

import numpy

from .. import backend, kernels
from . import init
from .module import Module

KINDS = ("bahdanau", "luong-dot", "luong-general")


class AttentionCache(NamedTuple):
    query: object         # (B, Q)
    weights: object       # (S, B) alpha
    aux: object           # bahdanau: t = tanh(.) (S, B, A); luong-general: u = W_a q (B, M); dot: None


class Attention(Module):
    def __init__(self, kind, query_size, memory_size, attention_size=None, dtype=None, seed=0):
        super().__init__(dtype, seed)
        if kind not in KINDS:
            raise ValueError(f"attention must be one of {KINDS}, got {kind!r}")
        if kind == "luong-dot" and query_size != memory_size:
            raise ValueError(f"luong-dot attention needs query size == memory size, got {query_size} and "
                             f"{memory_size} (use luong-general, or a unidirectional encoder)")
        self.kind = kind
        rng = self.init_rng
        if kind == "bahdanau":
            size = attention_size or query_size
            self.add_param("W_q", init.xavier_uniform((size, query_size), rng))
            self.add_param("W_k", init.xavier_uniform((size, memory_size), rng))
            self.add_param("v", rng.uniform(-1.0 / numpy.sqrt(size), 1.0 / numpy.sqrt(size), size=(size,)))
        elif kind == "luong-general":
            self.add_param("W_a", init.xavier_uniform((memory_size, query_size), rng))

    # ------------------------------------------------------------------ once per sentence

    def project_memory(self, memory):
        """K (S, B, M) -> K W_k^T (S, B, A) for bahdanau; None for the Luong kinds."""
        if self.kind != "bahdanau":
            return None
        return memory @ self.params["W_k"].T

    def project_memory_backward(self, dprojected, memory):
        """Adds dW_k = dKW^T K; returns dK (S, B, M) (None when there is nothing to do)."""
        if self.kind != "bahdanau" or dprojected is None:
            return None
        M = memory.shape[-1]
        self.grads["W_k"] += dprojected.reshape(-1, dprojected.shape[-1]).T @ memory.reshape(-1, M)
        return dprojected @ self.params["W_k"]

    # ------------------------------------------------------------------ once per step

    def forward(self, query, memory, projected, mask):
        """query (B, Q), memory (S, B, M), projected (S, B, A) or None, mask (S, B) -> context (B, M), cache."""
        xp = backend.array_module(query)
        aux = None
        if self.kind == "bahdanau":
            aux = projected + query @ self.params["W_q"].T
            xp.tanh(aux, out=aux)                                         # t (S, B, A), in place
            scores = aux @ self.params["v"]                               # (S, B)
        elif self.kind == "luong-dot":
            scores = (memory * query).sum(axis=-1)
        else:
            aux = query @ self.params["W_a"].T                            # u = W_a q, (B, M)
            scores = (memory * aux).sum(axis=-1)
        if kernels.use_for(scores, memory):   # fused: kernels/attention.py
            weights, context = kernels.attention.softmax_context(scores, mask, memory)
        else:
            weights = masked_softmax(scores, mask)
            context = (weights[:, :, None] * memory).sum(axis=0)
        return context, AttentionCache(query, weights, aux)

    def backward(self, dcontext, cache, memory, dmemory, dprojected=None):
        """dcontext (B, M) -> dquery (B, Q); adds this step's dK into dmemory (S, B, M) and, for bahdanau,
        dKW into dprojected (S, B, A): both are sums over all decoder steps."""
        weights = cache.weights
        fast = kernels.use_for(dcontext, memory, dmemory)
        if fast:                                                          # fused: kernels/attention.py
            dscores = kernels.attention.context_backward(dcontext, weights, memory, dmemory)
        else:
            dweights = (memory * dcontext).sum(axis=-1)                   # c = sum alpha_s k_s
            dmemory += weights[:, :, None] * dcontext
            dscores = weights * (dweights - (weights * dweights).sum(axis=0))  # through the softmax
        if self.kind == "bahdanau":
            t = cache.aux
            if fast:
                dquery_projected = kernels.attention.bahdanau_backward(dscores, t, self.params["v"],
                                                                       self.grads["v"], dprojected)
            else:
                self.grads["v"] += (t * dscores[:, :, None]).sum(axis=(0, 1))  # e = t v
                dpre = dscores[:, :, None] * self.params["v"] * (1 - t * t)     # through tanh
                dprojected += dpre
                dquery_projected = dpre.sum(axis=0)                             # W_q q is shared by all s
            self.grads["W_q"] += dquery_projected.T @ cache.query
            dquery = dquery_projected @ self.params["W_q"]
        elif self.kind == "luong-dot":
            dquery = (dscores[:, :, None] * memory).sum(axis=0)            # e_s = k_s . q
            dmemory += dscores[:, :, None] * cache.query
        else:
            du = (dscores[:, :, None] * memory).sum(axis=0)                # e_s = k_s . u
            dmemory += dscores[:, :, None] * cache.aux
            self.grads["W_a"] += du.T @ cache.query                        # u = W_a q
            dquery = du @ self.params["W_a"]
        return dquery


def masked_softmax(scores, mask):
    """Softmax over the source axis 0 of scores (S, B); exactly 0 where mask is False."""
    xp = backend.array_module(scores)
    scores = xp.where(mask, scores, -xp.inf)
    shifted = scores - scores.max(axis=0, keepdims=True)     # every column has a real position
    e = xp.exp(shifted)                                       # exp(-inf) = 0 exactly
    return e / e.sum(axis=0, keepdims=True)
