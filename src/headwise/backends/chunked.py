"""The chunked backend: attention block by block, in memory linear in the sequence length.

Forward: for each block of queries, attend to one block of keys at a time with an online softmax: keep
each query's running maximum score m, its running sum l = Σ exp(score - m) and the unnormalised context,
rescaled when m grows (the same algebra as `headwise.merge`); out = context / l, lse = m + log l.
Backward: recompute each block's weights as exp(score - m) / l, exactly the forward's (from lse alone,
exp(score - lse) would carry lse's rounding, about |lse| ulps, into every weight), so that training
never holds an (Nq, Nk) matrix. Blocks that a mask predicate (causal() included) rules out entirely are
skipped.

Grouped-query heads are folded into the query rows: q (B, Hq, Nq, Dh) is viewed as (B, Hkv, G, Nq, Dh),
so each key/value head is multiplied once by all G query heads that share it, and k and v are never
repeated. Dropout draws each block's keep-mask from a generator seeded per block, so the backward pass
redraws the same masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from ..masks import ALiBi, Predicate, to_additive
from .capabilities import Capabilities, Rank, score_dtype
from .plan import make_plan

if TYPE_CHECKING:
    from ..masks import ScoreModifier

BLOCK = 256  # queries and keys per block
Running = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # a query block's (context, m, l) so far
# Not under torch.func's transforms: its autograd.Function writes blocks into preallocated tensors in place.
CAPABILITIES = Capabilities(
    lse=True, predicates=True, score_mods=frozenset({ALiBi}), transforms=False, rank=Rank(cpu=20, cuda=30)
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
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv) -> (out (B, Hq, Nq, Dv), None, lse)."""
    if score_mod is not None and not isinstance(score_mod, ALiBi):  # added to the blocks' bias: ALiBi only
        raise ValueError(f"score_mod: the chunked backend applies alibi() only, got {score_mod.title}")
    out, lse = attention_with_lse(
        q, k, v, mask=mask, predicate=predicate, scale=scale, dropout_p=dropout_p, alibi=score_mod
    )
    return out, None, (lse if return_lse else None)


def attention_with_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    predicate: Predicate | None = None,
    scale: float,
    dropout_p: float = 0.0,
    block: int = BLOCK,
    alibi: ALiBi | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """As `attention`, and lse (B, Hq, Nq): log Σ exp(scaled, masked scores), -inf for a query that sees
    no key. Both are differentiable (lse too, so that merged results train). mask: a tensor mask as for
    `attention`; predicate: a masks.Predicate evaluated block by block (causal() for causal attention);
    alibi: a masks.alibi(slopes) whose distance penalty joins each block's bias."""
    seed = int(torch.randint(2**62, (1,)).item()) if dropout_p > 0 else 0  # from torch's RNG: reproducible
    return _ChunkedAttention.apply(q, k, v, mask, predicate, scale, dropout_p, block, seed, alibi)


