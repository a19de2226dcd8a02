"""MultiHeadAttention in float32 and bfloat16 held to its own float64 copy by the ratio rule.

The baseline wires the module by hand (F.linear, reshapes, output projection) around the same attention
backend the module picks (sdpa): the attention kernels are held to the oracle in test_attention.py, and
here the ratio rule checks the module's own computation. (With a naive attention in the baseline the
rule would instead measure torch's fused CPU backward, which sums the value gradient over many queries
less accurately than a matmul: with Nq = 97, Nk = 1, its dv error is about 4x the textbook one.)"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from oracle import assert_by_ratio

import headwise
from headwise.backends import tuning

EMBED, HEADS = 32, 4


def textbook_module(mha: headwise.MultiHeadAttention, query, key, padding, causal):
    """The module's computation with plain torch ops in the input dtype (the baseline)."""
    sizes = [mha.num_heads * mha.head_dim, mha.num_kv_heads * mha.head_dim, mha.num_kv_heads * mha.head_dim]
    w_q, w_k, w_v = mha.in_proj_weight.split(sizes)
    b_q, b_k, b_v = mha.in_proj_bias.split(sizes)
    q = F.linear(query, w_q, b_q).unflatten(-1, (mha.num_heads, -1)).transpose(1, 2)  # (B, Hq, Nq, Dh)
    k = F.linear(key, w_k, b_k).unflatten(-1, (mha.num_kv_heads, -1)).transpose(1, 2)  # (B, Hkv, Nk, Dh)
    v = F.linear(key, w_v, b_v).unflatten(-1, (mha.num_kv_heads, -1)).transpose(1, 2)  # (B, Hkv, Nk, Dh)
    mask = None if padding is None else padding[:, None, None, :]  # (B, 1, 1, Nk)
    context = headwise.attention(q, k, v, mask=mask, causal=causal, backend="sdpa")  # (B, Hq, Nq, Dh)
    return mha.out_proj(context.transpose(1, 2).flatten(2))  # (B, Nq, D)


CASES = [
    pytest.param(dtype, nq, nk, kv_heads, masks, id=f"{str(dtype)[6:]}-{nq}x{nk}-kv{kv_heads}-{masks}")
    for dtype, (nq, nk), kv_heads, masks in itertools.product(
        (torch.float32, torch.bfloat16),
        ((1, 1), (7, 7), (64, 64), (97, 97), (7, 64), (97, 1), (64, 257)),
        (4, 2, 1),
        ("none", "padding", "causal", "padding_causal"),
    )
]


@pytest.mark.parametrize("dtype,nq,nk,kv_heads,masks", CASES)
def test_module_matches_float64_by_ratio(dtype, nq, nk, kv_heads, masks):
    torch.manual_seed(nq * 31 + nk + kv_heads)
    golden_module = headwise.MultiHeadAttention(EMBED, HEADS, num_kv_heads=kv_heads, dtype=torch.float64)
    module = copy.deepcopy(golden_module).to(dtype)
    query = torch.randn(2, nq, EMBED, dtype=dtype)  # (B, Nq, D)
    key = query if nq == nk else torch.randn(2, nk, EMBED, dtype=dtype)  # (B, Nk, D)
    padding = None
    if "padding" in masks:
        padding = torch.ones(2, nk, dtype=torch.bool)  # (B, Nk)
        padding[1, nk - max(1, nk // 3) :] = False
    causal = "causal" in masks

    def run(forward, mha, query, key):
        query = query.detach().requires_grad_()
        key = query if nq == nk else key.detach().requires_grad_()  # self-attention passes one tensor
        output = forward(mha, query, key)
        grads = torch.autograd.grad(output.square().sum(), (query, mha.in_proj_weight))
        return output.detach(), *grads

    def headwise_forward(mha, query, key):
        return mha(query, None if key is query else key, key_padding_mask=padding, is_causal=causal)[0]

    def baseline_forward(mha, query, key):
        return textbook_module(mha, query, key, padding, causal)

    golden = run(headwise_forward, golden_module, query.double(), key.double())
    fast = run(headwise_forward, module, query, key)
    baseline = run(baseline_forward, module, query, key)
    magnitude = max(g.abs().max().item() for g in golden)
    for what, f, g, b, ratio in zip(
        ("output", "d_query", "d_in_proj"), fast, golden, baseline, (2, 3, 3), strict=True
    ):
        assert_by_ratio(f, g, b, ratio, what, magnitude)


@pytest.mark.parametrize("kind", ["AVX2", "AVX512-bf16-fp16"])
def test_compute_dtype_auto_computes_bf16_in_float32_where_bf16_is_slow(kind, monkeypatch):
    """On a CPU kind without native bf16, "auto" runs the bf16 module as its float32 copy would on the
    upcast inputs (bit for bit, then rounded to bf16); with native bf16 it computes in bf16."""
    monkeypatch.setattr(tuning, "cpu_kind", lambda: kind)
    torch.manual_seed(0)
    module = headwise.MultiHeadAttention(32, 4).bfloat16()
    x = torch.randn(2, 9, 32).bfloat16().requires_grad_()
    out, weights = module(x, is_causal=True, need_weights=True)
    upcast = headwise.MultiHeadAttention(32, 4, compute_dtype=None)
    upcast.load_state_dict({name: p.float() for name, p in module.state_dict().items()})
    expected, expected_weights = upcast(x.detach().float(), is_causal=True, need_weights=True)
    assert out.dtype == weights.dtype == torch.bfloat16
    if kind == "AVX2":
        assert module.computes_in() == torch.float32
        assert torch.equal(out, expected.bfloat16()) and torch.equal(weights, expected_weights.bfloat16())
    else:
        assert module.computes_in() == torch.bfloat16
    out.sum().backward()
    assert x.grad.dtype == module.in_proj_weight.grad.dtype == torch.bfloat16


def test_compute_dtype_is_checked():
    with pytest.raises(
        TypeError, match=r'compute_dtype must be "auto", None or a floating torch.dtype, got torch.int64'
    ):
        headwise.MultiHeadAttention(8, 2, compute_dtype=torch.int64)
    assert headwise.MultiHeadAttention(8, 2, compute_dtype=torch.float64).computes_in() == torch.float64
