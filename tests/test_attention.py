"""headwise.attention: every backend held to the float64 reference by the ratio rule, gradients included."""

from __future__ import annotations

import ast
import importlib.util
import math
import pathlib
import re
from dataclasses import replace

import pytest
import torch
from oracle import assert_by_ratio, covering_design, naive_attention, naive_attention_lse, require

import headwise
from headwise import masks
from headwise.backends import BACKENDS, Choice, Request, auto_order, choose, flash_cpu, tuning

LENGTHS = (1, 7, 97, 257, 1025)
HEAD_DIMS = (8, 59, 64, 80)
GROUPS = (1, 2, 4)
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
MASKS = (
    "none", "bool_2d", "key_padding", "bool_full", "float_full", "causal", "causal_and_padding",
    "window", "documents_causal",
)  # fmt: skip
SCORE_MODS = ("none", "alibi", "softcap")
BATCH, KV_HEADS = 2, 2
LOW_PRECISION = (torch.bfloat16, torch.float16)


def affordable(config: dict) -> bool:
    """The grid's cost bound: Nq·Nk <= 1025·257 (the golden is float64), and <= 257² in bf16/fp16, whose
    matmuls run ~300× slower than float32 on CPUs without native bf16 (AVX2)."""
    cells = config["nq"] * config["nk"]
    return cells <= (257 * 257 if config["dtype"] in LOW_PRECISION else 1025 * 257)


GRID = covering_design(
    {
        "dtype": DTYPES, "nq": LENGTHS, "nk": LENGTHS, "head_dim": HEAD_DIMS, "group": GROUPS,
        "mask": MASKS, "score_mod": SCORE_MODS,
    },
    allowed=affordable,
    seed=2026,
)  # fmt: skip


def case_id(config: dict) -> str:
    dtype = str(config["dtype"]).removeprefix("torch.")
    return "{}-{nq}x{nk}-d{head_dim}-g{group}-{mask}-{score_mod}".format(dtype, **config)


