"""The block-sparse plan of a mask predicate: which key blocks each query block needs, once per call.

The (Nq, Nk) grid is cut into blocks of `q_block` queries by `k_block` keys. The predicate's vectorised
bounds (`Predicate.blocks_empty` / `blocks_full`) say which blocks hold no visible pair (skipped), which
hold only visible pairs (no mask needed) and which are partial (the predicate is evaluated inside them):
one call over all blocks, no Python loop. A plan has no (Nq, Nk) tensor: its maps are (Nq / q_block,
Nk / k_block).

The query blocks are then grouped by how many key blocks they need, so that a backend runs each group
as one batched matmul of equal-sized pieces (a sliding window: one group of every block but the first
few; causal documents: a group per position inside a document, each holding that position of every
document). `headwise.backends.blocksparse` executes it; `Plan.visible_pairs` counts the useful work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..masks import Predicate


@dataclass(frozen=True)
class Group:
    """Query blocks that need the same number c of key blocks.

    query_blocks (Qg,) int64: the query blocks, ascending. key_blocks (Qg, c) int64: the key blocks each
    needs, ascending. partial (Qg, c) bool: whether the predicate must be evaluated in that block (False:
    every pair of the block is visible).
    """

    query_blocks: torch.Tensor
    key_blocks: torch.Tensor
    partial: torch.Tensor

    @property
    def width(self) -> int:
        """c, the number of key blocks each query block of the group reads."""
        return self.key_blocks.shape[1]


@dataclass(frozen=True)
class Plan:
    """The blocks of attention with Nq = num_queries, Nk = num_keys under a predicate (None: every pair).

    visible (Qn, Kn) bool: the block holds at least one visible pair (conservatively: True when unknown);
    full (Qn, Kn) bool: every pair of the block is visible. Blocks past Nq or Nk are cut short: a block
    that reaches past Nk is never full (its missing keys must be masked).
    """

    num_queries: int
    num_keys: int
    q_block: int
    k_block: int
    visible: torch.Tensor
    full: torch.Tensor

    @property
    def query_blocks(self) -> int:
        return self.visible.shape[0]

    @property
    def key_blocks(self) -> int:
        return self.visible.shape[1]

    def groups(self) -> list[Group]:
        """The query blocks that need any key, grouped by how many key blocks they need (fewest first);
        query blocks that need none are in no group (their rows see nothing: zeros)."""
        counts = self.visible.sum(1)  # (Qn,)
        groups = []
        for count in torch.unique(counts).tolist():
            if count == 0:
                continue
            rows = (counts == count).nonzero()[:, 0]  # (Qg,)
            columns = self.visible[rows].nonzero()[:, 1].reshape(len(rows), count)  # (Qg, c), ascending
            partial = ~self.full[rows[:, None], columns]  # (Qg, c)
            groups.append(Group(rows, columns, partial))
        return groups

    def key_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi) int64 (Nq,): every key a query sees lies in lo <= j < hi, from the first and last visible
        key block of its query block, widened so that both never decrease along the queries (the form of
        Triton's per-query key ranges, whose inverse bounds the backward's loops); (0, 0) where nothing
        is visible after the last query that sees a key."""
        any_visible = self.visible.any(1)  # (Qn,)
        keys = torch.arange(self.key_blocks)  # (Kn,)
        first = torch.where(self.visible, keys, self.key_blocks).amin(1)  # (Qn,): Kn where none
        last = torch.where(self.visible, keys, -1).amax(1) + 1  # (Qn,): 0 where none
        first = torch.where(any_visible, first, self.key_blocks)  # a block that sees nothing bounds nothing
        first = first.flip(0).cummin(0).values.flip(0)  # non-decreasing: the least of the blocks after
        last = last.cummax(0).values  # non-decreasing: the most of the blocks before
        lo = (first * self.k_block).clamp(max=self.num_keys)  # (Qn,)
        hi = (last * self.k_block).clamp(max=self.num_keys)  # (Qn,)
        rows = torch.arange(self.num_queries) // self.q_block  # (Nq,): each query's block
        return lo[rows].minimum(hi[rows]), hi[rows]

    def diagonals(self) -> tuple[int, int] | None:
        """(offset, c) of the narrowest diagonal band that holds every visible block: query block i needs
        at most the key blocks i + offset ... i + offset + c - 1 (a sliding window: c = 1 + its blocks to
        the left); None when no block is visible."""
        rows, columns = self.visible.nonzero().unbind(1)  # (visible blocks,) each
        if len(rows) == 0:
            return None
        steps = columns - rows  # (visible blocks,): each one's diagonal
        offset = int(steps.min())
        return offset, int(steps.max()) - offset + 1

    def visible_blocks(self) -> int:
        """How many blocks are computed."""
        return int(self.visible.sum())

    def density(self) -> float:
        """The fraction of the (Nq, Nk) grid's block area that is computed."""
        total = self.query_blocks * self.key_blocks
        return self.visible_blocks() / total if total else 0.0


def make_plan(
    predicate: Predicate | None, num_queries: int, num_keys: int, q_block: int, k_block: int
) -> Plan:
    """The plan of `predicate` (or of full attention, for None) over blocks of q_block × k_block."""
    q_starts = torch.arange(0, num_queries, q_block)[:, None]  # (Qn, 1)
    k_starts = torch.arange(0, num_keys, k_block)[None, :]  # (1, Kn)
    q_ends, k_ends = (q_starts + q_block).clamp(max=num_queries), (k_starts + k_block).clamp(max=num_keys)
    shape = (q_starts.shape[0], k_starts.shape[1])  # (Qn, Kn)
    whole = k_ends - k_starts == k_block  # (1, Kn): the block lies inside the keys
    if predicate is None:
        visible, full = torch.ones(shape, dtype=torch.bool), whole.expand(shape)
    else:
        bounds = (q_starts, q_ends, k_starts, k_ends, num_queries, num_keys)
        visible = ~predicate.blocks_empty(*bounds).cpu().expand(shape)
        full = predicate.blocks_full(*bounds).cpu().expand(shape) & whole & visible
    return Plan(num_queries, num_keys, q_block, k_block, visible.contiguous(), full.contiguous())


def visible_pairs(
    predicate: Predicate | None, batch: int, heads: int, num_queries: int, num_keys: int
) -> int:
    """How many (query, key) pairs of one call the predicate lets through, summed over the batch and heads
    (what the useful FLOPs count), evaluated a band of queries at a time."""
    if predicate is None:
        return batch * heads * num_queries * num_keys
    total, band = 0, max(1, 2**22 // max(num_keys, 1))
    for start in range(0, num_queries, band):
        end = min(start + band, num_queries)
        allowed = predicate.block(start, end, 0, num_keys, num_queries, num_keys, batch, heads)  # 4-D
        total += int(allowed.expand(batch, heads, end - start, num_keys).sum())
    return total
