"""The Predicate base class: a mask as a rule, True = the query may attend to the key, from their indices,
without the (Nq, Nk) matrix; its block bounds; and the combinators &, |, ~ (And, Or, Not).

A chunked backend asks for one block at a time and skips the blocks a predicate rules out (blocks_empty)
or computes without a mask those it allows whole (blocks_full). The predicates users build (causal(),
sliding_window(), key_lengths(), documents(), prefix_lm()) are in rules.py.

Index tensors broadcast against each other, as in FlexAttention's mask_mod: batch_idx (B, 1, 1, 1),
head_idx (1, H, 1, 1), q_idx (Nq_block, 1), kv_idx (1, Nk_block); num_queries and num_keys are the full
lengths Nq and Nk, which position-dependent rules need for the bottom-right alignment: query i stands at
key position i + Nk - Nq.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import pictures
from .common import block_indices, check_block, check_counts, check_kind, first, rule
from .tensors import Mask


class Predicate:
    """A mask as a rule: True = the query may attend to the key.

    Subclasses are small frozen dataclasses that define `title` and `allowed`, and may sharpen
    `block_is_empty`, `block_is_full`, `check` and `sizes`. Combine with `&`, `|` and `~`; `print()` draws
    the pattern.
    """

    @property
    def title(self) -> str:
        """The call that makes this predicate, e.g. 'sliding_window(left=2, right=0)'."""
        raise NotImplementedError

    @property
    def translation_invariant(self) -> bool:
        """True only when the mask depends on a pair's positions through kv_idx - q_idx alone (Nq and Nk
        fixed) and on no batch element or head, so that blocks on one diagonal share one mask (causal,
        sliding windows, and their &, | and ~). False is always safe."""
        return False

    def allowed(
        self,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        """The mask at broadcasting indices: batch_idx (B, 1, 1, 1), head_idx (1, H, 1, 1), q_idx
        (Nq_block, 1), kv_idx (1, Nk_block) -> bool, broadcastable to (B, H, Nq_block, Nk_block)."""
        raise NotImplementedError

    def block_is_empty(
        self, q_start: int, q_end: int, k_start: int, k_end: int, num_queries: int, num_keys: int
    ) -> bool:
        """True only when no query in [q_start, q_end) may see any key in [k_start, k_end), in any batch
        element or head: the block can be skipped. Cheap and conservative (False is always safe); the
        arguments are as for block() and, as this runs once per block, not checked. A subclass defines
        this or `blocks_empty`."""
        return bool(self.blocks_empty(*_one_block(q_start, q_end, k_start, k_end), num_queries, num_keys))

    def block_is_full(
        self, q_start: int, q_end: int, k_start: int, k_end: int, num_queries: int, num_keys: int
    ) -> bool:
        """True only when every query in the block may see every key in it: the block needs no mask. A
        subclass defines this or `blocks_full`."""
        return bool(self.blocks_full(*_one_block(q_start, q_end, k_start, k_end), num_queries, num_keys))

    def blocks_empty(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        """block_is_empty for many blocks at once: q_starts, q_ends (Qn, 1) and k_starts, k_ends (1, Kn),
        int64 -> bool broadcastable to (Qn, Kn). The built-in predicates compute it with tensor ops
        (a plan of 512 × 512 blocks in milliseconds); by default it asks block_is_empty block by block."""
        return _each_block(
            type(self).block_is_empty,
            Predicate.block_is_empty,
            self,
            q_starts,
            q_ends,
            k_starts,
            k_ends,
            num_queries,
            num_keys,
        )

    def blocks_full(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        """block_is_full for many blocks at once, as blocks_empty."""
        return _each_block(
            type(self).block_is_full,
            Predicate.block_is_full,
            self,
            q_starts,
            q_ends,
            k_starts,
            k_ends,
            num_queries,
            num_keys,
        )

    def check(self, batch: int, heads: int, num_queries: int, num_keys: int) -> None:
        """Raise ValueError unless the predicate's data fits attention of these sizes."""

    def sizes(self) -> tuple[int | None, int | None, int | None]:
        """(B, Nq, Nk) as fixed by the predicate's data, None where any size fits."""
        return (None, None, None)

    def block(
        self,
        q_start: int,
        q_end: int,
        k_start: int,
        k_end: int,
        num_queries: int,
        num_keys: int,
        batch: int = 1,
        heads: int = 1,
        device: torch.device | str | None = None,
    ) -> Mask:
        """The mask of queries [q_start, q_end) and keys [k_start, k_end) of attention with Nq =
        num_queries, Nk = num_keys: bool (B|1, H|1, Nq_block|1, Nk_block|1), broadcastable to
        (B, H, q_end - q_start, k_end - k_start), built on `device` (default CPU)."""
        check_block(q_start, q_end, k_start, k_end, num_queries, num_keys)
        check_counts(batch=batch, heads=heads)
        self.check(batch, heads, num_queries, num_keys)
        indices = block_indices(batch, heads, q_start, q_end, k_start, k_end, device)
        allowed = self.allowed(*indices, num_queries, num_keys)  # broadcastable to (B, H, Nq_block, Nk_block)
        return allowed[(None,) * (4 - allowed.dim())]  # 4-D

    def materialize(
        self,
        batch: int,
        heads: int,
        num_queries: int,
        num_keys: int,
        device: torch.device | str | None = None,
    ) -> Mask:
        """The dense mask, bool (B|1, H|1, Nq, Nk) on `device` (default CPU): for dense backends and tests."""
        mask = self.block(0, num_queries, 0, num_keys, num_queries, num_keys, batch, heads, device)  # 4-D
        return mask.expand(*mask.shape[:2], num_queries, num_keys).contiguous()  # (B|1, H|1, Nq, Nk)

    def picture(self, num_queries: int | None = None, num_keys: int | None = None) -> str:
        """The pattern as text: a title line, then a row per query and a column per key, ■ = may attend,
        · = blocked. Batch element 0 and head 0; the sizes default to the data's, else to 8."""
        return pictures.predicate(self, num_queries, num_keys)

    def __str__(self) -> str:
        return self.picture()

    def __repr__(self) -> str:
        return self.title

    def __and__(self, other: Predicate) -> Predicate:
        return And(self, check_kind(other, Predicate, "&"))

    def __or__(self, other: Predicate) -> Predicate:
        return Or(self, check_kind(other, Predicate, "|"))

    def __invert__(self) -> Predicate:
        return Not(self)


