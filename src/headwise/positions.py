"""Where each token is: four ways to tell attention about positions.

Attention by itself is blind to order: permute the tokens and each one's context is permuted the same way.
- sinusoidal ("Attention Is All You Need"): a fixed table added to the token embeddings, (N, D);
- learned: a trained table added to the token embeddings, (max_positions, D);
- rotary (RoPE, Su et al.): queries and keys rotated by an angle proportional to their position, inside
  the attention module, so that q_i · k_j depends on i - j only;
- ALiBi (Press et al.): no embedding at all; each head's scores get -slope · distance (masks.alibi).

Positions count from `start`: with a KV cache, the new tokens come after the `start` tokens cached.
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import positive_int, positive_number
from .masks import ALiBi, alibi, alibi_slopes


def sinusoidal(
    num_positions: int, dim: int, *, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The table (num_positions, dim) of "Attention Is All You Need": column 2i holds
    sin(pos / base^(2i/dim)), column 2i + 1 the cosine of the same angle (an odd dim drops the last one)."""
    positive_int(num_positions, "num_positions")
    positive_int(dim, "dim")
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]  # (N, 1)
    frequency = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (⌈D/2⌉,)
    angle = position * frequency  # (N, ⌈D/2⌉)
    table = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)  # (N, 2·⌈D/2⌉): sin, cos interleaved
    return table[:, :dim].to(dtype)  # (N, D)


class _AddedPositions(nn.Module):
    """Adds a (max_positions, D) table's rows start .. start + N - 1 to x (B, N, D)."""

    max_positions: int

    def table(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x (B, N, D) -> x + positions (B, N, D)."""
        check_length(start + x.shape[1], self.max_positions)
        return x + self.table()[start : start + x.shape[1]].to(x.dtype)  # (B, N, D)


class SinusoidalPositions(_AddedPositions):
    """The fixed sinusoidal table, added to the token embeddings; holds no parameters."""

    _table: torch.Tensor  # a buffer (N_max, D)

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        self.max_positions = positive_int(max_positions, "max_positions")
        self.register_buffer("_table", sinusoidal(max_positions, dim), persistent=False)  # (N_max, D)

    def table(self) -> torch.Tensor:
        return self._table


class LearnedPositions(_AddedPositions):
    """A trained table, one vector per position (as in BERT and GPT-2), added to the token embeddings."""

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        self.max_positions = positive_int(max_positions, "max_positions")
        self.weight = nn.Parameter(torch.empty(max_positions, positive_int(dim, "dim")))  # (N_max, D)
        nn.init.normal_(self.weight, std=0.02)

    def table(self) -> torch.Tensor:
        return self.weight


class Rotary(nn.Module):
    """Rotary position embedding, applied to queries and keys (B, H, N, Dh) inside the attention.

    Dimension pair (i, i + Dh/2) of the token at position p is rotated by the angle p · base^(-2i/Dh)
    (the "rotate half" layout of GPT-NeoX, Llama and Hugging Face), so a query at position m and a key at
    position n score q·R(m - n)·k: only their distance counts. Needs an even Dh.
    """

    def __init__(self, head_dim: int, *, base: float = 10000.0) -> None:
        super().__init__()
        self.head_dim = positive_int(head_dim, "head_dim")
        if self.head_dim % 2 != 0:
            raise ValueError(
                f"rotary positions rotate pairs of dimensions: head_dim must be even, got {head_dim}"
            )
        self.base = positive_number(base, "base")

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x (B, H, N, Dh) at positions start .. start + N - 1 -> rotated x (B, H, N, Dh)."""
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"rotary was made for head_dim {self.head_dim}, got x of shape {tuple(x.shape)}")
        precise = torch.promote_types(x.dtype, torch.float32)  # angles in fp32 (fp64 for fp64 inputs)
        half = self.head_dim // 2
        frequency = self.base ** (-torch.arange(half, device=x.device, dtype=precise) / half)  # (Dh/2,)
        position = torch.arange(start, start + x.shape[2], device=x.device, dtype=precise)  # (N,)
        angle = position[:, None] * frequency  # (N, Dh/2)
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)  # (N, Dh/2) each
        first, second = x[..., :half], x[..., half:]  # (B, H, N, Dh/2) each
        return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)  # (B, H, N, Dh)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base:g}"


def alibi_positions(num_heads: int) -> ALiBi:
    """ALiBi with the paper's slopes for num_heads heads: a score modifier for MultiHeadAttention."""
    return alibi(alibi_slopes(num_heads))


def check_length(length: int, max_positions: int) -> None:
    """Raise if a sequence of `length` tokens does not fit a model with `max_positions` positions."""
    if length > max_positions:
        raise ValueError(
            f"the sequence has {length} tokens but the model has positions for {max_positions}: shorten "
            f"the text (or truncate it to {max_positions} tokens)"
        )
