"""The route of a plain attention call, remembered: its checked scale, its Request and run options, and
the backend picked, so that the next call of the same kind skips arguments.check, arguments.describe and
backends.choose (about 30 µs of Python on every call, beside a kernel of 1 ms at B=4, H=8, N=128).

A call is plain when it has no tensor or predicate mask (causal=True is allowed) and no score modifier,
its flags are bools, its scale None or a float, its dropout_p a float, q, k and v are torch.Tensors (no
subclass), and it runs outside torch.compile, torch.jit.trace, torch.func's transforms and
headwise.trace(). Then what those three steps return is a function of `plain_key` (the shapes, dtypes
and devices of q, k and v, whether a backward follows, and the arguments), and of `dispatch_state` (the
tuner's measurements and switch, HEADWISE_TUNE, the registry's backends, the CPU's kind, torch's
thread count, deterministic mode): a route is kept under the first and taken while the second is what it
was when the route was made. Only calls that passed every check are kept; the size check
(running.check_size) still runs on each call.
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
    scale: float  # the checked scale (1 / sqrt(Dh) for None)
    request: Request
    options: dict[str, Any]  # running.run's keyword arguments (arguments.describe's)
    choice: Choice


ROUTES: dict[tuple[Any, ...], tuple[tuple[Any, ...], Route]] = {}  # key -> (dispatch state, route)


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
    return (*tensors, backward, *flags, scale, dropout_p, backend)


def dispatch_state() -> tuple[Any, ...]:
    """What backends.choose reads besides the Request: the tuner's measurements (the dict itself: it is
    replaced, never changed, when a measurement is kept or the cache is read again) and switch,
    HEADWISE_TUNE, the registry's backends, the CPU's kind, torch's thread count (in the tuner's key) and
    deterministic mode."""
    tuner = tuning.TUNER
    backends = tuple(BACKENDS.values())
    threads = torch.get_num_threads()
    modes = (tuner.enabled, os.environ.get("HEADWISE_TUNE"), torch.are_deterministic_algorithms_enabled())
    return (tuner._choices, backends, tuning.cpu_kind(), threads, *modes)


def find(key: tuple[Any, ...] | None) -> Route | None:
    """The route kept for `key`, while the dispatch state is the one it was made under; else None."""
    kept = None if key is None else ROUTES.get(key)
    return kept[1] if kept is not None and kept[0] == dispatch_state() else None


def keep(key: tuple[Any, ...] | None, route: Route) -> Route:
    """Keep `route` for a plain call's `key` under the dispatch state now (nothing for None: a call that
    is not plain, or one torch.compile traces, which reads no state) -> route."""
    if key is not None:
        if len(ROUTES) >= LIMIT:
            ROUTES.clear()
        ROUTES[key] = (dispatch_state(), route)
    return route
