"""SDPA's CPU flash kernel called directly: for float32 training, with its backward taken only where it is
as accurate as eager's, and for calls without a backward, whose lse the non-finite check reads.

The kernel's backward recomputes each weight as exp(score - lse) from the forward's float32 lse, so every
weight carries lse's rounding, up to |lse|·2^-24 relative, where eager's softmax subtracts each row's
maximum exactly. That is invisible while |lse| is small, and 300 times eager's error in T5's dq at scores
of ±700 (tests/test_hf_models.py). So the forward keeps lse, and the backward looks at it: with every
finite |lse| ≤ LSE_LIMIT it runs the kernel's own backward; beyond, it recomputes the gradients (one more
forward, only then) with the dense backend up to Nq·Nk = DENSE_FALLBACK, whose softmax backward is
eager's own, and with the chunked backend beyond, whose weights come from the running maximum as eager's
do. (Chunked, as every flash-style backward, takes each row's Σ_j w_ij·dP_ij as dO_i·out_i: equal in
exact arithmetic, but in a row that one key saturates the two roundings differ, and the difference,
multiplied by |k|, was 13 times eager's error in dq for T5's cross-attention at scores of ±700, where
dense matches eager.)

LSE_LIMIT from a sweep (B=1, H=4, Dh=64, N = 64, 512, 2048, plain and causal, Gaussian scores and rows
dominated by one key, scores scaled 1-64×): the kernel's error stayed within 0.8 of the ratio rule's
bound (3 × eager's error + 4 ulps of the summed terms) up to |lse| = 63, and first exceeded it, 2.2-4.2×,
at |lse| ≈ 100-116 in rows dominated by one key. Gaussian scores of unit variance give |lse| ≈ log N +
1/2 (9.2 at N = 8192), far below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..masks import Causal, with_predicate
from . import chunked, dense

if TYPE_CHECKING:
    from .capabilities import Request

LSE_LIMIT = 32.0  # the largest max |lse| whose backward the kernel computes itself
DENSE_FALLBACK = 384 * 384  # beyond it, the chunked backend recomputes (memory linear in N)

_forward = torch._scaled_dot_product_flash_attention_for_cpu  # the C binding: 2 µs less than torch.ops'
_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def route(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> str | None:
    """How a call of the sdpa backend runs SDPA's CPU flash kernel: "training" (float32, differentiated, no
    mask that needs a gradient: `flash` with training=True), "forward" (no backward follows; in eager:
    compiled and traced calls keep SDPA, which their graphs know), or None: by SDPA. Either way only
    where SDPA itself would run that kernel, as far as a call of the backend can meet or miss its
    conditions: on the CPU, torch's flash kernel enabled (torch.nn.attention.sdpa_kernel), values as wide
    as the queries, q and k not empty, every last dimension contiguous (a float mask's too), no dropout,
    outside torch.func's transforms (no vmap rule here)."""
    if not (
        q.device.type == "cpu"
        and dropout_p == 0.0
        and v.shape[-1] == q.shape[-1]
        and q.numel() > 0  # the kernel divides by Nq and Nk: an empty q or k stops the process (SIGFPE)
        and k.numel() > 0
        and q.stride(-1) == 1
        and k.stride(-1) == 1
        and v.stride(-1) == 1
        and (mask is None or mask.dtype == torch.bool or mask.stride(-1) == 1)  # a bool one is made anew
        and torch.backends.cuda.flash_sdp_enabled()  # the flag sdpa_kernel sets, for the CPU too
        and not torch._C._are_functorch_transforms_active()
    ):
        return None
    mask_grad = mask is not None and mask.requires_grad  # the kernel does not differentiate the mask
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad or mask_grad):
        return "training" if q.dtype == torch.float32 and not mask_grad else None
    return None if torch.compiler.is_compiling() or torch.jit.is_tracing() else "forward"


def flash(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
    training: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv); mask None or float (B|1, Hq|1, Nq, Nk)
    to add to the scores; is_causal aligned top-left -> (context (B, Hq, Nq, Dv), the kernel's lse
    (B, Hq, Nq): float32, or float64 for float64 inputs; 0 in a fully masked row; not differentiable).
    SDPA's own result; with `training` differentiable in q, k and v, by the backward described above."""
    if training:
        return _CheckedFlash.apply(q, k, v, mask, is_causal, scale)
    return _forward(q, k, v, 0.0, is_causal, attn_mask=mask, scale=scale)


def checks(request: Request) -> bool:
    """Whether a float32 CPU `request` that a backward follows would go through here (`route`: "training").
    (The non-finite rule's careful rerun appends a column to v, which then runs by SDPA's math path: only
    for inputs holding NaN or inf.)"""
    return (
        request.value_dim == request.head_dim
        and request.dropout_p == 0.0
        and not request.mask_requires_grad
        and not request.transforms
    )


class _CheckedFlash(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        scale: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, lse = flash(q, k, v, mask, is_causal, scale, training=False)  # (B, Hq, Nq, Dv), (B, Hq, Nq)
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.is_causal, ctx.scale = is_causal, scale
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx: Any, d_out: torch.Tensor, _: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        q, k, v, mask, out, lse = ctx.saved_tensors
        finite = torch.where(torch.isfinite(lse), lse, 0.0)  # a fully masked row's lse is -inf or 0
        if finite.abs().max() <= LSE_LIMIT:
            options = {"attn_mask": mask, "scale": ctx.scale}
            dq, dk, dv = _backward(d_out.contiguous(), q, k, v, out, lse, 0.0, ctx.is_causal, **options)
        else:
            dq, dk, dv = _exact_gradients(d_out, q, k, v, mask, ctx.is_causal, ctx.scale)
        return dq, dk, dv, None, None, None


def _exact_gradients(
    d_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
) -> tuple[torch.Tensor, ...]:
    """(dq, dk, dv) of the same call through the dense backend (eager's softmax backward) or, beyond
    Nq·Nk = DENSE_FALLBACK, the chunked one (weights from the running maximum)."""
    predicate = Causal() if is_causal else None
    num_queries, num_keys = q.shape[2], k.shape[2]
    with torch.enable_grad():
        inputs = [t.detach().requires_grad_() for t in (q, k, v)]
        if num_queries * num_keys <= DENSE_FALLBACK:
            target = (q.shape[0], q.shape[1], num_queries, num_keys)  # (B, Hq, Nq, Nk)
            full = mask if predicate is None else with_predicate(mask, predicate, target, q.dtype, q.device)
            out, _, _ = dense.attention(
                *inputs,
                mask=full,
                predicate=None,
                scale=scale,
                dropout_p=0.0,
                score_mod=None,
                return_weights=False,
                return_lse=False,
            )
        else:
            out, _ = chunked.attention_with_lse(*inputs, mask=mask, predicate=predicate, scale=scale)
        return torch.autograd.grad(out, inputs, d_out)
