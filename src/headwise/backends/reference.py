"""The reference backend: attention written out step by step. It is the oracle every other path is
tested against, runs in any floating dtype (float64 included), supports every feature, and is the only
backend that records a trace. `masked_scores` is the one scoring pipeline: `attention_weights` reuses it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..masks import ALiBi, Softcap
from ..trace import record
from .capabilities import Capabilities, Rank, score_dtype

if TYPE_CHECKING:
    from ..masks import Predicate, ScoreModifier

CAPABILITIES = Capabilities(
    weights=True,
    lse=True,
    trace=True,
    score_mods=frozenset({ALiBi, Softcap}),
    mask_grad=True,
    rank=Rank(cpu=50, cuda=50),  # last: it serves every kind of call, slowly
)


def keep_nothing(name: str, tensor: torch.Tensor) -> None:
    """A recorder for `masked_scores` that keeps no step (attention_weights' slices are not a trace)."""


def masked_scores(
    queries: torch.Tensor,
    keys: torch.Tensor,
    *,
    scale: float,
    mask: torch.Tensor | None,
    score_mod: ScoreModifier | None,
    heads: torch.Tensor,
    rows: torch.Tensor,
    num_queries: int,
    dtype: torch.dtype | None = None,
    recorder: Callable[[str, torch.Tensor], None] = record,
) -> torch.Tensor:
    """The scoring steps of the lectures: scores = q·kᵀ, scaled by `scale`, modified, masked.

    queries (B, H', R, Dh): the query rows `rows` (R,) of the query heads `heads` (H',); keys
    (B, H', Nk, Dh): each of those heads' keys; mask None, bool (True = may attend) or float, broadcastable
    to (B, H', R, Nk); num_queries: Nq of the whole call (score modifiers align bottom-right with it);
    dtype: the dtype to compute the scores in (default the inputs').
    -> masked scores (B, H', R, Nk), -inf where a query may not attend. Each step goes to `recorder`.
    """
    if dtype is not None:
        queries, keys = queries.to(dtype), keys.to(dtype)
    scores = queries @ keys.transpose(-2, -1)  # (B, H', R, Nk)
    recorder("scores", scores)
    scaled_scores = scores * scale  # (B, H', R, Nk)
    recorder("scaled_scores", scaled_scores)
    if score_mod is not None:
        batch_idx = torch.arange(queries.shape[0], device=queries.device).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        key_idx = torch.arange(keys.shape[2], device=queries.device)[None, :]  # (1, Nk)
        head_idx, q_idx = heads.view(1, -1, 1, 1), rows[:, None]  # (1, H', 1, 1), (R, 1)
        scaled_scores = score_mod.apply(
            scaled_scores, batch_idx, head_idx, q_idx, key_idx, num_queries, keys.shape[2]
        )  # (B, H', R, Nk)
        recorder("modified_scores", scaled_scores)
    result = scaled_scores
    if mask is not None and mask.dtype == torch.bool:
        result = result.masked_fill(~mask, float("-inf"))  # broadcasts to (B, H', R, Nk)
    elif mask is not None:
        result = result + mask  # (B, H', R, Nk)
    recorder("masked_scores", result)
    return result


def softmax_over_keys(masked: torch.Tensor) -> torch.Tensor:
    """Softmax along the last axis; a row whose scores are all -inf (nothing to attend to) gives zeros.

    masked (..., Nk) -> weights (..., Nk). Subtracting the row maximum keeps exp() in range and does
    not change the result.
    """
    if masked.shape[-1] == 0:  # no keys at all: an empty distribution
        return masked.clone()
    row_max = masked.detach().amax(dim=-1, keepdim=True)  # (..., 1)
    row_max = row_max.masked_fill(row_max == float("-inf"), 0.0)  # a fully masked row keeps exp(-inf) = 0
    exps = torch.exp(masked - row_max)  # (..., Nk)
    total = exps.sum(dim=-1, keepdim=True)  # (..., 1)
    return exps / total.masked_fill(total == 0, 1.0)  # (..., Nk), rows of zeros where total is 0


def log_sum_exp(masked: torch.Tensor) -> torch.Tensor:
    """log Σ exp over the last axis, in float32 at least: masked (..., Nk) -> lse (...), -inf (with a zero
    gradient) for a row that sees no key."""
    precise = masked.to(torch.promote_types(masked.dtype, torch.float32))
    empty = torch.isneginf(precise).all(dim=-1, keepdim=True)  # (..., 1): rows that see no key
    # logsumexp's gradient on a row of -inf is NaN (exp(-inf - -inf)); such rows get -inf, zero gradient.
    return torch.logsumexp(precise.masked_fill(empty, 0.0), dim=-1).masked_fill(empty[..., 0], float("-inf"))


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
    -> (context (B, Hq, Nq, Dv), weights (B, Hq, Nq, Nk) or None, lse (B, Hq, Nq) or None)."""
    group = q.shape[1] // k.shape[1]  # G = Hq / Hkv query heads share each key/value head
    keys = k.repeat_interleave(group, dim=1)  # (B, Hq, Nk, Dh)
    values = v.repeat_interleave(group, dim=1)  # (B, Hq, Nk, Dv)
    heads = torch.arange(q.shape[1], device=q.device)  # (Hq,)
    rows = torch.arange(q.shape[2], device=q.device)  # (Nq,)
    masked = masked_scores(
        q,
        keys,
        scale=scale,
        mask=mask,
        score_mod=score_mod,
        heads=heads,
        rows=rows,
        num_queries=q.shape[2],
        dtype=score_dtype(q.dtype),
    )  # (B, Hq, Nq, Nk): float32 for float16 inputs, whose range the scores may exceed

    weights = softmax_over_keys(masked).to(q.dtype)  # (B, Hq, Nq, Nk)
    record("weights", weights)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)  # kept weights scaled by 1 / (1 - p)
        record("dropout", weights)

    context = weights @ values  # (B, Hq, Nq, Dv)
    record("context_by_head", context)
    lse = log_sum_exp(masked) if return_lse else None  # what a fast path keeps instead of the weights
    return context, (weights if return_weights else None), lse
