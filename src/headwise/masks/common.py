"""What predicates and score modifiers share: the index tensors of a block, argument checks, titles."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TypeVar, overload

import torch
from typing_extensions import dataclass_transform  # typing's from Python 3.11

_FEW = 8  # a data tensor with at most this many entries is written out in a title
T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def rule(cls: type[T]) -> type[T]:
    """A predicate or modifier of plain numbers: a frozen dataclass, equal by value."""
    return dataclass(frozen=True, repr=False)(cls)


@dataclass_transform(frozen_default=True, eq_default=False)
def data_rule(cls: type[T]) -> type[T]:
    """A predicate or modifier holding tensors: a frozen dataclass, equal only to itself."""
    return dataclass(frozen=True, repr=False, eq=False)(cls)


def block_indices(
    batch: int,
    heads: int,
    q_start: int,
    q_end: int,
    k_start: int,
    k_end: int,
    device: torch.device | str | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index tensors of one block, broadcasting to (B, H, q_end - q_start, k_end - k_start)."""
    batch_idx = torch.arange(batch, device=device).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    head_idx = torch.arange(heads, device=device).view(1, -1, 1, 1)  # (1, H, 1, 1)
    q_idx = torch.arange(q_start, q_end, device=device)[:, None]  # (Nq_block, 1)
    kv_idx = torch.arange(k_start, k_end, device=device)[None, :]  # (1, Nk_block)
    return batch_idx, head_idx, q_idx, kv_idx


def check_counts(**counts: object) -> None:
    """Raise unless each count is an int >= 0."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def check_block(q_start: int, q_end: int, k_start: int, k_end: int, num_queries: int, num_keys: int) -> None:
    """Raise unless [q_start, q_end) lies in [0, num_queries) and [k_start, k_end) in [0, num_keys)."""
    check_counts(num_queries=num_queries, num_keys=num_keys)
    check_counts(q_start=q_start, q_end=q_end, k_start=k_start, k_end=k_end)
    for axis, start, end, length in (("q", q_start, q_end, num_queries), ("k", k_start, k_end, num_keys)):
        if not start <= end <= length:
            raise ValueError(
                f"the block has {axis}_start = {start}, {axis}_end = {end}; expected "
                f"0 <= {axis}_start <= {axis}_end <= {length} (num_{'queries' if axis == 'q' else 'keys'})"
            )


def check_tensor(
    value: object, name: str, expected: str, dims: tuple[int, ...], floating: bool = False
) -> torch.Tensor:
    """Raise unless `value` is a tensor of floating (or, by default, integer) dtype with `dims` dimensions;
    `expected` says what was asked for. -> `value`, a tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    integer = not (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool)
    if not (value.dtype.is_floating_point if floating else integer):
        raise TypeError(f"{name} must be {expected}, got dtype {value.dtype}")
    if value.dim() not in dims:
        raise ValueError(f"{name} must be {expected}, got shape {tuple(value.shape)}")
    check_holds_values(value, name)
    return value


def check_holds_values(value: torch.Tensor, name: str) -> None:
    """Raise unless `value` holds its values densely on a real device: a mask rule reads them, which a
    meta tensor (shapes only) cannot give and a sparse layout does not index as a dense tensor does."""
    if value.device.type == "meta":
        raise ValueError(
            f"{name} is on the meta device, which holds no values; expected a CPU or CUDA tensor"
        )
    if value.layout != torch.strided:
        raise TypeError(
            f"{name} has layout {value.layout}; expected a dense tensor (convert with .to_dense())"
        )


def check_kind(value: object, kind: type[T], operator: str) -> T:
    """`value` itself, when it is a `kind` (Predicate or ScoreModifier) to combine by `operator`."""
    if not isinstance(value, kind):
        raise TypeError(
            f"{operator} combines a {kind.__name__} with another {kind.__name__}, got "
            f"{type(value).__name__}; make one with headwise.masks' constructors (causal(), alibi(), ...)"
        )
    return value


def non_decreasing(ids: torch.Tensor) -> bool:
    """Whether each row of ids (B, N) is non-decreasing."""
    return bool((ids[:, 1:] >= ids[:, :-1]).all())


@overload
def first(a: T | None, b: T, /) -> T: ...
@overload
def first(a: T | None, b: T | None, c: T, /) -> T: ...
@overload
def first(*values: T | None) -> T | None: ...
def first(*values: T | None) -> T | None:
    """The first value that is not None (None if all are)."""
    return next((value for value in values if value is not None), None)


def describe(data: torch.Tensor) -> str:
    """A data tensor for a title: its values when there are few, else its shape and dtype (<2×8 int64>)."""
    if data.numel() > _FEW:
        return f"<{'×'.join(map(str, data.shape))} {str(data.dtype).removeprefix('torch.')}>"
    return str(data.double().round(decimals=4).tolist() if data.dtype.is_floating_point else data.tolist())
