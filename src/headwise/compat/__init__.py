"""A drop-in for torch.nn.MultiheadAttention, computed by headwise (see headwise.compat.module)."""

from .module import (
    MultiheadAttention,
    TypeAssertionError,
    TypeAttributeError,
    TypeRuntimeError,
    ValueAssertionError,
    ValueRuntimeError,
)

__all__ = [
    "MultiheadAttention",
    "TypeAssertionError",
    "TypeAttributeError",
    "TypeRuntimeError",
    "ValueAssertionError",
    "ValueRuntimeError",
]
