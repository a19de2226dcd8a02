"""What a hostile pass over the attention API found (issue 12), and a property-based fuzz of the public API:
valid calls of every kind against the float64 oracle, invalid ones that must raise headwise's own errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import assert_by_ratio, naive_attention, require

import headwise
from headwise import masks
from headwise.backends import BACKENDS, Request


def capable(dtype, **asks) -> list[str]:
    """The registered backends that serve a CPU call in `dtype` asking for `asks`, and "auto"."""
    request = Request(torch.device("cpu"), dtype, **asks)
    return ["auto", *(n for n, b in BACKENDS.items() if b.unsupported(request) is None)]


@pytest.mark.parametrize("num_keys", [2, 3])
@pytest.mark.parametrize("backend", capable(torch.float16))
def test_float16_scores_that_overflow_before_scaling_stay_finite(backend, num_keys):
    """q = k = 40 at Dh = 64: q·kᵀ = 102400 > 65504 (float16's largest) before the 1/8 scale."""
    q = torch.full((1, 1, num_keys, 64), 40.0, dtype=torch.float16)  # (B, H, N, Dh)
    v = torch.randn(1, 1, num_keys, 64).half()
    out = headwise.attention(q, q, v, backend=backend)
    expected = headwise.attention(q.double(), q.double(), v.double(), backend="reference")  # uniform weights
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=4 * 2**-10 * v.abs().max().item())


@pytest.mark.parametrize("backend", capable(torch.bfloat16, requires_grad=True))
def test_a_saturated_softmax_has_the_reference_gradients_in_bfloat16(backend):
    """q·1e4: each query's weights are exactly one-hot, so dk is exactly 0 (float64 and the bf16 reference);
    the chunked backward gave up to 7.66 when its d_weights were rounded to bf16 against a float32 D."""
    gen = torch.Generator().manual_seed(0)
    q = (torch.randn(1, 1, 4, 8, generator=gen) * 1e4).bfloat16().requires_grad_()
    k, v = (torch.randn(1, 1, 4, 8, generator=gen).bfloat16().requires_grad_() for _ in range(2))
    out = headwise.attention(q, k, v, backend=backend)
    _, d_k, d_v = torch.autograd.grad(out.sum(), (q, k, v))
    assert d_k.abs().max() == 0
    reference = headwise.attention(q, k, v, backend="reference")
    assert torch.equal(torch.autograd.grad(reference.sum(), v)[0], d_v)


@pytest.mark.parametrize("backend", capable(torch.float32, mask="bool"))
@pytest.mark.parametrize("mask", [torch.tensor([True, True, False, True]), torch.tensor(True)])
def test_masks_of_fewer_dimensions_broadcast_on_every_backend(backend, mask):
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4, 8)
    expected = headwise.attention(q, k, v, mask=mask.expand(2, 4, 5, 4), backend="reference")
    torch.testing.assert_close(headwise.attention(q, k, v, mask=mask, backend=backend), expected)
    module = headwise.MultiHeadAttention(16, 4)
    x = torch.randn(2, 9, 16)
    out, _ = module(x, attn_mask=torch.zeros(9))
    torch.testing.assert_close(out, module(x)[0])


NONFINITE_MASKS = {
    "none": {},
    "causal": {"causal": True},
    "padding": {"mask": torch.tensor([True, True, True, False, False])[None, None, None, :]},  # (1, 1, 1, Nk)
    "float padding": {"mask": torch.tensor([0.0, 0.0, 0.0, -math.inf, -math.inf])},  # (Nk,)
    "window": {"mask": masks.sliding_window(1)},
}


@pytest.mark.parametrize("masking", NONFINITE_MASKS)
@pytest.mark.parametrize("backend", capable(torch.float32, requires_grad=True))
def test_one_rule_for_non_finite_inputs_on_every_backend(backend, masking):
    """Issue 12, item 7. NaN and ±inf planted in q, k and v: a row of out is NaN exactly when its query is
    non-finite or it attends (with nonzero weight) to a key whose k or v is; every other row equals the
    float64 oracle on the finite entries (a masked-out key contributes nothing); every gradient is finite
    and equals the oracle's, a NaN row passing none back."""
    options = NONFINITE_MASKS[masking]
    require(
        backend,
        torch.float32,
        requires_grad=True,
        **({"predicate": options["mask"]} if masking == "window" else {}),
    )
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=gen) for _ in range(3))  # (B, H, N, D)
    q[0, 1, 0, 2] = math.inf
    k[0, 0, 4, 1] = math.nan  # a padded key in "padding": must never count
    k[1, 1, 2, 0] = -math.inf
    v[0, 1, 3, 3] = math.nan  # padded in "padding"
    v[0, 0, 1, 0] = math.inf  # head (1, 0) stays clean
    oracle_options = (
        {"mask": options["mask"].materialize(2, 2, 5, 5, device="cpu")} if masking == "window" else options
    )
    sees_bad = assert_follows_the_rule(q, k, v, backend, options, oracle_options, gen)
    assert sees_bad.any() and not sees_bad.all()