@rule
class Not(Predicate):
    """Where `inner` blocks."""

    inner: Predicate

    @property
    def title(self) -> str:
        return f"~{_grouped(self.inner)}"

    @property
    def translation_invariant(self) -> bool:
        return self.inner.translation_invariant

    def allowed(
        self,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        index = (batch_idx, head_idx, q_idx, kv_idx, num_queries, num_keys)
        return ~self.inner.allowed(*index)

    def blocks_empty(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        blocks = (q_starts, q_ends, k_starts, k_ends, num_queries, num_keys)
        return self.inner.blocks_full(*blocks)

    def blocks_full(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        blocks = (q_starts, q_ends, k_starts, k_ends, num_queries, num_keys)
        return self.inner.blocks_empty(*blocks)

    def check(self, batch: int, heads: int, num_queries: int, num_keys: int) -> None:
        sizes = (batch, heads, num_queries, num_keys)
        self.inner.check(*sizes)

    def sizes(self) -> tuple[int | None, int | None, int | None]:
        return self.inner.sizes()


@rule
class _Pair(Predicate):
    """Two predicates joined by an operator (And, Or)."""

    first: Predicate
    second: Predicate
    operator = "?"

    @property
    def title(self) -> str:
        return f"{_grouped(self.first)} {self.operator} {_grouped(self.second)}"

    @property
    def translation_invariant(self) -> bool:
        return self.first.translation_invariant and self.second.translation_invariant

    def check(self, batch: int, heads: int, num_queries: int, num_keys: int) -> None:
        sizes = (batch, heads, num_queries, num_keys)
        self.first.check(*sizes)
        self.second.check(*sizes)

    def sizes(self) -> tuple[int | None, int | None, int | None]:
        pairs = zip(self.first.sizes(), self.second.sizes(), strict=True)  # (B, Nq, Nk) of each
        batch, num_queries, num_keys = (first(mine, theirs) for mine, theirs in pairs)
        return batch, num_queries, num_keys


class And(_Pair):
    """Where both predicates allow."""

    operator = "&"

    def allowed(
        self,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        index = (batch_idx, head_idx, q_idx, kv_idx, num_queries, num_keys)
        return self.first.allowed(*index) & self.second.allowed(*index)

    def blocks_empty(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        blocks = (q_starts, q_ends, k_starts, k_ends, num_queries, num_keys)
        return self.first.blocks_empty(*blocks) | self.second.blocks_empty(*blocks)

    def blocks_full(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        blocks = (q_starts, q_ends, k_starts, k_ends, num_queries, num_keys)
        return self.first.blocks_full(*blocks) & self.second.blocks_full(*blocks)


class Or(_Pair):
    """Where either predicate allows."""

    operator = "|"

    def allowed(
        self,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        index = (batch_idx, head_idx, q_idx, kv_idx, num_queries, num_keys)
        return self.first.allowed(*index) | self.second.allowed(*index)

    def blocks_empty(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        blocks = (q_starts, q_ends, k_starts, k_ends, num_queries, num_keys)
        return self.first.blocks_empty(*blocks) & self.second.blocks_empty(*blocks)

    def blocks_full(
        self,
        q_starts: torch.Tensor,
        q_ends: torch.Tensor,
        k_starts: torch.Tensor,
        k_ends: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        blocks = (q_starts, q_ends, k_starts, k_ends, num_queries, num_keys)
        return self.first.blocks_full(*blocks) | self.second.blocks_full(*blocks)


def _one_block(
    q_start: int, q_end: int, k_start: int, k_end: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One block's bounds as the (1, 1) tensors that blocks_empty/blocks_full take."""
    q_first, q_last, k_first, k_last = (torch.tensor([[int(b)]]) for b in (q_start, q_end, k_start, k_end))
    return q_first, q_last, k_first, k_last


def _each_block(
    method: Callable[..., bool],
    default: Callable[..., bool],
    predicate: Predicate,
    q_starts: torch.Tensor,
    q_ends: torch.Tensor,
    k_starts: torch.Tensor,
    k_ends: torch.Tensor,
    num_queries: int,
    num_keys: int,
) -> torch.Tensor:
    """A subclass's scalar bound `method` asked block by block, as a bool tensor (Qn, Kn); all False
    when the subclass leaves it at the base class's `default` (nothing known)."""
    if method is default:
        return torch.tensor(False)
    rows = zip(q_starts[:, 0].tolist(), q_ends[:, 0].tolist(), strict=True)
    columns = list(zip(k_starts[0].tolist(), k_ends[0].tolist(), strict=True))
    return torch.tensor(
        [[bool(method(predicate, *q, *k, num_queries, num_keys)) for k in columns] for q in rows]
    ).reshape(q_starts.shape[0], k_starts.shape[1])  # (Qn, Kn)


def _grouped(predicate: Predicate) -> str:
    """The predicate's title, in parentheses when it is an & or | of two others."""
    return f"({predicate.title})" if type(predicate) in (And, Or) else predicate.title
