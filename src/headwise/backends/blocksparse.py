"""The block-sparse backend: attention that pays for the blocks a mask predicate lets through, not N².

The call's predicate is planned once (`plan.make_plan`): the (Nq, Nk) grid cut into blocks of BLOCK
queries by BLOCK keys, the empty blocks dropped, and the query blocks grouped by how many key blocks they
need. Each group runs in chunks of query blocks, each chunk as a few batched matmuls: the chunk's key
blocks are gathered next to each other (for a sliding window, overlapping bands of the keys), so every
query row holds all of its visible keys at once and its softmax is exact and direct: torch's fused softmax
(one pass per row, in cache; no online rescaling), which the backward recomputes bit for bit. The predicate is
evaluated only in chunks that hold a partial block; a full block needs no mask. No (Nq, Nk) tensor is ever
made: a chunk's scores are at most CHUNK_BYTES, and the peak grows linearly with the sequence.

A narrow diagonal band (a sliding window) of a translation-invariant predicate, over as many key blocks
as query blocks, runs as a band instead (`_Band`): every query block reads the same number of consecutive
key blocks, so its keys are one strided view of all the keys (no gather), the chunks run over every head's
query blocks at once, and the mask is a few tiles computed once per call, added inside the scores' matmul.

Grouped-query heads are folded into the query rows, as in the chunked backend: the G query heads that
share a key/value head multiply its gathered keys in one matmul, and k and v are never repeated.

Shape legend: B batch, Hq / Hkv heads, G = Hq / Hkv, Nq / Nk lengths, Dh / Dv head widths; Qn / Kn the
numbers of query and key blocks, Bq = Bk = BLOCK their size; a chunk holds n query blocks that each read
c key blocks (c·Bk gathered keys).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from . import varlen
from .capabilities import Capabilities, Rank, score_dtype
from .plan import Group, Plan, make_plan

if TYPE_CHECKING:
    from ..masks import Predicate, ScoreModifier

BLOCK = 64  # queries and keys per block
BAND_EXTRA = 1.25  # a band may compute at most this many times the plan's visible blocks
CHUNK_BYTES = 2 * 2**20  # the scores of one chunk, in bytes of the accumulation dtype: about a core's L2
CAPABILITIES = Capabilities(
    lse=True, predicates=True, dropout=False, transforms=False, rank=Rank(cpu=30, structured=0)
)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None,
    predicate: Predicate | None,
    scale: float,
    dropout_p: float,
    score_mod: ScoreModifier | None,
    return_weights: bool,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv) -> (out (B, Hq, Nq, Dv), None, lse).
    Packed documents long enough for a kernel call each run as varlen attention instead (varlen.py)."""
    found = None if mask is not None or return_lse else varlen.documents_of(predicate)
    pieces = None if found is None else varlen.runs(found[0])
    if found is not None and pieces is not None:
        return varlen.per_document(q, k, v, pieces, found[1], scale), None, None
    plan = make_plan(predicate, q.shape[2], k.shape[2], BLOCK, BLOCK)
    out, lse = _BlockSparseAttention.apply(q, k, v, mask, predicate, plan, scale, return_lse)
    return out, None, lse