def assert_follows_the_rule(
    q, k, v, backend, options, oracle_options, generator, backward=True, tolerance=1e-5
) -> torch.Tensor:
    """The non-finite rule on one call: the oracle is float64 attention (with `oracle_options`) on q, k, v
    with their non-finite entries set to 0; a row of `backend`'s out is NaN exactly when its query is
    non-finite or it gives nonzero weight to a key whose k or v is; the other rows (to `tolerance`) and,
    with `backward`, every gradient (for an upstream drawn from `generator`) equal the oracle's and are
    finite. -> sees_bad (B, H, Nq)."""
    bad_query = ~torch.isfinite(q).all(-1)  # (B, H, Nq)
    bad_key = ~(torch.isfinite(k).all(-1) & torch.isfinite(v).all(-1))  # (B, H, Nk)
    finite = [torch.where(torch.isfinite(t), t, 0.0).double().requires_grad_() for t in (q, k, v)]
    expected, weights = naive_attention(*finite, **oracle_options)  # the oracle on the finite entries
    sees_bad = bad_query | ((weights > 0) & bad_key[:, :, None, :]).any(-1)  # (B, H, Nq)
    inputs = [t.clone().requires_grad_(backward) for t in (q, k, v)]
    out = headwise.attention(*inputs, backend=backend, **options)
    assert torch.equal(torch.isnan(out).any(-1), sees_bad) and torch.isnan(out[sees_bad]).all()
    torch.testing.assert_close(out[~sees_bad].double(), expected[~sees_bad], rtol=tolerance, atol=tolerance)
    if not backward:
        return sees_bad
    upstream = torch.randn(out.shape, generator=generator)
    grads = torch.autograd.grad(out, inputs, upstream)
    expected_grads = torch.autograd.grad(
        expected, finite, upstream.double().masked_fill(sees_bad[..., None], 0)
    )
    for name, got, want, t in zip("qkv", grads, expected_grads, (q, k, v), strict=True):
        assert torch.isfinite(got).all(), f"d{name} is not finite"
        torch.testing.assert_close(
            got.double(), want * torch.isfinite(t), rtol=1e-5, atol=1e-5, msg=f"d{name}"
        )
    return sees_bad


def test_the_weights_api_refuses_what_it_cannot_read():
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4, 8)
    _, lse = headwise.attention(q, k, v, return_lse=True)
    with pytest.raises(TypeError, match=r"lse has dtype torch\.int64 on cpu; expected float32 or float64"):
        headwise.attention_weights(q, k, lse.long())
    with pytest.raises(IndexError, match=r"rows must index range\(5\) \(Nq = 5\), got \[7\]"):
        headwise.attention_weights(q, k, lse, rows=[7])
    with pytest.raises(TypeError, match="heads must be None, a slice, or a sequence or 1-D tensor of ints"):
        headwise.attention_weights(q, k, lse, heads="x")
    some = headwise.attention_weights(q, k, lse, rows=torch.tensor([4, -1]), heads=[3])
    torch.testing.assert_close(some, headwise.attention_weights(q, k, lse)[:, [3]][:, :, [4, 4]])
    with pytest.raises(TypeError, match=r"out_a must be a floating torch\.Tensor, got list"):
        headwise.merge([1], lse, q[..., 0, :], lse)
    with pytest.raises(TypeError, match=r"lse_a must be a floating torch\.Tensor, got torch\.int64"):
        headwise.merge(q[..., 0, :], lse.long(), q[..., 0, :], lse)
    with pytest.raises(ValueError, match="Hq = 0 must be a positive multiple"):
        headwise.attention(q[:, :0], k, v, causal=True, backend="chunked")
    for dtype in (torch.int64, torch.complex64):
        with pytest.raises(TypeError, match=f"dtype must be a floating torch.dtype .* got {dtype}"):
            headwise.MultiHeadAttention(8, 2, dtype=dtype)


