"""The chunked backend: attention block by block, in memory linear in the sequence length.

Forward: for each block of queries, attend to one block of keys at a time and merge the partial results
with `headwise.merge` (an online softmax); keep only out and lse = log Σ exp(scores) per query. Backward:
recompute each block's weights from (q, k, out, lse) as FlashAttention-2 does, so that training never holds
an (Nq, Nk) matrix. Blocks that a causal mask or a mask predicate rules out entirely are skipped.

Grouped-query heads are folded into the query rows: q (B, Hq, Nq, Dh) is viewed as (B, Hkv, G, Nq, Dh),
so each key/value head is multiplied once by all G query heads that share it, and k and v are never
repeated. Dropout draws each block's keep-mask from a generator seeded per block, so the backward pass
redraws the same masks.
"""

from __future__ import annotations

import torch

from ..masks import ALiBi, Predicate, causal, to_additive
from ..merge import merge
from .limits import flash_limits

BLOCK = 256  # queries and keys per block
CAUSAL = causal()


def unsupported(request) -> str | None:
    limit = flash_limits(request)
    if limit is not None:
        return limit
    if request.score_mod is not None and not isinstance(request.score_mod, ALiBi):
        return "apply a score modifier other than alibi (its gradient is not written yet)"
    return None


def attention(q, k, v, *, mask, causal, scale, dropout_p, return_weights, return_lse=False, score_mod=None):
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv) -> (out (B, Hq, Nq, Dv), None, lse)."""
    out, lse = attention_with_lse(
        q, k, v, mask=mask, causal=causal, scale=scale, dropout_p=dropout_p, alibi=score_mod
    )
    return out, None, (lse if return_lse else None)


def attention_with_lse(q, k, v, *, mask=None, causal=False, scale, dropout_p=0.0, block=BLOCK, alibi=None):
    """As `attention`, and lse (B, Hq, Nq): log Σ exp(scaled, masked scores), -inf for a query that sees
    no key. Both are differentiable (lse too, so that merged results train). alibi: a masks.alibi(slopes)
    whose distance penalty joins each block's bias."""
    seed = int(torch.randint(2**62, (1,)).item()) if dropout_p > 0 else 0  # from torch's RNG: reproducible
    return _ChunkedAttention.apply(q, k, v, mask, causal, scale, dropout_p, block, seed, alibi)


class _Blocks:
    """The fixed arguments of one call, and the pieces of it that each (query block, key block) needs."""

    def __init__(self, q, k, mask, causal, scale, dropout_p, block, seed, alibi=None):
        self.batch, self.q_heads, self.num_queries, _ = q.shape
        self.alibi = alibi
        self.kv_heads, self.num_keys = k.shape[1], k.shape[2]
        self.group = self.q_heads // self.kv_heads  # G
        self.predicate = mask if isinstance(mask, Predicate) else None
        if mask is not None and self.predicate is None:
            mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (B|1, Hq|1, Nq|1, Nk|1)
        self.mask = None if self.predicate is not None else mask
        self.causal, self.scale = causal, scale
        self.dropout_p, self.block, self.seed = dropout_p, block, seed
        self.acc_dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype

    def pairs(self):
        """(q_start, q_end, k_start, k_end) for every block pair a causal mask does not rule out."""
        shift = self.num_keys - self.num_queries  # bottom-right: query i sees keys j <= i + shift
        for q_start in range(0, self.num_queries, self.block):
            q_end = min(q_start + self.block, self.num_queries)
            last_key = self.num_keys if not self.causal else max(0, min(self.num_keys, q_end + shift))
            for k_start in range(0, last_key, self.block):
                k_end = min(k_start + self.block, self.num_keys)
                block = (q_start, q_end, k_start, k_end, self.num_queries, self.num_keys)
                if self.predicate is None or not self.predicate.block_is_empty(*block):
                    yield q_start, q_end, k_start, k_end

    def query_rows(self, x, q_start, q_end):
        """x (B, Hq, Nq, ·) -> the block's rows grouped by key/value head: (B, Hkv, G·Qb, ·)."""
        rows = x[:, :, q_start:q_end].unflatten(1, (self.kv_heads, self.group))  # (B, Hkv, G, Qb, ·)
        return rows.flatten(2, 3)  # (B, Hkv, G·Qb, ·)

    def heads_back(self, rows, q_start, q_end):
        """(B, Hkv, G·Qb, ·) -> (B, Hq, Qb, ·)."""
        return rows.unflatten(2, (self.group, q_end - q_start)).flatten(1, 2)  # (B, Hq, Qb, ·)

    def bias(self, q_start, q_end, k_start, k_end, device):
        """What the block adds to its scores: 0 where allowed, -inf where masked (plus a float mask), as
        one tensor broadcastable to (B, Hkv, G, Qb, Kb); None when nothing in the block is masked."""
        bias = None
        if self.mask is not None:
            rows = slice(q_start, q_end) if self.mask.shape[-2] > 1 else slice(None)  # broadcast axes stay
            columns = slice(k_start, k_end) if self.mask.shape[-1] > 1 else slice(None)
            piece = self.mask[..., rows, columns]  # (B|1, Hq|1, Qb|1, Kb|1)
            bias = _group_heads(to_additive(piece, self.acc_dtype), self.q_heads, self.kv_heads)
        block = (q_start, q_end, k_start, k_end, self.num_queries, self.num_keys)
        if self.predicate is not None and not self.predicate.block_is_full(*block):
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
        if self.causal and k_end - 1 > q_start + self.num_keys - self.num_queries:  # crosses the diagonal
            allowed = CAUSAL.block(*block, device=device)[0, 0]  # (Qb, Kb), never the whole (Nq, Nk)
            bias = _add(bias, to_additive(allowed, self.acc_dtype))
        return bias

    def keep(self, shape, q_start, k_start, device):
        """The block's dropout factors (0 or 1 / (1 - p)), redrawn identically in the backward pass."""
        generator = torch.Generator(device=device).manual_seed(self.seed + q_start * 1_000_003 + k_start)
        kept = torch.rand(shape, generator=generator, device=device) >= self.dropout_p
        return kept.to(self.acc_dtype) / (1 - self.dropout_p)


