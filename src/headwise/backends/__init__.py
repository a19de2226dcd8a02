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

# "auto" takes the first backend in this order that can serve the request. sdpa computes the same
# function as the reference (its fully masked rows give zeros, forward and backward; causal is passed as
# a bottom-right mask when Nq != Nk) and runs torch's fused kernels, so it comes first.
AUTO_ORDER = ("sdpa", "reference")


def choose(name: str, request: Request) -> Backend:
    """The backend to run: `name` itself (or a ValueError saying why it cannot), or the pick of "auto"."""
    if name == "auto":
        return next(BACKENDS[n] for n in AUTO_ORDER if BACKENDS[n].unsupported(request) is None)
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *BACKENDS]}, got {name!r}")
    reason = BACKENDS[name].unsupported(request)
    if reason is not None:
        raise ValueError(f"backend {name!r} cannot {reason}; use backend='reference' or backend='auto'")
    return BACKENDS[name]
