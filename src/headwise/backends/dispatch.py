"""Which backend runs a call: the one named, or the pick of "auto".

"auto" takes the first backend in `auto_order(request)` that can serve the request. sdpa computes the
same function as the reference (its fully masked rows give zeros, forward and backward) and runs torch's
fused kernels, so it comes first, except where the benchmark says otherwise
(benchmarks/results/speed-cpu-bf16.md: 2-core AMD EPYC, torch 2.13, B=4, H=8, Dh=64; median ms, dense vs
SDPA):
- bf16 on the CPU with Nq·Nk <= 512²: SDPA's CPU flash kernel runs bf16 no faster than fp32, where the
  dense path's matmuls run at the bf16 rate: forward+backward 2.81 vs 10.7 (N=128), 37.2 vs 58.0
  (N=512); causal 4.89 vs 12.1, 61.2 vs 87.4; forward 0.82 vs 1.54 (N=128), 19.8 vs 18.4 (N=512, a tie).
  From N=1024 SDPA wins: forward 96.9 vs 65.8, forward+backward 240 vs 172.
- otherwise: weights asked for go to dense (sdpa and chunked have none); lse to chunked (memory linear
  in N); the reference is the last resort and the path of traces.
A registered backend that this table does not rank is never picked by "auto" (only by name).
"""

from __future__ import annotations

import torch

from ..masks import Causal
from . import BACKENDS, Backend
from .capabilities import Request

DENSE_BF16 = 512 * 512


def auto_order(request: Request) -> tuple[str, ...]:
    """The backends "auto" tries for `request`, fastest first."""
    if request.device.type == "cuda":
        # Unmeasured so far (no GPU yet: benchmarks/triton_gpu.py will decide): SDPA's flash kernel first for
        # plain calls; triton first where SDPA would read a materialised (Nq, Nk) mask, since triton
        # evaluates predicates in the kernel and skips the blocks they rule out. Where SDPA cannot serve
        # the call (lse, score modifiers), triton is the next in line either way.
        if request.predicate is not None and not _plain_causal(request):
            return ("triton", "sdpa", "chunked", "dense", "reference")
        return ("sdpa", "triton", "chunked", "dense", "reference")
    bf16_cpu = request.device.type == "cpu" and request.dtype == torch.bfloat16
    if bf16_cpu and request.num_queries * request.num_keys <= DENSE_BF16:
        return ("dense", "sdpa", "chunked", "reference")
    return ("sdpa", "chunked", "dense", "reference")


def _plain_causal(request: Request) -> bool:
    """causal=True and no other mask: SDPA takes it as is_causal (square) or a mask it builds itself."""
    return type(request.predicate) is Causal and request.mask == "none"


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
