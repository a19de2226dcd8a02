"""Where each rank's positions lie in the global sequence, and the helpers that cut and join a sequence.

The P ranks (the processes of a torch.distributed group) share a sequence of N positions in equal chunks:

- "contiguous": P chunks of N/P; rank r holds chunk r, the positions [r·N/P, (r+1)·N/P).
- "zigzag": 2P chunks of N/(2P); rank r holds chunks r and 2P-1-r, one from each end, so that with causal
  attention every rank has the same number of (query, key) pairs to compute: the balance that Striped
  Attention reaches with stripes of single positions, in two runs per rank.

A rank's local sequence is its chunks in order; since the chunks are in increasing order, position i of a
rank comes before its position j exactly when i < j.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist

from ..masks import Predicate
from ..masks.common import data_rule

LAYOUTS = ("contiguous", "zigzag")


def check_layout(layout: object) -> str:
    """`layout` itself, when it is one of LAYOUTS; else a ValueError."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def chunk_count(layout: str, world: int) -> int:
    """How many equal chunks `layout` cuts the sequence into for `world` ranks: P or 2P."""
    return world if layout == "contiguous" else 2 * world


def check_length(length: int, layout: str, world: int) -> None:
    """Raise a ValueError unless a sequence of `length` positions cuts into `layout`'s equal chunks."""
    chunks = chunk_count(layout, world)
    if length % chunks:
        cut = "P" if layout == "contiguous" else "2P"
        raise ValueError(
            f"layout={layout!r} cuts the sequence into {cut} = {chunks} equal chunks for P = {world} ranks, "
            f"but N = {length} is not a multiple of {chunks}; pad the sequence to a multiple of {chunks} "
            "(and mask the padding as keys)"
        )


def chunk_starts(layout: str, rank: int, world: int, length: int) -> tuple[int, ...]:
    """The global positions where rank `rank`'s chunks start, in the order it holds them."""
    size = length // chunk_count(layout, world)
    chunks = (rank,) if layout == "contiguous" else (rank, 2 * world - 1 - rank)
    return tuple(chunk * size for chunk in chunks)


def ring_position(group: dist.ProcessGroup | None, what: str) -> tuple[int, int]:
    """(P, r): the size of the process group (None: the default one) and this process's rank in it; a
    RuntimeError naming `what` when torch.distributed is not initialised or this process is not in it."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"{what} needs torch.distributed initialised (torchrun, or torch.distributed.init_process_group "
            "in each process), got no process group"
        )
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if rank < 0:
        raise RuntimeError(f"{what} got a group that this process is not a member of")
    return world, rank


def shard(
    x: torch.Tensor, dim: int, layout: str = "contiguous", group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """This rank's shard of a full sequence: x (..., N, ...) along `dim` -> (..., N/P, ...).

    Every rank passes the same x; with layout="zigzag" the shard is the two chunks r and 2P-1-r joined
    (a copy), with "contiguous" a view of positions [r·N/P, (r+1)·N/P). Differentiable. N must be a
    multiple of P (of 2P for zigzag): else a ValueError naming the sizes."""
    layout = check_layout(layout)
    world, rank = ring_position(group, "shard")
    length = x.shape[dim]
    check_length(length, layout, world)
    size = length // chunk_count(layout, world)
    pieces = [x.narrow(dim, start, size) for start in chunk_starts(layout, rank, world, length)]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim)  # (..., N/P, ...)


def unshard(
    x: torch.Tensor, dim: int, layout: str = "contiguous", group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """The full sequence from every rank's shard (a collective: every rank calls it):
    x (..., N/P, ...) along `dim` -> (..., N, ...), on every rank. Not differentiable."""
    layout = check_layout(layout)
    world, _ = ring_position(group, "unshard")
    x = x.contiguous()
    shards = [torch.empty_like(x) for _ in range(world)]  # P × (..., N/P, ...)
    dist.all_gather(shards, x, group=group)
    length = x.shape[dim] * world
    size = length // chunk_count(layout, world)
    placed: dict[int, torch.Tensor] = {}  # global start -> chunk (..., N/P or N/2P, ...)
    for rank, local in enumerate(shards):
        for index, start in enumerate(chunk_starts(layout, rank, world, length)):
            placed[start] = local.narrow(dim, index * size, size)
    return torch.cat([placed[start] for start in sorted(placed)], dim)  # (..., N, ...)


@data_rule
class Placed(Predicate):
    """A predicate on the global sequence, asked about one rank's queries and another's keys in local
    positions: local position i of a rank whose chunks start at `starts` is the global position
    starts[i // chunk] + i % chunk. `length` is the global N (queries and keys alike)."""

    inner: Predicate
    query_starts: tuple[int, ...]
    key_starts: tuple[int, ...]
    chunk: int
    length: int

    @property
    def title(self) -> str:
        return f"{self.inner.title} at queries from {self.query_starts}, keys from {self.key_starts}"

    def allowed(
        self,
        batch_idx: torch.Tensor,
        head_idx: torch.Tensor,
        q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
        num_queries: int,
        num_keys: int,
    ) -> torch.Tensor:
        queries = self._global(q_idx, self.query_starts)  # (Nq_block, 1)
        keys = self._global(kv_idx, self.key_starts)  # (1, Nk_block)
        return self.inner.allowed(batch_idx, head_idx, queries, keys, self.length, self.length)

    def block_is_empty(
        self, q_start: int, q_end: int, k_start: int, k_end: int, num_queries: int, num_keys: int
    ) -> bool:
        local = (q_start, q_end, k_start, k_end)
        return all(self.inner.block_is_empty(*block) for block in self._global_blocks(*local))

    def block_is_full(
        self, q_start: int, q_end: int, k_start: int, k_end: int, num_queries: int, num_keys: int
    ) -> bool:
        local = (q_start, q_end, k_start, k_end)
        return all(self.inner.block_is_full(*block) for block in self._global_blocks(*local))

    def check(self, batch: int, heads: int, num_queries: int, num_keys: int) -> None:
        """Nothing here: the inner predicate is checked once, at the global sizes."""

    def _global(self, index: torch.Tensor, starts: tuple[int, ...]) -> torch.Tensor:
        """Local positions -> global positions, same shape."""
        firsts = torch.tensor(starts, device=index.device)  # (chunks,)
        return firsts[index // self.chunk] + index % self.chunk

    def _ranges(self, start: int, end: int, starts: tuple[int, ...]) -> list[tuple[int, int]]:
        """The global ranges that local positions [start, end) cover, one per chunk they touch."""
        ranges = []
        while start < end:
            index, offset = divmod(start, self.chunk)
            stop = min(end, (index + 1) * self.chunk)
            ranges.append((starts[index] + offset, starts[index] + stop - index * self.chunk))
            start = stop
        return ranges

    def _global_blocks(
        self, q_start: int, q_end: int, k_start: int, k_end: int
    ) -> Iterator[tuple[int, int, int, int, int, int]]:
        """The local block as global blocks (q_start, q_end, k_start, k_end, N, N), one per pair of chunks."""
        for queries in self._ranges(q_start, q_end, self.query_starts):
            for keys in self._ranges(k_start, k_end, self.key_starts):
                yield (*queries, *keys, self.length, self.length)
