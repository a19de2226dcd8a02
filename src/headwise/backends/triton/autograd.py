"""The autograd Function around the Triton kernels: (out, lse) forward, FlashAttention-2 backward.

Importing this module imports Triton (through `kernels`); the package imports it only when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from . import kernels

if TYPE_CHECKING:
    from . import Plan
    from .kernels import Tiles


class TritonAttention(torch.autograd.Function):
    """(q, k, v) -> (out (B, Hq, Nq, Dv), lse (B, Hq, Nq)); both differentiable with respect to q, k, v.

    The backward recomputes the weights block by block from (q, k, lse), so nothing of size Nq × Nk is
    saved; `deterministic` picks the atomics-free dQ kernel (bitwise reproducible)."""

    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        plan: Plan,
        deterministic: bool,
        tiles: Tiles | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, lse = kernels.forward(q, k, v, plan, tiles)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan, ctx.deterministic, ctx.tiles = plan, deterministic, tiles
        return out, lse

    @staticmethod
    def backward(
        ctx: Any, d_out: torch.Tensor | None, d_lse: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        d_out = torch.zeros_like(out) if d_out is None else d_out  # (B, Hq, Nq, Dv)
        d_lse = torch.zeros_like(lse) if d_lse is None else d_lse  # (B, Hq, Nq)
        d_lse = d_lse.masked_fill(lse == float("-inf"), 0.0)  # a query that sees nothing: lse is constant
        d_q, d_k, d_v = kernels.backward(
            q, k, v, out, lse, d_out, d_lse, ctx.plan, ctx.deterministic, ctx.tiles
        )
        return d_q, d_k, d_v, None, None, None