# The fuzz ----------------------------------------------------------------------------------------------

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
MASK_KINDS = ("none", "bool", "float", "padding", "window", "causal")


@st.composite
def valid_calls(draw):
    """A valid call: sizes, dtype, magnitude (up to a saturated softmax), mask kind, score modifier,
    backend among those that can serve it."""
    dtype = draw(st.sampled_from(DTYPES))
    batch, kv_heads, group = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    nq, nk, head_dim = draw(st.integers(0, 12)), draw(st.integers(0, 12)), draw(st.integers(1, 16))
    magnitude = draw(st.sampled_from((0.0, 1.0, 3.0, 30.0, 1e3 if dtype != torch.float16 else 200.0)))
    mask_kind = draw(st.sampled_from(MASK_KINDS))
    score_mod = draw(st.sampled_from(("none", "alibi", "softcap")))
    seed = draw(st.integers(0, 2**31 - 1))
    heads = kv_heads * group
    request = {
        "mask": {"bool": "bool", "padding": "bool", "float": "float"}.get(mask_kind, "none"),
        "predicate": masks.causal() if mask_kind in ("window", "causal") else None,
        "score_mod": {"alibi": masks.alibi(torch.ones(heads)), "softcap": masks.softcap(5.0)}.get(score_mod),
    }
    backend = draw(st.sampled_from(capable(dtype, **request)))
    return dtype, batch, kv_heads, heads, nq, nk, head_dim, magnitude, mask_kind, score_mod, seed, backend


def build(call):
    dtype, batch, kv_heads, heads, nq, nk, head_dim, magnitude, mask_kind, score_mod, seed, backend = call
    gen = torch.Generator().manual_seed(seed)
    q = (torch.randn(batch, heads, nq, head_dim, generator=gen) * magnitude).to(dtype)  # (B, Hq, Nq, Dh)
    k = (torch.randn(batch, kv_heads, nk, head_dim, generator=gen) * magnitude).to(dtype)  # (B, Hkv, Nk, Dh)
    v = torch.randn(batch, kv_heads, nk, head_dim, generator=gen).to(dtype)  # (B, Hkv, Nk, Dh)
    mask, causal = None, mask_kind == "causal"
    if mask_kind == "bool":
        mask = torch.rand(batch, heads, nq, nk, generator=gen) < 0.7
    elif mask_kind == "padding":
        mask = torch.rand(batch, 1, 1, nk, generator=gen) < 0.7
    elif mask_kind == "float":
        mask = torch.randn(batch, 1, nq, nk, generator=gen).to(dtype)
        mask = mask.masked_fill(torch.rand(mask.shape, generator=gen) < 0.3, -math.inf)
    elif mask_kind == "window":
        mask = masks.sliding_window(2, 1)
    modifier = {"alibi": masks.alibi(torch.linspace(0.1, 1.0, heads)), "softcap": masks.softcap(5.0)}
    return q, k, v, mask, causal, modifier.get(score_mod), backend


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(valid_calls())
def test_fuzz_valid_calls_agree_with_the_float64_oracle(call):
    """Any valid call gives no NaN, a convex combination of the values it sees (a row that sees no key:
    zeros), and, at moderate magnitudes, the float64 reference by the ratio rule."""
    q, k, v, mask, causal, score_mod, backend = build(call)
    out = headwise.attention(q, k, v, mask=mask, causal=causal, score_mod=score_mod, backend=backend)
    golden_mask = mask.double() if isinstance(mask, torch.Tensor) and mask.is_floating_point() else mask
    with headwise.trace() as steps:
        golden = headwise.attention(
            q.double(), k.double(), v.double(), mask=golden_mask, causal=causal, score_mod=score_mod,
            backend="reference",
        )  # fmt: skip
    assert out.shape == golden.shape and out.dtype == q.dtype
    assert torch.isfinite(out).all()
    values = v.double().repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # (B, Hq, Nk, Dv)
    seen = steps["masked_scores"].tensor > -math.inf  # (B, Hq, Nq, Nk): the keys each query may attend to
    rows_seeing = seen.any(dim=-1, keepdim=True)  # (B, Hq, Nq, 1)
    fast = out.double()
    assert (rows_seeing | (fast == 0)).all(), "a row that sees no key is not zero"
    if k.shape[2]:
        big = torch.finfo(torch.float64).max
        upper = torch.where(seen[..., None], values[:, :, None], -big).amax(dim=3)  # (B, Hq, Nq, Dv)
        lower = torch.where(seen[..., None], values[:, :, None], big).amin(dim=3)  # (B, Hq, Nq, Dv)
        slack = 8 * torch.finfo(q.dtype).eps * max(1.0, v.abs().max().item())
        inside = (fast <= upper + slack) & (fast >= lower - slack)
        assert (~rows_seeing | inside).all(), "the output is not a convex combination of the values it sees"
    magnitude = call[7]
    if magnitude <= 3.0 and q.dtype != torch.float64 and out.numel():
        float_mask = mask if not isinstance(mask, torch.Tensor) or mask.dtype == torch.bool else mask.float()
        dense = (
            float_mask.materialize(*golden.shape[:3], k.shape[2])
            if isinstance(mask, masks.Predicate)
            else float_mask
        )
        baseline, _ = naive_attention(
            q.float(), k.float(), v.float(), mask=dense, causal=causal,
            **({"alibi_slopes": score_mod.slopes} if isinstance(score_mod, masks.ALiBi) else {}),
            **({"softcap": score_mod.cap} if isinstance(score_mod, masks.Softcap) else {}),
        )  # fmt: skip
        baseline = baseline.to(q.dtype)  # computed in float32, rounded like the output: a fair floor
        assert_by_ratio(out, golden, baseline, 4, "out", magnitude=golden.abs().max().item())
    elif q.dtype == torch.float64:
        torch.testing.assert_close(out, golden, rtol=0, atol=1e-10)