def make_mask(kind: str, batch: int, heads: int, num_queries: int, num_keys: int, dtype, gen):
    """(headwise's mask, its dense form for the textbook baseline, causal) for a mask kind; the full
    kinds include one query with no visible key."""
    if kind in ("none", "causal"):
        return None, None, kind == "causal"
    if kind in ("key_padding", "causal_and_padding"):
        mask = torch.ones(batch, 1, 1, num_keys, dtype=torch.bool)  # (B, 1, 1, Nk)
        mask[1, ..., num_keys - max(1, num_keys // 3) :] = False  # batch 1: its last keys are padding
        return mask, mask, kind == "causal_and_padding"
    if kind == "bool_2d":
        mask = torch.rand(num_queries, num_keys, generator=gen) < 0.8  # (Nq, Nk)
        return mask, mask, False
    if kind == "bool_full":
        mask = torch.rand(batch, heads, num_queries, num_keys, generator=gen) < 0.7  # (B, Hq, Nq, Nk)
        mask[0, 0, 0] = False  # a query with nothing to attend to
        return mask, mask, False
    if kind == "float_full":
        mask = torch.randn(batch, 1, num_queries, num_keys, generator=gen).to(dtype)  # (B, 1, Nq, Nk)
        mask = mask.masked_fill(torch.rand(mask.shape, generator=gen) < 0.2, float("-inf"))
        mask[1, 0, -1] = float("-inf")  # a query with nothing to attend to
        return mask, mask, False
    if kind == "window":
        predicate = masks.sliding_window(left=5, right=2)
    else:
        assert kind == "documents_causal"
        ids = torch.sort(torch.randint(0, 3, (batch, num_keys), generator=gen), dim=1).values  # (B, Nk)
        front = ids[:, :1].expand(batch, max(0, num_queries - num_keys))  # queries before the first key
        query_ids = torch.cat([front, ids], dim=1)[:, -num_queries:]  # (B, Nq): each query's own position
        predicate = masks.documents(query_ids, ids)
    return predicate, predicate.materialize(batch, heads, num_queries, num_keys), kind == "documents_causal"


def make_score_mod(kind: str, heads: int):
    """(headwise's score modifier, the textbook baseline's keyword arguments) for a kind."""
    if kind == "alibi":
        slopes = masks.alibi_slopes(heads, dtype=torch.float64)  # (Hq,)
        return masks.alibi(slopes), {"alibi_slopes": slopes}
    if kind == "softcap":
        return masks.softcap(5.0), {"softcap": 5.0}
    return None, {}


def grid():
    """Every registered backend × the covering design; a case a backend's capabilities exclude is
    skipped with the backend's reason; one that excludes only the backward checks the forward."""
    cases = []
    for name, backend in BACKENDS.items():
        for config in GRID:
            request = grid_request(config)
            reason = backend.unsupported(replace(request, requires_grad=True))
            backward = reason is None
            if not backward:
                reason = backend.unsupported(request)
            marks = [] if reason is None else [pytest.mark.skip(reason=f"{name} cannot {reason}")]
            cases.append(pytest.param(name, config, backward, marks=marks, id=f"{name}-{case_id(config)}"))
    return cases


def grid_request(config: dict) -> Request:
    """The request a grid case makes, as headwise.attention builds it (forward only, with lse)."""
    mask_kind = config["mask"]
    predicate = masks.causal() if "causal" in mask_kind or mask_kind in ("window",) else None
    score_mod = make_score_mod(config["score_mod"], KV_HEADS * config["group"])[0]
    tensor = {"bool_2d": "bool", "key_padding": "bool", "causal_and_padding": "bool", "bool_full": "bool"}
    return Request(
        torch.device("cpu"),
        config["dtype"],
        return_lse=False,
        num_queries=config["nq"],
        num_keys=config["nk"],
        head_dim=config["head_dim"],
        mask="float" if mask_kind == "float_full" else tensor.get(mask_kind, "none"),
        predicate=predicate,
        score_mod=score_mod,
    )


def run_with_grads(fn, q, k, v, d_out, backward=True):
    """fn(q, k, v) -> (out, lse or None); returns (out, lse, dq, dk, dv) for the loss sum(out · d_out),
    the gradients None without the backward."""
    q, k, v = (t.detach().requires_grad_(backward) for t in (q, k, v))
    out, lse = fn(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), d_out) if backward else (None, None, None)
    return out.detach(), (None if lse is None else lse.detach()), *grads


@pytest.mark.parametrize("backend,config,backward", grid())
def test_matches_float64_reference(backend, config, backward):
    """The oracle grid: out, lse (where the backend has one) and the gradients of every registered backend
    against the float64 reference, by the ratio rule (see oracle.py) with k = 2 for out and lse and 3 for
    the gradients; in float64, to 1e-12 of the magnitude. The float64 reference is held to the textbook
    attention of oracle.py instead of to itself."""
    dtype, nq, nk, head_dim, group = (config[n] for n in ("dtype", "nq", "nk", "head_dim", "group"))
    gen = torch.Generator().manual_seed(nq * 1000 + nk * 10 + head_dim + group)
    heads = KV_HEADS * group
    q = torch.randn(BATCH, heads, nq, head_dim, generator=gen).to(dtype)  # (B, Hq, Nq, Dh)
    k = torch.randn(BATCH, KV_HEADS, nk, head_dim, generator=gen).to(dtype)  # (B, Hkv, Nk, Dh)
    v = torch.randn(BATCH, KV_HEADS, nk, head_dim, generator=gen).to(dtype)  # (B, Hkv, Nk, Dh)
    d_out = torch.randn(BATCH, heads, nq, head_dim, generator=gen).to(dtype)
    mask, dense, causal = make_mask(config["mask"], BATCH, heads, nq, nk, dtype, gen)
    score_mod, textbook = make_score_mod(config["score_mod"], heads)
    with_lse = BACKENDS[backend].capabilities.lse

    def textbook_attention(q, k, v):
        baseline_mask = dense if dense is None or dense.dtype == torch.bool else dense.to(q.dtype)
        out, _, lse = naive_attention_lse(q, k, v, mask=baseline_mask, causal=causal, **textbook)
        return out, lse

    def headwise_attention(name, mask):
        def run(q, k, v):
            out, lse = (
                headwise.attention(
                    q, k, v, mask=mask, causal=causal, score_mod=score_mod, return_lse=True, backend=name
                )
                if with_lse or name == "reference"
                else (
                    headwise.attention(q, k, v, mask=mask, causal=causal, score_mod=score_mod, backend=name),
                    None,
                )
            )
            return out, lse

        return run

    golden_mask = mask.double() if isinstance(mask, torch.Tensor) and mask.is_floating_point() else mask
    doubles = (q.double(), k.double(), v.double(), d_out.double())
    if backend == "reference" and dtype == torch.float64:
        golden = run_with_grads(textbook_attention, *doubles)
    else:
        golden = run_with_grads(headwise_attention("reference", golden_mask), *doubles)
    fast = run_with_grads(headwise_attention(backend, mask), q, k, v, d_out, backward)
    baseline = run_with_grads(textbook_attention, q, k, v, d_out)
    magnitude = max(g.abs().max().item() for g in golden[2:] + golden[:1] if g.numel())
    for what, f, g, b, ratio in zip(
        ("out", "lse", "dq", "dk", "dv"), fast, golden, baseline, (2, 2, 3, 3, 3), strict=True
    ):
        if f is None:
            continue
        if what == "lse":  # rows that see no key: -inf in all three
            seen = torch.isfinite(g)
            assert torch.equal(torch.isfinite(f), seen), "lse: the rows that see no key differ"
            f, g, b = f[seen], g[seen], b[seen]
        if dtype == torch.float64:
            torch.testing.assert_close(f, g.to(f.dtype), rtol=0, atol=1e-12 * max(1.0, magnitude))
        else:
            assert_by_ratio(f, g, b, ratio, what, magnitude)


def test_reference_worked_example():
    """One query, two keys, by hand: weights = softmax([1, 0]) = [e, 1] / (e + 1)."""
    q = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)  # (1, 1, 1, 2)
    k = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]], dtype=torch.float64)  # (1, 1, 2, 2)
    v = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)  # (1, 1, 2, 2)
    out, weights = headwise.attention(q, k, v, scale=1.0, return_weights=True, backend="reference")
    e = math.e
    torch.testing.assert_close(
        weights[0, 0, 0], torch.tensor([e / (e + 1), 1 / (e + 1)], dtype=torch.float64)
    )
    torch.testing.assert_close(
        out[0, 0, 0], torch.tensor([(e + 3) / (e + 1), (2 * e + 4) / (e + 1)]).double()
    )
    default = headwise.attention(q, k, v, backend="reference")  # scale 1/√2
    expected = torch.softmax(torch.tensor([1 / math.sqrt(2), 0.0], dtype=torch.float64), 0) @ v[0, 0]
    torch.testing.assert_close(default[0, 0, 0], expected, rtol=0, atol=1e-15)


