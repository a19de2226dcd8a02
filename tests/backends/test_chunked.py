"""The chunked backend at small block sizes (many blocks, ragged edges), its lse, and headwise.merge."""

from __future__ import annotations

import pytest
import torch
from oracle import assert_by_ratio, naive_attention, require

import headwise
from headwise import masks
from headwise.backends import BACKENDS
from headwise.backends.chunked import _Blocks, attention_with_lse

DOUBLE = torch.float64
CAUSAL = masks.causal()


def random_inputs(nq, nk, heads=4, kv_heads=2, head_dim=6, value_dim=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = ((2, heads, nq, head_dim), (2, kv_heads, nk, head_dim), (2, kv_heads, nk, value_dim))
    return [torch.randn(s, generator=gen, dtype=DOUBLE, requires_grad=True) for s in shapes]


def reference_lse(q, k, mask, causal, scale):
    """log Σ exp(masked scores) over the keys, with plain torch ops: (B, Hq, Nq)."""
    keys = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # (B, Hq, Nk, Dh)
    scores = (q @ keys.transpose(-1, -2)) * scale  # (B, Hq, Nq, Nk)
    allowed = mask & torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril(k.shape[2] - q.shape[2])
    return torch.logsumexp(scores.masked_fill(~(allowed if causal else mask), float("-inf")), dim=-1)


@pytest.mark.parametrize("block", [1, 4, 7, 16])
@pytest.mark.parametrize(
    "nq,nk,causal", [(9, 9, True), (5, 13, True), (13, 5, True), (11, 17, False), (1, 9, True)]
)
def test_blocks_of_any_size_give_the_reference(block, nq, nk, causal):
    q, k, v = random_inputs(nq, nk)
    mask = torch.rand(2, 1, nq, nk, generator=torch.Generator().manual_seed(1)) < 0.8
    mask[1, 0, 0] = False  # a query that sees nothing
    predicate = CAUSAL if causal else None
    out, lse = attention_with_lse(q, k, v, mask=mask, predicate=predicate, scale=0.4, block=block)
    expected = headwise.attention(q, k, v, mask=mask, causal=causal, scale=0.4, backend="reference")
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)
    torch.testing.assert_close(lse, reference_lse(q, k, mask, causal, 0.4), rtol=0, atol=1e-13)
    d_out, d_lse = torch.randn_like(out), torch.randn_like(lse).masked_fill(lse == float("-inf"), 0)
    grads = torch.autograd.grad((out * d_out).sum(), (q, k, v), retain_graph=True)
    expected_grads = torch.autograd.grad((expected * d_out).sum(), (q, k, v))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    lse_grads = torch.autograd.grad(lse.masked_fill(lse == float("-inf"), 0).mul(d_lse).sum(), (q, k))
    ref_lse = reference_lse(q, k, mask, causal, 0.4)
    expected_lse_grads = torch.autograd.grad(
        ref_lse.masked_fill(ref_lse == float("-inf"), 0).mul(d_lse).sum(), (q, k)
    )
    for got, want in zip(lse_grads, expected_lse_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_gradcheck_through_out_and_lse():
    q, k, v = random_inputs(6, 7, head_dim=3, value_dim=2)
    float_mask = torch.zeros(6, 7, dtype=DOUBLE)
    float_mask[2, 3:] = float("-inf")

    def fn(q, k, v):
        out, lse = attention_with_lse(q, k, v, mask=float_mask, predicate=CAUSAL, scale=0.7, block=3)
        return out, lse.masked_fill(lse == float("-inf"), 0.0)

    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_dropout_backward_redraws_the_forward_masks():
    q, k, v = random_inputs(9, 11, head_dim=3, value_dim=2)

    def fn(q, k, v):
        torch.manual_seed(4)  # the same keep-masks on every call: a deterministic function to check
        return attention_with_lse(q, k, v, predicate=CAUSAL, scale=0.5, dropout_p=0.3, block=4)[0]

    assert torch.autograd.gradcheck(fn, (q, k, v))
    undropped = attention_with_lse(q, k, v, predicate=CAUSAL, scale=0.5, block=4)[0]
    assert torch.equal(fn(q, k, v), fn(q, k, v)) and not torch.allclose(fn(q, k, v), undropped)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_accumulates_in_float32(dtype):
    q, k, v = (t.detach().to(dtype) for t in random_inputs(40, 50))
    out, lse = attention_with_lse(q, k, v, predicate=CAUSAL, scale=0.4, block=8)
    assert out.dtype == dtype and lse.dtype == torch.float32
    expected = headwise.attention(q.double(), k.double(), v.double(), causal=True, scale=0.4)
    assert (out.double() - expected).abs().max() < 4 * torch.finfo(dtype).eps * expected.abs().max()


def test_merge_of_two_key_sets_is_attention_over_both():
    q, k, v = random_inputs(5, 12)
    out, lse = attention_with_lse(q, k, v, scale=0.3)
    first = attention_with_lse(q, k[:, :, :5], v[:, :, :5], scale=0.3)
    second = attention_with_lse(q, k[:, :, 5:], v[:, :, 5:], scale=0.3)
    merged_out, merged_lse = headwise.merge(*first, *second)
    torch.testing.assert_close(merged_out, out, rtol=0, atol=1e-14)
    torch.testing.assert_close(merged_lse, lse, rtol=0, atol=1e-14)
    swapped_out, _ = headwise.merge(*second, *first)  # the order does not matter
    torch.testing.assert_close(swapped_out, out, rtol=0, atol=1e-14)


def test_merge_with_a_query_that_sees_nothing():
    out = torch.ones(1, 3, 2, dtype=DOUBLE)
    lse = torch.tensor([[0.0, float("-inf"), float("-inf")]], dtype=DOUBLE)
    other_lse = torch.tensor([[float("-inf"), 1.0, float("-inf")]], dtype=DOUBLE)
    merged_out, merged_lse = headwise.merge(out, lse, 2 * out, other_lse)
    assert torch.equal(merged_out[0, :, 0], torch.tensor([1.0, 2.0, 0.0], dtype=DOUBLE))
    assert torch.equal(merged_lse, torch.tensor([[0.0, 1.0, float("-inf")]], dtype=DOUBLE))
    lse_a, lse_b = lse.clone().requires_grad_(), other_lse.clone().requires_grad_()
    merged_out, _ = headwise.merge(out, lse_a, 2 * out, lse_b)
    grads = torch.autograd.grad(merged_out.sum(), (lse_a, lse_b))
    assert all(torch.isfinite(g).all() for g in grads)  # no NaN where neither set has a key
    with pytest.raises(ValueError, match=r"merge needs out_a and out_b of one shape"):
        headwise.merge(out, lse, out[..., :1], other_lse)


def test_chunked_refuses_what_it_cannot_do():
    q, k, v = random_inputs(3, 4)
    with pytest.raises(ValueError, match="backend 'chunked' cannot return the attention weights"):
        headwise.attention(q, k, v, return_weights=True, backend="chunked")
    mask = torch.zeros(3, 4, dtype=DOUBLE, requires_grad=True)
    with pytest.raises(
        ValueError, match="backend 'chunked' cannot differentiate with respect to a float mask"
    ):
        headwise.attention(q, k, v, mask=mask, backend="chunked")


@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
def test_attention_weights_from_lse_are_exact(backend):
    require(backend, return_lse=True, requires_grad=True)
    q, k, v = random_inputs(7, 10)
    mask = torch.rand(2, 4, 7, 10, generator=torch.Generator().manual_seed(2)) < 0.7
    mask[0, 3, 6] = False  # a query that sees nothing
    _, lse = headwise.attention(q, k, v, mask=mask, causal=True, scale=0.6, return_lse=True, backend=backend)
    _, weights = headwise.attention(q, k, v, mask=mask, causal=True, scale=0.6, return_weights=True)
    torch.testing.assert_close(lse, reference_lse(q, k, mask, True, 0.6), rtol=0, atol=1e-13)
    full = headwise.attention_weights(q, k, lse, mask=mask, causal=True, scale=0.6)
    torch.testing.assert_close(full, weights, rtol=0, atol=1e-14)
    some = headwise.attention_weights(
        q, k, lse, rows=[6, 2], heads=slice(1, 4), mask=mask, causal=True, scale=0.6
    )
    torch.testing.assert_close(some, weights[:, 1:4][:, :, [6, 2]], rtol=0, atol=1e-14)
    assert some[0, 2, 0].abs().max() == 0  # head 3, query 6 of sequence 0 sees nothing


def test_lse_is_refused_where_a_backend_has_none():
    q, k, v = random_inputs(3, 4)
    with pytest.raises(ValueError, match="backend 'sdpa' cannot return the log-sum-exp of the scores"):
        headwise.attention(q, k, v, return_lse=True, backend="sdpa")
    with pytest.raises(ValueError, match=r"lse must have shape \(B, Hq, Nq\) = \(2, 4, 3\), got \(2, 4\)"):
        headwise.attention_weights(q, k, torch.zeros(2, 4))


def predicates(nq, nk):
    ids = torch.sort(torch.randint(0, 3, (2, nk), generator=torch.Generator().manual_seed(5)), dim=1).values
    return [
        masks.sliding_window(5, 2),
        masks.key_lengths(torch.tensor([nk - 4, nk])) & masks.causal(),
        masks.documents(ids[:, nk - nq :], ids),
        masks.prefix_lm(torch.tensor([3, 8])) | masks.sliding_window(2),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", range(4))
def test_mask_predicates_equal_their_dense_masks(backend, index):
    require(backend, predicate=masks.causal(), requires_grad=True)
    q, k, v = random_inputs(13, 21)
    predicate = predicates(13, 21)[index]
    dense = predicate.materialize(2, 4, 13, 21)  # (B|1, Hq|1, Nq, Nk)
    out = headwise.attention(q, k, v, mask=predicate, backend=backend)
    expected = headwise.attention(q, k, v, mask=dense, backend="reference")
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)
    d_out = torch.randn_like(out)
    grads, expected_grads = (torch.autograd.grad(o, (q, k, v), d_out) for o in (out, expected))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_chunked_skips_the_blocks_a_window_rules_out():
    q, k, v = random_inputs(64, 64)
    window = masks.sliding_window(4)
    blocks = _Blocks(q, k, None, window, 1.0, 0.0, 8, 0)
    visited = list(blocks.pairs())
    assert len(visited) == 8 + 7  # the diagonal blocks and the ones just below it, of 64
    out, _ = attention_with_lse(q, k, v, predicate=window, scale=1.0, block=8)
    expected = headwise.attention(
        q, k, v, mask=window.materialize(1, 1, 64, 64), scale=1.0, backend="reference"
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
def test_alibi_equals_its_bias_as_a_float_mask(backend):
    q, k, v = random_inputs(9, 14)
    alibi = masks.alibi(masks.alibi_slopes(4, dtype=DOUBLE))
    require(backend, score_mod=alibi, requires_grad=True)
    bias = alibi.dense(torch.zeros(1, 4, 9, 14, dtype=DOUBLE))  # (1, Hq, Nq, Nk)
    out = headwise.attention(q, k, v, causal=True, score_mod=alibi, backend=backend)
    expected = headwise.attention(q, k, v, mask=bias, causal=True, backend="reference")
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)
    d_out = torch.randn_like(out)
    grads, expected_grads = (torch.autograd.grad(o, (q, k, v), d_out) for o in (out, expected))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_softcap_squashes_the_scaled_scores(backend):
    require(backend, score_mod=masks.softcap(2.0), requires_grad=True)
    q, k, v = random_inputs(6, 8)
    out = headwise.attention(q * 4, k, v, scale=0.5, score_mod=masks.softcap(2.0), backend=backend)
    keys, values = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)  # (B, Hq, Nk, ·)
    scores = 2.0 * torch.tanh((q * 4 @ keys.transpose(-1, -2)) * 0.5 / 2.0)  # (B, Hq, Nq, Nk)
    torch.testing.assert_close(out, torch.softmax(scores, dim=-1) @ values, rtol=0, atol=1e-13)


