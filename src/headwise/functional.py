"""attention(q, k, v, ...): check the arguments, pick a backend, run it; tune(); attention_weights().

One route for every call, in this order, each step once:

0. routes.find: a plain call (no mask but causal, no score modifier) of a kind already routed, under the
   same dispatch state, takes the route kept for it (steps 1, 2 and 4 are skipped but the size check).
1. arguments.check: every argument checked on entry (an error names the argument, what it got and what
   was expected).
2. arguments.describe: the call as a Request (what backends' capabilities are matched against) and the
   options every run takes; causal=True becomes the causal() predicate here, once.
3. While torch.compile traces, a call of the common kind becomes headwise's custom op (ops.call_op),
   whose implementation, when the graph runs, takes steps 2, 4 and 5 (the arguments were checked when
   it was traced; TorchScript's callers build theirs from a module's own weights).
4. running.pick: backends.choose (the backend named; or auto's measured choice, a first-use measurement,
   else the static order of the backends' ranks) and the size check.
5. running.run: the backend on the inputs in its compute dtype, under the non-finite rule.

Shape legend: B batch, Nq / Nk query and key lengths, Hq / Hkv query and key/value heads (G = Hq / Hkv
query heads share one key/value head), Dh head width of queries and keys, Dv head width of values.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Sequence
from typing import Any, Literal, overload

import torch

from . import ops, routes
from .arguments import (
    check,
    check_inputs,
    check_masks,
    check_scale,
    check_score_mod,
    describe,
    normalise_masks,
)
from .backends.dispatch import candidates
from .backends.reference import keep_nothing, log_sum_exp, masked_scores
from .backends.tuning import TUNER
from .masks import Predicate, ScoreModifier, with_predicate
from .running import measurer, pick, run


@overload
def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | Predicate | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: Literal[False] = False,
    return_lse: Literal[False] = False,
    score_mod: ScoreModifier | None = None,
    backend: str = "auto",
    kv_finite: bool = False,
) -> torch.Tensor: ...


@overload
def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | Predicate | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: Literal[True],
    return_lse: Literal[False] = False,
    score_mod: ScoreModifier | None = None,
    backend: str = "auto",
    kv_finite: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | Predicate | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: Literal[False] = False,
    return_lse: Literal[True],
    score_mod: ScoreModifier | None = None,
    backend: str = "auto",
    kv_finite: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | Predicate | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: Literal[True],
    return_lse: Literal[True],
    score_mod: ScoreModifier | None = None,
    backend: str = "auto",
    kv_finite: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@overload
def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | Predicate | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    return_lse: bool = False,
    score_mod: ScoreModifier | None = None,
    backend: str = "auto",
    kv_finite: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ...]: ...


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | Predicate | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    return_lse: bool = False,
    score_mod: ScoreModifier | None = None,
    backend: str = "auto",
    kv_finite: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Scaled dot-product attention: softmax(q · kᵀ · scale + mask) · v, per head.

    Args:
        q: queries (B, Hq, Nq, Dh).
        k: keys (B, Hkv, Nk, Dh); Hq must be a multiple of Hkv (grouped-query attention: query head h
            uses key/value head h // (Hq / Hkv)).
        v: values (B, Hkv, Nk, Dv).
        mask: None; bool with True = may attend; or floating, added to the scaled scores (-inf = may not
            attend; cast to q's dtype). Broadcastable to (B, Hq, Nq, Nk). Or a `headwise.masks` predicate
            (causal, sliding_window, key_lengths, documents, prefix_lm, combined with & | ~): the chunked
            backend evaluates it block by block and skips blocks it rules out; others get it materialised.
        causal: each query sees only keys at or before its own position, aligned bottom-right when
            Nq != Nk (query i sees keys j <= i + Nk - Nq). Combines with `mask`.
        scale: multiplies the scores; defaults to 1 / sqrt(Dh).
        dropout_p: probability of zeroing an attention weight (kept ones are scaled by 1 / (1 - p)), using
            torch's random number generator. Pass 0.0 at evaluation time.
        return_weights: also return the weights that multiplied v (after dropout), (B, Hq, Nq, Nk).
        return_lse: also return lse (B, Hq, Nq) = log Σ exp(scaled, masked scores) over the keys (-inf for a
            query that sees none), in float32 or float64: with `attention_weights` it recomputes any slice
            of the weights exactly, and with `merge` it combines attention over separate key sets.
        score_mod: a `headwise.masks` score modifier (alibi(slopes) with one slope per query head,
            softcap(cap), or a chain a.then(b)) applied to the scaled scores before masking.
        backend: "auto" (the fastest backend that computes this function) or a name in
            `headwise.backends.BACKENDS`: "reference" (step by step, float64-capable, records traces) and
            the fast paths that docs/use/backends.md lists; a backend asked for what its capabilities
            exclude raises a ValueError that says what.
        kv_finite: the caller knows that k and v hold no NaN or inf (headwise's KV cache knows it of its
            entries): their check is skipped, which matters when one query reads a long cache.

    Non-finite inputs follow one rule on every backend: a masked-out key never contributes, to values or
    gradients, and a query's row of out (weights, lse) is NaN exactly when the query itself holds a NaN
    or inf or it attends, with nonzero weight, to a key whose k or v does; gradients stay finite.
    Finite inputs whose scaled scores overflow the dtype (float32 q and k of 1e19 each, scale=1e308) are
    outside the rule and unchecked: those queries' rows may be NaN or not, by backend; other rows are exact.
    A CPU call whose output, gradients or (dense, reference) scores cannot fit in memory, or whose work
    passes MAX_CPU_FLOP, is refused before it starts (check_size).

    Returns:
        out (B, Hq, Nq, Dv), or a tuple (out, weights) / (out, lse) / (out, weights, lse) as asked. A query
        with nothing to attend to (every key masked) gets a row of zeros and zero gradients, never NaN.
    """
    arguments = (mask, causal, scale, dropout_p, return_weights, return_lse, score_mod, kv_finite)
    key = routes.plain_key(q, k, v, backend, arguments)
    state = None if key is None else routes.dispatch_state()
    route = routes.find(key, state)
    if route is None:
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a string, got {type(backend).__name__}")
        scale = check(q, k, v, *arguments)
        request, options = describe(q, k, v, mask, causal, scale, *arguments[3:])
        if ops.covers(request, backend):  # torch.compile is tracing: one opaque op (headwise.ops)
            names = ("mask", "predicate", "scale", "dropout_p", "kv_finite")
            passed = {name: options[name] for name in names}
            return ops.call_op(q, k, v, **passed, backend=backend, training=request.requires_grad)
        choice = pick(backend, request, q, k, v, options)
        route = routes.keep(key, state, routes.Route(request, options, choice))
    out, weights, lse = run(route.choice, q, k, v, **route.options)
    asked = [t for t, wanted in ((weights, return_weights), (lse, return_lse)) if wanted]
    extras = [t for t in asked if t is not None]
    if len(extras) != len(asked):  # a backend's capabilities promise what dispatch let it be asked for
        backend = route.choice.backend
        raise RuntimeError(f"backend {backend!r} returned no weights or lse, though asked for them")
    return (out, *extras) if extras else out


