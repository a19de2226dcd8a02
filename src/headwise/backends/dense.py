"""The dense backend: the whole (Nq, Nk) score matrix at once with torch's fused softmax.

Memory grows as Nq·Nk, but for short sequences in bf16 it is the fastest path on the CPU: torch.softmax is
one fused kernel where the reference takes a pass per step, and bf16 matmuls run at the bf16 rate where
SDPA's CPU flash kernel does not (see benchmarks/results/speed-cpu-bf16.md). GQA repeats k and v (cheap at the
lengths where this backend is chosen). Queries that see no key get zeros: their rows are found from the
mask alone (never from the scores), set to 0 before the softmax and to 0 after it, so no NaN appears
forward or backward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..masks import ALiBi, Softcap
from .capabilities import Capabilities, Rank, score_dtype

if TYPE_CHECKING:
    from ..masks import Predicate, ScoreModifier

CAPABILITIES = Capabilities(
    weights=True, lse=True, score_mods=frozenset({ALiBi, Softcap}), mask_grad=True, rank=Rank(cpu=40, cuda=40)
)


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
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv)
    -> (out (B, Hq, Nq, Dv), weights (B, Hq, Nq, Nk) or None, lse (B, Hq, Nq) or None)."""
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, Hq, Nk, ·)
    precise = score_dtype(q.dtype)
    scores = scaled_scores(q.to(precise), k.to(precise), scale)  # (B, Hq, Nq, Nk)
    if score_mod is not None:
        scores = score_mod.dense(scores)  # (B, Hq, Nq, Nk)
    empty = None
    if mask is not None and mask.dtype == torch.bool:
        scores.masked_fill_(~mask, float("-inf"))
        empty = ~mask.any(dim=-1, keepdim=True)  # (B|1, Hq|1, Nq|1, 1): rows that see nothing
    elif mask is not None:
        scores = scores + mask
        empty = (mask == float("-inf")).all(dim=-1, keepdim=True)
    branch_free = (
        torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active() or torch.jit.is_tracing()
    )  # torch.compile, vmap/grad, jit.trace
    if empty is not None and (branch_free or empty.any()):  # no data-dependent branch
        scores = scores.masked_fill(empty, 0.0)  # a finite row, so softmax gives no NaN ...
    else:
        empty = None
    lse = (
        torch.logsumexp(scores.float() if scores.dtype != torch.float64 else scores, dim=-1)
        if return_lse
        else None
    )
    weights = torch.softmax(scores, dim=-1).to(q.dtype)  # (B, Hq, Nq, Nk)
    if empty is not None:
        weights = weights.masked_fill(empty, 0.0)  # ... and then its weights are zeroed
        if lse is not None:
            lse = lse.masked_fill(empty[..., 0], float("-inf"))
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    out = torch.matmul(weights, v)  # (B, Hq, Nq, Dv)
    return out, (weights if return_weights else None), lse


def scaled_scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """scale · q · kᵀ: q (B, H, Nq, Dh), k (B, H, Nk, Dh) -> scores (B, H, Nq, Nk), the scale applied by the
    matmul itself (baddbmm's alpha) rather than by a pass over the scores (float32, B=4, H=8, N=128,
    Dh=64, 2 threads: the forward 0.55 ms instead of 0.60, SDPA 0.66)."""
    batch, heads, num_queries, head_dim = q.shape
    num_keys = k.shape[2]
    q3 = q.reshape(batch * heads, num_queries, head_dim)  # (B·H, Nq, Dh): a copy unless B, H merge
    k3 = k.reshape(batch * heads, num_keys, head_dim)  # (B·H, Nk, Dh)
    ignored = q3.new_empty(1, 1, 1)  # beta=0: baddbmm neither reads nor propagates it (documented)
    scores = torch.baddbmm(ignored, q3, k3.transpose(1, 2), beta=0.0, alpha=scale)  # (B·H, Nq, Nk)
    # Not a view for autograd (as torch.matmul returns it): the in-place mask fill that follows would
    # otherwise make the backward copy the whole score gradient twice (CopySlices).
    return torch.ops.aten._unsafe_view(scores, (batch, heads, num_queries, num_keys))