def gradcheck_inputs(nq=5, nk=6, heads=4, kv_heads=2, head_dim=3, value_dim=4):
    gen = torch.Generator().manual_seed(7)
    shapes = ((2, heads, nq, head_dim), (2, kv_heads, nk, head_dim), (2, kv_heads, nk, value_dim))
    return [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for s in shapes]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nq,nk,causal", [(5, 6, False), (5, 6, True), (6, 4, True), (1, 6, True)])
def test_gradcheck(backend, nq, nk, causal):
    require(backend, mask="float", predicate=masks.causal(), requires_grad=True)
    q, k, v = gradcheck_inputs(nq, nk)
    mask = torch.rand(2, 1, nq, nk, generator=torch.Generator().manual_seed(3)) < 0.8
    mask[0, 0, -1] = False  # one query with nothing to attend to: its gradient is zero, not NaN

    def fn(q, k, v):
        return headwise.attention(q, k, v, mask=mask, causal=causal, backend=backend)

    assert torch.autograd.gradcheck(fn, (q, k, v))
    float_mask = torch.zeros(nq, nk, dtype=torch.float64).masked_fill(~mask[1, 0], float("-inf"))
    assert torch.autograd.gradcheck(
        lambda q, k, v: headwise.attention(q, k, v, mask=float_mask, scale=0.3, backend=backend), (q, k, v)
    )