def tune(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **options: Any) -> dict[str, Any]:
    """Measure now which backend and compute dtype "auto" should take for calls like
    `attention(q, k, v, **options)` on this machine (the inputs' requires_grad says whether a backward is
    timed too) and keep the choice for the call's key (headwise.backends.tuning: the static choice unless
    another candidate beats it clearly; written to the dispatch cache only when the measurement was
    steady). -> {"choice": Choice, "ms": {candidate: its fastest call in ms, or None when it was not timed
    further}, "steady": whether the choice was written, "cost_s": seconds the measurement took}."""
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"tune() takes attention()'s keyword arguments but backend, got {unknown}")
    given = {**_DEFAULTS, **options}
    arguments = [given[name] for name in _DEFAULTS]  # in attention()'s order
    scale = check(q, k, v, *arguments)
    request, described = describe(q, k, v, **{**given, "scale": scale})  # the checked scale
    return TUNER.tune(request, candidates(request), measurer(described, q, k, v, request.requires_grad))


# attention()'s options and their defaults, for tune(): derived, so that the two never drift apart.
_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(attention).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "backend"
}


def attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor | None = None,
    *,
    rows: slice | Sequence[int] | torch.Tensor | None = None,
    heads: slice | Sequence[int] | torch.Tensor | None = None,
    mask: torch.Tensor | Predicate | None = None,
    causal: bool = False,
    scale: float | None = None,
    score_mod: ScoreModifier | None = None,
) -> torch.Tensor:
    """The exact attention weights of any slice of queries and heads, from a fast run's lse.

    weights = exp(scaled, masked scores - lse): one (rows × Nk) block per head instead of the whole
    (Nq × Nk) matrix. Pass the q, k, mask, causal and scale of the run that produced lse (from
    `attention(..., return_lse=True)`); with lse=None it is computed from the same scores (a softmax over
    the selected rows). Dropout is not applied: these are the softmax probabilities.

    Args:
        q: queries (B, Hq, Nq, Dh).
        k: keys (B, Hkv, Nk, Dh).
        lse: (B, Hq, Nq), from the run that produced it, or None.
        rows: the query positions to return (default all); heads: the query heads (default all).
    Returns:
        weights (B, len(heads), len(rows), Nk); a query that sees no key gets a row of zeros.
    """
    check_inputs(q, k, k)
    batch, q_heads, num_queries, _ = q.shape
    if lse is not None and (
        not isinstance(lse, torch.Tensor) or tuple(lse.shape) != (batch, q_heads, num_queries)
    ):
        got = tuple(lse.shape) if isinstance(lse, torch.Tensor) else type(lse).__name__
        raise ValueError(f"lse must have shape (B, Hq, Nq) = {(batch, q_heads, num_queries)}, got {got}")
    if lse is not None and (lse.dtype not in (torch.float32, torch.float64) or lse.device != q.device):
        raise TypeError(
            f"lse has dtype {lse.dtype} on {lse.device}; expected float32 or float64 on {q.device}, as "
            "attention(..., return_lse=True) returns it"
        )
    target = (batch, q_heads, num_queries, k.shape[2])  # (B, Hq, Nq, Nk)
    check_masks(mask, causal, target, q)
    mask, predicate = normalise_masks(mask, causal, q)
    if predicate is not None:
        mask = with_predicate(mask, predicate, target, q.dtype, q.device)  # (B|1, Hq|1, Nq, Nk)
    check_score_mod(score_mod, target)
    scale = check_scale(scale, q.shape[-1])
    rows = _selection(rows, "rows", num_queries, "Nq", q.device)  # (R,)
    heads = _selection(heads, "heads", q_heads, "Hq", q.device)  # (H',)
    keys = k[:, heads // (q_heads // k.shape[1])]  # (B, H', Nk, Dh): each query head's key head
    queries = q[:, heads][:, :, rows]  # (B, H', R, Dh)
    piece = None if mask is None else mask.expand(target)[:, heads][:, :, rows]  # (B, H', R, Nk)
    scores = masked_scores(
        queries,
        keys,
        scale=scale,
        mask=piece,
        score_mod=score_mod,
        heads=heads,
        rows=rows,
        num_queries=num_queries,
        dtype=torch.promote_types(q.dtype, torch.float32) if lse is None else lse.dtype,
        recorder=keep_nothing,
    )  # (B, H', R, Nk)
    row_lse = log_sum_exp(scores) if lse is None else lse[:, heads][:, :, rows]  # (B, H', R)
    return torch.exp(scores - row_lse.masked_fill(row_lse == float("-inf"), 0.0)[..., None])


def _selection(chosen: object, name: str, size: int, axis: str, device: torch.device) -> torch.Tensor:
    """The indices (n,) that `chosen` (None for all, a slice, a sequence of ints or an integer tensor)
    selects of range(size), or a TypeError / IndexError naming the argument. A sequence is checked in
    Python, a tensor by its values (while torch.compile traces: when the graph runs, not to break it)."""
    every = torch.arange(size, device=device)  # (size,)
    if chosen is None or isinstance(chosen, slice):  # as Python indexes: a negative step counts down
        picked = range(size) if chosen is None else range(size)[chosen]
        return torch.arange(picked.start, picked.stop, picked.step, device=device)  # (n,)
    if (
        isinstance(chosen, torch.Tensor)
        and chosen.dim() == 1
        and not chosen.dtype.is_floating_point
        and chosen.dtype != torch.bool
    ):
        in_range = ((chosen >= -size) & (chosen < size)).all()
        if torch.compiler.is_compiling():
            torch._assert_async(in_range, f"{name} must index range({size}) ({axis} = {size})")
        elif not bool(in_range):
            raise IndexError(f"{name} must index range({size}) ({axis} = {size}), got {chosen.tolist()}")
        return every[chosen.to(device)]
    if not (isinstance(chosen, Sequence) and all(_is_int(i) for i in chosen)):
        raise TypeError(f"{name} must be None, a slice, or a sequence or 1-D tensor of ints, got {chosen!r}")
    if not all(-size <= i < size for i in chosen):
        raise IndexError(f"{name} must index range({size}) ({axis} = {size}), got {list(chosen)}")
    return every[torch.tensor(list(chosen), dtype=torch.int64, device=device)]


def _is_int(value: object) -> bool:
    """Whether `value` is an integer and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