Q, K, V = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 3)
ARGUMENT_NAMES = ("q", "k", "v", "mask", "causal", "scale", "dropout_p", "backend", "score_mod", "Hq", "Hkv")


WRONG_VALUES = {
    "mask": st.sampled_from(
        (
            torch.ones(5, 7, dtype=torch.bool),  # does not broadcast
            torch.ones(5, 6, dtype=torch.int32),
            [[True]],
            torch.ones(3, 5, 6, 1, 1, dtype=torch.bool),  # 5-D
            torch.ones(5, 6, dtype=torch.complex64),
        )
    ),
    "causal": st.sampled_from((1, 0, "yes", None, 1.0)),
    "scale": st.sampled_from((float("nan"), float("inf"), "big", True, [1.0])),
    "dropout_p": st.one_of(
        st.floats(min_value=1.0, max_value=1e9),
        st.floats(min_value=-1e9, max_value=-1e-9),
        st.just(float("nan")),
        st.just("0.1"),
    ),
    "backend": st.one_of(
        st.text(min_size=1, max_size=12).filter(lambda s: s not in BACKENDS and s != "auto"), st.just(3)
    ),
    "score_mod": st.sampled_from((lambda s: s, "alibi", 3.0, masks.causal())),
}


@st.composite
def invalid_calls(draw):
    """A call with one argument wrong, and the name its error must mention."""
    wrong = draw(
        st.sampled_from(("q", "k", "v", "mask", "causal", "scale", "dropout_p", "backend", "score_mod"))
    )
    args = {"q": Q, "k": K, "v": V}
    if wrong in ("q", "k", "v"):
        base = args[wrong]
        other_count = (base[:, :3], "Hq") if wrong == "q" else (base[:, :, :1], wrong)  # heads / length
        bad, name = draw(
            st.sampled_from(
                (
                    (base[0], wrong),  # 3-D
                    (base[None], wrong),  # 5-D
                    (base.long(), wrong),
                    (base.bool(), wrong),
                    (base.double(), wrong),  # a dtype the others do not share
                    ([1.0], wrong),
                    (None, wrong),
                    (base[:1], wrong),  # another batch size
                    *([(base[..., :2], wrong)] if wrong != "v" else []),  # another head width (Dv may differ)
                    other_count,
                )
            )
        )
        args[wrong] = bad
        return args, name
    value = draw(WRONG_VALUES[wrong])
    args[wrong] = value
    return args, wrong