class _Blocks:
    """The fixed arguments of one call, and the pieces of it that each (query block, key block) needs."""

    def __init__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        mask: torch.Tensor | None,
        predicate: Predicate | None,
        scale: float,
        dropout_p: float,
        block: int,
        seed: int,
        alibi: ALiBi | None = None,
    ) -> None:
        self.batch, self.q_heads, self.num_queries, _ = q.shape
        self.alibi = alibi
        self.kv_heads, self.num_keys = k.shape[1], k.shape[2]
        self.group = self.q_heads // self.kv_heads  # G
        self.predicate: Predicate | None = predicate
        if mask is not None:
            mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (B|1, Hq|1, Nq|1, Nk|1)
        self.mask = mask
        self.scale = scale
        self.dropout_p, self.block, self.seed = dropout_p, block, seed
        self.plan = make_plan(predicate, self.num_queries, self.num_keys, block, block)
        self.acc_dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        self.score_dtype = score_dtype(q.dtype)

    def pairs(self) -> Iterator[tuple[int, int, int, int]]:
        """(q_start, q_end, k_start, k_end) for every block pair the predicate does not rule out, in row
        order (from the plan: one vectorised bound for all blocks)."""
        for q_index, k_index in self.plan.visible.nonzero().tolist():
            q_start, k_start = q_index * self.block, k_index * self.block
            yield (
                q_start,
                min(q_start + self.block, self.num_queries),
                k_start,
                min(k_start + self.block, self.num_keys),
            )

    def query_rows(self, x: torch.Tensor, q_start: int, q_end: int) -> torch.Tensor:
        """x (B, Hq, Nq, ·) -> the block's rows grouped by key/value head: (B, Hkv, G·Qb, ·)."""
        rows = x[:, :, q_start:q_end].unflatten(1, (self.kv_heads, self.group))  # (B, Hkv, G, Qb, ·)
        return rows.flatten(2, 3)  # (B, Hkv, G·Qb, ·)

    def heads_back(self, rows: torch.Tensor, q_start: int, q_end: int) -> torch.Tensor:
        """(B, Hkv, G·Qb, ·) -> (B, Hq, Qb, ·)."""
        return rows.unflatten(2, (self.group, q_end - q_start)).flatten(1, 2)  # (B, Hq, Qb, ·)

    def scores(self, raw: torch.Tensor, q_start: int, q_end: int, k_start: int, k_end: int) -> torch.Tensor:
        """The block's scaled, masked scores (B, Hkv, G·Qb, Kb) in the accumulation dtype, from the raw
        q·kᵀ (B, Hkv, G·Qb, Kb): -inf where a query may not attend."""
        scores = raw.to(self.acc_dtype) * self.scale  # a new tensor: the bias is added in place
        bias = self.bias(q_start, q_end, k_start, k_end, raw.device)
        if bias is not None:
            scores.unflatten(2, (self.group, -1)).add_(bias)
        return scores

    def bias(
        self, q_start: int, q_end: int, k_start: int, k_end: int, device: torch.device
    ) -> torch.Tensor | None:
        """What the block adds to its scores: 0 where allowed, -inf where masked (plus a float mask), as
        one tensor broadcastable to (B, Hkv, G, Qb, Kb); None when nothing in the block is masked."""
        bias = None
        if self.mask is not None:
            rows = slice(q_start, q_end) if self.mask.shape[-2] > 1 else slice(None)  # broadcast axes stay
            columns = slice(k_start, k_end) if self.mask.shape[-1] > 1 else slice(None)
            piece = self.mask[..., rows, columns]  # (B|1, Hq|1, Qb|1, Kb|1)
            bias = _group_heads(to_additive(piece, self.acc_dtype), self.q_heads, self.kv_heads)
        block = (q_start, q_end, k_start, k_end, self.num_queries, self.num_keys)
        if self.predicate is not None and not self.plan.full[q_start // self.block, k_start // self.block]:
            piece = self.predicate.block(*block, batch=self.batch, heads=self.q_heads, device=device)
            bias = _add(bias, _group_heads(to_additive(piece, self.acc_dtype), self.q_heads, self.kv_heads))
        if self.alibi is not None:
            zeros = torch.zeros(
                1, self.q_heads, q_end - q_start, k_end - k_start, dtype=self.acc_dtype, device=device
            )
            penalty = self.alibi.block(
                zeros, q_start, k_start, self.num_queries, self.num_keys
            )  # (1, Hq, Qb, Kb)
            bias = _add(bias, _group_heads(penalty, self.q_heads, self.kv_heads))
        return bias

    def keep(self, shape: torch.Size, q_start: int, k_start: int, device: torch.device) -> torch.Tensor:
        """The block's dropout factors (0 or 1 / (1 - p)), redrawn identically in the backward pass."""
        generator = torch.Generator(device=device).manual_seed(self.seed + q_start * 1_000_003 + k_start)
        kept = torch.rand(shape, generator=generator, device=device) >= self.dropout_p
        return kept.to(self.acc_dtype) / (1 - self.dropout_p)


def _add(bias: torch.Tensor | None, more: torch.Tensor) -> torch.Tensor:
    """bias + more, where a None bias is nothing yet."""
    return more if bias is None else bias + more


def _group_heads(piece: torch.Tensor, q_heads: int, kv_heads: int) -> torch.Tensor:
    """A mask piece (B|1, Hq|1, Qb|1, Kb|1) -> (B|1, Hkv|1, G|1, Qb|1, Kb|1), matching the grouped scores."""
    if piece.shape[1] == q_heads:
        return piece.unflatten(1, (kv_heads, q_heads // kv_heads))  # (B|1, Hkv, G, Qb|1, Kb|1)
    return piece.unsqueeze(2)  # (B|1, 1, 1, Qb|1, Kb|1)


def _finite(row_max: torch.Tensor) -> torch.Tensor:
    """The running maximum with -inf (a row that sees no key yet) as 0, so that exp(-inf - 0) = 0."""
    return torch.where(row_max == float("-inf"), 0.0, row_max)


def _forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocks: _Blocks
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> out (B, Hq, Nq, Dv) in q's dtype; row_max m and row_sum l = Σ exp(score - m), (B, Hq, Nq) in
    the accumulation dtype (m = -inf and l = 0 for a query that sees no key)."""
    acc = blocks.acc_dtype
    out = q.new_zeros(*q.shape[:3], v.shape[-1], dtype=acc)  # (B, Hq, Nq, Dv)
    row_max = q.new_full(q.shape[:3], float("-inf"), dtype=acc)  # (B, Hq, Nq)
    row_sum = q.new_zeros(q.shape[:3], dtype=acc)  # (B, Hq, Nq)
    current: tuple[int, int] | None = None  # the query block (q_start, q_end)
    running: Running | None = None  # its (context, m, l) over the key blocks so far
    for q_start, q_end, k_start, k_end in blocks.pairs():
        if current != (q_start, q_end):  # a new block of queries
            if current is not None:
                _store(out, row_max, row_sum, running, blocks, *current)
            current = (q_start, q_end)
            q_rows = blocks.query_rows(q, q_start, q_end).to(blocks.score_dtype)  # (B, Hkv, G·Qb, Dh)
            running = None
        raw = q_rows @ k[:, :, k_start:k_end].to(blocks.score_dtype).transpose(-2, -1)  # (B, Hkv, G·Qb, Kb)
        scores = blocks.scores(raw, q_start, q_end, k_start, k_end)  # (B, Hkv, G·Qb, Kb)
        new_max = scores.amax(dim=-1) if running is None else torch.maximum(running[1], scores.amax(dim=-1))
        weights = scores.sub_(_finite(new_max)[..., None]).exp_()  # (B, Hkv, G·Qb, Kb), in [0, 1]
        applied = weights
        if blocks.dropout_p > 0:
            applied = weights * blocks.keep(weights.shape, q_start, k_start, weights.device)
        context = (applied.to(v.dtype) @ v[:, :, k_start:k_end]).to(acc)  # (B, Hkv, G·Qb, Dv)
        if running is None:
            running = (context, new_max, weights.sum(dim=-1))
        else:
            context_so_far, old_max, sum_so_far = running
            rescale = torch.exp(old_max - _finite(new_max))  # (B, Hkv, G·Qb): 0 where nothing was seen
            running = (
                context_so_far * rescale[..., None] + context,
                new_max,
                sum_so_far * rescale + weights.sum(dim=-1),
            )
    if current is not None:
        _store(out, row_max, row_sum, running, blocks, *current)
    return out.to(q.dtype), row_max, row_sum


def _store(
    out: torch.Tensor,
    row_max: torch.Tensor,
    row_sum: torch.Tensor,
    running: Running | None,
    blocks: _Blocks,
    q_start: int,
    q_end: int,
) -> None:
    """Write one query block's (context, m, l) (B, Hkv, G·Qb, ·) into out, row_max and row_sum."""
    assert running is not None  # a query block is stored after its first key block
    context, block_max, block_sum = running
    context = context / torch.where(block_sum == 0, 1.0, block_sum)[..., None]  # rows that see nothing: 0
    out[:, :, q_start:q_end] = blocks.heads_back(context, q_start, q_end)  # (B, Hq, Qb, Dv)
    row_max[:, :, q_start:q_end] = blocks.heads_back(block_max[..., None], q_start, q_end)[..., 0]
    row_sum[:, :, q_start:q_end] = blocks.heads_back(block_sum[..., None], q_start, q_end)[..., 0]


def _log_sum_exp(row_max: torch.Tensor, row_sum: torch.Tensor) -> torch.Tensor:
    """lse = m + log l (B, Hq, Nq); -inf where a query sees no key."""
    return torch.where(row_sum > 0, _finite(row_max) + row_sum.log(), float("-inf"))


def _backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    row_max: torch.Tensor,
    row_sum: torch.Tensor,
    d_out: torch.Tensor,
    d_lse: torch.Tensor,
    blocks: _Blocks,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FlashAttention-2's backward: per block, weights = exp(scores - m) / l and
    d_scores = weights · (d_weights - D + d_lse) with D = rowsum(d_out · out)."""
    acc = blocks.acc_dtype
    d_q = torch.zeros(q.shape, dtype=acc, device=q.device)  # (B, Hq, Nq, Dh)
    d_k = torch.zeros(k.shape, dtype=acc, device=k.device)  # (B, Hkv, Nk, Dh)
    d_v = torch.zeros(v.shape, dtype=acc, device=v.device)  # (B, Hkv, Nk, Dv)
    row_term = (d_out.to(acc) * out.to(acc)).sum(-1) - d_lse.to(acc)  # (B, Hq, Nq): D - d_lse
    shift = _finite(row_max)  # (B, Hq, Nq)
    inverse_sum = 1.0 / torch.where(row_sum == 0, 1.0, row_sum)  # (B, Hq, Nq)
    for q_start, q_end, k_start, k_end in blocks.pairs():
        q_rows = blocks.query_rows(q, q_start, q_end)  # (B, Hkv, G·Qb, Dh)
        d_out_rows = blocks.query_rows(d_out, q_start, q_end).to(q.dtype)  # (B, Hkv, G·Qb, Dv)
        k_block, v_block = k[:, :, k_start:k_end], v[:, :, k_start:k_end]  # (B, Hkv, Kb, Dh|Dv)
        raw = q_rows.to(blocks.score_dtype) @ k_block.to(blocks.score_dtype).transpose(
            -2, -1
        )  # (B, Hkv, G·Qb, Kb)
        scores = blocks.scores(raw, q_start, q_end, k_start, k_end)  # (B, Hkv, G·Qb, Kb)
        per_row = [blocks.query_rows(t[..., None], q_start, q_end) for t in (shift, inverse_sum, row_term)]
        row_shift, row_inverse, row = per_row  # each (B, Hkv, G·Qb, 1)
        weights = scores.sub_(row_shift).exp_().mul_(row_inverse)  # (B, Hkv, G·Qb, Kb): the forward's
        # In the accumulation dtype: rounded to bf16, d_weights would no longer cancel against D (float32)
        # where the softmax saturates, and d_scores would be pure rounding noise there.
        d_weights = d_out_rows.to(acc) @ v_block.to(acc).transpose(-2, -1)  # (B, Hkv, G·Qb, Kb)
        applied = weights
        if blocks.dropout_p > 0:
            keep = blocks.keep(raw.shape, q_start, k_start, raw.device)
            d_weights, applied = d_weights * keep, weights * keep
        d_v[:, :, k_start:k_end] += (applied.to(v.dtype).transpose(-2, -1) @ d_out_rows).to(
            acc
        )  # (B, Hkv, Kb, Dv)
        d_scores = (d_weights - row).mul_(weights).mul_(blocks.scale)  # (B, Hkv, G·Qb, Kb)
        d_scores = d_scores.to(q.dtype)  # the matmuls below run in the input dtype, accumulating in acc
        d_q_rows = (d_scores @ k_block).to(acc)  # (B, Hkv, G·Qb, Dh)
        d_q[:, :, q_start:q_end] += blocks.heads_back(d_q_rows, q_start, q_end)
        d_k[:, :, k_start:k_end] += (d_scores.transpose(-2, -1) @ q_rows).to(acc)  # (B, Hkv, Kb, Dh)
    return d_q.to(q.dtype), d_k.to(k.dtype), d_v.to(v.dtype)


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        predicate: Predicate | None,
        scale: float,
        dropout_p: float,
        block: int,
        seed: int,
        alibi: ALiBi | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = _Blocks(q, k, mask, predicate, scale, dropout_p, block, seed, alibi)
        out, row_max, row_sum = _forward(q, k, v, blocks)
        ctx.save_for_backward(q, k, v, out, row_max, row_sum)
        ctx.blocks = blocks
        return out, _log_sum_exp(row_max, row_sum)

    @staticmethod
    def backward(
        ctx: Any, d_out: torch.Tensor | None, d_lse: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        q, k, v, out, row_max, row_sum = ctx.saved_tensors
        d_out = torch.zeros_like(out) if d_out is None else d_out
        d_lse = torch.zeros_like(row_max) if d_lse is None else d_lse
        d_q, d_k, d_v = _backward(q, k, v, out, row_max, row_sum, d_out, d_lse, ctx.blocks)
        return d_q, d_k, d_v, None, None, None, None, None, None, None