@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_masked_rows_give_zeros_and_zero_gradients(backend, dtype):
    require(backend, dtype=dtype, mask="float", predicate=masks.causal(), requires_grad=True)
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in gradcheck_inputs(nq=6, nk=4, value_dim=3))
    mask = torch.ones(2, 4, 6, 4, dtype=torch.bool)
    mask[1, 2, 3] = False  # one query of one head of one sequence sees nothing
    float_mask = torch.zeros(2, 1, 1, 4, dtype=dtype)
    float_mask[0] = float("-inf")  # every query of sequence 0 sees nothing
    empty_rows = [
        ({"mask": mask}, (1, 2, 3)),
        ({"mask": float_mask}, (0,)),
        ({"causal": True}, (slice(None), slice(None), slice(0, 2))),  # Nq = 6 > Nk = 4: two rows see nothing
    ]
    for kwargs, rows in empty_rows:
        out = headwise.attention(q, k, v, backend=backend, **kwargs)
        dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v))
        assert all(torch.isfinite(t).all() for t in (out, dq, dk, dv))
        assert out[rows].abs().max() == 0 and dq[rows].abs().max() == 0
    if backend == "auto" or BACKENDS[backend].capabilities.weights:
        _, weights = headwise.attention(q, k, v, mask=mask, return_weights=True, backend=backend)
        assert weights[1, 2, 3].abs().max() == 0
        row_sums = weights[0].sum(-1).double()  # 4 weights, each rounded to the dtype
        torch.testing.assert_close(
            row_sums, torch.ones_like(row_sums), rtol=0, atol=4 * torch.finfo(dtype).eps
        )


@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
def test_empty_sequences(backend):
    require(backend, requires_grad=True)
    q, k, v = (torch.randn(2, 4, n, 8, dtype=torch.float64, requires_grad=True) for n in (3, 0, 0))
    out = headwise.attention(q, k, v, backend=backend)
    assert torch.equal(out, torch.zeros(2, 4, 3, 8, dtype=torch.float64))
    assert torch.equal(torch.autograd.grad(out.sum(), q)[0], torch.zeros_like(q))
    no_queries = headwise.attention(
        q[:, :, :0], torch.randn(2, 4, 5, 8).double(), torch.randn(2, 4, 5, 8).double()
    )
    assert no_queries.shape == (2, 4, 0, 8) and no_queries.numel() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_value_width_and_custom_scale(backend):
    require(backend, predicate=masks.causal(), requires_grad=True)
    q, k, v = gradcheck_inputs(head_dim=5, value_dim=7)
    out = headwise.attention(q, k, v, scale=0.25, causal=True, backend=backend)
    expected, _ = naive_attention(q, k, v, causal=True, scale=0.25)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def eye_values(batch, kv_heads, num_keys, dtype=torch.float64):
    """v = identity, so that out = weights · v reads back the (dropped-out) weights themselves."""
    return torch.eye(num_keys, dtype=dtype).expand(batch, kv_heads, num_keys, num_keys)  # (B, Hkv, Nk, Nk)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_keeps_the_right_fraction(backend):
    require(backend, dropout_p=0.3)
    torch.manual_seed(0)
    p = 0.3
    q, k = torch.randn(4, 4, 64, 16).double(), torch.randn(4, 4, 64, 16).double()
    weights = headwise.attention(q, k, eye_values(4, 4, 64), backend=backend)  # (B, H, Nq, Nk)
    dropped = headwise.attention(q, k, eye_values(4, 4, 64), dropout_p=p, backend=backend)
    kept = dropped != 0
    assert abs(kept.double().mean().item() - (1 - p)) < 0.01  # 65,536 draws: 5 standard deviations
    torch.testing.assert_close(dropped[kept], weights[kept] / (1 - p))  # kept weights are scaled up


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_unbiased_and_seeded(backend):
    require(backend, dropout_p=0.5)
    torch.manual_seed(1)
    p, runs = 0.5, 4000
    q, k, v = torch.randn(1, 2, 8, 4).double(), torch.randn(1, 2, 8, 4).double(), eye_values(1, 2, 8)
    weights = headwise.attention(q, k, v, backend=backend)  # (1, 2, 8, 8)
    mean = sum(headwise.attention(q, k, v, dropout_p=p, backend=backend) for _ in range(runs)) / runs
    sigma = weights * math.sqrt(p / (1 - p) / runs)  # standard deviation of the mean of scaled Bernoullis
    assert ((mean - weights).abs() <= 6 * sigma + 1e-12).all()
    torch.manual_seed(5)
    first = headwise.attention(q, k, v, dropout_p=p, backend=backend)
    torch.manual_seed(5)
    assert torch.equal(first, headwise.attention(q, k, v, dropout_p=p, backend=backend))