def test_score_modifiers_are_refused_where_a_backend_cannot_apply_them():
    q, k, v = random_inputs(3, 4)
    with pytest.raises(ValueError, match=r"backend 'sdpa' cannot apply the score modifier softcap\(5\)"):
        headwise.attention(q, k, v, score_mod=masks.softcap(5.0), backend="sdpa")
    with pytest.raises(ValueError, match=r"backend 'chunked' cannot apply the score modifier softcap\(5\)"):
        headwise.attention(q, k, v, score_mod=masks.softcap(5.0), backend="chunked")
    with pytest.raises(ValueError, match="alibi has 2 slopes but the scores have H = 4 heads"):
        headwise.attention(q, k, v, score_mod=masks.alibi(torch.ones(2)))
    with pytest.raises(TypeError, match=r"score_mod must be a headwise\.masks score modifier"):
        headwise.attention(q, k, v, score_mod=lambda s: s)
    with headwise.trace() as t:
        headwise.attention(q, k, v, score_mod=masks.softcap(5.0))
    assert t.names()[:3] == ["scores", "scaled_scores", "modified_scores"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_lse_gradient_of_a_row_that_sees_nothing_is_zero(backend):
    require(backend, return_lse=True, mask="float", requires_grad=True)
    q, k, v = random_inputs(5, 7)
    mask = torch.zeros(5, 7, dtype=DOUBLE)  # float mask, (Nq, Nk)
    mask[2] = float("-inf")  # query 2 sees no key
    out, lse = headwise.attention(q, k, v, mask=mask, return_lse=True, backend=backend)
    assert (lse[:, :, 2] == float("-inf")).all() and (out[:, :, 2] == 0).all()
    (out.sum() + lse.masked_fill(lse == float("-inf"), 0.0).sum()).backward()
    for tensor in (q, k, v):
        assert torch.isfinite(tensor.grad).all()
    assert (q.grad[:, :, 2] == 0).all()


def test_backward_recomputes_the_forward_weights_exactly():
    """Large scores (|lse| ≈ 50): weights recomputed as exp(s - lse) would carry lse's float32 rounding,
    ~|lse| ulps, into every weight and so into dv, dq and dk (4-5× the textbook error before the fix);
    exp(s - m) / l with the forward's m and l keeps the backward as precise as the forward."""
    gen = torch.Generator().manual_seed(11)
    q = torch.randn(2, 4, 300, 16, generator=gen) * 12  # (B, Hq, Nq, Dh)
    k, v = (torch.randn(2, 2, 300, 16, generator=gen) for _ in range(2))  # (B, Hkv, Nk, Dh)
    d_out = torch.randn(2, 4, 300, 16, generator=gen)

    def grads(fn, *tensors):
        leaves = [t.detach().requires_grad_() for t in tensors]
        return torch.autograd.grad(fn(*leaves), leaves, d_out.to(tensors[0].dtype))

    golden = grads(
        lambda q, k, v: headwise.attention(q, k, v, backend="reference"), q.double(), k.double(), v.double()
    )
    baseline = grads(lambda q, k, v: naive_attention(q, k, v)[0], q, k, v)
    fast = grads(lambda q, k, v: headwise.attention(q, k, v, backend="chunked"), q, k, v)
    magnitude = max(g.abs().max().item() for g in golden)
    for what, f, g, b in zip(("dq", "dk", "dv"), fast, golden, baseline, strict=True):
        assert_by_ratio(f, g, b, 2, what, magnitude)
