"""torch.nn.functional.scaled_dot_product_attention, adapted to headwise's conventions.

SDPA's `is_causal` is aligned top-left and cannot be combined with a mask: causal() alone on a square
call runs as is_causal (the fast special case); any other predicate is materialised into the mask.
Fully masked rows already give zeros and zero gradients in torch >= 2.5 (checked by the tests). GQA uses
`enable_gqa`, which does not repeat k and v in torch's fused kernels. Float32 training on the CPU calls
the flash kernel through flash_cpu, whose backward checks lse's size first.
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
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv) -> (context (B, Hq, Nq, Dv), None, None)."""
    batch, heads, num_queries = q.shape[:3]
    # bool(): while torch.jit.trace runs, sizes are 0-D tensors, which SDPA's flags do not take.
    is_causal = type(predicate) is Causal and mask is None and bool(num_queries == k.shape[2])  # top-left
    if predicate is not None and not is_causal:
        mask = with_predicate(mask, predicate, (batch, heads, num_queries, k.shape[2]), q.dtype, q.device)
    if flash_cpu.serves(q, k, v, mask, dropout_p):
        mask = None if mask is None else to_additive(mask, q.dtype)  # the kernel adds a mask of q's dtype
        return flash_cpu.checked_flash(q, k, v, mask, is_causal, scale), None, None
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
