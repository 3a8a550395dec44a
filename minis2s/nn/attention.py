"""Attention over the encoder outputs, one decoder step at a time.

Shapes: memory K (S, B, M) the encoder outputs (M = dirs*H), K_s (B, M) its row at source position s,
mask (S, B) true at real source positions, query q (B, Q) a decoder hidden state, A the attention
size (Bahdanau). Letters as in docs/notation.md.

Scores for each source position s:

    bahdanau        phi_s   = tanh(W_q q + W_k K_s)             (A,)  the additive layer (Bahdanau et al. 2015)
                    score_s = v . phi_s                         K W_k^T does not depend on the step:
                                                                ``project_memory`` computes it once
    luong-dot       score_s = K_s . q                           (Luong et al. 2015; needs Q == M)
    luong-general   u = W_a q,  score_s = K_s . u               W_a: (M, Q)

Then the masked softmax and the context vector of this step (``softmax_context``):

    alpha_s = exp(score_s - max score) [s real] / sum over real s'    (padded positions get exactly 0)
    ctx     = sum_s alpha_s K_s                                      (B, M)

Backward (dctx from above), the mirror image:

    softmax_context_backward:
        dalpha_s = dctx . K_s                 dK_s += alpha_s dctx
        dscore_s = alpha_s (dalpha_s - sum_s' alpha_s' dalpha_s')    (softmax backward; 0 where alpha is 0)
    luong-dot:      dq = sum_s dscore_s K_s,            dK_s += dscore_s q
    luong-general:  du = sum_s dscore_s K_s,  dK_s += dscore_s u,  dW_a += du^T q,  dq = du W_a
    bahdanau (``scores_backward``):
                    dv += sum_s,b dscore_s phi_s,       dpre_s = dscore_s v (1 - phi_s^2)     (through tanh)
                    dKW_s += dpre_s   (the projected memory's gradient, summed over all decoder steps;
                                       ``project_memory_backward`` then: dW_k += dKW^T K,  dK += dKW W_k)
                    dqW = sum_s dpre_s,  dW_q += dqW^T q,  dq = dqW W_q

Every step at once (``forward_steps`` / ``backward_steps``, the Luong kinds): when the queries h_1..h_T
are all known before attention runs (Luong without input feeding, under teacher forcing: the decoder's
RNN then never sees the context), the T steps are two matrix products per sentence b, batch first,
with Q_b (T, Q) the queries, K_b (S, M) the memory:

    U_b      = Q_b (dot)  or  Q_b W_a^T (general)     (T, M)  the vectors scored against the memory
    scores_b = U_b K_b^T                               (T, S)
    alpha_b  = masked softmax over s, row by row       (T, S)
    C_b      = alpha_b K_b                             (T, M)  row t is ctx_t

and back: dalpha_b = dC_b K_b^T,  dK_b = alpha_b^T dC_b,  dscores = alpha (dalpha - sum_s alpha dalpha),
dU_b = dscores_b K_b,  dK_b += dscores_b^T U_b,  then dQ = dU (dot) or dW_a += dU^T Q, dQ = dU W_a.
The same equations as the step-by-step ones above, with the sums over s and over t as matrix products.
"""
from typing import NamedTuple

import numpy

from .. import backend
from . import init
from .module import Module

KINDS = ("bahdanau", "luong-dot", "luong-general")


class AttentionCache(NamedTuple):
    query: object         # (B, Q) q
    weights: object       # (S, B) alpha
    phi: object           # (S, B, A) bahdanau's tanh(W_q q + W_k K_s); None for the Luong kinds
    u: object             # (B, M) luong-general's W_a q; None for the others