@settings(max_examples=500, deadline=None, derandomize=True)
@given(invalid_calls())
def test_fuzz_invalid_calls_raise_errors_that_name_the_argument(case):
    args, name = case
    with pytest.raises((TypeError, ValueError)) as raised:
        headwise.attention(args.pop("q"), args.pop("k"), args.pop("v"), **args)
    assert raised.type in (TypeError, ValueError)
    assert name in str(raised.value), (name, str(raised.value))


# Issue 24: other surfaces, each refused in one line before any work (variants of the cases) -------


def test_meta_and_float8_inputs_under_auto_are_a_clear_error():
    """Before: a bare StopIteration from the dispatcher."""
    meta = torch.empty(2, 2, 3, 4, device="meta")
    with pytest.raises(ValueError, match="no backend for q, k and v: even the reference cannot run on meta"):
        headwise.attention(meta, meta, meta)
    e5m2 = torch.randn(1, 2, 3, 4).to(torch.float8_e5m2)
    with pytest.raises(ValueError, match=r"cannot run in torch\.float8_e5m2 \(it takes bfloat16"):
        headwise.attention(e5m2, e5m2, e5m2, causal=True)


@pytest.mark.parametrize(
    "make",
    [
        lambda: masks.key_lengths(torch.tensor([2, 3], device="meta")),
        lambda: masks.prefix_lm(torch.tensor([1, 1], device="meta")),
        lambda: masks.documents(torch.zeros(2, 5, dtype=torch.int64, device="meta")),
        lambda: masks.alibi(torch.ones(4, device="meta")),
    ],
)
def test_meta_mask_and_score_arguments_are_refused_where_they_are_made(make):
    """Before: RuntimeError from .item() on a meta tensor."""
    with pytest.raises(ValueError, match="is on the meta device, which holds no values"):
        make()


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_a_sparse_mask_is_a_clear_error(layout):
    """Before: 'reshape is not implemented for sparse tensors'."""
    dense = torch.rand(4, 6) > 0.3  # (Nq, Nk)
    mask = dense.float().to_sparse() if layout == "coo" else dense.float().to_sparse_csr()
    q, k = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 6, 8)
    with pytest.raises(TypeError, match=r"mask has layout torch\.sparse_\w+; expected a dense tensor"):
        headwise.attention(q, k, k, mask=mask)


def test_a_sliding_window_side_beyond_int64_positions_is_refused_at_construction():
    """Before: OverflowError at call time. 2**62 itself is as unlimited as the sequence."""
    with pytest.raises(ValueError, match=r"right must be at most 2\*\*62 .* got 1e\+25"):
        masks.sliding_window(3, right=10**25)
    q = torch.randn(1, 1, 5, 4, dtype=torch.float64)
    out = headwise.attention(q, q, q, mask=masks.sliding_window(2**62, 2**62))
    torch.testing.assert_close(out, headwise.attention(q, q, q), rtol=0, atol=1e-15)


@pytest.mark.parametrize("rows", [slice(None, None, -1), slice(6, 1, -2), slice(-2, None, -3)])
def test_attention_weights_take_slices_with_negative_steps_as_python_does(rows):
    """Before: torch's 'step must be greater than zero'."""
    q, k = torch.randn(2, 4, 7, 8, dtype=torch.float64), torch.randn(2, 2, 9, 8, dtype=torch.float64)
    _, lse = headwise.attention(q, k, k, return_lse=True)
    every = headwise.attention_weights(q, k, lse)  # (B, Hq, Nq, Nk)
    picked = list(range(7))[rows]
    torch.testing.assert_close(headwise.attention_weights(q, k, lse, rows=rows), every[:, :, picked])
    torch.testing.assert_close(headwise.attention_weights(q, k, heads=slice(3, None, -2)), every[:, [3, 1]])


@pytest.mark.parametrize("flag", ["return_weights", "return_lse"])
@pytest.mark.parametrize("value", ["false", 0, None])
def test_the_return_flags_take_bools_only(flag, value):
    """Before: return_weights='no' was taken as True."""
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(TypeError, match=f"{flag} must be a bool, got"):
        headwise.attention(q, q, q, **{flag: value})


