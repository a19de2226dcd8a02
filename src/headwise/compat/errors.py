"""compat's exception classes: each a subclass of headwise's usual class (ValueError, TypeError) and of the
class torch.nn.MultiheadAttention raises for the same input (AssertionError, RuntimeError, AttributeError),
so that code catching torch's errors catches compat's; like_torch re-raises one as the other; torch's words
for is_causal without attn_mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ValueAssertionError(ValueError, AssertionError):
    """A ValueError where torch.nn.MultiheadAttention raises AssertionError (wrong query, key or value shape,
    wrong key_padding_mask shape, embed_dim not divisible by num_heads)."""


class ValueRuntimeError(ValueError, RuntimeError):
    """A ValueError where torch raises RuntimeError (an attn_mask of the wrong 2-D or 3-D shape; query and
    key of different batch sizes)."""


class TypeAssertionError(TypeError, AssertionError):
    """A TypeError where torch raises AssertionError (a mask neither bool nor floating, e.g. uint8)."""


class TypeRuntimeError(TypeError, RuntimeError):
    """A TypeError where torch raises RuntimeError (inputs of another dtype than the weights)."""


class TypeAttributeError(TypeError, AttributeError):
    """A TypeError where torch raises AttributeError (a query, key or value that is not a tensor)."""


@contextmanager
def like_torch(ours: type[Exception], twin: type[Exception]) -> Iterator[None]:
    """Re-raise an `ours` error of the block as `twin`, its subclass that is also torch's class for the same
    input, with the same message and traceback."""
    try:
        yield
    except ours as error:
        if isinstance(error, twin):
            raise
        raise twin(*error.args).with_traceback(error.__traceback__) from None


def causal_needs_mask() -> str:
    """torch's words (torch.nn.functional.multi_head_attention_forward) for is_causal without attn_mask; a
    function, since TorchScript takes no global string."""
    return (
        "Need attn_mask if specifying the is_causal hint. You may use the Transformer module method "
        "`generate_square_subsequent_mask` to create this mask."
    )
