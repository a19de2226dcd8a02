"""The Triton kernels: FlashAttention-2's forward and backward, as @triton.jit code (kernels.py runs them).

Importing this module imports Triton and decorates the kernels: with TRITON_INTERPRET=1 set at that moment
they become Triton's CPU interpreter's functions (numpy, for tests without a GPU), otherwise GPU kernels.
`INTERPRETED` records which.

Layout: q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv), any strides with the last one 1; a
query head h reads key/value head h // G (G = Hq / Hkv), so k and v are never repeated. Each program holds
a tile of BLOCK_M queries (or BLOCK_N keys) and streams the other side block by block; head widths are
padded to powers of two >= 16 (BLOCK_D, BLOCK_DV) with masked loads, so any Dh and Dv work.

Forward (one program per query block and query head): the online softmax. For each key block,
s = q·kᵀ·scale, then the score modifiers (ALiBi, softcap), then the mask (-inf), then
m_new = max(m_i, rowmax(s)), p = exp(s - m_new), l_i = l_i·exp(m_i - m_new) + rowsum(p),
acc = acc·exp(m_i - m_new) + p·v. At the end out = acc / l_i and lse = m_i + log(l_i), which the backward
and `headwise.attention_weights` use. A query that sees no key keeps m_i = -inf, l_i = 0: out 0, lse -inf.

Backward: delta = rowsum(dO ∘ O) - d_lse (one small kernel), then per block p = exp(s - lse),
dV += pᵀ·dO, dP = dO·vᵀ, dS = p ∘ (dP - delta), dK += dSᵀ·q·scale, dQ += dS·k·scale. One kernel
holds a key block of one key/value head and loops over the query blocks of all G query heads that share it
(dK, dV without atomics); dQ comes either from atomic adds in that same kernel (fast, not bitwise
reproducible: the order of the float additions varies) or, with `deterministic`, from a second kernel that
holds a query block and loops over the key blocks (recomputing s and dP once more).

The mask is compiled in: constexpr flags say which kinds are present and scalars/tensors carry their
parameters. WINDOW: keys own - left <= j <= own + right, own = i + Nk - Nq (causal is left = inf,
right = 0). RANGES: per query a key interval [lo, hi) (key padding, packed documents), and per key the
query interval that sees it, which bounds the loops. DOCS: document ids compared elementwise (unsorted ids).
MASK: a dense mask read through its strides (0 on broadcast axes): 1 = bool (uint8, 1 = may attend),
2 = float (added). Score modifiers: ALIBI 1 before a softcap, 2 after (or alone); SOFTCAP.
Dropout draws keep = rand(seed, ((b·Hq + h)·Nq + i)·Nk + j) >= p (Philox, tl.rand), the same numbers in the
forward and the backward whatever the block sizes.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

NO_SPECIALIZE = ["seed", "dropout_p", "window_left", "window_right"]


# Device functions -----------------------------------------------------------------------------------------


@triton.jit
def _tanh(x):
    """tanh(x) from exp(-2|x|) <= 1: no overflow; absolute error of a few ulps of 1."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _alibi(s, offs_m, offs_n, shift, slope):
    """s (M, N) - slope · |i + Nk - Nq - j|."""
    distance = tl.abs(offs_m[:, None] + shift - offs_n[None, :])  # (M, N)
    return s - slope * distance.to(s.dtype)