def _add(bias, more):
    return more if bias is None else bias + more


def _group_heads(piece, q_heads, kv_heads):
    """A mask piece (B|1, Hq|1, Qb|1, Kb|1) -> (B|1, Hkv|1, G|1, Qb|1, Kb|1), matching the grouped scores."""
    if piece.shape[1] == q_heads:
        return piece.unflatten(1, (kv_heads, q_heads // kv_heads))  # (B|1, Hkv, G, Qb|1, Kb|1)
    return piece.unsqueeze(2)  # (B|1, 1, 1, Qb|1, Kb|1)


def _softmax_block(raw, scale: float, bias, group: int, acc_dtype: torch.dtype):
    """One block's unnormalised softmax. raw scores (B, Hkv, G·Qb, Kb) from the matmul, bias as from
    `_Blocks.bias` -> weights exp(scores - max) (B, Hkv, G·Qb, Kb), max and total (B, Hkv, G·Qb).

    A row with no visible key gets weights 0, max 0 and total 0."""
    scores = raw.to(acc_dtype) * scale  # (B, Hkv, G·Qb, Kb), a new tensor: the steps below work in place
    if bias is not None:
        scores.unflatten(2, (group, -1)).add_(bias)  # masked: -inf where not allowed
    row_max = scores.amax(dim=-1)  # (B, Hkv, G·Qb)
    row_max = torch.where(row_max == float("-inf"), 0.0, row_max)
    weights = scores.sub_(row_max[..., None]).exp_()  # (B, Hkv, G·Qb, Kb), in [0, 1]
    return weights, row_max, weights.sum(dim=-1)


def _grad_block(raw, scale: float, bias, group: int, lse, d_weights, row):
    """One block's backward: weights = exp(scores - lse) and d_scores = weights · (d_weights - row) · scale,
    both (B, Hkv, G·Qb, Kb) in d_weights' dtype; lse and row (B, Hkv, G·Qb)."""
    scores = (
        raw.to(d_weights.dtype) * scale
    )  # (B, Hkv, G·Qb, Kb), a new tensor: the steps below work in place
    if bias is not None:
        scores.unflatten(2, (group, -1)).add_(bias)
    weights = scores.sub_(torch.where(lse == float("-inf"), 0.0, lse)[..., None]).exp_()
    return weights, (d_weights - row[..., None]).mul_(weights).mul_(scale)


def _forward(q, k, v, blocks: _Blocks):
    """-> out (B, Hq, Nq, Dv) in q's dtype, lse (B, Hq, Nq) in the accumulation dtype."""
    out = q.new_zeros(*q.shape[:3], v.shape[-1], dtype=blocks.acc_dtype)  # (B, Hq, Nq, Dv)
    lse = q.new_full(q.shape[:3], float("-inf"), dtype=blocks.acc_dtype)  # (B, Hq, Nq)
    out_rows, lse_rows, current = None, None, None
    for q_start, q_end, k_start, k_end in blocks.pairs():
        if current != (q_start, q_end):  # a new block of queries
            if current is not None:
                _store(out, lse, out_rows, lse_rows, blocks, *current)
            current = (q_start, q_end)
            q_rows = blocks.query_rows(q, q_start, q_end)  # (B, Hkv, G·Qb, Dh)
            out_rows = lse_rows = None
        raw = q_rows @ k[:, :, k_start:k_end].transpose(-2, -1)  # (B, Hkv, G·Qb, Kb)
        bias = blocks.bias(q_start, q_end, k_start, k_end, raw.device)
        weights, row_max, total = _softmax_block(raw, blocks.scale, bias, blocks.group, blocks.acc_dtype)
        if blocks.dropout_p > 0:
            weights = weights * blocks.keep(weights.shape, q_start, k_start, weights.device)
        block_out = (weights.to(v.dtype) @ v[:, :, k_start:k_end]).to(blocks.acc_dtype)  # (B, Hkv, G·Qb, Dv)
        block_out = block_out / torch.where(total == 0, 1.0, total)[..., None]
        block_lse = row_max + total.log()  # (B, Hkv, G·Qb); -inf where the row sees nothing
        if out_rows is None:
            out_rows, lse_rows = block_out, block_lse
        else:
            out_rows, lse_rows = merge(out_rows, lse_rows, block_out, block_lse)
    if current is not None:
        _store(out, lse, out_rows, lse_rows, blocks, *current)
    return out.to(q.dtype), lse


def _store(out, lse, out_rows, lse_rows, blocks, q_start, q_end):
    out[:, :, q_start:q_end] = blocks.heads_back(out_rows, q_start, q_end)  # (B, Hq, Qb, Dv)
    lse[:, :, q_start:q_end] = blocks.heads_back(lse_rows[..., None], q_start, q_end)[..., 0]  # (B, Hq, Qb)


def _backward(q, k, v, out, lse, d_out, d_lse, blocks: _Blocks):
    """FlashAttention-2's backward: per block, weights = exp(scores - lse) and
    d_scores = weights · (d_weights - D + d_lse) with D = rowsum(d_out · out)."""
    acc = blocks.acc_dtype
    d_q = torch.zeros(q.shape, dtype=acc, device=q.device)  # (B, Hq, Nq, Dh)
    d_k = torch.zeros(k.shape, dtype=acc, device=k.device)  # (B, Hkv, Nk, Dh)
    d_v = torch.zeros(v.shape, dtype=acc, device=v.device)  # (B, Hkv, Nk, Dv)
    row_term = (d_out.to(acc) * out.to(acc)).sum(-1) - d_lse.to(acc)  # (B, Hq, Nq): D - d_lse
    for q_start, q_end, k_start, k_end in blocks.pairs():
        q_rows = blocks.query_rows(q, q_start, q_end)  # (B, Hkv, G·Qb, Dh)
        d_out_rows = blocks.query_rows(d_out, q_start, q_end).to(q.dtype)  # (B, Hkv, G·Qb, Dv)
        k_block, v_block = k[:, :, k_start:k_end], v[:, :, k_start:k_end]  # (B, Hkv, Kb, Dh|Dv)
        raw = q_rows @ k_block.transpose(-2, -1)  # (B, Hkv, G·Qb, Kb)
        bias = blocks.bias(q_start, q_end, k_start, k_end, raw.device)
        d_weights = (d_out_rows @ v_block.transpose(-2, -1)).to(acc)  # (B, Hkv, G·Qb, Kb)
        keep = blocks.keep(raw.shape, q_start, k_start, raw.device) if blocks.dropout_p > 0 else None
        if keep is not None:
            d_weights = d_weights * keep
        row_lse = blocks.query_rows(lse[..., None], q_start, q_end)[..., 0]  # (B, Hkv, G·Qb)
        row = blocks.query_rows(row_term[..., None], q_start, q_end)[..., 0]  # (B, Hkv, G·Qb)
        weights, d_scores = _grad_block(raw, blocks.scale, bias, blocks.group, row_lse, d_weights, row)
        applied = weights if keep is None else weights * keep
        d_v[:, :, k_start:k_end] += (applied.to(v.dtype).transpose(-2, -1) @ d_out_rows).to(
            acc
        )  # (B, Hkv, Kb, Dv)
        d_scores = d_scores.to(q.dtype)  # the matmuls below run in the input dtype, accumulating in acc
        d_q_rows = (d_scores @ k_block).to(acc)  # (B, Hkv, G·Qb, Dh)
        d_q[:, :, q_start:q_end] += blocks.heads_back(d_q_rows, q_start, q_end)
        d_k[:, :, k_start:k_end] += (d_scores.transpose(-2, -1) @ q_rows).to(acc)  # (B, Hkv, Kb, Dh)
    return d_q.to(q.dtype), d_k.to(k.dtype), d_v.to(v.dtype)


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, causal, scale, dropout_p, block, seed, alibi):
        blocks = _Blocks(q, k, mask, causal, scale, dropout_p, block, seed, alibi)
        out, lse = _forward(q, k, v, blocks)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.blocks = blocks
        return out, lse

    @staticmethod
    def backward(ctx, d_out, d_lse):
        q, k, v, out, lse = ctx.saved_tensors
        d_out = torch.zeros_like(out) if d_out is None else d_out
        d_lse = torch.zeros_like(lse) if d_lse is None else d_lse
        d_q, d_k, d_v = _backward(q, k, v, out, lse, d_out, d_lse, ctx.blocks)
        return d_q, d_k, d_v, None, None, None, None, None, None, None
