"""The route of a plain attention call, remembered: its Request, its run options (the checked scale
among them) and the backend picked, so that the next call of the same kind skips arguments.check,
arguments.describe and backends.choose (about 30 µs of Python on every call, beside a kernel of 1 ms at
B=4, H=8, N=128).

A call is plain when it has no tensor or predicate mask (causal=True is allowed) and no score modifier,
its flags are bools, its scale None or a float, its dropout_p a float, its backend a string, q, k and v
are torch.Tensors (no subclass), and it runs outside torch.compile, torch.jit.trace, torch.func's
transforms and headwise.trace(). Then what those three steps return is a function of `plain_key` (the
shapes, dtypes and devices of q, k and v, whether a backward follows, the arguments and torch's thread
count) and of `DispatchState` (the tuner's measurements and switch, HEADWISE_TUNE, the registry's
backends, the CPU's kind, deterministic mode), as long as no backend that could serve the call has
`limits`, which read the environment (triton: whether it is installed, TRITON_INTERPRET): such calls (on
CUDA, or naming such a backend) are not kept. A route is kept under its key with the state read before it
was made, and taken while the state is the same. Only calls that passed every check are kept, the size
check (running.check_size) included: it depends on the Request and the choice alone (and on the
machine's memory, read once per process).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from .backends import BACKENDS, Choice, Request, tuning
from .trace import tracing

LIMIT = 1024  # routes kept at most (then all forgotten at once): a decoding loop makes one per length


@dataclasses.dataclass(frozen=True)
class Route:
    request: Request
    options: dict[str, Any]  # running.run's keyword arguments (arguments.describe's)
    choice: Choice


@dataclasses.dataclass(frozen=True)
class DispatchState:
    """What backends.choose reads besides the Request. choices: the tuner's measurements, compared by
    identity (the dict is replaced, never changed, when a measurement is kept or the file read again; two
    equal dicts compared in full cost ~37 µs at 300 entries); the rest by value."""

    choices: dict[str, Choice]
    rest: tuple[Any, ...]  # the tuner's switch, HEADWISE_TUNE, the backends, the CPU's kind, deterministic

    def same(self, other: DispatchState) -> bool:
        return self.choices is other.choices and self.rest == other.rest


ROUTES: dict[tuple[Any, ...], tuple[DispatchState, Route]] = {}  # key -> (state it was made under, route)


def plain_key(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str, arguments: tuple[Any, ...]
) -> tuple[Any, ...] | None:
    """What a plain call's route depends on, or None for a call that is not plain (the module's
    docstring). arguments: attention()'s (mask, causal, scale, dropout_p, return_weights, return_lse,
    score_mod, kv_finite). Types are compared exactly: causal=1 is not causal=True (the check refuses it)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or tracing():
        return None
    mask, causal, scale, dropout_p, return_weights, return_lse, score_mod, kv_finite = arguments
    flags = (causal, return_weights, return_lse, kv_finite)
    if (
        mask is not None
        or score_mod is not None
        or type(q) is not torch.Tensor
        or type(k) is not torch.Tensor
        or type(v) is not torch.Tensor
        or any(type(flag) is not bool for flag in flags)
        or not (scale is None or type(scale) is float)
        or type(dropout_p) is not float
        or type(backend) is not str
    ):
        return None
    if torch._C._are_functorch_transforms_active():
        return None
    backward = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    tensors = (q.shape, k.shape, v.shape, q.dtype, k.dtype, v.dtype, q.device, k.device, v.device)
    return (*tensors, backward, *flags, scale, dropout_p, backend, torch.get_num_threads())


def dispatch_state() -> DispatchState:
    """The dispatch state now (DispatchState): read before a call's route is made, so that a change while
    it is made (another thread's measurement) makes the next call choose again."""
    tuner = tuning.TUNER
    backends = tuple(BACKENDS.values())
    rest = (tuner.enabled, os.environ.get("HEADWISE_TUNE"), backends, tuning.cpu_kind())
    choices = tuner.choices()  # read from the file if forgotten: never "not read yet", which reading changes
    return DispatchState(choices, (*rest, torch.are_deterministic_algorithms_enabled()))


def find(key: tuple[Any, ...] | None, state: DispatchState | None) -> Route | None:
    """The route kept for `key`, made under `state`; else None."""
    if key is None or state is None:
        return None
    kept = ROUTES.get(key)
    return kept[1] if kept is not None and kept[0].same(state) else None


def keep(key: tuple[Any, ...] | None, state: DispatchState | None, route: Route) -> Route:
    """Keep `route` for a plain call's `key` under `state`, read before it was made (nothing for None: a
    call that is not plain, or one torch.compile traces, which reads no state), unless a backend that could
    serve it has `limits` -> route."""
    if key is not None and state is not None and not _reads_environment(route):
        if len(ROUTES) >= LIMIT:
            ROUTES.clear()
        ROUTES[key] = (state, route)
    return route


def _reads_environment(route: Route) -> bool:
    """Whether a backend that could serve the route's call has `limits`: its choice, or any ranked on the
    call's device (a plain call is never structured), which auto may have passed over or may take."""
    device = route.request.device.type
    backends = [BACKENDS[route.choice.backend], *BACKENDS.values()]
    ranked = [b for b in backends[1:] if b.capabilities.rank.of(device, False) is not None]
    return any(b.capabilities.limits is not None for b in (backends[0], *ranked))