@triton.jit
def _scores(
    q,
    k_t,
    offs_m,
    offs_n,
    b,
    h,
    scale,
    slope,
    softcap,
    RowLo,
    RowHi,
    QDoc,
    KDoc,
    Mask,
    stride_mb,
    stride_mh,
    stride_mq,
    stride_mk,
    num_queries,
    num_keys,
    window_left,
    window_right,
    WINDOW: tl.constexpr,
    RANGES: tl.constexpr,
    DOCS: tl.constexpr,
    MASK: tl.constexpr,
    ALIBI: tl.constexpr,
    SOFTCAP: tl.constexpr,
    ACC: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """q (M, D), k_t (D, N) -> s (M, N) scaled, modified and masked (-inf where a query may not see a key),
    and t (M, N) = tanh of the softcap (its derivative is 1 - t²; t = s when there is no softcap)."""
    s = tl.dot(q, k_t, input_precision=PRECISION, out_dtype=ACC) * scale  # (M, N)
    shift = num_keys - num_queries  # bottom-right: query i stands at key position i + shift
    if ALIBI == 1:
        s = _alibi(s, offs_m, offs_n, shift, slope)
    t = s
    if SOFTCAP:
        t = _tanh(s / softcap)
        s = softcap * t
    if ALIBI == 2:
        s = _alibi(s, offs_m, offs_n, shift, slope)
    allowed = (offs_m[:, None] < num_queries) & (offs_n[None, :] < num_keys)  # (M, N)
    if WINDOW:
        own = offs_m[:, None] + shift  # (M, 1)
        allowed = allowed & (offs_n[None, :] >= own - window_left) & (offs_n[None, :] <= own + window_right)
    if RANGES:
        rows = b * num_queries + offs_m
        lo = tl.load(RowLo + rows, mask=offs_m < num_queries, other=0)  # (M,)
        hi = tl.load(RowHi + rows, mask=offs_m < num_queries, other=0)
        allowed = allowed & (offs_n[None, :] >= lo[:, None]) & (offs_n[None, :] < hi[:, None])
    if DOCS:
        q_doc = tl.load(QDoc + b * num_queries + offs_m, mask=offs_m < num_queries, other=-1)  # (M,)
        k_doc = tl.load(KDoc + b * num_keys + offs_n, mask=offs_n < num_keys, other=-2)  # (N,)
        allowed = allowed & (q_doc[:, None] == k_doc[None, :])
    if MASK != 0:
        inside = (offs_m[:, None] < num_queries) & (offs_n[None, :] < num_keys)
        ptrs = (
            Mask
            + b.to(tl.int64) * stride_mb
            + h.to(tl.int64) * stride_mh
            + offs_m[:, None].to(tl.int64) * stride_mq
            + offs_n[None, :] * stride_mk
        )  # (M, N)
        if MASK == 1:
            allowed = allowed & (tl.load(ptrs, mask=inside, other=0) != 0)
        else:
            s = s + tl.load(ptrs, mask=inside, other=0.0).to(ACC)
    return tl.where(allowed, s, float("-inf")), t


@triton.jit
def _kept(seed, bh, offs_m, offs_n, num_queries, num_keys, dropout_p, inverse_keep):
    """The dropout factors of a tile (M, N): 1 / (1 - p) where kept, 0 where dropped."""
    offsets = (bh.to(tl.int64) * num_queries + offs_m[:, None]) * num_keys + offs_n[None, :]  # (M, N)
    return tl.where(tl.rand(seed, offsets) >= dropout_p, inverse_keep, 0.0)


@triton.jit
def _key_range(
    start_m,
    b,
    RowLo,
    RowHi,
    num_queries,
    num_keys,
    window_left,
    window_right,
    WINDOW: tl.constexpr,
    RANGES: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """The keys [lo, hi) that queries [start_m, start_m + BLOCK_M) may see, lo a multiple of BLOCK_N."""
    lo = tl.zeros([], tl.int32)  # tensors, never constexprs (Triton turns an argument equal to 1 into one)
    hi = lo + num_keys
    if WINDOW:
        shift = num_keys - num_queries
        lo = tl.maximum(start_m + shift - window_left, 0)
        hi = tl.minimum(start_m + BLOCK_M - 1 + shift + window_right + 1, num_keys)
    if RANGES:
        offs_m = start_m + tl.arange(0, BLOCK_M)
        rows = b * num_queries + offs_m
        lo = tl.maximum(lo, tl.min(tl.load(RowLo + rows, mask=offs_m < num_queries, other=num_keys), 0))
        hi = tl.minimum(hi, tl.max(tl.load(RowHi + rows, mask=offs_m < num_queries, other=0), 0))
    return lo // BLOCK_N * BLOCK_N, hi


@triton.jit
def _query_range(
    start_n,
    b,
    ColLo,
    ColHi,
    num_queries,
    num_keys,
    window_left,
    window_right,
    WINDOW: tl.constexpr,
    RANGES: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """The queries [lo, hi) that may see keys [start_n, start_n + BLOCK_N), lo a multiple of BLOCK_M."""
    lo = tl.zeros([], tl.int32)
    hi = lo + num_queries
    if WINDOW:
        shift = num_keys - num_queries  # key j is seen by queries i with j - right <= i + shift <= j + left
        lo = tl.maximum(start_n - window_right - shift, 0)
        hi = tl.minimum(start_n + BLOCK_N - 1 + window_left - shift + 1, num_queries)
    if RANGES:
        offs_n = start_n + tl.arange(0, BLOCK_N)
        cols = b * num_keys + offs_n
        lo = tl.maximum(lo, tl.min(tl.load(ColLo + cols, mask=offs_n < num_keys, other=num_queries), 0))
        hi = tl.minimum(hi, tl.max(tl.load(ColHi + cols, mask=offs_n < num_keys, other=0), 0))
    return lo // BLOCK_M * BLOCK_M, hi


# Kernels --------------------------------------------------------------------------------------------------
# Every kernel takes the same tail of arguments after its own tensors and strides (see kernels.py's
# `_Call.common`).


@triton.jit(do_not_specialize=NO_SPECIALIZE)
def attention_forward(
    Q,
    K,
    V,
    Out,
    Lse,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    Params,
    Slopes,
    RowLo,
    RowHi,
    ColLo,
    ColHi,
    QDoc,
    KDoc,
    Mask,
    stride_mb,
    stride_mh,
    stride_mq,
    stride_mk,
    num_heads,
    group,
    num_queries,
    num_keys,
    head_dim,
    value_dim,
    window_left,
    window_right,
    dropout_p,
    seed,
    WINDOW: tl.constexpr,
    RANGES: tl.constexpr,
    DOCS: tl.constexpr,
    MASK: tl.constexpr,
    ALIBI: tl.constexpr,
    SOFTCAP: tl.constexpr,
    DROPOUT: tl.constexpr,
    ACC: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """Out (B, Hq, Nq, Dv) and Lse (B, Hq, Nq) (contiguous) for one block of queries of one head."""
    query_blocks = tl.cdiv(num_queries, BLOCK_M)
    start_m = (tl.program_id(0) % query_blocks) * BLOCK_M
    bh = tl.program_id(0) // query_blocks  # b · Hq + h
    b = bh // num_heads
    h = bh % num_heads
    kv_head = h // group
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    Q += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    K += b.to(tl.int64) * stride_kb + kv_head.to(tl.int64) * stride_kh
    V += b.to(tl.int64) * stride_vb + kv_head.to(tl.int64) * stride_vh
    q = tl.load(
        Q + offs_m[:, None] * stride_qn + offs_d[None, :],
        mask=(offs_m[:, None] < num_queries) & (offs_d[None, :] < head_dim),
        other=0.0,
    )  # (M, D)
    scale = tl.load(Params).to(ACC)
    softcap = tl.load(Params + 1).to(ACC)
    inverse_keep = tl.load(Params + 2).to(ACC)
    slope = tl.load(Slopes + h).to(ACC) if ALIBI != 0 else 0.0

    m_i = tl.full([BLOCK_M], float("-inf"), ACC)  # running row maximum
    l_i = tl.zeros([BLOCK_M], ACC)  # running row sum of exp(s - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], ACC)  # running Σ p · v
    lo, hi = _key_range(
        start_m, b, RowLo, RowHi, num_queries, num_keys, window_left, window_right, WINDOW, RANGES,
        BLOCK_M, BLOCK_N,
    )  # fmt: skip
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_t = tl.load(
            K + offs_n[None, :] * stride_kn + offs_d[:, None],
            mask=(offs_n[None, :] < num_keys) & (offs_d[:, None] < head_dim),
            other=0.0,
        )  # (D, N)
        s, _ = _scores(
            q, k_t, offs_m, offs_n, b, h, scale, slope, softcap, RowLo, RowHi, QDoc, KDoc, Mask,
            stride_mb, stride_mh, stride_mq, stride_mk, num_queries, num_keys, window_left, window_right,
            WINDOW, RANGES, DOCS, MASK, ALIBI, SOFTCAP, ACC, PRECISION,
        )  # fmt: skip
        m_new = tl.maximum(m_i, tl.max(s, 1))  # (M,)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen nothing yet: no NaN
        alpha = tl.exp(m_i - m_safe)  # (M,): rescales what was summed under the old maximum
        p = tl.exp(s - m_safe[:, None])  # (M, N)
        l_i = l_i * alpha + tl.sum(p, 1)
        if DROPOUT:
            p = p * _kept(seed, bh, offs_m, offs_n, num_queries, num_keys, dropout_p, inverse_keep)
        v = tl.load(
            V + offs_n[:, None] * stride_vn + offs_dv[None, :],
            mask=(offs_n[:, None] < num_keys) & (offs_dv[None, :] < value_dim),
            other=0.0,
        )  # (N, DV)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION, out_dtype=ACC)
        m_i = m_new

    seen = l_i > 0.0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]  # (M, DV)
    lse = tl.where(
        seen, tl.where(m_i == float("-inf"), 0.0, m_i) + tl.log(tl.where(seen, l_i, 1.0)), float("-inf")
    )
    rows = bh * num_queries + offs_m  # Out and Lse are contiguous
    tl.store(
        Out + rows[:, None].to(tl.int64) * value_dim + offs_dv[None, :],
        out.to(Out.dtype.element_ty),
        mask=(offs_m[:, None] < num_queries) & (offs_dv[None, :] < value_dim),
    )
    tl.store(Lse + rows, lse, mask=offs_m < num_queries)


@triton.jit
def attention_backward_delta(
    Out,
    DOut,
    DLse,
    Delta,
    rows_total,
    value_dim,
    ACC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """Delta = rowsum(dO ∘ O) - d_lse over rows (B·Hq·Nq,) of the contiguous Out and DOut."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    inside = (rows[:, None] < rows_total) & (offs_dv[None, :] < value_dim)
    ptrs = rows[:, None].to(tl.int64) * value_dim + offs_dv[None, :]  # (M, DV)
    out = tl.load(Out + ptrs, mask=inside, other=0.0).to(ACC)
    d_out = tl.load(DOut + ptrs, mask=inside, other=0.0).to(ACC)
    d_lse = tl.load(DLse + rows, mask=rows < rows_total, other=0.0).to(ACC)
    tl.store(Delta + rows, tl.sum(out * d_out, 1) - d_lse, mask=rows < rows_total)


@triton.jit(do_not_specialize=NO_SPECIALIZE)
def attention_backward_dk_dv(
    Q,
    K,
    V,
    DOut,
    Lse,
    Delta,
    DK,
    DV,
    DQ,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    Params,
    Slopes,
    RowLo,
    RowHi,
    ColLo,
    ColHi,
    QDoc,
    KDoc,
    Mask,
    stride_mb,
    stride_mh,
    stride_mq,
    stride_mk,
    num_heads,
    group,
    num_queries,
    num_keys,
    head_dim,
    value_dim,
    window_left,
    window_right,
    dropout_p,
    seed,
    WINDOW: tl.constexpr,
    RANGES: tl.constexpr,
    DOCS: tl.constexpr,
    MASK: tl.constexpr,
    ALIBI: tl.constexpr,
    SOFTCAP: tl.constexpr,
    DROPOUT: tl.constexpr,
    ACC: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
):
    """dK (B, Hkv, Nk, Dh) and dV (B, Hkv, Nk, Dv) for one block of keys of one key/value head, summed
    over its G query heads; with ATOMIC_DQ also adds each tile's dQ into DQ (B, Hq, Nq, Dh) (float32, or
    float64 for float64 inputs).
    DOut (B, Hq, Nq, Dv), DK, DV and DQ are contiguous; Lse and Delta (B, Hq, Nq) too."""
    key_blocks = tl.cdiv(num_keys, BLOCK_N)
    start_n = (tl.program_id(0) % key_blocks) * BLOCK_N
    b_kv = tl.program_id(0) // key_blocks  # b · Hkv + kv_head
    kv_heads = num_heads // group
    b = b_kv // kv_heads
    kv_head = b_kv % kv_heads
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    K += b.to(tl.int64) * stride_kb + kv_head.to(tl.int64) * stride_kh
    V += b.to(tl.int64) * stride_vb + kv_head.to(tl.int64) * stride_vh
    k = tl.load(
        K + offs_n[:, None] * stride_kn + offs_d[None, :],
        mask=(offs_n[:, None] < num_keys) & (offs_d[None, :] < head_dim),
        other=0.0,
    )  # (N, D)
    v = tl.load(
        V + offs_n[:, None] * stride_vn + offs_dv[None, :],
        mask=(offs_n[:, None] < num_keys) & (offs_dv[None, :] < value_dim),
        other=0.0,
    )  # (N, DV)
    scale = tl.load(Params).to(ACC)
    softcap = tl.load(Params + 1).to(ACC)
    inverse_keep = tl.load(Params + 2).to(ACC)
    d_k = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    d_v = tl.zeros([BLOCK_N, BLOCK_DV], ACC)
    lo, hi = _query_range(
        start_n, b, ColLo, ColHi, num_queries, num_keys, window_left, window_right, WINDOW, RANGES,
        BLOCK_M, BLOCK_N,
    )  # fmt: skip
    for g in range(0, group):
        h = kv_head * group + g
        bh = b * num_heads + h
        Q_h = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
        slope = tl.load(Slopes + h).to(ACC) if ALIBI != 0 else 0.0
        for start_m in range(lo, hi, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            rows = bh * num_queries + offs_m  # (M,) into the contiguous (B·Hq·Nq) rows
            q = tl.load(
                Q_h + offs_m[:, None] * stride_qn + offs_d[None, :],
                mask=(offs_m[:, None] < num_queries) & (offs_d[None, :] < head_dim),
                other=0.0,
            )  # (M, D)
            d_out = tl.load(
                DOut + rows[:, None].to(tl.int64) * value_dim + offs_dv[None, :],
                mask=(offs_m[:, None] < num_queries) & (offs_dv[None, :] < value_dim),
                other=0.0,
            )  # (M, DV)
            lse = tl.load(Lse + rows, mask=offs_m < num_queries, other=0.0)  # (M,)
            delta = tl.load(Delta + rows, mask=offs_m < num_queries, other=0.0)  # (M,)
            s, t = _scores(
                q, tl.trans(k), offs_m, offs_n, b, h, scale, slope, softcap, RowLo, RowHi, QDoc, KDoc, Mask,
                stride_mb, stride_mh, stride_mq, stride_mk, num_queries, num_keys, window_left, window_right,
                WINDOW, RANGES, DOCS, MASK, ALIBI, SOFTCAP, ACC, PRECISION,
            )  # fmt: skip
            p = tl.exp(s - tl.where(lse == float("-inf"), 0.0, lse)[:, None])  # (M, N), the softmax weights
            d_p = tl.dot(d_out, tl.trans(v), input_precision=PRECISION, out_dtype=ACC)  # (M, N)
            if DROPOUT:
                kept = _kept(seed, bh, offs_m, offs_n, num_queries, num_keys, dropout_p, inverse_keep)
                d_v += tl.dot(
                    tl.trans((p * kept).to(v.dtype)), d_out, input_precision=PRECISION, out_dtype=ACC
                )
                d_p = d_p * kept
            else:
                d_v += tl.dot(tl.trans(p.to(v.dtype)), d_out, input_precision=PRECISION, out_dtype=ACC)
            d_s = p * (d_p - delta[:, None])  # (M, N): the gradient of the modified, scaled scores
            if SOFTCAP:
                d_s = d_s * (1.0 - t * t)
            d_s = (d_s * scale).to(q.dtype)  # the gradient of q·kᵀ
            d_k += tl.dot(tl.trans(d_s), q, input_precision=PRECISION, out_dtype=ACC)  # (N, D)
            if ATOMIC_DQ:
                d_q = tl.dot(d_s, k, input_precision=PRECISION, out_dtype=ACC)  # (M, D)
                tl.atomic_add(
                    DQ + rows[:, None].to(tl.int64) * head_dim + offs_d[None, :],
                    d_q.to(DQ.dtype.element_ty),
                    mask=(offs_m[:, None] < num_queries) & (offs_d[None, :] < head_dim),
                )
    rows_kv = b_kv * num_keys + offs_n  # (N,) into the contiguous (B·Hkv·Nk) rows
    tl.store(
        DK + rows_kv[:, None].to(tl.int64) * head_dim + offs_d[None, :],
        d_k.to(DK.dtype.element_ty),
        mask=(offs_n[:, None] < num_keys) & (offs_d[None, :] < head_dim),
    )
    tl.store(
        DV + rows_kv[:, None].to(tl.int64) * value_dim + offs_dv[None, :],
        d_v.to(DV.dtype.element_ty),
        mask=(offs_n[:, None] < num_keys) & (offs_dv[None, :] < value_dim),
    )


@triton.jit(do_not_specialize=NO_SPECIALIZE)
def attention_backward_dq(
    Q,
    K,
    V,
    DOut,
    Lse,
    Delta,
    DQ,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    Params,
    Slopes,
    RowLo,
    RowHi,
    ColLo,
    ColHi,
    QDoc,
    KDoc,
    Mask,
    stride_mb,
    stride_mh,
    stride_mq,
    stride_mk,
    num_heads,
    group,
    num_queries,
    num_keys,
    head_dim,
    value_dim,
    window_left,
    window_right,
    dropout_p,
    seed,
    WINDOW: tl.constexpr,
    RANGES: tl.constexpr,
    DOCS: tl.constexpr,
    MASK: tl.constexpr,
    ALIBI: tl.constexpr,
    SOFTCAP: tl.constexpr,
    DROPOUT: tl.constexpr,
    ACC: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):
    """dQ (B, Hq, Nq, Dh), contiguous, for one block of queries of one head: the deterministic path."""
    query_blocks = tl.cdiv(num_queries, BLOCK_M)
    start_m = (tl.program_id(0) % query_blocks) * BLOCK_M
    bh = tl.program_id(0) // query_blocks
    b = bh // num_heads
    h = bh % num_heads
    kv_head = h // group
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    rows = bh * num_queries + offs_m
    Q += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    K += b.to(tl.int64) * stride_kb + kv_head.to(tl.int64) * stride_kh
    V += b.to(tl.int64) * stride_vb + kv_head.to(tl.int64) * stride_vh
    q = tl.load(
        Q + offs_m[:, None] * stride_qn + offs_d[None, :],
        mask=(offs_m[:, None] < num_queries) & (offs_d[None, :] < head_dim),
        other=0.0,
    )  # (M, D)
    d_out = tl.load(
        DOut + rows[:, None].to(tl.int64) * value_dim + offs_dv[None, :],
        mask=(offs_m[:, None] < num_queries) & (offs_dv[None, :] < value_dim),
        other=0.0,
    )  # (M, DV)
    lse = tl.load(Lse + rows, mask=offs_m < num_queries, other=0.0)
    lse = tl.where(lse == float("-inf"), 0.0, lse)  # (M,)
    delta = tl.load(Delta + rows, mask=offs_m < num_queries, other=0.0)  # (M,)
    scale = tl.load(Params).to(ACC)
    softcap = tl.load(Params + 1).to(ACC)
    inverse_keep = tl.load(Params + 2).to(ACC)
    slope = tl.load(Slopes + h).to(ACC) if ALIBI != 0 else 0.0
    d_q = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    lo, hi = _key_range(
        start_m, b, RowLo, RowHi, num_queries, num_keys, window_left, window_right, WINDOW, RANGES,
        BLOCK_M, BLOCK_N,
    )  # fmt: skip
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_t = tl.load(
            K + offs_n[None, :] * stride_kn + offs_d[:, None],
            mask=(offs_n[None, :] < num_keys) & (offs_d[:, None] < head_dim),
            other=0.0,
        )  # (D, N)
        v_t = tl.load(
            V + offs_n[None, :] * stride_vn + offs_dv[:, None],
            mask=(offs_n[None, :] < num_keys) & (offs_dv[:, None] < value_dim),
            other=0.0,
        )  # (DV, N)
        s, t = _scores(
            q, k_t, offs_m, offs_n, b, h, scale, slope, softcap, RowLo, RowHi, QDoc, KDoc, Mask,
            stride_mb, stride_mh, stride_mq, stride_mk, num_queries, num_keys, window_left, window_right,
            WINDOW, RANGES, DOCS, MASK, ALIBI, SOFTCAP, ACC, PRECISION,
        )  # fmt: skip
        p = tl.exp(s - lse[:, None])  # (M, N)
        d_p = tl.dot(d_out, v_t, input_precision=PRECISION, out_dtype=ACC)  # (M, N)
        if DROPOUT:
            d_p = d_p * _kept(seed, bh, offs_m, offs_n, num_queries, num_keys, dropout_p, inverse_keep)
        d_s = p * (d_p - delta[:, None])
        if SOFTCAP:
            d_s = d_s * (1.0 - t * t)
        d_s = (d_s * scale).to(q.dtype)  # (M, N): the gradient of q·kᵀ
        d_q += tl.dot(d_s, tl.trans(k_t), input_precision=PRECISION, out_dtype=ACC)  # (M, D)
    tl.store(
        DQ + rows[:, None].to(tl.int64) * head_dim + offs_d[None, :],
        d_q.to(DQ.dtype.element_ty),
        mask=(offs_m[:, None] < num_queries) & (offs_d[None, :] < head_dim),
    )


INTERPRETED = isinstance(attention_forward, InterpretedFunction)  # how the decorators above built the kernels