def test_dropout_weights_are_the_ones_applied():
    torch.manual_seed(2)
    q, k, v = gradcheck_inputs()
    out, weights = headwise.attention(q, k, v, dropout_p=0.4, return_weights=True)
    torch.testing.assert_close(out, weights @ v.repeat_interleave(2, dim=1), rtol=0, atol=1e-14)


def request(**overrides):
    fields = {
        "device": torch.device("cpu"),
        "dtype": torch.float32,
        "return_weights": False,
        "tracing": False,
    }
    return Request(**{**fields, **overrides})


def test_auto_picks_sdpa_unless_it_cannot():
    large = {"num_queries": 1024, "num_keys": 1024}
    assert choose("auto", request(**large)).backend == "sdpa"
    assert choose("auto", request(return_weights=True, **large)).backend == "dense"
    assert choose("auto", request(tracing=True, **large)).backend == "reference"
    assert choose("auto", request(return_lse=True, **large)).backend == "chunked"


def test_auto_ranks_only_registered_backends():
    """The table names registered backends only; one it does not rank is reachable by name only."""
    for device in ("cpu", "cuda"):
        for dtype in (torch.float32, torch.bfloat16):
            assert set(auto_order(request(device=torch.device(device), dtype=dtype))) <= set(BACKENDS)


def test_auto_on_cuda_puts_triton_first_for_mask_predicates_only():
    cuda = {"device": torch.device("cuda"), "num_queries": 1024, "num_keys": 1024}
    assert auto_order(request(**cuda))[:2] == ("sdpa", "triton")
    assert auto_order(request(predicate=masks.causal(), **cuda))[:2] == ("sdpa", "triton")  # is_causal
    window = masks.sliding_window(128)
    assert auto_order(request(predicate=window, **cuda))[:2] == ("triton", "sdpa")


@pytest.mark.parametrize("kind", ["AVX512-bf16-fp16", "AVX512-bf16-fp16-amx", "AVX2"])
def test_the_static_table_follows_the_cpu_kind(kind, monkeypatch):
    """AVX-512 bf16 (benchmarks/results/speed-cpu-bf16.md): dense for short bf16, SDPA from 512²; with AMX
    (speed-cpu-avx512.md) SDPA for the short forward; AVX2 (speed-cpu-avx2.md): bf16 forward with SDPA in
    bf16, forward + backward in float32 (dense up to 512²)."""
    monkeypatch.setattr(tuning, "cpu_kind", lambda: kind)
    small = {"dtype": torch.bfloat16, "num_queries": 512, "num_keys": 512}
    large = {**small, "num_keys": 1024}
    native = kind != "AVX2"
    short_forward = "dense" if native and "amx" not in kind else "sdpa"
    assert choose("auto", request(**small)) == Choice(short_forward, torch.bfloat16)
    assert choose("auto", request(**large)) == Choice("sdpa", torch.bfloat16)
    backward = choose("auto", request(requires_grad=True, **large))
    assert backward == Choice("sdpa", torch.bfloat16 if native else torch.float32)
    short = choose("auto", request(requires_grad=True, **small))
    assert short == Choice("dense", torch.bfloat16 if native else torch.float32)
    assert choose("auto", request(**{**small, "dtype": torch.float32})) == Choice("sdpa", torch.float32)
    assert choose("auto", request(return_weights=True, **large)).backend == "dense"


