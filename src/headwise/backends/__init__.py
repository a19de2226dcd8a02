"""Attention backends. Each module declares what it cannot do; `functional.attention` dispatches.

A backend is a function

    run(q, k, v, *, mask, causal, scale, dropout_p, return_weights, return_lse) -> (out, weights, lse)

    q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv), validated; mask is None, bool
    (True = may attend) or float in q's dtype, broadcastable to (B, Hq, Nq, Nk); causal is bottom-right;
    weights (B, Hq, Nq, Nk) and lse (B, Hq, Nq) are None unless asked for.

and a function `unsupported(request) -> str | None` naming what it cannot do for this request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import chunked, dense, reference, sdpa, triton


@dataclass(frozen=True)
class Request:
    """What a call asks of a backend, beyond the tensors' values."""

    device: torch.device
    dtype: torch.dtype
    return_weights: bool
    tracing: bool
    return_lse: bool = False
    mask_requires_grad: bool = False
    num_queries: int = 0
    num_keys: int = 0
    score_mod: object = None
    mask_is_predicate: bool = False


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable[..., tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]
    unsupported: Callable[[Request], str | None]
    takes_predicates: bool = False  # evaluates a masks.Predicate block by block; others get it materialised


BACKENDS: dict[str, Backend] = {
    "reference": Backend("reference", reference.attention, reference.unsupported),
    "sdpa": Backend("sdpa", sdpa.attention, sdpa.unsupported),
    "chunked": Backend("chunked", chunked.attention, chunked.unsupported, takes_predicates=True),
    "dense": Backend("dense", dense.attention, dense.unsupported),
    "triton": Backend("triton", triton.attention, triton.unsupported, takes_predicates=True),
}

# "auto" takes the first backend in `auto_order(request)` that can serve the request. sdpa computes the same
# function as the reference (its fully masked rows give zeros, forward and backward; causal is passed as a
# bottom-right mask when Nq != Nk) and runs torch's fused kernels, so it comes first, except where the
# benchmark says otherwise (benchmarks/results/speed-cpu-bf16.md: 2-core AMD EPYC, torch 2.13, B=4, H=8,
# Dh=64; median ms, dense vs SDPA):
# - bf16 on the CPU with Nq·Nk <= 512²: SDPA's CPU flash kernel runs bf16 no faster than fp32, where the
#   dense path's matmuls run at the bf16 rate: forward+backward 2.81 vs 10.7 (N=128), 37.2 vs 58.0
#   (N=512); causal 4.89 vs 12.1, 61.2 vs 87.4; forward 0.82 vs 1.54 (N=128), 19.8 vs 18.4 (N=512, a tie).
#   From N=1024 SDPA wins: forward 96.9 vs 65.8, forward+backward 240 vs 172.
# - otherwise: weights asked for go to dense (sdpa and chunked have none); lse to chunked (memory linear
#   in N); the reference is the last resort and the path of traces.
DENSE_BF16 = 512 * 512


def auto_order(request: Request) -> tuple[str, ...]:
    if request.device.type == "cuda":
        # Unmeasured so far (no GPU yet: benchmarks/triton_gpu.py will decide): SDPA's flash kernel first for
        # plain calls; triton first where SDPA would read a materialised (Nq, Nk) mask, since triton
        # evaluates predicates in the kernel and skips the blocks they rule out. Where SDPA cannot serve
        # the call (lse, score modifiers), triton is the next in line either way.
        if request.mask_is_predicate:
            return ("triton", "sdpa", "chunked", "dense", "reference")
        return ("sdpa", "triton", "chunked", "dense", "reference")
    bf16_cpu = request.device.type == "cpu" and request.dtype == torch.bfloat16
    if bf16_cpu and request.num_queries * request.num_keys <= DENSE_BF16:
        return ("dense", "sdpa", "chunked", "reference")
    return ("sdpa", "chunked", "dense", "reference")


def choose(name: str, request: Request) -> Backend:
    """The backend to run: `name` itself (or a ValueError saying why it cannot), or the pick of "auto"."""
    if name == "auto":
        return next(BACKENDS[n] for n in auto_order(request) if BACKENDS[n].unsupported(request) is None)
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *BACKENDS]}, got {name!r}")
    reason = BACKENDS[name].unsupported(request)
    if reason is not None:
        raise ValueError(f"backend {name!r} cannot {reason}; use backend='reference' or backend='auto'")
    return BACKENDS[name]
