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

A new backend is its module and its name in MODULES (registry.py): the dispatcher, the oracle grid
(tests) and the benchmarks read that registry. "auto" ranks the backends that declare a rank
(Capabilities.rank: lower first, per device; tuning.static_choices): a new one without is reachable by
name and by `headwise tune`.
"""

from __future__ import annotations

from .capabilities import Capabilities, Choice, Rank, Request
from .dispatch import auto_order, choose
from .registry import BACKENDS, MODULES, Backend

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