@pytest.mark.parametrize("length", [12, 400])
@pytest.mark.parametrize("causal", [False, True])
def test_auto_differentiates_large_unscaled_scores_as_accurately_as_eager(length, causal):
    """Scores of ±1000 (scale=1, as T5): SDPA's CPU flash backward recomputes the weights from a float32
    lse and carries its rounding (|lse|·2^-24) into each; auto's sdpa sees |lse| > flash_cpu.LSE_LIMIT
    after the forward and takes the chunked backend's backward, whose weights come from the running
    maximum as eager's do, and holds to eager by the ratio rule."""
    gen = torch.Generator().manual_seed(4)
    q, k, v, d_out = (torch.randn(2, 2, length, 8, generator=gen) for _ in range(4))  # (B, H, N, Dh)
    q, k = q * 11, k * 11  # q·kᵀ up to ±1000

    def attention(name):
        return lambda q, k, v: (headwise.attention(q, k, v, scale=1.0, causal=causal, backend=name), None)

    assert (q @ k.transpose(-1, -2)).abs().max() > 500
    golden = run_with_grads(attention("reference"), q.double(), k.double(), v.double(), d_out.double())
    naive = lambda q, k, v: (naive_attention(q, k, v, scale=1.0, causal=causal)[0], None)  # noqa: E731
    baseline = run_with_grads(naive, q, k, v, d_out)
    fast = run_with_grads(attention("auto"), q, k, v, d_out)
    keep = (0, 2, 3, 4)  # out, dq, dk, dv (no lse)
    magnitude = max(golden[i].abs().max().item() for i in keep)
    for what, i in zip(("out", "dq", "dk", "dv"), keep, strict=True):
        assert_by_ratio(fast[i], golden[i], baseline[i], 3, what, magnitude)
    shape = {"num_queries": length, "num_keys": length, "requires_grad": True}
    assert choose("auto", request(**shape)) == Choice("sdpa", torch.float32)
    assert choose("auto", request(**shape, dtype=torch.float64)).backend == "sdpa"  # a float64 lse


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("group", [1, 2])
def test_sdpa_float32_backward_is_the_kernels_below_the_lse_limit_and_eagers_beyond(causal, group):
    """flash_cpu decides from the forward's lse: with every |lse| <= LSE_LIMIT the gradients are the flash
    kernel's own (F.scaled_dot_product_attention's, bit for bit), beyond it the dense backend's."""
    gen = torch.Generator().manual_seed(5)
    q, d_out = (torch.randn(1, 4, 48, 16, generator=gen) for _ in range(2))  # (B, Hq, N, Dh)
    k, v = (torch.randn(1, 4 // group, 48, 16, generator=gen) for _ in range(2))  # (B, Hkv, N, Dh)

    def gradients(factor, name):
        inputs = [t.clone().requires_grad_() for t in (q * factor, k, v)]
        if name == "torch":
            out = torch.nn.functional.scaled_dot_product_attention(*inputs, is_causal=causal, enable_gqa=True)
        else:
            out = headwise.attention(*inputs, causal=causal, backend=name)
        return torch.autograd.grad(out, inputs, d_out)

    small, large = 1.0, 400.0
    lse = headwise.attention(q * large, k, v, causal=causal, return_lse=True, backend="chunked")[1]
    assert (
        lse.abs().max() > flash_cpu.LSE_LIMIT >= headwise.attention(q, k, v, return_lse=True)[1].abs().max()
    )
    for ours, kernel in zip(gradients(small, "sdpa"), gradients(small, "torch"), strict=True):
        assert torch.equal(ours, kernel)
    for ours, exact in zip(gradients(large, "sdpa"), gradients(large, "dense"), strict=True):
        assert torch.equal(ours, exact)
    assert not torch.equal(gradients(large, "sdpa")[0], gradients(large, "torch")[0])


def test_sdpa_float32_training_with_values_wider_than_queries_and_a_nan():
    """The flash kernel needs Dv = Dh: values of another width (and the non-finite rule's careful rerun,
    which appends a column to v) train through SDPA's math path, held to the reference."""
    gen = torch.Generator().manual_seed(8)
    q, k = (torch.randn(1, 2, 20, 8, generator=gen) for _ in range(2))  # (B, H, N, Dh)
    v, d_out = (torch.randn(1, 2, 20, 5, generator=gen) for _ in range(2))  # (B, H, N, Dv)

    def attention(name):
        return lambda q, k, v: (headwise.attention(q, k, v, causal=True, backend=name), None)

    golden = run_with_grads(attention("reference"), q.double(), k.double(), v.double(), d_out.double())
    naive = lambda q, k, v: (naive_attention(q, k, v, causal=True)[0], None)  # noqa: E731
    baseline = run_with_grads(naive, q, k, v, d_out)
    fast = run_with_grads(attention("sdpa"), q, k, v, d_out)
    for what, i in zip(("out", "dq", "dk", "dv"), (0, 2, 3, 4), strict=True):
        assert_by_ratio(fast[i], golden[i], baseline[i], 3, what)
    v[0, 0, 3, 1] = float("nan")  # key 3 of head 0: the rows that see it become NaN, the others not
    out = headwise.attention(q.requires_grad_(), k, v, causal=True, backend="sdpa")
    assert out[0, 0, 3:].isnan().all() and not out[0, 0, :3].isnan().any() and not out[0, 1].isnan().any()
    (dq,) = torch.autograd.grad(out.nan_to_num().sum(), q)
    assert torch.isfinite(dq).all()


@pytest.mark.parametrize("length", [64, 512])
def test_sdpa_float32_backward_holds_to_eager_up_to_the_lse_limit(length):
    """Rows dominated by one key, the case where the kernel's backward is least accurate, scaled so that
    max |lse| is just under flash_cpu.LSE_LIMIT: the kernel's own backward holds to eager's by the ratio
    rule."""
    gen = torch.Generator().manual_seed(6)
    k, v, d_out = (torch.randn(1, 4, length, 64, generator=gen) for _ in range(3))  # (B, H, N, Dh)
    partner = torch.randint(0, length, (length,), generator=gen)
    q = 0.3 * torch.randn(1, 4, length, 64, generator=gen) + k[:, :, partner]  # query i aligned with a key
    lse = headwise.attention(q.double(), k.double(), v.double(), return_lse=True, backend="reference")[1]
    q = q * (0.95 * flash_cpu.LSE_LIMIT / lse.abs().max().item())

    def attention(name):
        return lambda q, k, v: (headwise.attention(q, k, v, backend=name), None)

    golden = run_with_grads(attention("reference"), q.double(), k.double(), v.double(), d_out.double())
    baseline = run_with_grads(lambda q, k, v: (naive_attention(q, k, v)[0], None), q, k, v, d_out)
    fast = run_with_grads(attention("sdpa"), q, k, v, d_out)
    lse = headwise.attention(q.double(), k.double(), v.double(), return_lse=True, backend="reference")[1]
    assert 0.8 * flash_cpu.LSE_LIMIT < lse.abs().max() <= flash_cpu.LSE_LIMIT
    keep = (0, 2, 3, 4)  # out, dq, dk, dv
    magnitude = max(golden[i].abs().max().item() for i in keep)
    for what, i in zip(("out", "dq", "dk", "dv"), keep, strict=True):
        assert_by_ratio(fast[i], golden[i], baseline[i], 3, what, magnitude)


def test_auto_computes_bf16_in_float32_where_it_chose_so(monkeypatch):
    """A bf16 call computed in float32 returns bf16, and is at least as accurate as bf16 throughout."""
    monkeypatch.setattr(tuning, "cpu_kind", lambda: "AVX2")
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 33, 16, generator=gen).bfloat16().requires_grad_() for _ in range(3))
    out = headwise.attention(q, k, v, causal=True)
    golden = headwise.attention(q.double(), k.double(), v.double(), causal=True, backend="reference")
    in_bf16 = headwise.attention(q, k, v, causal=True, backend="sdpa")
    assert out.dtype == torch.bfloat16
    assert (out.double() - golden).abs().max() <= (in_bf16.double() - golden).abs().max()
    (grad,) = torch.autograd.grad(out.sum(), q)
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad).all()


