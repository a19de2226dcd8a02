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

How to add a backend, in four steps (docs/design/extending.md has a worked one):

1. Its module, backends/NAME.py, with `CAPABILITIES = Capabilities(...)`: the facts of what it computes
   (devices, dtypes, weights, lse, predicates, score_mods, dropout, mask_grad, backward, deterministic,
   transforms; capabilities.py says what each means), from which `Capabilities.unsupported(request)`
   derives its refusals, and `rank=Rank(cpu=..., cuda=..., structured=...)`, its place in auto's static
   order (lower first, per device; `structured` for a call with a structured predicate; left out: unranked,
   reachable by name and by `headwise tune`, until a measurement says where). What depends on the
   environment rather than on the call (a package installed, an interpreter on) goes in
   `Capabilities.limits`, a function of the Request returning the reason or None (triton's `_limits`).
2. Its `attention(q, k, v, *, mask, predicate, scale, dropout_p, score_mod, return_weights, return_lse)
   -> (out, weights, lse)` as above: out (B, Hq, Nq, Dv); a query that sees no key gets zeros, never NaN;
   grouped-query heads (Hq a multiple of Hkv) served.
3. Its name in MODULES (registry.py), which registers it: BACKENDS loads it as a Backend, and the
   dispatcher, the refusals of `backend="NAME"`, the tuner, the cache file's checks and the benchmarks
   read that registry.
4. Its tests come with the registry: the oracle grid in tests/test_attention.py (grid(): every registered
   backend × the covering design, against the float64 reference by the ratio rule, out, lse and the
   gradients; a case its capabilities refuse is skipped with its reason) and the per-backend tests there
   (gradcheck, fully masked rows, empty sequences, dropout), with no test edits. Add a test file only for
   what is its own (tests/backends/test_blocksparse.py, tests/backends/test_chunked.py are examples).
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