class StepsAttentionCache(NamedTuple):
    """``forward_steps``'s cache: everything batch first."""
    query: object         # (B, T, Q) the queries
    u: object             # (B, T, M) U: the queries (dot) or W_a q (general)
    memory: object        # (B, S, M) K
    weights: object       # (B, T, S) alpha


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
        """query (B, Q), memory (S, B, M), projected (S, B, A) or None, mask (S, B) -> ctx (B, M), cache."""
        scores, phi, u = self.scores_forward(query, memory, projected)
        weights, ctx = softmax_context(scores, mask, memory)
        return ctx, AttentionCache(query, weights, phi, u)

    def backward(self, dctx, cache, memory, dmemory, dprojected=None):
        """dctx (B, M) -> dquery (B, Q); adds this step's dK into dmemory (S, B, M) and, for bahdanau,
        dKW into dprojected (S, B, A): both are sums over all decoder steps."""
        dscores = softmax_context_backward(dctx, cache.weights, memory, dmemory)
        return self.scores_backward(dscores, cache, memory, dmemory, dprojected)

    # ------------------------------------------------------------------ every step at once (Luong kinds)

    def forward_steps(self, queries, memory, mask):
        """queries (T, B, Q) every step's query, memory (S, B, M), mask (S, B) -> ctx (T, B, M),
        weights (T, S, B), cache. The Luong kinds only (bahdanau's query h_t-1 depends on the context)."""
        K = memory.transpose(1, 0, 2)                                        # (B, S, M)
        query = queries.transpose(1, 0, 2)                                   # (B, T, Q)
        u = query if self.kind == "luong-dot" else query @ self.params["W_a"].T    # U = Q or Q W_a^T
        scores = u @ K.transpose(0, 2, 1)                                    # (B, T, S) = U K^T
        weights = masked_softmax(scores, mask.T[:, None, :], axis=2)
        ctx = weights @ K                                                    # (B, T, M) = alpha K
        return ctx.transpose(1, 0, 2), weights.transpose(1, 2, 0), StepsAttentionCache(query, u, K, weights)

    def backward_steps(self, dctx, cache):
        """dctx (T, B, M) -> dqueries (T, B, Q), dmemory (S, B, M); adds dW_a (luong-general)."""
        K, alpha = cache.memory, cache.weights
        dC = dctx.transpose(1, 0, 2)                                         # (B, T, M)
        dalpha = dC @ K.transpose(0, 2, 1)                                   # C = alpha K
        dK = alpha.transpose(0, 2, 1) @ dC
        dscores = alpha * (dalpha - (alpha * dalpha).sum(axis=2, keepdims=True))  # through the softmax
        du = dscores @ K                                                     # scores = U K^T
        dK += dscores.transpose(0, 2, 1) @ cache.u
        dquery = du
        if self.kind == "luong-general":                                     # U = Q W_a^T
            self.grads["W_a"] += du.reshape(-1, du.shape[2]).T @ cache.query.reshape(-1, cache.query.shape[2])
            dquery = du @ self.params["W_a"]
        return dquery.transpose(1, 0, 2), dK.transpose(1, 0, 2)

    # ------------------------------------------------------------------ scores, one step

    def scores_forward(self, query, memory, projected):
        """-> scores (S, B), phi (S, B, A) or None, u (B, M) or None."""
        if self.kind == "bahdanau":
            phi = backend.array_module(query).tanh(projected + query @ self.params["W_q"].T)
            return phi @ self.params["v"], phi, None
        if self.kind == "luong-dot":
            return (memory * query).sum(axis=-1), None, None
        u = query @ self.params["W_a"].T                                   # u = W_a q
        return (memory * u).sum(axis=-1), None, u

    def scores_backward(self, dscores, cache, memory, dmemory, dprojected):
        """dscores (S, B) -> dquery (B, Q); adds into dmemory, dprojected and the weights' gradients."""
        if self.kind == "bahdanau":
            phi = cache.phi
            self.grads["v"] += (phi * dscores[:, :, None]).sum(axis=(0, 1))  # score_s = v . phi_s
            dpre = dscores[:, :, None] * self.params["v"] * (1 - phi * phi)   # phi_s = tanh(pre_s)
            dprojected += dpre                                                # pre_s = W_q q + (K W_k^T)_s
            dquery_projected = dpre.sum(axis=0)                               # W_q q is shared by every s
            self.grads["W_q"] += dquery_projected.T @ cache.query             # W_q q
            return dquery_projected @ self.params["W_q"]
        if self.kind == "luong-dot":
            dmemory += dscores[:, :, None] * cache.query                     # score_s = K_s . q
            return (dscores[:, :, None] * memory).sum(axis=0)
        du = (dscores[:, :, None] * memory).sum(axis=0)                      # score_s = K_s . u
        dmemory += dscores[:, :, None] * cache.u
        self.grads["W_a"] += du.T @ cache.query                              # u = W_a q
        return du @ self.params["W_a"]


def masked_softmax(scores, mask, axis=0):
    """Softmax over the source axis of scores ((S, B) by default); exactly 0 where mask is False."""
    xp = backend.array_module(scores)
    scores = xp.where(mask, scores, -xp.inf)
    shifted = scores - scores.max(axis=axis, keepdims=True)  # every sentence has a real position
    e = xp.exp(shifted)                                       # exp(-inf) = 0 exactly
    return e / e.sum(axis=axis, keepdims=True)


def softmax_context(scores, mask, memory):
    """scores (S, B), mask (S, B), memory (S, B, M) -> weights alpha (S, B), ctx (B, M)."""
    weights = masked_softmax(scores, mask)
    ctx = (weights[:, :, None] * memory).sum(axis=0)         # ctx = sum_s alpha_s K_s
    return weights, ctx


def softmax_context_backward(dctx, weights, memory, dmemory):
    """dctx (B, M) -> dscores (S, B); adds dK_s = alpha_s dctx into dmemory (S, B, M)."""
    dweights = (memory * dctx).sum(axis=-1)                   # ctx = sum_s alpha_s K_s
    dmemory += weights[:, :, None] * dctx
    return weights * (dweights - (weights * dweights).sum(axis=0))   # through the softmax