@pytest.mark.parametrize("backend", ["auto", "reference", "dense", "sdpa", "chunked"])
def test_expanded_inputs_beyond_memory_are_refused_before_any_work(backend):
    """A stride-0 view twice this machine's memory: before, dense/reference failed in the allocator and
    sdpa and chunked computed for hours. The output (B, Hq, Nq, Dv) alone does not fit in memory."""
    from headwise.checks import physical_memory

    batch = 2 * physical_memory() // (4 * 5000 * 50 * 4) + 1  # B: the float32 output twice the memory
    q = torch.randn(1, 1, 1, 1).expand(batch, 4, 5000, 50)  # (B, Hq, Nq, Dh)
    with pytest.raises(ValueError, match=r"the output of q, k and v .* needs about [\d,.]+ GiB, but this"):
        headwise.attention(q, q, q, backend=backend)


def test_a_whole_score_matrix_beyond_memory_is_refused_and_auto_passes_over_it():
    """dense holds the (B, Hq, Nq, Nk) scores whole: 4·10^12 of them here; auto's choice, sdpa, does not."""
    q = torch.randn(1, 1, 1, 1).expand(1, 4, 10**6, 1)  # (B, Hq, Nq, Dh): Nq = Nk = 10^6
    with pytest.raises(ValueError, match=r"backend 'dense''s whole score matrix \(B, Hq, Nq, Nk\)"):
        headwise.attention(q, q, q, backend="dense")
    with pytest.raises(ValueError, match="whole score matrix"):
        headwise.attention(q, q, q, return_weights=True)


def test_work_beyond_the_cpu_bound_is_refused_before_it_starts():
    """One query block against 10^11 expanded keys: little memory, 8·10^17 operations."""
    from headwise.running import MAX_CPU_FLOP

    q = torch.randn(1, 8, 4096, 64)
    k = torch.randn(1, 1, 1, 64).expand(1, 8, 10**11, 64)  # (B, Hkv, Nk, Dh)
    with pytest.raises(ValueError, match=r"ask for 8.4e\+17 floating-point operations, more than a CPU call"):
        headwise.attention(q, k, k, backend="chunked")
    headwise.attention(q[:, :, :1], k[:, :, : 10**6], k[:, :, : 10**6])  # 2·10^12 of them: under the bound
    assert MAX_CPU_FLOP >= 2 * 8 * 1 * 10**6 * 128


@pytest.mark.parametrize("backend", capable(torch.float32))
def test_finite_inputs_whose_scores_overflow_touch_only_their_own_rows(backend):
    """Outside the non-finite rule (docs/design/index.md, Conventions): q·kᵀ of 1e19 · 1e19 overflows
    float32, and the query whose scores overflow may come out NaN (or not: backends differ); every other
    row is exact."""
    gen = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(1, 2, 5, 8, generator=gen) for _ in range(3))  # (B, H, N, Dh)
    q[0, 1, 3] *= 1e19
    k[0, 1, 0] *= 1e19
    out = headwise.attention(q, k, v, backend=backend)
    golden = headwise.attention(q.double(), k.double(), v.double(), backend="reference")
    others = torch.ones(1, 2, 5, dtype=torch.bool)
    others[0, 1, 3] = False  # the one query whose scores overflow
    torch.testing.assert_close(out[others].double(), golden[others], rtol=0, atol=1e-5)


def explain_error(args: list[str], capsys) -> str:
    """`headwise explain ARGS` -> its error line, after checking it failed with one (after the usage, for
    an argument error) and no traceback."""
    from headwise.cli.main import main

    try:
        code = main(["explain", *args])
    except SystemExit as exit:  # an argument error
        code = exit.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    usage = code == 2 and lines[0].startswith("usage: ")
    assert code in (1, 2) and "Traceback" not in err and (usage or len(lines) == 1), err
    return lines[-1]


