"""Ring attention: exact attention over a sequence sharded across the P ranks of a process group.

Each rank keeps its queries and passes its key/value block round the ring: at step s rank r holds the
block of rank (r - s) mod P, sends it on to rank r + 1 and receives the next one from rank r - 1 while it
computes, so the transfer overlaps the compute. Each block's partial result (out, lse) comes from the
chunked kernel and the partial results combine exactly with `headwise.merge`.

The backward is a ring too: the key/value blocks travel again, each with its dk/dv accumulator; every
rank recomputes its queries' attention to the block with the chunked kernel (whose backward recomputes
the weights exactly) and adds its share of the block's gradients; after P steps each accumulator is back
with the rank that owns the block. Autograd never runs through the communication.

Through the merge, a block's share of a query's output is exp(lse_b - lse): a relative error of about
|lse| ulps (lse's rounding), where the single-process chunked backend carries the exact running maximum.

Memory per rank is O(N/P): the rank's own q, k, v and out, the blocks in flight (the key/value block
held and the one arriving; in the backward, the dk/dv accumulator arriving, the one sent being released
before each block's compute), and the chunked kernel's O(N/P · block) pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from ..arguments import check_inputs, check_scale
from ..backends.chunked import BLOCK, attention_with_lse
from ..masks import Predicate, split_causal
from ..merge import merge
from .layout import Placed, check_layout, check_length, chunk_count, chunk_starts, ring_position

KV_TAG, GRAD_TAG = 0, 1  # keys and values, and their gradient accumulators, as separate message streams


def context_parallel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    mask: torch.Tensor | Predicate | None = None,
    group: dist.ProcessGroup | None = None,
    layout: str = "contiguous",
    scale: float | None = None,
) -> torch.Tensor:
    """Self-attention over a sequence of N positions sharded across the P ranks of `group`; each rank
    calls it with its own shard and gets its own queries' output. Equal to `headwise.attention` on the
    full sequence, differentiable (q, k and v get this rank's gradients).

    Args:
        q: this rank's queries (B, Hq, N/P, Dh).
        k: this rank's keys (B, Hkv, N/P, Dh), Hq a multiple of Hkv (grouped-query attention: k and v
            are never repeated, and travel with Hkv heads).
        v: this rank's values (B, Hkv, N/P, Dv).
        causal: each query sees the keys at or before its global position (N queries and N keys
            globally, so bottom-right and top-left alignment agree). Blocks that no query of this rank
            sees are skipped: with layout="contiguous" rank r computes blocks of ranks <= r only.
        mask: None; a bool key-padding mask (B, N/P) for this rank's keys (True = a real token), which
            travels with them; or a `headwise.masks` predicate (sliding_window, key_lengths, documents,
            prefix_lm, ... with & | ~), evaluated block by block at global positions (its data, such as
            documents' ids, is for the full sequence). Combines with `causal`.
        group: the torch.distributed process group (default: the default group, initialised by torchrun
            or torch.distributed.init_process_group).
        layout: which positions rank r holds: "contiguous", [r·N/P, (r+1)·N/P); or "zigzag", chunks r
            and 2P-1-r of 2P, which balances causal work. `headwise.distributed.shard` cuts a full
            sequence so.
        scale: multiplies the scores; defaults to 1 / sqrt(Dh).

    Returns:
        out (B, Hq, N/P, Dv): this rank's queries. A query with nothing to attend to gets zeros.

    Every rank must pass shards of one shape; N must be a multiple of P (of 2P for zigzag). Both are
    checked with one all_gather of seven integers per call (a ValueError on every rank naming the sizes).
    """
    check_inputs(q, k, v)
    layout = check_layout(layout)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    scale = check_scale(scale, q.shape[-1])
    _check_mask(mask, q, k)
    if q.shape[2] != k.shape[2]:
        raise ValueError(
            f"q and k must hold the same positions of one sequence, got N/P = {q.shape[2]} queries and "
            f"{k.shape[2]} keys on this rank"
        )
    world, rank = ring_position(group, "context_parallel_attention")
    length = _agreed_length(q, k, v, mask, group, world, layout)  # N
    key_mask, predicate = split_causal(mask, causal)  # (B, N/P) or None; a global predicate or None
    if predicate is not None:
        predicate.check(q.shape[0], q.shape[1], length, length)
    plan = _Plan(group, world, rank, layout, length, predicate, scale)
    q, k, v = (t.contiguous() for t in (q, k, v))  # sent and received as they are
    return _RingAttention.apply(q, k, v, None if key_mask is None else key_mask.contiguous(), plan)


def _check_mask(mask: object, q: torch.Tensor, k: torch.Tensor) -> None:
    if mask is None or isinstance(mask, Predicate):
        return
    expected = (
        f"a headwise.masks predicate or a bool key-padding mask (B, N/P) = {(q.shape[0], k.shape[2])} "
        f"for this rank's keys (True = a real token) on {q.device}"
    )
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = f"dtype {mask.dtype}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask must be {expected}, got {got}")
    if tuple(mask.shape) != (q.shape[0], k.shape[2]) or mask.device != q.device:
        raise ValueError(f"mask must be {expected}, got shape {tuple(mask.shape)} on {mask.device}")


def _agreed_length(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | Predicate | None,
    group: dist.ProcessGroup | None,
    world: int,
    layout: str,
) -> int:
    """The global N, once every rank's shard has the same shape (one all_gather); else a ValueError."""
    kind = 0 if mask is None else (2 if isinstance(mask, Predicate) else 1)  # none, key padding, predicate
    mine = [q.shape[2], q.shape[0], q.shape[1], k.shape[1], q.shape[3], v.shape[3], kind]
    shapes = [torch.empty(len(mine), dtype=torch.int64, device=q.device) for _ in range(world)]  # P × (7,)
    dist.all_gather(shapes, torch.tensor(mine, device=q.device), group=group)
    rows = [tuple(shape.tolist()) for shape in shapes]
    lengths = [row[0] for row in rows]
    if len(set(lengths)) > 1:
        raise ValueError(
            f"the ranks hold shards of different lengths N/P = {lengths} (N = {sum(lengths)}, P = {world}); "
            "expected one length on every rank: cut the sequence with headwise.distributed.shard, which "
            "says when N does not divide"
        )
    check_length(lengths[0] * world, layout, world)
    if len(set(rows)) > 1:
        raise ValueError(
            "the ranks disagree on the shapes (N/P, B, Hq, Hkv, Dh, Dv, mask: 0 none, 1 key padding, "
            f"2 predicate): {rows}; expected one shape on every rank"
        )
    return lengths[0] * world


@dataclass(frozen=True)
class _Plan:
    """One call's fixed arguments: the ring, the layout and the masking, and what each step computes."""

    group: dist.ProcessGroup | None
    world: int  # P
    rank: int  # r
    layout: str
    length: int  # N
    predicate: Predicate | None  # at global positions
    scale: float

    @property
    def chunk(self) -> int:
        """Positions per chunk: N/P, or N/(2P) for zigzag."""
        return self.length // chunk_count(self.layout, self.world)

    def sources(self) -> list[int]:
        """The rank whose key/value block this rank holds at each step: its own, then back round the ring."""
        return [(self.rank - step) % self.world for step in range(self.world)]

    def rule(self, source: int) -> tuple[bool, Predicate | None]:
        """For the block of rank `source`: (whether any query of this rank sees a key of it, the predicate
        to evaluate inside it: None where the predicate masks nothing in it)."""
        if self.predicate is None:
            return True, None
        query_starts = chunk_starts(self.layout, self.rank, self.world, self.length)
        key_starts = chunk_starts(self.layout, source, self.world, self.length)
        placed = Placed(self.predicate, query_starts, key_starts, self.chunk, self.length)
        local = self.length // self.world  # N/P
        whole = (0, local, 0, local, local, local)
        if placed.block_is_empty(*whole):
            return False, None
        return True, (None if placed.block_is_full(*whole) else placed)

    def attend(
        self, q: torch.Tensor, block: tuple[torch.Tensor, ...], predicate: Predicate | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's queries q (B, Hq, N/P, Dh) against one block (k, v[, key mask (B, N/P)]) ->
        (out (B, Hq, N/P, Dv), lse (B, Hq, N/P)), differentiable. The kernel's blocks are no larger than
        a chunk, so that they never straddle two zigzag chunks and the predicate skips whole ones."""
        k, v, *key_mask = block
        mask = key_mask[0][:, None, None, :] if key_mask else None  # (B, 1, 1, N/P)
        size = min(BLOCK, self.chunk)
        return attention_with_lse(q, k, v, mask=mask, predicate=predicate, scale=self.scale, block=size)

    def pass_on(self, tensors: tuple[torch.Tensor, ...], tag: int) -> _Transfer:
        """Send `tensors` to the next rank and receive the previous rank's (same shapes) in the
        background. In a ring of one, the tensors themselves are "received"."""
        if self.world == 1:
            return _Transfer([], [], tensors)
        world = dist.group.WORLD if self.group is None else self.group
        if world is None:
            raise RuntimeError("torch.distributed has no default process group: call init_process_group")
        after, before = (dist.get_global_rank(world, (self.rank + step) % self.world) for step in (1, -1))
        received = tuple(torch.empty_like(t) for t in tensors)
        operations = [dist.P2POp(dist.isend, t, after, self.group, tag) for t in tensors]
        operations += [dist.P2POp(dist.irecv, t, before, self.group, tag) for t in received]
        requests = dist.batch_isend_irecv(operations)
        if len(requests) != len(operations):  # one request for the batch (NCCL): nothing to wait apart
            return _Transfer([], requests, received)
        return _Transfer(requests[: len(tensors)], requests[len(tensors) :], received)


class _Transfer:
    """Tensors on their way round the ring: this rank's to the next rank, the previous rank's into new
    buffers. Its requests hold the tensors sent until they are waited for."""

    def __init__(self, sends: list, receives: list, received: tuple[torch.Tensor, ...]) -> None:
        self._sends, self._receives, self._received = sends, receives, received

    def release_sent(self) -> None:
        """Wait for the sends alone, so that the tensors sent can be freed before the receives are done
        (the receiving rank posted its receive with its own send, at the same point of the ring). Where
        the backend gives a batch one request (NCCL, where a wait orders streams), nothing is released
        before received()."""
        for request in self._sends:
            request.wait()
        self._sends = []

    def received(self) -> tuple[torch.Tensor, ...]:
        """Wait for everything; -> the received tensors."""
        self.release_sent()
        for request in self._receives:
            request.wait()
        self._receives = []
        return self._received


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None,
        plan: _Plan,
    ) -> torch.Tensor:
        acc = _accumulation_dtype(q.dtype)
        # what travels: (B, Hkv, N/P, ·), (B, N/P)
        block: tuple[torch.Tensor, ...] = (k, v) if key_mask is None else (k, v, key_mask)
        out: torch.Tensor | None = None  # (B, Hq, N/P, Dv) in acc: over the blocks so far
        lse: torch.Tensor | None = None  # (B, Hq, N/P)
        for step, source in enumerate(plan.sources()):
            arriving = plan.pass_on(block, KV_TAG) if step < plan.world - 1 else None
            visible, predicate = plan.rule(source)
            if visible:
                out, lse = _merged(out, lse, plan.attend(q, block, predicate), acc)
            if arriving is not None:
                block = arriving.received()
        if out is None or lse is None:  # no query of this rank sees any key
            out = q.new_zeros(*q.shape[:3], v.shape[-1], dtype=acc)  # (B, Hq, N/P, Dv)
            lse = q.new_full(q.shape[:3], float("-inf"), dtype=acc)  # (B, Hq, N/P)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, key_mask, out, lse)
        ctx.plan = plan
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, key_mask, out, lse = ctx.saved_tensors
        plan: _Plan = ctx.plan
        acc = _accumulation_dtype(q.dtype)
        row_term = (d_out.to(acc) * out.to(acc)).sum(-1)  # (B, Hq, N/P): D = rowsum(d_out ∘ out)
        safe_lse = lse.masked_fill(lse == float("-inf"), 0.0)  # (B, Hq, N/P)
        d_q = torch.zeros(q.shape, dtype=acc, device=q.device)  # (B, Hq, N/P, Dh)
        block: tuple[torch.Tensor, ...] = (k, v) if key_mask is None else (k, v, key_mask)
        returning: _Transfer | None = (
            None  # the accumulators passed on last step, the previous rank's arriving
        )
        for step, source in enumerate(plan.sources()):
            arriving = plan.pass_on(block, KV_TAG) if step < plan.world - 1 else None
            if returning is not None:  # the accumulators passed on leave before the compute's pieces come
                returning.release_sent()
            visible, predicate = plan.rule(source)
            # this rank's (d_k, d_v) of the block (B, Hkv, N/P, Dh|Dv) in acc, its d_q added to d_q
            mine: tuple[torch.Tensor, ...] | None = (
                _block_grads(q, block, predicate, plan, d_out, row_term, safe_lse, d_q) if visible else None
            )
            if returning is not None:  # add the accumulators of the ranks that held this block before
                theirs = returning.received()
                mine = theirs if mine is None else tuple(t.add_(m) for t, m in zip(theirs, mine, strict=True))
                del theirs
            elif mine is None:
                mine = tuple(torch.zeros(t.shape, dtype=acc, device=t.device) for t in (k, v))
            returning = plan.pass_on(mine, GRAD_TAG)
            del mine  # held by the transfer alone, until its send is done
            if arriving is not None:
                block = arriving.received()
        assert returning is not None  # the ring has at least one step
        d_k, d_v = returning.received()  # back home: every rank's share of this rank's own block
        return d_q.to(q.dtype), d_k.to(k.dtype), d_v.to(v.dtype), None, None


def _merged(
    out: torch.Tensor | None,
    lse: torch.Tensor | None,
    part: tuple[torch.Tensor, torch.Tensor],
    acc: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) over the blocks so far, merged with one more block's part (out_b, lse_b): (B, Hq, N/P,
    Dv) in acc and (B, Hq, N/P); out and lse are None before the first block."""
    part_out, part_lse = part[0].to(acc), part[1]
    return (part_out, part_lse) if out is None or lse is None else merge(out, lse, part_out, part_lse)


def _block_grads(
    q: torch.Tensor,
    block: tuple[torch.Tensor, ...],
    predicate: Predicate | None,
    plan: _Plan,
    d_out: torch.Tensor,
    row_term: torch.Tensor,
    safe_lse: torch.Tensor,
    d_q: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's queries against one block: adds their d_q to `d_q` (B, Hq, N/P, Dh) and returns the
    block's (d_k, d_v) (B, Hkv, N/P, Dh|Dv), all in the accumulation dtype.

    The merged out is Σ_b w_b · out_b with w_b = exp(lse_b - lse), so the loss reaches the block's
    (out_b, lse_b) as d_out_b = w_b · d_out and d_lse_b = w_b · d_out · (out_b - out); the chunked
    kernel's backward takes it from there. d_lse_b is written rowsum(d_out_b · out_b) - w_b · D, so that
    the kernel's rowsum(d_out_b · out_b) - d_lse_b is w_b · D exactly, d_out_b's rounding included."""
    with torch.enable_grad():
        k, v, *key_mask = block
        leaves = tuple(t.detach().requires_grad_() for t in (q, k, v))
        part_out, part_lse = plan.attend(leaves[0], (*leaves[1:], *key_mask), predicate)
    share = torch.exp(part_lse.detach() - safe_lse)  # (B, Hq, N/P): w_b, 0 where the block is unseen
    d_part_out = (d_out.to(share.dtype) * share[..., None]).to(part_out.dtype)  # (B, Hq, N/P, Dv)
    d_part_lse = (d_part_out.to(share.dtype) * part_out.detach().to(share.dtype)).sum(-1) - share * row_term
    part_q, part_k, part_v = torch.autograd.grad((part_out, part_lse), leaves, (d_part_out, d_part_lse))
    d_q += part_q
    return part_k.to(d_q.dtype), part_v.to(d_q.dtype)