class _Layout:
    """One call's tensors in blocks, and the pieces of them that a chunk of a group reads and writes."""

    def __init__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        mask: torch.Tensor | None,
        predicate: Predicate | None,
        plan: Plan,
        scale: float,
    ) -> None:
        self.batch, self.q_heads, self.num_queries, _ = q.shape
        self.device = q.device
        self.kv_heads, self.num_keys = k.shape[1], k.shape[2]
        self.group = self.q_heads // self.kv_heads  # G
        self.predicate, self.plan, self.scale = predicate, plan, scale
        self.acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        self.score_dtype = score_dtype(q.dtype)
        self.block_rows = self.batch * self.q_heads * plan.q_block  # the score rows of a group's query block
        if mask is not None:
            mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (B|1, Hq|1, Nq|1, Nk|1)
            mask = mask.expand(*mask.shape[:3], self.num_keys)  # (B|1, Hq|1, Nq|1, Nk), a view
            mask = mask if mask.dtype == torch.bool else mask.to(self.acc)
        self.mask = mask

    def query_side(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, Hq, Nq, ·) -> padded row blocks (B, Hkv, Qn, G·Bq, ·): each block's rows of the G query
        heads that share a key/value head, side by side (a copy)."""
        plan = self.plan
        x = _pad(x, plan.query_blocks * plan.q_block)  # (B, Hq, Qn·Bq, ·)
        x = x.reshape(self.batch, self.kv_heads, self.group, plan.query_blocks, plan.q_block, x.shape[-1])
        return x.transpose(2, 3).flatten(3, 4).contiguous()  # (B, Hkv, Qn, G·Bq, ·)

    def new_rows(self, width: int, value: float) -> torch.Tensor:
        """Row blocks (B, Hkv, Qn, G·Bq, width) of `value` in the accumulation dtype."""
        shape = (self.batch, self.kv_heads, self.plan.query_blocks, self.group * self.plan.q_block, width)
        return torch.full(shape, value, dtype=self.acc, device=self.device)

    def unpad(self, blocks: torch.Tensor) -> torch.Tensor:
        """Row blocks (B, Hkv, Qn, G·Bq, ·) -> (B, Hq, Nq, ·)."""
        blocks = blocks.unflatten(3, (self.group, self.plan.q_block))  # (B, Hkv, Qn, G, Bq, ·)
        blocks = blocks.transpose(2, 3)  # (B, Hkv, G, Qn, Bq, ·)
        flat = blocks.flatten(3, 4).flatten(1, 2)[:, :, : self.num_queries]  # (B, Hq, Nq, ·)
        return flat

    def key_side(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, Hkv, Nk, ·) -> padded blocks (B, Hkv, Kn, Bk, ·)."""
        plan = self.plan
        x = _pad(x, plan.key_blocks * plan.k_block)  # (B, Hkv, Kn·Bk, ·)
        return x.reshape(self.batch, self.kv_heads, plan.key_blocks, plan.k_block, x.shape[-1])

    def key_unpad(self, blocks: torch.Tensor) -> torch.Tensor:
        """Key-side blocks (B, Hkv, Kn, Bk, ·) -> (B, Hkv, Nk, ·)."""
        return blocks.flatten(2, 3)[:, :, : self.num_keys]

    def groups(self) -> list[Group]:
        """The plan's groups of query blocks, each run in chunks."""
        return self.plan.groups()

    @staticmethod
    def rows(blocks: torch.Tensor, query_blocks: torch.Tensor) -> torch.Tensor:
        """Row blocks (B, Hkv, Qn, G·Bq, ·) -> the chunk's (B, Hkv, n, G·Bq, ·), a copy."""
        return blocks[:, :, query_blocks]

    @staticmethod
    def put_rows(blocks: torch.Tensor, query_blocks: torch.Tensor, rows: torch.Tensor) -> None:
        """Write the chunk's rows (B, Hkv, n, G·Bq, ·) into row blocks (B, Hkv, Qn, G·Bq, ·)."""
        blocks.index_copy_(2, query_blocks, rows.to(blocks.dtype))

    def put_context(
        self, out: torch.Tensor, query_blocks: torch.Tensor, weights: torch.Tensor, values: torch.Tensor
    ) -> None:
        """Write the chunk's context weights (B, Hkv, n, G·Bq, c·Bk) · values (B, Hkv, n, c·Bk, Dv) into
        the row blocks `out` (B, Hkv, Qn, G·Bq, Dv)."""
        self.put_rows(out, query_blocks, weights.to(values.dtype) @ values)  # (B, Hkv, n, G·Bq, Dv)

    @staticmethod
    def band(key_blocks: torch.Tensor) -> slice | None:
        """The keys a chunk of one query block reads, as one slice of positions when its key blocks are
        consecutive (a document's causal prefix, a window), else None."""
        first, last = int(key_blocks[0, 0]), int(key_blocks[0, -1])
        return (
            slice(first, last + 1)
            if key_blocks.shape[0] == 1 and last - first == key_blocks.shape[1] - 1
            else None
        )

    def gathered(self, blocks: torch.Tensor, key_blocks: torch.Tensor) -> torch.Tensor:
        """Key-side blocks (B, Hkv, Kn, Bk, ·) -> the chunk's keys side by side (B, Hkv, n, c·Bk, ·): a view
        of the keys for one query block whose key blocks are consecutive (the long rows of long documents,
        which a copy per query block would repeat up to c times), else a copy of the blocks."""
        band = self.band(key_blocks)
        if band is not None:
            return blocks[:, :, band].flatten(2, 3).unsqueeze(2)  # (B, Hkv, 1, c·Bk, ·), a view
        picked = blocks.index_select(2, key_blocks.flatten())  # (B, Hkv, n·c, Bk, ·): block copies
        return picked.view(*blocks.shape[:2], key_blocks.shape[0], -1, blocks.shape[-1])

    def add_keys(self, d_blocks: torch.Tensor, key_blocks: torch.Tensor, d_keys: torch.Tensor) -> None:
        """Add the chunk's key gradients (B, Hkv, n, c·Bk, ·) into key-side blocks (B, Hkv, Kn, Bk, ·): a key
        block read by several query blocks adds up."""
        band = self.band(key_blocks)
        if band is not None:
            d_blocks[:, :, band] += d_keys[:, :, 0].unflatten(2, (-1, self.plan.k_block)).to(d_blocks.dtype)
            return
        pieces = d_keys.unflatten(3, (-1, self.plan.k_block)).flatten(2, 3)  # (B, Hkv, n·c, Bk, ·)
        d_blocks.index_add_(2, key_blocks.flatten(), pieces.to(d_blocks.dtype))

    def scores(self, queries: torch.Tensor, keys: torch.Tensor, group: Group, chunk: slice) -> torch.Tensor:
        """The chunk's scaled, masked scores (B, Hkv, n, G·Bq, c·Bk) in the accumulation dtype, from the
        queries (B, Hkv, n, G·Bq, Dh) and gathered keys (B, Hkv, n, c·Bk, Dh): a float mask added,
        -inf where a query may not attend (the predicate's and a bool mask's refusals, and the padding past
        Nk, whose blocks are partial). Without a tensor mask, only the columns of key blocks that are
        partial in some row of the chunk are masked (a window's two edges, a document's diagonal)."""
        scores = ((queries * self.scale) @ keys.transpose(-2, -1)).to(self.acc)  # (B, Hkv, n, G·Bq, c·Bk)
        partial = group.partial[chunk]  # (n, c)
        columns = range(group.width) if self.mask is not None else partial.any(0).nonzero()[:, 0].tolist()
        plan = self.plan
        grouped = scores.unflatten(3, (self.group, plan.q_block))  # (B, Hkv, n, G, Bq, c·Bk)
        queries = group.query_blocks[chunk][:, None] * plan.q_block + torch.arange(plan.q_block)  # (n, Bq)
        # Padded rows are judged as the last query, padded keys as the last key (then refused by inside).
        queries = queries.to(scores.device).clamp(max=max(self.num_queries - 1, 0))[:, :, None]  # (n, Bq, 1)
        for column in columns:  # the j-th key block of every row
            keys = group.key_blocks[chunk][:, column, None] * plan.k_block + torch.arange(plan.k_block)
            keys = keys.to(scores.device)[:, None]  # (n, 1, Bk)
            inside = keys < self.num_keys  # (n, 1, Bk)
            keys = keys.clamp(max=max(self.num_keys - 1, 0))
            allowed = inside if self.predicate is None else self.rule(self.predicate, queries, keys) & inside
            piece = grouped[
                ..., column * plan.k_block : (column + 1) * plan.k_block
            ]  # (B, Hkv, n, G, Bq, Bk)
            if self.mask is not None:
                given = self.mask[:, :, queries, keys] if self.mask.shape[-2] > 1 else self.mask[..., 0, keys]
                if given.dtype == torch.bool:  # (B|1, Hq|1, n, Bq|1, Bk)
                    allowed = allowed & given
                else:
                    piece += self.by_heads(given)
            piece.masked_fill_(~self.by_heads(allowed), float("-inf"))
        return scores

    def rule(self, predicate: Predicate, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """`predicate` (the call's) at the chunk's positions, queries (n, Bq, 1) and keys (n, 1, Bk), with
        index tensors that broadcast as in `Predicate.allowed` plus the chunk's axis n -> bool, broadcastable
        to (B, Hq, n, Bq, Bk)."""
        device = queries.device
        batch_idx = torch.arange(self.batch, device=device).view(-1, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)
        head_idx = torch.arange(self.q_heads, device=device).view(1, -1, 1, 1, 1)  # (1, Hq, 1, 1, 1)
        return predicate.allowed(batch_idx, head_idx, queries, keys, self.num_queries, self.num_keys)

    def by_heads(self, piece: torch.Tensor) -> torch.Tensor:
        """A mask piece broadcastable to (B, Hq, n, Bq, Bk) -> (B|1, Hkv|1, n, G|1, Bq|1, Bk), as the
        grouped scores."""
        piece = piece[(None,) * (5 - piece.dim())]  # (B|1, Hq|1, n|1, Bq|1, Bk)
        if piece.shape[1] == self.q_heads and self.q_heads > 1:
            return piece.unflatten(1, (self.kv_heads, self.group)).transpose(2, 3)  # (B|1, Hkv, n, G, ..)
        return piece.unsqueeze(3)  # (B|1, 1, n, 1, Bq|1, Bk)

    def chunks(self, group: Group) -> Iterator[slice]:
        """Slices of the group's query blocks, each with scores of at most CHUNK_BYTES."""
        per_block = self.block_rows * group.width * self.plan.k_block * torch.finfo(self.acc).bits // 8
        step = max(1, CHUNK_BYTES // per_block)
        for start in range(0, len(group.query_blocks), step):
            yield slice(start, start + step)


class _Band(_Layout):
    """A plan whose visible blocks lie on a narrow diagonal band (query block i reads key blocks
    i + offset ... i + offset + c - 1), for a translation-invariant predicate over as many key blocks as
    query blocks (Qn = Kn): a sliding window.

    The (B, Hkv, Qn) query blocks are flattened into one axis f, and the key blocks likewise: query block f
    reads the L = c·Bk keys from key block f + offset on, in every head alike (a head's first blocks reach
    into the previous head's last keys, which the mask refuses; the first and last heads', past the keys:
    zeros). So the keys of a chunk are one strided view of the keys, not a gather, and a chunk is one
    batched matmul over every head's blocks. The mask is a few tiles (0 where a
    query may attend, -inf elsewhere), made once per call: the predicate sees only kv_idx - q_idx, so all
    blocks share one tile but those whose band reaches past the keys or whose rows past the queries.
    """

    def __init__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        predicate: Predicate,
        plan: Plan,
        scale: float,
        offset: int,
        c: int,
    ) -> None:
        super().__init__(q, k, None, predicate, plan, scale)
        self.block_rows = self.group * plan.q_block  # G·Bq: a flat query block's score rows
        tiles, tile_of = self.tiles(predicate, offset, c)  # (T, G·Bq, L), (Qn,)
        self.mask_tiles = tiles.to(self.device, self.score_dtype)
        tile_of = tile_of.repeat(self.batch * self.kv_heads)  # (B·Hkv·Qn,): each flat query block's tile
        self.tile_of = tile_of.to(self.device)
        blocks = torch.arange(len(tile_of))  # (B·Hkv·Qn,)
        keys = (blocks + offset)[:, None] + torch.arange(c)  # (B·Hkv·Qn, c): flat key blocks, maybe outside
        partial = (tiles.unflatten(2, (c, plan.k_block)) != 0).any(-1).any(1)  # (T, c)
        self.blocks = Group(blocks, keys, partial[tile_of])

    def tiles(self, predicate: Predicate, offset: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The band's masks (T, G·Bq, L) in the accumulation dtype, 0 where a query may attend and -inf
        elsewhere (the predicate's refusals, keys outside 0 <= j < Nk), and each query block's tile (Qn,):
        one of its own for each block at the edges, one shared by all the others."""
        plan, length = self.plan, c * self.plan.k_block  # L
        blocks = torch.arange(plan.query_blocks)  # (Qn,)
        first_keys = (blocks + offset) * plan.k_block  # (Qn,): the first key of each block's band
        past_queries = (blocks + 1) * plan.q_block > self.num_queries  # (Qn,): rows of padding
        edge = (first_keys < 0) | (first_keys + length > self.num_keys) | past_queries  # (Qn,)
        chosen = torch.cat([blocks[edge], blocks[~edge][:1]])  # (T,): the edges, then one of the others
        tile_of = torch.where(edge, edge.cumsum(0) - 1, int(edge.sum()))  # (Qn,)
        # Padded rows are judged as the last query, keys outside as the nearest key (then refused).
        queries = chosen[:, None] * plan.q_block + torch.arange(plan.q_block)  # (T, Bq)
        queries = queries.clamp(max=max(self.num_queries - 1, 0))[:, :, None]  # (T, Bq, 1)
        keys = (first_keys[chosen][:, None] + torch.arange(length))[:, None]  # (T, 1, L)
        inside = (keys >= 0) & (keys < self.num_keys)  # (T, 1, L)
        keys = keys.clamp(min=0, max=max(self.num_keys - 1, 0))
        allowed = self.rule(predicate, queries, keys) & inside  # (T, Bq, L): no batch or head axis
        allowed = allowed.expand(1, 1, *allowed.shape[-3:])[0, 0]  # (T, Bq, L)
        tiles = torch.zeros(allowed.shape, dtype=self.acc).masked_fill_(~allowed, float("-inf"))
        return tiles.repeat(1, self.group, 1), tile_of  # (T, G·Bq, L): the G heads' rows alike

    def groups(self) -> list[Group]:
        """The band: every flat query block, with its c key blocks."""
        return [self.blocks]

    def query_side(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, Hq, Nq, ·) -> flat row blocks (B·Hkv·Qn, G·Bq, ·), as _Layout.query_side."""
        return super().query_side(x).flatten(0, 2)  # (B·Hkv·Qn, G·Bq, ·)

    def new_rows(self, width: int, value: float) -> torch.Tensor:
        """Flat row blocks (B·Hkv·Qn, G·Bq, width) in the accumulation dtype, left unset: every flat query
        block is in the band, so every row is written."""
        return torch.empty(len(self.tile_of), self.block_rows, width, dtype=self.acc, device=self.device)

    def unpad(self, blocks: torch.Tensor) -> torch.Tensor:
        """Flat row blocks (B·Hkv·Qn, G·Bq, ·) -> (B, Hq, Nq, ·)."""
        return super().unpad(blocks.unflatten(0, (self.batch, self.kv_heads, -1)))

    def key_side(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, Hkv, Nk, ·) -> flat blocks (B·Hkv·Kn, Bk, ·), a view where Nk is whole blocks."""
        return super().key_side(x).flatten(0, 2)  # (B·Hkv·Kn, Bk, ·)

    def key_unpad(self, blocks: torch.Tensor) -> torch.Tensor:
        """Flat blocks (B·Hkv·Kn, Bk, ·) -> (B, Hkv, Nk, ·)."""
        return super().key_unpad(blocks.unflatten(0, (self.batch, self.kv_heads, -1)))

    @staticmethod
    def rows(blocks: torch.Tensor, query_blocks: torch.Tensor) -> torch.Tensor:
        """Flat row blocks (B·Hkv·Qn, G·Bq, ·) -> the chunk's consecutive ones (n, G·Bq, ·), a view."""
        first = int(query_blocks[0])
        return blocks[first : first + len(query_blocks)]

    @staticmethod
    def put_rows(blocks: torch.Tensor, query_blocks: torch.Tensor, rows: torch.Tensor) -> None:
        """Write the chunk's rows (n, G·Bq, ·) into flat row blocks (B·Hkv·Qn, G·Bq, ·)."""
        _Band.rows(blocks, query_blocks).copy_(rows)

    def put_context(
        self, out: torch.Tensor, query_blocks: torch.Tensor, weights: torch.Tensor, values: torch.Tensor
    ) -> None:
        """Write the chunk's context weights (n, G·Bq, L) · values (n, L, Dv) into flat row blocks
        (B·Hkv·Qn, G·Bq, Dv): by the matmul itself where their dtypes agree."""
        if out.dtype != values.dtype:  # float16 / bfloat16 values, float32 rows
            super().put_context(out, query_blocks, weights, values)
            return
        torch.bmm(weights, values, out=self.rows(out, query_blocks))  # (n, G·Bq, Dv)

    def gathered(self, blocks: torch.Tensor, key_blocks: torch.Tensor) -> torch.Tensor:
        """Flat key blocks (B·Hkv·Kn, Bk, ·) -> the chunk's bands (n, c·Bk, ·): a strided view whose rows
        overlap (block f's band starts one block after block f - 1's); at the ends of the flat blocks, a
        view of the chunk's keys with zero blocks added where its bands reach past them (refused keys)."""
        (count, c), first = key_blocks.shape, int(key_blocks[0, 0])  # n, c; first may be < 0
        end = first + count + c - 1  # one past the chunk's last key block
        source = blocks[max(first, 0) : end]  # (.., Bk, ·)
        if first < 0 or end > blocks.shape[0]:
            source = F.pad(source, (0, 0, 0, 0, max(-first, 0), max(end - blocks.shape[0], 0)))  # a copy
        width = blocks.shape[-1]
        step = self.plan.k_block * width  # one block of keys
        return source.as_strided(
            (count, c * self.plan.k_block, width), (step, width, 1), source.storage_offset()
        )

    def add_keys(self, d_blocks: torch.Tensor, key_blocks: torch.Tensor, d_keys: torch.Tensor) -> None:
        """Add the chunk's key gradients (n, c·Bk, ·) into flat key blocks (B·Hkv·Kn, Bk, ·): the j-th key
        block of each band into the blocks j further on, one slice per j (past the ends: refused keys,
        whose gradients are zero)."""
        (count, c), first = key_blocks.shape, int(key_blocks[0, 0])
        pieces = d_keys.unflatten(1, (c, self.plan.k_block)).to(d_blocks.dtype)  # (n, c, Bk, ·)
        for j in range(c):
            lo, hi = max(first + j, 0), min(first + j + count, d_blocks.shape[0])  # the blocks inside
            d_blocks[lo:hi] += pieces[lo - first - j : hi - first - j, j]

    def scores(self, queries: torch.Tensor, keys: torch.Tensor, group: Group, chunk: slice) -> torch.Tensor:
        """The chunk's scaled, masked scores (n, G·Bq, L) in the accumulation dtype, from the queries
        (n, G·Bq, Dh) and the bands of keys (n, L, Dh): the scaled matmul added into the chunk's tiles."""
        scores = self.mask_tiles.index_select(0, self.tile_of[chunk])  # (n, G·Bq, L): 0 or -inf
        return scores.baddbmm_(queries, keys.transpose(-2, -1), alpha=self.scale).to(self.acc)


def _band_of(predicate: Predicate | None, plan: Plan) -> tuple[int, int] | None:
    """The plan's diagonal band (offset, c) where a _Band runs it (a translation-invariant predicate,
    Qn = Kn) computing at most BAND_EXTRA times its visible blocks, else None."""
    diagonals = plan.diagonals()
    if (
        predicate is None
        or not predicate.translation_invariant
        or diagonals is None
        or plan.query_blocks != plan.key_blocks
        or plan.query_blocks * diagonals[1] > BAND_EXTRA * plan.visible_blocks()
    ):
        return None
    return diagonals


def _pad(x: torch.Tensor, length: int) -> torch.Tensor:
    """x (B, H, N, ·) with zero rows appended up to `length` (itself when N is that already)."""
    return x if x.shape[2] == length else F.pad(x, (0, 0, 0, length - x.shape[2]))


def _softmax(
    scores: torch.Tensor, layout: _Layout, group: Group, chunk: slice
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The chunk's weights softmax(scores) (B, Hkv, n, G·Bq, c·Bk), with rows that see no key (every
    score -inf) as zeros instead of torch's NaN, and the row maximum m (B, Hkv, n, G·Bq, 1) when such a
    row may exist (a row with a full key block never is one), else None."""
    weights = torch.softmax(scores, dim=-1)  # one fused pass per row, kept in cache
    every_row_full = layout.mask is None and bool((~group.partial[chunk]).any(1).all())
    if every_row_full:
        return weights, None
    row_max = scores.amax(-1, keepdim=True)  # (B, Hkv, n, G·Bq, 1)
    return weights.masked_fill_(row_max == float("-inf"), 0.0), row_max


def _forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: _Layout, want_lse: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """-> out (B, Hq, Nq, Dv) in the accumulation dtype, and lse (B, Hq, Nq) (-inf for a query that sees no
    key) when `want_lse`, else None. lse = m - log(max weight), read off the weights: no second pass of
    exp over the scores."""
    q_blocks = layout.query_side(q.to(layout.score_dtype))  # (B, Hkv, Qn, G·Bq, Dh)
    k_blocks, v_blocks = layout.key_side(k.to(layout.score_dtype)), layout.key_side(v)  # (B, Hkv, Kn, Bk, ·)
    out = layout.new_rows(v.shape[-1], 0.0)  # (B, Hkv, Qn, G·Bq, Dv)
    lse = layout.new_rows(1, float("-inf")) if want_lse else None  # (B, Hkv, Qn, G·Bq, 1)
    for group in layout.groups():
        for chunk in layout.chunks(group):
            query_blocks, key_blocks = group.query_blocks[chunk], group.key_blocks[chunk]  # (n,), (n, c)
            queries = layout.rows(q_blocks, query_blocks)  # (B, Hkv, n, G·Bq, Dh)
            keys = layout.gathered(k_blocks, key_blocks)  # (B, Hkv, n, c·Bk, Dh)
            scores = layout.scores(queries, keys, group, chunk)  # (B, Hkv, n, G·Bq, c·Bk)
            weights, row_max = _softmax(scores, layout, group, chunk)  # (B, Hkv, n, G·Bq, c·Bk)
            values = layout.gathered(v_blocks, key_blocks)  # (B, Hkv, n, c·Bk, Dv)
            layout.put_context(out, query_blocks, weights, values)
            if lse is not None:
                row_max = scores.amax(-1, keepdim=True) if row_max is None else row_max
                top = weights.amax(-1, keepdim=True)  # (B, Hkv, n, G·Bq, 1): exp(m - lse), 0 for no key
                layout.put_rows(lse, query_blocks, torch.where(top > 0, row_max - top.log(), float("-inf")))
    return layout.unpad(out), (None if lse is None else layout.unpad(lse)[..., 0])


def _backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    d_out: torch.Tensor,
    d_lse: torch.Tensor | None,
    layout: _Layout,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FlashAttention-2's backward, chunk by chunk: the weights recomputed as the forward made them (the
    same softmax of the same scores, bit for bit), d_scores = weights · (d_weights - D + d_lse) with
    D = rowsum(d_out · out)."""
    acc = layout.acc
    q_blocks = layout.query_side(q.to(layout.score_dtype))  # (B, Hkv, Qn, G·Bq, Dh)
    k_blocks, v_blocks = layout.key_side(k.to(layout.score_dtype)), layout.key_side(v)  # (B, Hkv, Kn, Bk, ·)
    d_out_blocks = layout.query_side(d_out.to(v.dtype))  # (B, Hkv, Qn, G·Bq, Dv)
    row_term = (d_out.to(acc) * out.to(acc)).sum(-1)  # (B, Hq, Nq): D
    row_term = row_term if d_lse is None else row_term - d_lse.to(acc)  # D - d_lse
    term_blocks = layout.query_side(row_term[..., None])  # (B, Hkv, Qn, G·Bq, 1)
    d_q = torch.zeros_like(q_blocks, dtype=acc)  # (B, Hkv, Qn, G·Bq, Dh)
    d_k, d_v = torch.zeros_like(k_blocks, dtype=acc), torch.zeros_like(v_blocks, dtype=acc)  # (.., Kn, Bk, ·)
    for group in layout.groups():
        for chunk in layout.chunks(group):
            query_blocks, key_blocks = group.query_blocks[chunk], group.key_blocks[chunk]  # (n,), (n, c)
            queries = layout.rows(q_blocks, query_blocks)  # (B, Hkv, n, G·Bq, Dh)
            keys = layout.gathered(k_blocks, key_blocks)  # (B, Hkv, n, c·Bk, Dh)
            values = layout.gathered(v_blocks, key_blocks)  # (B, Hkv, n, c·Bk, Dv)
            scores = layout.scores(queries, keys, group, chunk)  # (B, Hkv, n, G·Bq, c·Bk)
            weights, _ = _softmax(scores, layout, group, chunk)  # the forward's
            del scores
            d_out_rows = layout.rows(d_out_blocks, query_blocks)  # (B, Hkv, n, G·Bq, Dv)
            d_values = weights.to(v.dtype).transpose(-2, -1) @ d_out_rows  # (B, Hkv, n, c·Bk, Dv)
            # In the accumulation dtype: rounded to bf16, d_weights would no longer cancel against D.
            d_scores = d_out_rows.to(acc) @ values.to(acc).transpose(-2, -1)  # (B, Hkv, n, G·Bq, c·Bk)
            term = layout.rows(term_blocks, query_blocks)  # (B, Hkv, n, G·Bq, 1)
            d_scores = d_scores.sub_(term).mul_(weights).to(queries.dtype)  # d of the scaled scores
            layout.put_rows(d_q, query_blocks, (d_scores @ keys).to(acc) * layout.scale)  # (.., G·Bq, Dh)
            d_keys = d_scores.transpose(-2, -1) @ queries  # (B, Hkv, n, c·Bk, Dh): d_k is scaled at the end
            layout.add_keys(d_k, key_blocks, d_keys)
            layout.add_keys(d_v, key_blocks, d_values)
    d_q = layout.unpad(d_q)  # (B, Hq, Nq, Dh)
    d_k, d_v = layout.key_unpad(d_k.mul_(layout.scale)), layout.key_unpad(d_v)  # (B, Hkv, Nk, ·)
    return d_q.to(q.dtype), d_k.to(k.dtype), d_v.to(v.dtype)


class _BlockSparseAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        predicate: Predicate | None,
        plan: Plan,
        scale: float,
        want_lse: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        band = None if mask is not None else _band_of(predicate, plan)
        layout = (
            _Layout(q, k, mask, predicate, plan, scale)
            if band is None or predicate is None
            else _Band(q, k, predicate, plan, scale, *band)
        )
        out, lse = _forward(q, k, v, layout, want_lse)
        ctx.save_for_backward(q, k, v, out)
        ctx.layout = layout
        return out.to(q.dtype), lse

    @staticmethod
    def backward(
        ctx: Any, d_out: torch.Tensor | None, d_lse: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        q, k, v, out = ctx.saved_tensors
        d_out = torch.zeros_like(out) if d_out is None else d_out
        d_q, d_k, d_v = _backward(q, k, v, out, d_out, d_lse, ctx.layout)
        return d_q, d_k, d_v, None, None, None, None, None
