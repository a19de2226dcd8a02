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

from . import chunked, reference, sdpa


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
    causal: bool = False
    needs_grad: bool = False


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
}

# "auto" takes the first backend in `auto_order(request)` that can serve the request. sdpa computes the same
# function as the reference (its fully masked rows give zeros, forward and backward; causal is passed as a
# bottom-right mask when Nq != Nk) and runs torch's fused kernels, so it comes first, with two exceptions
# measured in benchmarks/results/speed-cpu.md (2-core AMD EPYC, torch 2.13, B=4, H=8, Dh=64):
# - bf16 on the CPU with Nq·Nk <= 512²: SDPA's CPU flash kernel is slower than the plain reference here:
#   forward 1.54 vs 1.39 ms (N=128) and 18.0 vs 15.0 ms (N=512); forward+backward 9.33 vs 3.75 ms (N=128)
#   and 56.6 vs 43.6 ms (N=512). Causal forward-only stays with SDPA (1.96 vs 2.24 ms, 21.5 vs 24.5 ms);
#   from N=1024 SDPA wins (forward 60 vs 108 ms, forward+backward 167 vs 455 ms).
# - when lse is asked for, chunked (memory linear in N) comes before the reference.
SMALL_BF16 = 512 * 512


def auto_order(request: Request) -> tuple[str, ...]:
    small_bf16 = (
        request.device.type == "cpu"
        and request.dtype == torch.bfloat16
        and request.num_queries * request.num_keys <= SMALL_BF16
        and (request.needs_grad or not request.causal)
    )
    return ("reference", "sdpa", "chunked") if small_bf16 else ("sdpa", "chunked", "reference")


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
