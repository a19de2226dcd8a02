"""Which backend runs a call, and in which dtype: the one named, or the pick of "auto" (see tuning.py for
the static table and the measurements).

"auto" takes, among the candidates a backend can serve, the measured choice for the request's key when
there is one; else, where the call is measured on first use (tuning.Tuner.may_tune), it measures the
static table's candidates (`first_use_candidates`); else the first in the static table. A registered
backend that declares no rank is a candidate only for `headwise tune` (and by name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from ..masks import Causal
from . import tuning
from .capabilities import Request
from .registry import BACKENDS, Backend
from .tuning import TUNER, Choice, accurate_backward, ranked_backends, slow_here, static_choices


def auto_order(request: Request) -> tuple[str, ...]:
    """The backends the static table ranks for `request`, in the input dtype, best first."""
    return tuple(c.backend for c in static_choices(request) if c.compute_dtype == request.dtype)


def candidates(request: Request) -> list[Choice]:
    """Every choice a backend can serve, the static table's order first, then the other registered
    backends (in the input dtype and, for bf16/fp16, in float32)."""
    ranked = static_choices(request)
    dtypes = {c.compute_dtype for c in ranked}
    others = [Choice(name, dtype) for dtype in sorted(dtypes, key=str) for name in BACKENDS]
    seen, capable = set(), []
    for choice in [*ranked, *others]:
        if choice in seen:
            continue
        seen.add(choice)
        if _serves(choice, request):
            capable.append(choice)
    return capable


def first_use_candidates(request: Request) -> list[Choice]:
    """What a measurement on first use times: the choices of the static table that the backends can
    serve, without the reference (unless nothing else serves) and without those `slow_here`; the table's
    first, then the backends in the order of their declared rank (SDPA first), each in the input dtype
    and then in float32, so that the measurement's budget reaches both dtypes of the likeliest first."""
    served = list(dict.fromkeys(c for c in static_choices(request) if _serves(c, request)))
    fast = [c for c in served if c.backend != "reference" and not slow_here(c, request)]
    if not fast:
        return served[:1]
    order = ranked_backends(request)
    rest = sorted(fast[1:], key=lambda c: (order.index(c.backend), c.compute_dtype != request.dtype))
    return [fast[0], *rest]


def static_choice(request: Request) -> Choice | None:
    """The first choice of the static table that a backend serves (None: not even the reference).
    Remembered for a plain request (`_plain`) outside torch.compile's tracing, while the registry holds
    the same backends and the CPU's kind is the same, unless a backend asked has `limits` (what depends
    on the environment): building the table took ~10 µs of auto's ~80 µs per call."""
    if torch.compiler.is_compiling() or not _plain(request):  # Dynamo would break the graph on the dict
        return _first_served(request)[0]
    backends = tuple(BACKENDS.values())
    if backends != _REMEMBERED_FOR[0]:  # compared by identity first: fast while nothing was replaced
        _REMEMBERED.clear()
        _REMEMBERED_FOR[0] = backends
    asked = (request, tuning.cpu_kind())  # looked up in tuning: where tests replace it
    served = _REMEMBERED.get(asked)
    if served is None:
        served, pure = _first_served(request)
        if len(_REMEMBERED) >= REMEMBERED:
            _REMEMBERED.clear()
        if pure and served is not None:
            _REMEMBERED[asked] = served
    return served


REMEMBERED = 1024  # kinds of plain call remembered at most (then forgotten at once)
_REMEMBERED: dict[tuple[Request, str], Choice] = {}
_REMEMBERED_FOR: list[tuple[Backend, ...]] = [()]  # the registry's backends that _REMEMBERED holds for


def _plain(request: Request) -> bool:
    """Whether `request` is made of values alone, and its static choice depends on nothing else: no
    score modifier (ALiBi holds a tensor), no predicate but causal() without a tensor mask (others hold
    tensors, or read blocksparse's block size through tuning.structured)."""
    causal = type(request.predicate) is Causal and request.mask == "none"
    return request.score_mod is None and (request.predicate is None or causal)


def _first_served(request: Request) -> tuple[Choice | None, bool]:
    """(the static table's first choice that a backend serves, or None; whether no backend asked on the
    way has `limits`)."""
    pure = True
    for choice in static_choices(request):
        pure = pure and BACKENDS[choice.backend].capabilities.limits is None
        if _serves(choice, request):
            return choice, pure
    return None, pure


def _serves(choice: Choice, request: Request) -> bool:
    """Whether the choice's backend can serve `request` computed in the choice's dtype, with a backward as
    accurate as eager's (tuning.accurate_backward)."""
    if not accurate_backward(choice, request):
        return False
    if choice.compute_dtype != request.dtype:  # replace() costs ~25 us, a % of a 3 ms call: only if needed
        request = replace(request, dtype=choice.compute_dtype)
    return BACKENDS[choice.backend].unsupported(request) is None


def choose(name: str, request: Request, measure: Callable[[Choice], None] | None = None) -> Choice:
    """The choice to run: `name` itself in the input dtype (or a ValueError saying why it cannot), or the
    pick of "auto". measure(choice) runs one call of the request's shape, for tuning on first use."""
    if name == "auto":
        measured = TUNER.lookup(request)
        if measured is not None and measured.backend in BACKENDS and _serves(measured, request):
            return measured
        if measure is not None and TUNER.may_tune(request):
            capable = first_use_candidates(request)
            if len(capable) > 1:
                return TUNER.first_use(request, capable, measure)
        served = static_choice(request)
        if served is None:  # the reference serves every kind of call: only the device or dtype can stop it
            reason = BACKENDS["reference"].unsupported(request)
            raise ValueError(f"auto found no backend for q, k and v: even the reference cannot {reason}")
        return served
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *BACKENDS]}, got {name!r}")
    reason = BACKENDS[name].unsupported(request)
    if reason is not None:
        raise ValueError(f"backend {name!r} cannot {reason}; use backend='reference' or backend='auto'")
    return Choice(name, request.dtype)
