"""The flex backend: torch's FlexAttention (torch.nn.attention.flex_attention) under headwise's masks.

A predicate (causal() included) becomes FlexAttention's mask_mod, its `allowed` rule read at
FlexAttention's indices, and the BlockMask of its block-sparse plan (backends/plan.py, as the blocksparse
backend runs it: partial blocks read the mask_mod, full ones do not, empty ones are skipped, and no pair
is evaluated to find them); a tensor mask is read at the same indices (bool: a mask_mod term; float: -inf
a mask_mod term, the rest added by the score_mod); alibi and softcap become the score_mod. Compiled on
CUDA (torch.compile of flex_attention: torch's fused Triton kernels, forward and backward). On the CPU it
runs eagerly, torch's unfused implementation, which holds the (Nq, Nk) scores: torch's compiled CPU kernel
took 40 s to compile and 7 s for each new shape on a 2-core Sapphire Rapids (torch 2.13), far more than a
call it speeds up (66 ms vs SDPA's 40 ms at B=2, Hq=8, N=1024, Dh=64), and torch has no CPU backward for
FlexAttention.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ..masks import ALiBi, Softcap
from .capabilities import Capabilities
from .plan import Plan, make_plan

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

    from ..masks import Predicate, ScoreModifier

# FlexAttention's mask_mod(b, h, q_idx, kv_idx) -> may attend, and score_mod(score, b, h, q_idx, kv_idx)
MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ScoreMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

BLOCK = 128  # FlexAttention's block size, queries and keys

CAPABILITIES = Capabilities(
    lse=True,
    predicates=True,
    score_mods=frozenset({ALiBi, Softcap}),
    dropout=False,
    backward=frozenset({"cuda"}),  # torch: "FlexAttention does not support backward on CPU"
    deterministic=False,  # torch makes no determinism promise for its backward kernels
    transforms=False,  # under vmap: "RuntimeError when making fake tensor call" (torch 2.13)
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
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv) -> (out (B, Hq, Nq, Dv), None, lse)."""
    from torch.nn.attention import flex_attention as flex

    batch, heads, num_queries = q.shape[:3]
    num_keys = k.shape[2]
    if num_queries == 0 or num_keys == 0:  # FlexAttention needs both; no key gives zeros, lse -inf
        out = q[..., :0].sum(-1, keepdim=True) + v.sum(-2, keepdim=True).repeat_interleave(
            heads // k.shape[1], dim=1
        )  # (B, Hq, Nq, Dv) zeros, with zero gradients
        return out, None, q.new_full((batch, heads, num_queries), float("-inf"), dtype=torch.float32)
    if mask is not None:
        mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (B|1, Hq|1, Nq|1, Nk|1)
    allowed = _mask_mod(mask, predicate, num_queries, num_keys)
    block_mask = None
    if allowed is not None and mask is None:  # the predicate's block-sparse plan, as blocksparse runs it
        block_mask = block_mask_of(
            make_plan(predicate, num_queries, num_keys, BLOCK, BLOCK), allowed, q.device
        )
    elif allowed is not None:  # a tensor mask: FlexAttention reads it at every pair to find the blocks
        block_mask = flex.create_block_mask(
            allowed, batch, heads, num_queries, num_keys, device=q.device, _compile=q.device.type == "cuda"
        )
    out, aux = _flex_attention(q.device.type)(
        q,
        k,
        v,
        score_mod=_score_mod(mask, score_mod, num_queries, num_keys),
        block_mask=block_mask,
        scale=scale,
        enable_gqa=heads != k.shape[1],
        return_aux=flex.AuxRequest(lse=True),
    )  # (B, Hq, Nq, Dv), lse (B, Hq, Nq)
    return out, None, (aux.lse if return_lse else None)


def block_mask_of(plan: Plan, allowed: MaskMod, device: torch.device) -> BlockMask:
    """FlexAttention's BlockMask of a plan (one for every batch element and head, which it bounds): its
    partial blocks, where mask_mod `allowed` is read, and its full blocks, where it is not."""
    from torch.nn.attention.flex_attention import BlockMask

    def blocks(chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Qn, Kn) bool -> counts (1, 1, Qn), indices (1, 1, Qn, Kn), the chosen first."""
        counts = chosen.sum(1, dtype=torch.int32)  # (Qn,)
        indices = torch.argsort((~chosen).to(torch.int8), dim=1, stable=True).to(torch.int32)  # (Qn, Kn)
        return counts[None, None].to(device), indices[None, None].to(device)

    partial, full = blocks(plan.visible & ~plan.full), blocks(plan.full)
    return BlockMask.from_kv_blocks(
        *partial, *full, BLOCK_SIZE=(plan.q_block, plan.k_block), mask_mod=allowed,
        seq_lengths=(plan.num_queries, plan.num_keys),
    )  # fmt: skip


@functools.cache
def _flex_attention(device_type: str) -> Callable[..., Any]:
    """flex_attention compiled for CUDA; on the CPU, torch's eager implementation without its warning
    that it is not compiled (see the module's docstring for why)."""
    from torch.nn.attention.flex_attention import flex_attention

    if device_type == "cuda":
        return torch.compile(flex_attention, dynamic=False)

    def eager(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            return flex_attention(*args, **kwargs)

    return eager


def _at(
    tensor: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
) -> torch.Tensor:
    """tensor (B|1, Hq|1, Nq|1, Nk|1) at FlexAttention's indices, a broadcast axis read at 0."""
    index = (b, h, q_idx, kv_idx)
    return tensor[tuple(i if size > 1 else 0 for i, size in zip(index, tensor.shape, strict=True))]


def _mask_mod(
    mask: torch.Tensor | None, predicate: Predicate | None, num_queries: int, num_keys: int
) -> MaskMod | None:
    """FlexAttention's mask_mod(b, h, q_idx, kv_idx) -> bool for the predicate and the tensor mask (True =
    may attend), or None when nothing is masked."""
    if predicate is None and mask is None:
        return None

    def allowed(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        keep = None
        if predicate is not None:
            keep = predicate.allowed(b, h, q_idx, kv_idx, num_queries, num_keys)
        if mask is not None:
            value = _at(mask, b, h, q_idx, kv_idx)
            term = value if mask.dtype == torch.bool else value > float("-inf")
            keep = term if keep is None else keep & term
        assert keep is not None  # a predicate or a mask, as checked above
        return keep

    return allowed


def _score_mod(
    mask: torch.Tensor | None, score_mod: ScoreModifier | None, num_queries: int, num_keys: int
) -> ScoreMod | None:
    """FlexAttention's score_mod(score, b, h, q_idx, kv_idx) for the score modifier, then a float mask's
    finite values; None when there is neither."""
    additive = mask is not None and mask.dtype != torch.bool
    if score_mod is None and not additive:
        return None
    # -inf: in the mask_mod
    finite = mask.masked_fill(mask == float("-inf"), 0.0) if mask is not None and additive else None

    def modified(
        score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        if score_mod is not None:
            score = score_mod.apply(score, b, h, q_idx, kv_idx, num_queries, num_keys)
        if finite is not None:
            score = score + _at(finite, b, h, q_idx, kv_idx)
        return score

    return modified
