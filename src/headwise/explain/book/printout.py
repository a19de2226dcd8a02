"""One value the book prints (Printout) and the helpers that make one: the book's inputs, feature labels, a
traced call, a shape as the book prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...pages.model import Check, Matrix, caption
from ...trace import Trace, trace
from ..example import LECTURE_EMBEDDINGS, LECTURE_TOKENS

BOOK = 'Raschka, "Build a Large Language Model from Scratch", chapter 3'
SECTIONS = {  # the chapter's sections that print values, by number
    "3.3.1": "A simple self-attention mechanism without trainable weights",
    "3.3.2": "Computing attention weights for all input tokens",
    "3.4.1": "Computing the attention weights step by step",
    "3.4.2": "Implementing a compact SelfAttention class",
    "3.5.1": "Applying a causal attention mask",
    "3.5.2": "Masking additional attention weights with dropout",
    "3.5.3": "Implementing a compact causal self-attention class",
    "3.6.1": "Stacking multiple single-head attention layers",
    "3.6.2": "Implementing multi-head attention with weight splits",
}
CONTEXT_LENGTH = len(LECTURE_TOKENS)


@dataclass(frozen=True)
class Printout:
    """One value the book prints: its section, the book's name and code for it, a sentence on what it is,
    the value as headwise computed it (float64, any shape up to (b, num_heads, num_tokens, num_tokens)),
    the book's names of its axes, the labels of its last axis (tokens or feature indices), and what it
    shows about the values before it."""

    section: str
    name: str
    code: str
    sentence: str
    value: torch.Tensor
    axes: tuple[str, ...]
    columns: tuple[str, ...]
    checks: tuple[Check, ...] = ()

    def matrices(self) -> tuple[Matrix, ...]:
        """The value as matrices (R, C): one per leading index (batch element or head), a vector as one
        row and a number as one cell (labelled "tensor", as the book prints them); rows of six are the
        tokens."""
        value = self.value.reshape((1,) * (2 - self.value.dim()) + tuple(self.value.shape))  # (..., R, C)
        count = value.shape[-2]
        rows = LECTURE_TOKENS if count == CONTEXT_LENGTH else ("tensor",) if count == 1 else features(count)
        flat = value.flatten(0, -3) if value.dim() > 2 else value[None]  # (M, R, C)
        leading = self.axes[:-2]
        return tuple(
            Matrix(matrix, rows, self.columns, caption(leading, index, value.shape[:-2]))
            for index, matrix in enumerate(flat)
        )


def book_inputs() -> torch.Tensor:
    """The book's `inputs`: the six tokens' embeddings (num_tokens, d_in) = (6, 3), float64."""
    return torch.tensor(LECTURE_EMBEDDINGS, dtype=torch.float64)


def features(width: int) -> tuple[str, ...]:
    """The labels of `width` features: '0', '1', ..."""
    return tuple(map(str, range(width)))


def traced(function: Callable[..., object], *args: object, **options: object) -> Trace:
    """The trace of `function(*args, **options)` (headwise.attention or a module), without gradients."""
    with torch.no_grad(), trace() as steps:
        function(*args, **options)
    return steps


def shape_of(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor's shape as the book prints it (torch.Size([6, 2])), as a vector of its sizes (float64)."""
    return torch.tensor(tuple(tensor.shape), dtype=torch.float64)


def context_shape(section: str, context: torch.Tensor) -> Printout:
    """The book's print("context_vecs.shape:", context_vecs.shape) after each of its classes."""
    return Printout(
        section,
        "context_vecs.shape",
        "context_vecs.shape",
        "(b, num_tokens, width): one context vector per token of each batch element.",
        shape_of(context),
        (),
        ("b", "num_tokens", "width"),
    )
