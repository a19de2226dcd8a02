"""torch.nn.functional.scaled_dot_product_attention, adapted to headwise's conventions.

SDPA's `is_causal` is aligned top-left and cannot be combined with a mask: causal() alone on a square
call runs as is_causal (the fast special case); any other predicate is materialised into the mask.
Fully masked rows already give zeros and zero gradients in torch >= 2.5 (checked by the tests). GQA uses
`enable_gqa`, which does not repeat k and v in torch's fused kernels. Where SDPA would run its CPU flash
kernel, the kernel is called through flash_cpu instead: for float32 training, whose backward checks lse's
size first, and for calls without a backward, to keep the kernel's lse, which the non-finite check reads
in place of out's row sums (running.follows_rule). That lse is the kernel's (0 in a fully masked row), not
the call's: the backend does not return lse to the caller (Capabilities.lse is False).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F

from ..masks import Causal, to_additive, with_predicate
from . import flash_cpu
from .capabilities import Capabilities, Rank

if TYPE_CHECKING:
    import torch

    from ..masks import Predicate, ScoreModifier

CAPABILITIES = Capabilities(predicates=True, mask_grad=True, rank=Rank(cpu=10, cuda=10))


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None,
    predicate: Predicate | None,
    scale: float,
    dropout_p: float,
    score_mod: ScoreModifier | None,
    return_weights: bool,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv) -> (context (B, Hq, Nq, Dv), None, the
    CPU flash kernel's lse (B, Hq, Nq) where it ran, for the non-finite check alone, else None)."""
    batch, heads, num_queries = q.shape[:3]
    # bool(): while torch.jit.trace runs, sizes are 0-D tensors, which SDPA's flags do not take.
    is_causal = type(predicate) is Causal and mask is None and bool(num_queries == k.shape[2])  # top-left
    if predicate is not None and not is_causal:
        mask = with_predicate(mask, predicate, (batch, heads, num_queries, k.shape[2]), q.dtype, q.device)
    flash = flash_cpu.route(q, k, v, mask, dropout_p)
    if flash is not None:
        mask = None if mask is None else to_additive(mask, q.dtype)  # the kernel adds a mask of q's dtype
        training = flash == "training"
        context, lse = flash_cpu.flash(q, k, v, mask, is_causal, scale, training)  # out, (B, Hq, Nq)
        return context, None, lse
    context = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=bool(q.shape[1] != k.shape[1]),
    )  # (B, Hq, Nq, Dv)
    return context, None, None
