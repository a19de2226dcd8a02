"""torch.nn.functional.scaled_dot_product_attention, adapted to headwise's conventions.

SDPA's `is_causal` is aligned top-left and cannot be combined with a mask, so causal attention with
Nq != Nk, or with a mask, is passed as an explicit bottom-right mask. Fully masked rows already give zeros
and zero gradients in torch >= 2.5 (checked by the tests). GQA uses `enable_gqa`, which does not repeat k
and v in torch's fused kernels.
"""

from __future__ import annotations

import torch.nn.functional as F

from ..masks import causal_mask, combine


def unsupported(request) -> str | None:
    if request.return_weights:
        return "return the attention weights"
    if request.return_lse:
        return "return the log-sum-exp of the scores"
    if request.score_mod is not None:
        return "modify the scores (ALiBi, softcap)"
    if request.tracing:
        return "record a trace (only the reference backend shows its steps)"
    return None


def attention(q, k, v, *, mask, causal, scale, dropout_p, return_weights, return_lse=False, score_mod=None):
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv) -> (context (B, Hq, Nq, Dv), None, None)."""
    num_queries, num_keys = q.shape[2], k.shape[2]
    is_causal = causal and mask is None and num_queries == num_keys  # top-left == bottom-right here
    if causal and not is_causal:
        mask = combine(mask, causal_mask(num_queries, num_keys, device=q.device), q.dtype)  # (.., Nq, Nk)
    context = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=q.shape[1] != k.shape[1],
    )  # (B, Hq, Nq, Dv)
    return context, None, None
