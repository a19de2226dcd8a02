"""The reference backend: attention written out step by step. It is the oracle every other path is
tested against, runs in any floating dtype (float64 included), supports every feature, and is the only
backend that records a trace."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..masks import causal_mask
from ..trace import record


def unsupported(request) -> str | None:
    return None


def softmax_over_keys(masked_scores: torch.Tensor) -> torch.Tensor:
    """Softmax along the last axis; a row whose scores are all -inf (nothing to attend to) gives zeros.

    masked_scores (..., Nk) -> weights (..., Nk). Subtracting the row maximum keeps exp() in range and does
    not change the result.
    """
    if masked_scores.shape[-1] == 0:  # no keys at all: an empty distribution
        return masked_scores.clone()
    row_max = masked_scores.detach().amax(dim=-1, keepdim=True)  # (..., 1)
    row_max = row_max.masked_fill(row_max == float("-inf"), 0.0)  # a fully masked row keeps exp(-inf) = 0
    exps = torch.exp(masked_scores - row_max)  # (..., Nk)
    total = exps.sum(dim=-1, keepdim=True)  # (..., 1)
    return exps / total.masked_fill(total == 0, 1.0)  # (..., Nk), rows of zeros where total is 0


def attention(q, k, v, *, mask, causal, scale, dropout_p, return_weights, return_lse=False, score_mod=None):
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv)
    -> (context (B, Hq, Nq, Dv), weights (B, Hq, Nq, Nk) or None, lse (B, Hq, Nq) or None)."""
    group = q.shape[1] // k.shape[1]  # G = Hq / Hkv query heads share each key/value head
    keys = k.repeat_interleave(group, dim=1)  # (B, Hq, Nk, Dh)
    values = v.repeat_interleave(group, dim=1)  # (B, Hq, Nk, Dv)

    scores = q @ keys.transpose(-2, -1)  # (B, Hq, Nq, Nk)
    record("scores", scores)
    scaled_scores = scores * scale  # (B, Hq, Nq, Nk)
    record("scaled_scores", scaled_scores)

    if score_mod is not None:
        scaled_scores = score_mod.dense(scaled_scores)  # (B, Hq, Nq, Nk)
        record("modified_scores", scaled_scores)
    masked_scores = scaled_scores
    if mask is not None and mask.dtype == torch.bool:
        masked_scores = masked_scores.masked_fill(~mask, float("-inf"))  # broadcasts to (B, Hq, Nq, Nk)
    elif mask is not None:
        masked_scores = masked_scores + mask  # (B, Hq, Nq, Nk)
    if causal:
        allowed = causal_mask(q.shape[2], k.shape[2], device=q.device)  # (Nq, Nk)
        masked_scores = masked_scores.masked_fill(~allowed, float("-inf"))
    record("masked_scores", masked_scores)

    weights = softmax_over_keys(masked_scores)  # (B, Hq, Nq, Nk)
    record("weights", weights)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)  # kept weights scaled by 1 / (1 - p)
        record("dropout", weights)

    context = weights @ values  # (B, Hq, Nq, Dv)
    record("context_by_head", context)
    lse = None
    if return_lse:  # log Σ exp(masked scores), in float32 at least: what a fast path keeps instead of weights
        precise = masked_scores.to(torch.promote_types(masked_scores.dtype, torch.float32))
        empty = torch.isneginf(precise).all(dim=-1, keepdim=True)  # (B, Hq, Nq, 1): rows that see no key
        # logsumexp's gradient on a row of -inf is NaN (exp(-inf - -inf)); such rows get -inf, zero gradient.
        lse = torch.logsumexp(precise.masked_fill(empty, 0.0), dim=-1).masked_fill(
            empty[..., 0], float("-inf")
        )
    return context, (weights if return_weights else None), lse
