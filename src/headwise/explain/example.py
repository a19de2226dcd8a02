"""The lectures' hands-on example, ready to trace: tokens, their embeddings, and the module they go through.

The default is the example of Raschka's "Build a Large Language Model from Scratch", chapter 3: the six
tokens "Your journey starts with one step", each embedded as a row of 3 numbers, through multi-head
attention with two heads, causal, its weights drawn after torch.manual_seed(123).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..modules import MultiHeadAttention
from ..trace import Trace, trace

LECTURE_TOKENS = ("Your", "journey", "starts", "with", "one", "step")
LECTURE_EMBEDDINGS = (  # (N, D) = (6, 3), one row per token, as printed in the book
    (0.43, 0.15, 0.89),  # Your
    (0.55, 0.87, 0.66),  # journey
    (0.57, 0.85, 0.64),  # starts
    (0.22, 0.58, 0.33),  # with
    (0.77, 0.25, 0.10),  # one
    (0.05, 0.80, 0.55),  # step
)
LECTURE_DIM = len(LECTURE_EMBEDDINGS[0])
LECTURE_HEADS = 2
LECTURE_SEED = 123  # torch.manual_seed(123), as in the book
# Cross-attention's default second sequence: a French translation of the tokens, as if an encoder had read
# it and the decoder now looks it up; it has 7 tokens, so the weights are 6 × 7.
CROSS_TOKENS = ("Ton", "voyage", "commence", "par", "un", "seul", "pas")


def default_head_dim(dim: int, heads: int) -> int:
    """Dh = D / H when H divides D, otherwise the narrowest heads that together cover D: ceil(D / H)."""
    return -(-dim // heads)


@dataclass(frozen=True)
class Example:
    """What to run: the query tokens, the key/value tokens (cross-attention) or None (self-attention),
    the model width D, the heads H and their width Dh, the seed and whether attention is causal."""

    tokens: tuple[str, ...] = LECTURE_TOKENS
    kv_tokens: tuple[str, ...] | None = None
    dim: int = LECTURE_DIM
    heads: int = LECTURE_HEADS
    head_dim: int = default_head_dim(LECTURE_DIM, LECTURE_HEADS)
    seed: int = LECTURE_SEED
    causal: bool = True

    @property
    def key_tokens(self) -> tuple[str, ...]:
        """The tokens the keys and values come from: the second sequence, or the tokens themselves."""
        return self.tokens if self.kv_tokens is None else self.kv_tokens


@dataclass(frozen=True)
class Run:
    """An example, the module it ran through, and the trace of every step."""

    example: Example
    module: MultiHeadAttention
    trace: Trace


def embedding_table(words: Iterable[str], dim: int, seed: int) -> dict[str, torch.Tensor]:
    """One vector (D,) per distinct word, so that a repeated word gets the same vector.

    With D = 3 the book's six words get the book's rows; every other word gets numbers in [0, 1] with two
    decimals, like the book's, drawn from a generator seeded with `seed`.
    """
    vocabulary = list(dict.fromkeys(words))
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.rand(len(vocabulary), dim, generator=generator, dtype=torch.float64)  # (V, D)
    table = dict(zip(vocabulary, drawn.mul(100).round().div(100), strict=True))
    if dim == LECTURE_DIM:
        lecture = zip(LECTURE_TOKENS, LECTURE_EMBEDDINGS, strict=True)
        table.update((word, torch.tensor(row, dtype=torch.float64)) for word, row in lecture if word in table)
    return table


def embed(tokens: tuple[str, ...], table: dict[str, torch.Tensor]) -> torch.Tensor:
    """The tokens' vectors as a batch of one sequence: (1, N, D)."""
    return torch.stack([table[word] for word in tokens])[None]  # (1, N, D)


def run_example(example: Example) -> Run:
    """Build the module (seeded, float64 for exact numbers), embed the tokens, and trace one forward pass."""
    torch.manual_seed(example.seed)  # the module's initial weights, as in the book
    module = MultiHeadAttention(example.dim, example.heads, head_dim=example.head_dim, dtype=torch.float64)
    table = embedding_table(example.tokens + (example.kv_tokens or ()), example.dim, example.seed)
    x = embed(example.tokens, table)  # (1, Nq, D)
    m = None if example.kv_tokens is None else embed(example.kv_tokens, table)  # (1, Nk, D)
    with torch.no_grad(), trace() as steps:
        module(x, m, is_causal=example.causal)
    return Run(example, module, steps)