def test_auto_returns_the_reference_weights():
    q, k, v = gradcheck_inputs()
    _, weights = headwise.attention(q, k, v, causal=True, return_weights=True)
    _, expected = naive_attention(q, k, v, causal=True)
    torch.testing.assert_close(weights, expected, rtol=0, atol=1e-14)


Q, K, V = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 3)
BAD_INPUTS = [
    ({"q": Q[0]}, ValueError, r"q must be 4-D \(B, Hq, Nq, Dh\), got shape \(4, 5, 8\)"),
    ({"k": [1.0]}, TypeError, "k must be a torch.Tensor, got list"),
    ({"q": Q.long()}, TypeError, "q has dtype torch.int64; attention needs a floating dtype"),
    ({"v": V.double()}, TypeError, "q, k and v must share one dtype"),
    ({"q": Q[:1]}, ValueError, "one batch size B, got 1, 2 and 2"),
    ({"v": V[:, :1]}, ValueError, "same number of heads Hkv, got 2 and 1"),
    ({"v": V[:, :, :5]}, ValueError, "same length Nk, got 6 and 5"),
    ({"k": K[..., :4]}, ValueError, "same head width Dh, got 8 and 4"),
    (
        {"q": torch.randn(2, 3, 5, 8)},
        ValueError,
        "Hq = 3 must be a positive multiple of the key/value heads Hkv = 2",
    ),
    (
        {"mask": torch.ones(5, 7, dtype=torch.bool)},
        ValueError,
        r"mask has shape \(5, 7\), which does not broadcast",
    ),
    (
        {"mask": torch.ones(5, 6, dtype=torch.int32)},
        TypeError,
        "mask has dtype torch.int32; expected torch.bool",
    ),
    ({"mask": [[True]]}, TypeError, "mask must be a torch.Tensor or None, got list"),
    ({"dropout_p": 1.0}, ValueError, r"dropout_p must be a number in \[0, 1\), got 1.0"),
    ({"dropout_p": -0.1}, ValueError, r"dropout_p must be a number in \[0, 1\), got -0.1"),
    ({"scale": "big"}, TypeError, "scale must be a number or None"),
    ({"scale": float("nan")}, ValueError, "scale must be finite, got nan"),
    ({"causal": 1}, TypeError, "causal must be a bool, got int"),
    (
        {"backend": "flash"},
        ValueError,
        re.escape(f"backend must be one of {['auto', *BACKENDS]}, got 'flash'"),
    ),
    (
        {"backend": "sdpa", "return_weights": True},
        ValueError,
        "backend 'sdpa' cannot return the attention weights",
    ),
]


