"""compat's checks of an eager call, in torch's order and with torch's exception classes (see errors.py):
the inputs' types and ranks in torch's own words first (its _mha_shape_check), then their widths and
lengths, the parameters' dtypes and the masks' exact shapes, each with headwise's account of the shape
expected and the one received. Functions of the module's sizes (Sizes), called from the eager path only:
TorchScript's path runs no checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch

from ..masks import check_mask
from .errors import (
    TypeAssertionError,
    TypeAttributeError,
    TypeRuntimeError,
    ValueAssertionError,
    ValueRuntimeError,
    like_torch,
)


class Sizes(NamedTuple):
    """What the checks read of the module: E = embed_dim, kdim, vdim, num_heads and its layout."""

    embed_dim: int
    kdim: int
    vdim: int
    num_heads: int
    batch_first: bool

    def layout(self, name: str, rank: int) -> str:
        """The shape torch's layout gives `name` ("query", "key" or "value") batched (rank 3) or not."""
        length, width = {"query": ("L", self.embed_dim), "key": ("S", self.kdim), "value": ("S", self.vdim)}[
            name
        ]
        if rank == 2:
            return f"({length}, {width})"
        return f"(B, {length}, {width})" if self.batch_first else f"({length}, B, {width})"


def check_ranks(
    sizes: Sizes,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: object,
    attn_mask: object,
) -> None:
    """torch's first checks: query, key and value tensors (else a TypeAttributeError, as torch's
    AttributeError), then its _mha_shape_check, in its order and its words, each followed by headwise's
    account: the ranks of query, key, value and the masks, and the shape of an unbatched 3-D attn_mask. Each
    a ValueAssertionError (torch asserts)."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise TypeAttributeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if query.dim() not in (2, 3):
        raise ValueAssertionError(
            "query should be unbatched 2D or batched 3D tensor but received "
            f"{query.dim()}-D query tensor; query must have shape {sizes.layout('query', 3)} or "
            f"{sizes.layout('query', 2)} unbatched, got {_shape(query)}"
        )
    rank = query.dim()
    kind = "For batched (3-D) `query`" if rank == 3 else "For unbatched (2-D) `query`"
    if key.dim() != rank or value.dim() != rank:
        raise ValueAssertionError(
            f"{kind}, expected `key` and `value` to be {rank}-D but found {key.dim()}-D and "
            f"{value.dim()}-D tensors respectively; key and value must have shapes "
            f"{sizes.layout('key', rank)} and {sizes.layout('value', rank)} like query, got "
            f"{_shape(key)} and {_shape(value)}"
        )
    padding_rank = rank - 1  # (B, S) or (S,)
    if isinstance(key_padding_mask, torch.Tensor) and key_padding_mask.dim() != padding_rank:
        raise ValueAssertionError(
            f"{kind}, expected `key_padding_mask` to be `None` or {padding_rank}-D but found "
            f"{key_padding_mask.dim()}-D tensor instead; key_padding_mask must have shape "
            f"{'(B, S)' if rank == 3 else '(S,)'}, got {_shape(key_padding_mask)}"
        )
    if not isinstance(attn_mask, torch.Tensor):
        return
    if attn_mask.dim() not in (2, 3):
        raise ValueAssertionError(
            f"{kind}, expected `attn_mask` to be `None`, 2-D or 3-D but found {attn_mask.dim()}-D "
            f"tensor instead; attn_mask must have shape (L, S) or (B·num_heads, L, S), got "
            f"{_shape(attn_mask)}"
        )
    expected = (sizes.num_heads, query.shape[0], key.shape[0])  # unbatched: (num_heads, L, S)
    if rank == 2 and attn_mask.dim() == 3 and tuple(attn_mask.shape) != expected:
        raise ValueAssertionError(
            f"Expected `attn_mask` shape to be {expected} but got {attn_mask.shape}; an unbatched "
            "attn_mask has shape (L, S) or (num_heads, L, S)"
        )


def check_layout(sizes: Sizes, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> bool:
    """Raise ValueAssertionError unless query, key and value (of ranks check_ranks let through) have the
    module's widths, key and value the same length and batch size; return whether they are batched."""
    for name, t, width in (
        ("query", query, sizes.embed_dim),
        ("key", key, sizes.kdim),
        ("value", value, sizes.vdim),
    ):
        if t.shape[-1] != width:
            expected = sizes.layout(name, query.dim())
            like = "" if name == "query" else " like query"
            raise ValueAssertionError(f"{name} must have shape {expected}{like}, got {tuple(t.shape)}")
    if key.shape[:-1] != value.shape[:-1]:
        raise ValueAssertionError(
            "key and value must have the same length S (and batch size B), got shapes "
            f"{tuple(key.shape)} and {tuple(value.shape)}"
        )
    return query.dim() == 3


def check_parameter_dtypes(parameters: Iterable[tuple[str, torch.Tensor]], weight: torch.Tensor) -> None:
    """A TypeRuntimeError unless every parameter (name, tensor) has the weights' dtype. torch computes with an
    in_proj_bias of another dtype only batch first (its projection of a transposed input adds the bias
    with type promotion) and raises RuntimeError for the same module sequence first; compat refuses both,
    saying which parameter."""
    for name, parameter in parameters:
        if parameter.dtype != weight.dtype:
            raise TypeRuntimeError(
                f"{name} has dtype {parameter.dtype} but the module's weights are {weight.dtype}; "
                f"convert it, e.g. module.to({weight.dtype})"
            )


def check_masks(
    sizes: Sizes,
    key_padding_mask: object,
    attn_mask: object,
    batched: bool,
    batch: int,
    num_queries: int,
    num_keys: int,
    device: torch.device,
) -> None:
    """torch's rules for its masks, on the weights' `device`, with torch's exception classes (see
    _check_exact_mask)."""
    if key_padding_mask is not None:
        expected = (batch, num_keys) if batched else (num_keys,)  # (B, S) or (S,)
        _check_exact_mask(key_padding_mask, "key_padding_mask", [expected], device)
    if attn_mask is not None:
        shapes = [(num_queries, num_keys), (batch * sizes.num_heads, num_queries, num_keys)]
        # torch asserts the rank and an unbatched 3-D mask's sizes, and checks the others' sizes with
        # RuntimeError.
        runtime_ranks = (2, 3) if batched else (2,)
        _check_exact_mask(attn_mask, "attn_mask", shapes, device, runtime_ranks)  # (L, S) or (B·H, L, S)


def _shape(t: torch.Tensor) -> str:
    """t's shape for a message; a nested tensor's ragged sizes have none, so only its rank."""
    return f"a {t.dim()}-D nested tensor" if t.is_nested else str(tuple(t.shape))


def _check_exact_mask(
    mask: object,
    name: str,
    shapes: list[tuple[int, ...]],
    device: torch.device,
    runtime_ranks: tuple[int, ...] = (),
) -> None:
    """torch's rule for its masks: a bool or float tensor on `device` with exactly one of `shapes` (torch does
    not broadcast them). A mask of the wrong shape is a ValueRuntimeError if its rank is in `runtime_ranks`
    (where torch checks the sizes with RuntimeError), else a ValueAssertionError (torch asserts)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if tuple(mask.shape) not in shapes:
        expected = " or ".join(str(shape) for shape in shapes)
        error = ValueRuntimeError if mask.dim() in runtime_ranks else ValueAssertionError
        raise error(f"{name} must have shape {expected}, got {tuple(mask.shape)}")
    with like_torch(TypeError, TypeAssertionError):  # torch asserts a bool or floating dtype
        check_mask(mask, name, tuple(mask.shape), device, true_means="may not attend, torch's polarity")