@pytest.fixture
def tiny_bert(tmp_path):
    """A saved 1-layer BERT folder, without a tokenizer (the checks here come before it is read)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=40, hidden_size=8, num_attention_heads=2, num_hidden_layers=1, intermediate_size=16
    )
    folder = tmp_path / "bert"
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def test_a_model_config_beyond_memory_is_refused_before_loading(tiny_bert, capsys):
    """Before: still loading after 180 s (100,000 layers × 4,096). Here 60,000 × 8,192: at least 4.8·10^13
    parameters, estimated from config.json alone."""
    config = json.loads((tiny_bert / "config.json").read_text())
    config.update(num_hidden_layers=60_000, hidden_size=8192, intermediate_size=32768, num_attention_heads=64)
    (tiny_bert / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    err = explain_error(["--model", str(tiny_bert), "The cat."], capsys)
    assert time.perf_counter() - start < 30
    assert "(at least 48,318,382,407,680 parameters) needs about" in err and "GiB of memory" in err


def test_a_pickled_checkpoint_is_one_line_not_a_traceback(tiny_bert, capsys):
    """torch.load(weights_only=True) stops the pickle (good); the error was a raw traceback."""
    (tiny_bert / "model.safetensors").unlink()
    torch.save({"weights": subprocess.Popen}, tiny_bert / "pytorch_model.bin")  # a global it would call
    err = explain_error(["--model", str(tiny_bert), "The cat."], capsys)
    assert "are a pickle that torch.load(weights_only=True) refuses" in err


def test_a_truncated_safetensors_file_is_one_line_not_a_traceback(tiny_bert, capsys):
    weights = tiny_bert / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    err = explain_error(["--model", str(tiny_bert), "The cat."], capsys)
    assert f"cannot read the weights in {tiny_bert}:" in err


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"X": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}", "nests its JSON too deeply"),
        (
            '{"X": '
            + str([[8] * 7] * 11)
            + ', "W_Q": '
            + str([[8] * 11] * 9)
            + ', "W_K": '
            + str([[8] * 11] * 9)
            + ', "W_V": '
            + str([[8] * 11] * 9)
            + "}",
            "(at most 1,000,000 by pencil)",
        ),
    ],
    ids=["nested", "all eights"],
)
def test_exercise_files_that_would_not_finish_are_refused(tmp_path, capsys, content, message):
    """Before: RecursionError; OverflowError (all 8s: 3^(Kᵀ·Q/2), a number of millions of digits)."""
    path = tmp_path / "exercise.json"
    path.write_text(content)
    err = explain_error(["--by-hand", "--input", str(path)], capsys)
    assert "argument --input:" in err and message in err


@pytest.mark.parametrize("special", ["/dev/urandom", "fifo"])
def test_an_exercise_that_is_not_a_regular_file_is_refused_at_once(tmp_path, capsys, special):
    """Before: a link to /dev/zero read 6 GB for 15 s, then MemoryError."""
    path = tmp_path / "exercise.csv"
    if special == "fifo":
        os.mkfifo(path)
    else:
        os.symlink(special, path)
    err = explain_error(["--by-hand", "--input", str(path)], capsys)
    assert ("a character device" if special != "fifo" else "a FIFO") in err


def test_an_exercise_over_the_size_bound_is_refused(tmp_path, capsys):
    from headwise.explain.exercise import MAX_FILE_BYTES

    path = tmp_path / "exercise.json"
    path.write_text(" " * (MAX_FILE_BYTES + 1))
    assert f"headwise reads at most {MAX_FILE_BYTES:,}" in explain_error(
        ["--by-hand", "--input", str(path)], capsys
    )


def _descendants(pid: int) -> dict[int, int]:
    """{pid: depth} of every process below `pid` (Linux /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    parents[int(entry)] = int(file.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    depth, frontier = {}, [(pid, 0)]
    while frontier:
        parent, level = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in depth:
                depth[child] = level + 1
                frontier.append((child, level + 1))
    return depth


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks through /proc")
def test_a_rank_killed_under_nproc_is_one_line(tmp_path):
    """Before: exit in 3 s (good) with torch's ProcessExitedException traceback. Rank processes are the
    fork server's children; one of them gets SIGTERM."""
    tiny = ["--set", "d_model=16", "--set", "num_heads=2", "--set", "d_ff=32", "--set", "batch_size=8"]
    command = [
        sys.executable,
        "-m",
        "headwise",
        "train",
        "--task",
        "dates",
        "--steps",
        "100000",
        "--nproc",
        "2",
    ]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run = subprocess.Popen(
        [*command, *tiny, "--out", str(tmp_path / "run"), "--quiet"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ranks = [pid for pid, depth in _descendants(run.pid).items() if depth == 2]
            if len(ranks) >= 2:
                break
            time.sleep(0.2)
        assert len(ranks) >= 2, "the ranks did not start"
        time.sleep(2)  # training
        os.kill(max(ranks), signal.SIGTERM)
        _, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 1 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert "of --nproc 2 (pid" in line and "was killed by SIGTERM before it finished" in line
