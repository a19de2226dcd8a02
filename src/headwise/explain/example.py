"""The lectures' hands-on example, ready to trace: tokens, their embeddings, and the module they go through.

Two named examples (EXAMPLES), both the six tokens "Your journey starts with one step" of Raschka's "Build
a Large Language Model from Scratch", chapter 3, each embedded as a row of 3 numbers, causal:

    book  the lectures' hands-on test, number for number: the book's 3.6.2 MultiHeadAttention(d_in=3,
          d_out=2, context_length=6, dropout=0.0, num_heads=2) on the batch of two copies of the inputs,
          its weights drawn as the book's code draws them after torch.manual_seed(123) (the default)
    wide  headwise's own MultiHeadAttention(3, 2, head_dim=2) on one sequence: d_out = 4, an output
          projection 4 -> 3, headwise's initialisation after torch.manual_seed(123) (and what --tokens,
          --dim, --heads, ... change)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..modules import MultiHeadAttention
from ..trace import Trace, trace
from .book.weights import weight_split_module

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
# What the book prints for its hands-on test (3.6.2: print(context_vecs), each batch element), 4 decimals.
BOOK_CONTEXT_VECS = (  # (num_tokens, d_out) = (6, 2)
    (0.3190, 0.4858),
    (0.2943, 0.3897),
    (0.2856, 0.3593),
    (0.2693, 0.3873),
    (0.2639, 0.3928),
    (0.2575, 0.4028),
)
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
    batch: int = 1  # B: copies of the sequence in the batch (the book's hands-on test stacks two)
    book_weights: bool = False  # drawn as the book's MultiHeadAttention draws them (see book/weights.py)

    @property
    def d_out(self) -> int:
        """The lectures' d_out: the width of the queries, keys and values, num_heads · head_dim."""
        return self.heads * self.head_dim

    @property
    def key_tokens(self) -> tuple[str, ...]:
        """The tokens the keys and values come from: the second sequence, or the tokens themselves."""
        return self.tokens if self.kv_tokens is None else self.kv_tokens


@dataclass(frozen=True)
class Run:
    """An example, the module it ran through, and the trace of every step (dropout off: evaluation)."""

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


BOOK = Example(head_dim=1, batch=2, book_weights=True)  # d_out = 2: two heads of width 1
WIDE = Example()
EXAMPLES = {"book": BOOK, "wide": WIDE}
DROPOUT_SHOWN = 0.5  # the dropout rate the walkthrough shows in training mode (the book's 3.5.2 rate)


def make_module(example: Example) -> MultiHeadAttention:
    """The example's module in float64, in evaluation mode: the book's weights
    (book.weights.weight_split_module) or headwise's own initialisation after torch.manual_seed(seed)."""
    if example.book_weights:
        return weight_split_module()
    torch.manual_seed(example.seed)  # the module's initial weights, as in the book
    module = MultiHeadAttention(example.dim, example.heads, head_dim=example.head_dim, dtype=torch.float64)
    return module.eval()


def example_inputs(example: Example) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (B, Nq, D), and m (B, Nk, D) for cross-attention or None: the tokens' vectors, B copies."""
    table = embedding_table(example.tokens + (example.kv_tokens or ()), example.dim, example.seed)
    x = embed(example.tokens, table).expand(example.batch, -1, -1)  # (B, Nq, D)
    m = None if example.kv_tokens is None else embed(example.kv_tokens, table).expand(example.batch, -1, -1)
    return x, m  # m: (B, Nk, D)


def run_example(example: Example) -> Run:
    """Build the module, embed the tokens, and trace one forward pass in evaluation mode (no dropout)."""
    module = make_module(example)
    x, m = example_inputs(example)
    with torch.no_grad(), trace() as steps:
        module(x, m, is_causal=example.causal)
    return Run(example, module, steps)


def dropout_trace(run: Run, p: float = DROPOUT_SHOWN) -> Trace:
    """The same forward pass in training mode with dropout p, its masks drawn after
    torch.manual_seed(seed) (the caller's random state restored); the module is left as it was."""
    module, example = run.module, run.example
    x, m = example_inputs(example)
    kept = module.dropout
    module.dropout = p
    module.train()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), trace() as steps:
            torch.default_generator.manual_seed(example.seed)
            module(x, m, is_causal=example.causal)
    finally:
        module.dropout = kept
        module.eval()
    return steps