@pytest.mark.parametrize("overrides,error,message", BAD_INPUTS)
def test_bad_input_names_the_argument(overrides, error, message):
    args = {"q": Q, "k": K, "v": V, **overrides}
    with pytest.raises(error, match=message):
        headwise.attention(args.pop("q"), args.pop("k"), args.pop("v"), **args)


def test_inputs_on_different_devices_are_refused():
    meta = torch.randn(2, 2, 6, 8, device="meta")
    with pytest.raises(ValueError, match="q, k and v must be on one device, got cpu, meta and cpu"):
        headwise.attention(Q, meta, V)
    with pytest.raises(ValueError, match="mask is on meta but the queries are on cpu"):
        headwise.attention(Q, K, V, mask=torch.ones(5, 6, dtype=torch.bool, device="meta"))


def test_sdpa_shares_key_value_heads_without_copying():
    q, k, v = torch.randn(2, 8, 64, 32), torch.randn(2, 2, 64, 32), torch.randn(2, 2, 64, 32)
    with torch.profiler.profile(record_shapes=True) as profile:
        headwise.attention(q, k, v, causal=True, backend="sdpa")
    ops = {event.name for event in profile.events()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops  # torch's fused CPU kernel ran
    copies = {
        (event.name, str(event.input_shapes))
        for event in profile.events()
        if event.name in {"aten::repeat_interleave", "aten::expand", "aten::clone", "aten::copy_"}
        and any(math.prod(shape) >= k.numel() for shape in event.input_shapes if shape)
    }  # (the non-finite check's sums copy a few partial sums, never k or v)
    assert not copies


def test_no_fast_path_imports_the_reference():
    """The oracle stays independent: no module of a fast backend imports the reference backend."""
    for name in BACKENDS.keys() - {"reference"}:
        spec = importlib.util.find_spec(f"headwise.backends.{name}")
        files = (
            [pathlib.Path(spec.origin)]
            if spec.submodule_search_locations is None
            else sorted(pathlib.Path(spec.origin).parent.rglob("*.py"))
        )
        for file in files:
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or "", *(alias.name for alias in node.names)]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                assert not any(n == "reference" or n.endswith(".reference") for n in names), (
                    f"{file.name} of backend {name!r} imports the reference"
                )
