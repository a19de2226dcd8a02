"""Attention backends: one module each, registered by name in MODULES; `functional.attention` dispatches.

A backend module defines

    CAPABILITIES: Capabilities    what it can do, as data (see capabilities.py)
    attention(q, k, v, *, mask, predicate, scale, dropout_p, score_mod, return_weights, return_lse)
        -> (out, weights, lse)

    q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv), validated; mask is None, bool
    (True = may attend) or float in q's dtype, broadcastable to (B, Hq, Nq, Nk); predicate is a
    masks.Predicate (causal=True arrives as causal(), bottom-right) or None, given only to backends whose
    capabilities take predicates (the others get it combined into `mask`); weights (B, Hq, Nq, Nk) and
    lse (B, Hq, Nq) are None unless asked for.

A new backend is its module and its name in MODULES: the dispatcher, the oracle grid (tests) and the
benchmarks read this registry. "auto" ranks the backends that declare a rank (Capabilities.rank: lower
first, per device; tuning.static_choices): a new one without is reachable by name and by `headwise tune`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .capabilities import Capabilities, Choice, Rank, Request

MODULES = ("reference", "sdpa", "chunked", "blocksparse", "dense", "triton", "flex")


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable[..., tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]
    capabilities: Capabilities

    def unsupported(self, request: Request) -> str | None:
        """What this backend cannot do for `request`, or None."""
        return self.capabilities.unsupported(request)


def _load(name: str) -> Backend:
    module = importlib.import_module(f"{__name__}.{name}")
    return Backend(name, module.attention, module.CAPABILITIES)


BACKENDS: dict[str, Backend] = {name: _load(name) for name in MODULES}

from .dispatch import auto_order, choose  # noqa: E402  (dispatch reads BACKENDS)

__all__ = [
    "BACKENDS",
    "MODULES",
    "Backend",
    "Capabilities",
    "Choice",
    "Rank",
    "Request",
    "auto_order",
    "choose",
]
