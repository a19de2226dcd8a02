"""What a hostile pass over the attention API found (issue 12), and a property-based fuzz of the public API:
valid calls of every kind against the float64 oracle, invalid ones that must raise headwise's own errors."""

from __future__ import annotations

import math

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
    bad_query = ~torch.isfinite(q).all(-1)  # (B, H, Nq)
    bad_key = ~(torch.isfinite(k).all(-1) & torch.isfinite(v).all(-1))  # (B, H, Nk)
    finite = [torch.where(torch.isfinite(t), t, 0.0).double().requires_grad_() for t in (q, k, v)]
    oracle_options = (
        {"mask": options["mask"].materialize(2, 2, 5, 5, device="cpu")} if masking == "window" else options
    )
    expected, weights = naive_attention(*finite, **oracle_options)  # the oracle on the finite entries
    sees_bad = bad_query | ((weights > 0) & bad_key[:, :, None, :]).any(-1)  # (B, H, Nq)
    assert sees_bad.any() and not sees_bad.all()
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = headwise.attention(*inputs, backend=backend, **options)
    assert torch.equal(torch.isnan(out).any(-1), sees_bad) and torch.isnan(out[sees_bad]).all()
    torch.testing.assert_close(out[~sees_bad].double(), expected[~sees_bad], rtol=1e-5, atol=1e-5)
    upstream = torch.randn(out.shape, generator=gen)
    grads = torch.autograd.grad(out, inputs, upstream)
    expected_grads = torch.autograd.grad(
        expected, finite, upstream.double().masked_fill(sees_bad[..., None], 0)
    )
    for name, got, want, t in zip("qkv", grads, expected_grads, (q, k, v), strict=True):
        assert torch.isfinite(got).all(), f"d{name} is not finite"
        torch.testing.assert_close(
            got.double(), want * torch.isfinite(t), rtol=1e-5, atol=1e-5, msg=f"d{name}"
        )


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
