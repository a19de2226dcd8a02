"""Tensor masks: True = may attend (boolean) or a float added to the scores (-inf = may not attend).

Causal masks are aligned bottom-right: with Nq queries and Nk keys, query i may see key j when
j <= i + (Nk - Nq), so the last query sees the last key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

import torch

from .common import check_holds_values

if TYPE_CHECKING:
    from .predicates import Predicate

Mask = torch.Tensor


def causal_mask(num_queries: int, num_keys: int, device: torch.device | str | None = None) -> Mask:
    """Bottom-right causal mask (Nq, Nk): True where query i may attend to key j <= i + Nk - Nq."""
    query_pos = torch.arange(num_queries, device=device)[:, None]  # (Nq, 1)
    key_pos = torch.arange(num_keys, device=device)[None, :]  # (1, Nk)
    return key_pos <= query_pos + (num_keys - num_queries)  # (Nq, Nk)


def to_additive(mask: Mask, dtype: torch.dtype) -> Mask:
    """A float mask to add to the scores: a boolean mask becomes 0 where allowed and -inf where not."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.to(dtype)


@overload
def combine(first: Mask | None, second: Mask, dtype: torch.dtype) -> Mask: ...
@overload
def combine(first: Mask | None, second: Mask | None, dtype: torch.dtype) -> Mask | None: ...
def combine(first: Mask | None, second: Mask | None, dtype: torch.dtype) -> Mask | None:
    """Both masks at once: AND of two boolean masks, otherwise the sum of their additive forms.

    Shapes broadcast against each other; a float result has `dtype`.
    """
    if first is None:
        return second if second is None or second.dtype == torch.bool else second.to(dtype)
    if second is None:
        return combine(second, first, dtype)
    if first.dtype == torch.bool and second.dtype == torch.bool:
        return first & second
    return to_additive(first, dtype) + to_additive(second, dtype)


def check_mask(
    mask: object,
    name: str,
    target: tuple[int, ...],
    device: torch.device,
    true_means: str = "may attend",
) -> None:
    """Raise TypeError/ValueError unless `mask` is a bool or float tensor on `device` that broadcasts
    to `target`; `true_means` is what True means in the caller's polarity, for the message."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        raise TypeError(
            f"{name} has dtype {mask.dtype}; expected torch.bool (True = {true_means}) "
            "or a floating dtype (added to the scores)"
        )
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device} but the queries are on {device}; move it with .to()")
    check_holds_values(mask, name)
    try:
        broadcast = torch.broadcast_shapes(mask.shape, target)
    except RuntimeError:
        broadcast = None
    if broadcast != torch.Size(target):
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)}, which does not broadcast to (B, Hq, Nq, Nk) = {target}"
        )


def check_padding_mask(
    mask: object, name: str, shape: tuple[int, int], device: torch.device, layout: str = "(B, N)"
) -> None:
    """Raise TypeError/ValueError unless `mask` is a bool tensor `layout` = `shape` on `device`, True = a
    real token (the caller's argument name in every message)."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = getattr(mask, "dtype", type(mask).__name__)
        raise TypeError(f"{name} must be a bool tensor (True = real token), got {got}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {layout} = {tuple(shape)}, got {tuple(mask.shape)}")
    check_mask(mask, name, shape, device)


def with_predicate(
    mask: Mask | None,
    predicate: Predicate,
    target: tuple[int, int, int, int],
    dtype: torch.dtype,
    device: torch.device,
) -> Mask:
    """`mask` and a masks.Predicate as one tensor mask (see `combine`), the predicate materialised for
    attention of sizes target = (B, Hq, Nq, Nk) on `device`: bool (B|1, Hq|1, Nq, Nk), or float in `dtype`."""
    return combine(mask, predicate.materialize(*target, device=device), dtype)
