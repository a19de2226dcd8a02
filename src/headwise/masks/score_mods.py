"""Score modifiers: changes to the scaled scores before masking, alibi() and softcap(), chained with
.then() and passed to `attention(score_mod=...)`."""

from __future__ import annotations

import math
import numbers

import torch

from . import pictures
from .common import (
    block_indices,
    check_block,
    check_counts,
    check_kind,
    check_tensor,
    data_rule,
    describe,
    first,
    rule,
)


class ScoreModifier:
    """A change to the scaled scores (B, H, Nq, Nk), made before masking.

    Subclasses are small frozen dataclasses that define `title` and `apply`. `a.then(b)` applies a, then
    b; the order matters (FlashAttention caps the scores, then adds ALiBi: `softcap(c).then(alibi(s))`).
    """

    @property
    def title(self) -> str:
        """The call that makes this modifier, e.g. 'softcap(30)'."""
        raise NotImplementedError

    def apply(
        self,
        scores: torch.Tensor,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        """scores (B, H, Nq_block, Nk_block) at indices broadcasting as for Predicate.allowed -> the
        changed scores, same shape and dtype."""
        raise NotImplementedError

    def check(self, batch: int, heads: int, num_queries: int, num_keys: int) -> None:
        """Raise ValueError unless the modifier's data fits attention of these sizes."""

    def heads(self) -> int | None:
        """The number of heads H fixed by the modifier's data, or None."""
        return None

    def block(
        self, scores: torch.Tensor, q_start: int, k_start: int, num_queries: int, num_keys: int
    ) -> torch.Tensor:
        """scores (B, H, Nq_block, Nk_block) of the queries from q_start and the keys from k_start, in
        attention with Nq = num_queries, Nk = num_keys -> the changed scores (B, H, Nq_block, Nk_block)."""
        check_tensor(scores, "scores", "a floating tensor (B, H, Nq, Nk)", dims=(4,), floating=True)
        check_counts(q_start=q_start, k_start=k_start)
        batch, heads, rows, columns = scores.shape
        self.check(batch, heads, num_queries, num_keys)
        q_end, k_end = q_start + rows, k_start + columns
        check_block(q_start, q_end, k_start, k_end, num_queries, num_keys)
        indices = block_indices(batch, heads, q_start, q_end, k_start, k_end, scores.device)
        return self.apply(scores, *indices, num_queries, num_keys)  # (B, H, Nq_block, Nk_block)

    def dense(self, scores: torch.Tensor) -> torch.Tensor:
        """scores (B, H, Nq, Nk) -> the changed scores (B, H, Nq, Nk)."""
        check_tensor(scores, "scores", "a floating tensor (B, H, Nq, Nk)", dims=(4,), floating=True)
        return self.block(scores, 0, 0, scores.shape[2], scores.shape[3])  # (B, H, Nq, Nk)

    def then(self, other: ScoreModifier) -> Chain:
        """This modifier, then `other`."""
        return Chain(self, check_kind(other, ScoreModifier, "then()"))

    def picture(self) -> str:
        """What the modifier does, as text."""
        return self.title

    def __str__(self) -> str:
        return self.picture()

    def __repr__(self) -> str:
        return self.title


@data_rule
class ALiBi(ScoreModifier):
    """Adds -slopes[h] · |i + Nk - Nq - j|: a penalty growing with the distance from key j to query i's
    own (bottom-right aligned) position; slopes (H,)."""

    slopes: torch.Tensor  # (H,)

    @property
    def title(self) -> str:
        return f"alibi({describe(self.slopes)})"

    def apply(
        self,
        scores: torch.Tensor,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        slopes = self.slopes.to(scores.device, scores.dtype)[head_idx]  # (1, H, 1, 1)
        distance = (q_idx + (num_keys - num_queries) - kv_idx).abs()  # (Nq_block, Nk_block)
        return scores - slopes * distance  # (B, H, Nq_block, Nk_block)

    def check(self, batch: int, heads: int, num_queries: int, num_keys: int) -> None:
        if self.slopes.shape[0] != heads:
            raise ValueError(
                f"alibi has {self.slopes.shape[0]} slopes but the scores have H = {heads} heads; "
                "expected one slope per query head"
            )

    def heads(self) -> int:
        return self.slopes.shape[0]

    def picture(self, num_queries: int = pictures.PICTURE_SIZE, num_keys: int = pictures.PICTURE_SIZE) -> str:
        """The title, then head 0's bias: a row per query, a column per key."""
        return pictures.alibi(self, num_queries, num_keys)


@rule
class Softcap(ScoreModifier):
    """Squashes the scores into (-cap, cap): s -> cap · tanh(s / cap)."""

    cap: float

    @property
    def title(self) -> str:
        return f"softcap({self.cap:g})"

    def apply(
        self,
        scores: torch.Tensor,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        return self.cap * torch.tanh(scores / self.cap)  # same shape as scores

    def picture(self) -> str:
        """The title, then a few scores and what they become."""
        return pictures.softcap(self)


@rule
class Chain(ScoreModifier):
    """`first`, then `second`."""

    first: ScoreModifier
    second: ScoreModifier

    @property
    def title(self) -> str:
        return f"{self.first.title}.then({self.second.title})"

    def apply(
        self,
        scores: torch.Tensor,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        index = (batch_idx, head_idx, q_idx, kv_idx, num_queries, num_keys)
        return self.second.apply(self.first.apply(scores, *index), *index)  # same shape as scores

    def check(self, batch: int, heads: int, num_queries: int, num_keys: int) -> None:
        self.first.check(batch, heads, num_queries, num_keys)
        self.second.check(batch, heads, num_queries, num_keys)

    def heads(self) -> int | None:
        return first(self.first.heads(), self.second.heads())

    def picture(self) -> str:
        return "\n".join([f"{self.title}: first", self.first.picture(), "then", self.second.picture()])


def alibi(slopes: torch.Tensor) -> ALiBi:
    """ALiBi (Press et al.): adds -slopes[h] · |i + Nk - Nq - j| to head h's scores, the distance being from
    query i's bottom-right aligned position, as FlashAttention's alibi_slopes. slopes: floating (H,), one
    per query head; alibi_slopes(H) gives the paper's."""
    check_tensor(slopes, "slopes", "a floating tensor of shape (H,)", dims=(1,), floating=True)
    if not torch.isfinite(slopes).all():
        raise ValueError(f"slopes must be finite, got {slopes.tolist()}")
    return ALiBi(slopes)


def alibi_slopes(num_heads: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ALiBi paper's slopes (H,): 2^(-8h/H) for h = 1..H when H is a power of two; otherwise those of
    the largest power of two P < H, then the slopes of 2P with odd h (as in the paper's code)."""
    check_counts(num_heads=num_heads)
    if num_heads == 0:
        raise ValueError("num_heads must be >= 1, got 0")
    power = 1 << (int(num_heads).bit_length() - 1)  # P, the largest power of two <= H
    slopes = [2.0 ** (-8 * h / power) for h in range(1, power + 1)]
    slopes += [2.0 ** (-8 * h / (2 * power)) for h in range(1, 2 * power, 2)][: num_heads - power]
    return torch.tensor(slopes, dtype=dtype)  # (H,)


def softcap(cap: float) -> Softcap:
    """Logit soft-capping (Gemma 2, Grok): scores -> cap · tanh(scores / cap), so |score| < cap."""
    if isinstance(cap, bool) or not isinstance(cap, numbers.Real):
        raise TypeError(f"cap must be a number, got {type(cap).__name__}")
    if not (math.isfinite(cap) and cap > 0):
        raise ValueError(f"cap must be a finite number > 0, got {cap!r}")
    return Softcap(float(cap))
