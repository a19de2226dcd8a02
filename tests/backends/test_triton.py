"""The triton backend's kernels under Triton's CPU interpreter: out, lse and the gradients of q, k and v held
to the float64 reference by the ratio rule, at small sizes in float32 (16 × 16 tiles, ragged edges).

TRITON_INTERPRET must be set before the process first imports triton: Triton builds its own @jit library
(tl.max, tl.cdiv, tl.rand) for the interpreter or the GPU at import, and the backend's kernels when they
are first used. So this module sets it at the top, before importing triton, and puts the previous value
back right after: other test modules in the same worker see the backend refuse the CPU again (its
`unsupported` reads the variable at each call), and the module fixture sets it again while these tests run.
The catch is a process that imported triton earlier without it, as a full run does (collecting test_hf
imports transformers, which imports triton): there the only test collected here is
`test_in_a_fresh_process`, which runs this file again in a child process with TRITON_INTERPRET=1. (Running
`TRITON_INTERPRET=1 pytest ...` runs everything in-process.) Once imported for the interpreter, triton
stays so in that process: GPU kernels need another process, and the backend says so.

The interpreter runs a 16 × 16 tile in a few milliseconds, so each case is B·Hq ≤ 8 heads of ≤ 64
queries and keys. Left out, and why: bfloat16 (the interpreter's bf16 tl.dot is wrong,
triton-lang/triton#11584: the backend refuses it under the interpreter); the GPU launch configurations and
their OutOfResources fallback (the interpreter runs one configuration, 16 × 16); races in the atomic dQ
(the interpreter runs programs one after another, so here the deterministic test can only show that both
dQ paths agree; benchmarks/triton_gpu.py repeats the backward 250 times on a GPU); head widths above 64
(every width is the same code, padded to a power of two; 48 covers the padding).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from oracle import assert_by_ratio, naive_attention

_previous = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"  # before triton's first import in this process (see above)
try:
    pytest.importorskip("triton")
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
finally:
    if _previous is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = _previous
IN_PROCESS = isinstance(tl.cdiv, InterpretedFunction)  # False: triton was imported before, for the GPU

import headwise  # noqa: E402
from headwise import masks  # noqa: E402
from headwise.backends import Request, choose  # noqa: E402
from headwise.backends import triton as triton_backend  # noqa: E402
from headwise.backends.triton import attention_with_lse, make_plan  # noqa: E402

CHILD = "test_in_a_fresh_process"
pytestmark = pytest.mark.gpu  # the GPU kernels, run here under Triton's CPU interpreter


@pytest.fixture(autouse=True, scope="module")
def interpreter():
    """TRITON_INTERPRET=1 while this module's tests run."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TRITON_INTERPRET", "1")
    yield
    patch.undo()


def test_in_a_fresh_process():
    if IN_PROCESS:
        pytest.skip("the tests of this module ran in this process")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"],
        env={**os.environ, "TRITON_INTERPRET": "1"},
        cwd=Path(__file__).parents[2],  # the repository root
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]


INF = float("-inf")


def inputs(batch, heads, kv_heads, nq, nk, head_dim, value_dim=None, seed=0, dtype=torch.float32):
    """q (B, Hq, Nq, Dh), k (B, Hkv, Nk, Dh), v (B, Hkv, Nk, Dv), d_out (B, Hq, Nq, Dv), d_lse (B, Hq, Nq)."""
    gen = torch.Generator().manual_seed(seed)
    value_dim = value_dim or head_dim
    shapes = (
        (batch, heads, nq, head_dim),
        (batch, kv_heads, nk, head_dim),
        (batch, kv_heads, nk, value_dim),
        (batch, heads, nq, value_dim),
        (batch, heads, nq),
    )
    return [torch.randn(shape, generator=gen).to(dtype) for shape in shapes]


def run(fn, q, k, v, d_out, d_lse):
    """fn(q, k, v) -> (out, lse); returns (out, lse, dq, dk, dv) for the loss Σ out·d_out + Σ lse·d_lse over
    the queries that see a key (lse = -inf elsewhere)."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out, lse = fn(q, k, v)
    seen = lse != INF
    loss = (out * d_out.to(out.dtype)).sum() + (lse.masked_fill(~seen, 0.0) * d_lse.to(lse.dtype)).sum()
    return (out.detach(), lse.detach(), *torch.autograd.grad(loss, (q, k, v)))


def keys_ids(batch, nk, sort, seed=5):
    ids = torch.randint(0, 3, (batch, nk), generator=torch.Generator().manual_seed(seed))  # (B, Nk)
    return ids.sort(dim=1).values if sort else ids


def bool_mask(batch, nq, nk, heads=2):
    gen = torch.Generator().manual_seed(2)
    mask = torch.rand(batch, heads, nq, nk, generator=gen) < 0.7  # (B, Hq, Nq, Nk)
    mask[1, 0, 3] = False  # a query with nothing to attend to
    return mask


def float_mask(batch, nq, nk):
    gen = torch.Generator().manual_seed(3)
    mask = torch.randn(nq, nk, generator=gen).masked_fill(torch.rand(nq, nk, generator=gen) < 0.2, INF)
    mask[5, 1:] = INF  # a query that sees one key
    # Each query keeps its own key (Nq = Nk, causal): none sees nothing, as the reference's lse gradient is
    # NaN there (logsumexp's backward of an all -inf row, which a float mask passes through).
    return mask.fill_diagonal_(0.5)  # (Nq, Nk)


def slopes(heads):
    return masks.alibi(masks.alibi_slopes(heads))


# (id, B, Hq, Hkv, Nq, Nk, Dh, Dv, causal, mask(B, Nq, Nk), score_mod(Hq), tiles)
CASES = [
    ("causal-Nq<Nk-gqa", 1, 4, 2, 24, 40, 32, 32, True, None, None, None),
    ("causal-Nq>Nk-mqa", 1, 4, 1, 40, 24, 48, 48, True, None, None, None),  # 16 queries see nothing
    ("plain-dh64-dv24", 1, 2, 2, 33, 17, 64, 24, False, None, None, None),
    ("window", 1, 2, 1, 48, 48, 32, 32, False, lambda b, nq, nk: masks.sliding_window(5, 2), None, (16, 32)),
    ("window-cross", 1, 2, 2, 20, 44, 48, 48, False, lambda b, nq, nk: masks.sliding_window(6), None, None),
    (
        "key-lengths-causal",
        2, 2, 2, 32, 40, 32, 32, False,
        lambda b, nq, nk: masks.key_lengths(torch.tensor([0, 29])) & masks.causal(), None, None,
    ),  # batch 0 sees nothing
    (
        "documents-packed-causal",
        2, 4, 2, 40, 40, 32, 32, True,
        lambda b, nq, nk: masks.documents(keys_ids(b, nk, True)), None, (32, 16),
    ),
    (
        "documents-unsorted-cross",
        2, 2, 1, 24, 32, 48, 48, False,
        lambda b, nq, nk: masks.documents(keys_ids(b, nk, False)[:, nk - nq :], keys_ids(b, nk, False)),
        None, None,
    ),
    (
        "prefix-lm-dense",
        2, 2, 2, 32, 32, 32, 32, False, lambda b, nq, nk: masks.prefix_lm(torch.tensor([5, 20])), None, None,
    ),
    (
        "not-causal-or-window-planned",  # dense, its loops bounded by the block plan's key range
        1, 2, 2, 160, 160, 32, 32, False, lambda b, nq, nk: ~masks.causal() | masks.sliding_window(3, 0),
        None, (16, 16),
    ),
    ("bool-mask", 2, 2, 1, 24, 40, 32, 32, False, lambda b, nq, nk: bool_mask(b, nq, nk), None, None),
    ("float-mask-causal", 1, 2, 2, 24, 24, 48, 48, True, lambda b, nq, nk: float_mask(b, nq, nk), None, None),
    ("alibi-causal", 1, 4, 2, 32, 40, 32, 32, True, None, slopes, None),
    ("softcap", 1, 2, 1, 24, 24, 48, 48, False, None, lambda h: masks.softcap(1.5), None),
    (
        "softcap-then-alibi-window",
        1, 2, 2, 32, 32, 32, 32, False, lambda b, nq, nk: masks.sliding_window(7, 7),
        lambda h: masks.softcap(1.5).then(slopes(h)), None,
    ),
    (
        "alibi-then-softcap-documents",
        2, 2, 1, 32, 32, 32, 32, True, lambda b, nq, nk: masks.documents(keys_ids(b, nk, True)),
        lambda h: slopes(h).then(masks.softcap(1.5)), None,
    ),
]  # fmt: skip


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case[0] for case in CASES])
def test_matches_float64_reference(index):
    _, batch, heads, kv_heads, nq, nk, head_dim, value_dim, causal, make_mask, make_mod, tiles = CASES[index]
    q, k, v, d_out, d_lse = inputs(batch, heads, kv_heads, nq, nk, head_dim, value_dim, seed=index)
    mask = make_mask(batch, nq, nk) if make_mask else None
    score_mod = make_mod(heads) if make_mod else None
    deterministic = index % 2 == 1  # half the grid through each dQ path

    def reference(q, k, v):
        return headwise.attention(
            q, k, v, mask=mask, causal=causal, score_mod=score_mod, return_lse=True, backend="reference"
        )

    def fast(q, k, v):
        if tiles is None and not deterministic:  # the public path
            return headwise.attention(
                q, k, v, mask=mask, causal=causal, score_mod=score_mod, return_lse=True, backend="triton"
            )
        tensor, predicate = masks.split_causal(mask, causal)
        return attention_with_lse(
            q, k, v, mask=tensor, predicate=predicate, score_mod=score_mod, deterministic=deterministic,
            tiles=tiles,
        )  # fmt: skip

    golden = run(reference, q.double(), k.double(), v.double(), d_out, d_lse)
    baseline = run(reference, q, k, v, d_out, d_lse)
    result = run(fast, q, k, v, d_out, d_lse)
    assert result[1].dtype == torch.float32
    empty = golden[1] == INF  # (B, Hq, Nq): queries that see no key
    assert torch.equal(result[1] == INF, empty), "lse: -inf where the reference's is not, or the reverse"
    assert not result[0][empty].any() and not result[2][empty].any()  # zeros and zero gradients
    magnitude = max(t.abs().max().item() for t in golden[2:] + golden[:1] if t.numel())
    finite = [(r[0], r[1].masked_fill(empty, 0.0), *r[2:]) for r in (result, golden, baseline)]
    for what, f, g, b, ratio in zip(("out", "lse", "dq", "dk", "dv"), *finite, (2, 2, 3, 3, 3), strict=True):
        assert_by_ratio(f, g, b, ratio, what, magnitude)


def test_float16_accumulates_in_float32():
    q, k, v, d_out, d_lse = inputs(1, 4, 2, 24, 40, 32, dtype=torch.float16)

    def reference(q, k, v):
        return headwise.attention(q, k, v, causal=True, return_lse=True, backend="reference")

    def fast(q, k, v):
        return headwise.attention(q, k, v, causal=True, return_lse=True, backend="triton")

    golden = run(reference, q.double(), k.double(), v.double(), d_out, d_lse)
    baseline = run(reference, q, k, v, d_out, d_lse)
    result = run(fast, q, k, v, d_out, d_lse)
    assert result[0].dtype == torch.float16 and result[1].dtype == torch.float32
    magnitude = max(t.abs().max().item() for t in golden[2:] + golden[:1])
    names, ratios = ("out", "lse", "dq", "dk", "dv"), (2, 2, 3, 3, 3)
    for what, f, g, b, ratio in zip(names, result, golden, baseline, ratios, strict=True):
        assert_by_ratio(f, g, b, ratio, what, magnitude)


def test_fully_masked_rows_give_zeros_minus_infinity_and_zero_gradients():
    q, k, v, d_out, _ = inputs(2, 2, 1, 20, 24, 32)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    padding = masks.key_lengths(torch.tensor([0, 24]))  # batch 0: every key is padding
    out, lse = headwise.attention(q, k, v, mask=padding, causal=True, return_lse=True, backend="triton")
    d_q, d_k, d_v = torch.autograd.grad((out * d_out).sum() + lse[1].sum(), (q, k, v))
    assert not out[0].any() and (lse[0] == INF).all() and torch.isfinite(lse[1]).all()
    assert not d_q[0].any() and not d_k[0].any() and not d_v[0].any()
    assert all(torch.isfinite(t).all() for t in (out, d_q, d_k, d_v))


def test_padding_blocks_are_skipped():
    """Key blocks past every key length are never read: NaN there cannot reach the output or gradients."""
    q, k, v, d_out, _ = inputs(1, 2, 2, 32, 64, 32)
    k[:, :, 32:], v[:, :, 32:] = float("nan"), float("nan")  # key blocks 2 and 3 (of 16 keys)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    padding = masks.key_lengths(20)
    out = headwise.attention(q, k, v, mask=padding, backend="triton")
    expected = headwise.attention(q, k[:, :, :20], v[:, :, :20], backend="reference")
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    d_q, d_k, d_v = torch.autograd.grad(out, (q, k, v), d_out)
    assert torch.isfinite(d_q).all() and not d_k[:, :, 20:].any() and not d_v[:, :, 20:].any()


def test_strided_inputs():
    """q, k, v as views of (B, N, H, Dh) tensors, as a module's projections give them."""
    q, k, v, d_out, _ = inputs(1, 2, 1, 20, 24, 32)
    views = [t.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for t in (q, k, v)]
    assert views[0].stride(-1) == 1 and not views[0].is_contiguous()
    doubles = [t.detach().double().requires_grad_() for t in views]
    out = headwise.attention(*views, causal=True, backend="triton")
    expected = headwise.attention(*doubles, causal=True, backend="reference")
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)
    grads = torch.autograd.grad(out, views, d_out)
    expected_grads = torch.autograd.grad(expected, doubles, d_out.double())
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)


def test_empty_sequences():
    q, k, v = (torch.randn(2, 2, n, 32, requires_grad=True) for n in (5, 0, 0))
    out, lse = headwise.attention(q, k, v, return_lse=True, backend="triton")
    assert not out.any() and (lse == INF).all()
    assert not torch.autograd.grad(out.sum(), q)[0].any()
    nothing = headwise.attention(
        q[:, :, :0], torch.randn(2, 2, 3, 32), torch.randn(2, 2, 3, 32), backend="triton"
    )
    assert nothing.shape == (2, 2, 0, 32)


def test_attention_weights_from_its_lse_are_exact():
    q, k, v, _, _ = inputs(1, 4, 2, 20, 28, 32)
    window = masks.sliding_window(6, 1)
    _, lse = headwise.attention(q, k, v, mask=window, return_lse=True, backend="triton")
    _, expected = headwise.attention(
        q.double(), k.double(), v.double(), mask=window, return_weights=True, backend="reference"
    )
    weights = headwise.attention_weights(q, k, lse, mask=window)
    torch.testing.assert_close(weights.double(), expected, rtol=0, atol=1e-6)


def dropped_attention(q, k, v, keep, p, causal):
    """softmax(q·kᵀ·scale) with the kept weights scaled by 1 / (1 - p) and the rest zeroed, times v."""
    _, weights = naive_attention(q, k, v, causal=causal)  # (B, Hq, Nq, Nk)
    values = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)  # (B, Hq, Nk, Dv)
    return (weights * keep / (1 - p)) @ values  # (B, Hq, Nq, Dv)


def test_dropout_backward_regenerates_the_forward_mask():
    """With v = I the output is the dropped weights themselves, which shows the keep-mask; the gradients
    must be those of attention with that mask (float64 reference, ratio rule)."""
    p, nk = 0.3, 32
    q, k, v, d_out, _ = inputs(1, 4, 2, 24, nk, 32)
    eye = torch.eye(nk).expand(1, 2, nk, nk)  # (B, Hkv, Nk, Nk)
    torch.manual_seed(11)
    dropped = headwise.attention(q, k, eye, causal=True, dropout_p=p, backend="triton")  # (B, Hq, Nq, Nk)
    keep = dropped != 0  # the weights are > 0 wherever causal allows
    allowed = torch.ones(24, nk, dtype=torch.bool).tril(nk - 24)  # (Nq, Nk)
    kept = keep[..., allowed].float().mean().item()
    assert abs(kept - (1 - p)) < 0.04, kept  # 2 × 4 × 24 × 32 draws, ~2/3 of them allowed: σ ≈ 0.006
    assert not torch.equal(keep[0, 0], keep[0, 1])  # each head draws its own mask

    def fast(q, k, v):
        torch.manual_seed(11)  # the same seed: the same mask
        return headwise.attention(q, k, v, causal=True, dropout_p=p, backend="triton"), torch.zeros(1)

    def reference(q, k, v):
        return dropped_attention(q, k, v, keep, p, causal=True), torch.zeros(1)

    d_lse = torch.zeros(1)
    golden = run(reference, q.double(), k.double(), v.double(), d_out.double(), d_lse)
    baseline = run(reference, q, k, v, d_out, d_lse)
    result = run(fast, q, k, v, d_out, d_lse)
    magnitude = max(t.abs().max().item() for t in golden[2:] + golden[:1])
    for what, i, ratio in (("out", 0, 2), ("dq", 2, 3), ("dk", 3, 3), ("dv", 4, 3)):
        assert_by_ratio(result[i], golden[i], baseline[i], ratio, what, magnitude)


def test_dropout_is_seeded_by_torch():
    q, k, v, _, _ = inputs(1, 2, 1, 16, 24, 32)
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(headwise.attention(q, k, v, dropout_p=0.5, backend="triton"))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_gradients_match_finite_differences_in_float64():
    """Central differences along a random direction of q, of k and of v, through out and lse at once:
    causal, GQA, softcap then ALiBi, dropout, and the deterministic dQ kernel (the dropout test above runs
    the atomic one). (torch's gradcheck in fast mode scales its atol by Σu·Σv, ~1000 here: too loose.)"""
    q, k, v, _, _ = inputs(1, 2, 1, 20, 24, 32, dtype=torch.float64)
    mod = masks.softcap(1.5).then(masks.alibi(masks.alibi_slopes(2, torch.float64)))

    def fn(q, k, v):
        torch.manual_seed(3)  # the same dropout mask on every call: a deterministic function
        out, lse = attention_with_lse(
            q, k, v, predicate=masks.causal(), score_mod=mod, dropout_p=0.2, deterministic=True
        )
        return out, lse.masked_fill(lse == INF, 0.0)

    gen = torch.Generator().manual_seed(1)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    outputs = fn(*leaves)
    weights = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in outputs]
    grads = torch.autograd.grad(sum((t * w).sum() for t, w in zip(outputs, weights, strict=True)), leaves)
    eps = 1e-6
    for i, name in enumerate("qkv"):
        direction = torch.randn(leaves[i].shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            moved = [
                [t + sign * eps * direction if j == i else t for j, t in enumerate(leaves)]
                for sign in (1, -1)
            ]
            plus, minus = fn(*moved[0]), fn(*moved[1])
        numerical = sum(((a - b) * w).sum() for a, b, w in zip(plus, minus, weights, strict=True)) / (2 * eps)
        analytical = (grads[i] * direction).sum()
        assert abs(numerical - analytical) <= 1e-6 * max(1.0, abs(analytical)), (name, numerical, analytical)


def test_deterministic_backward_is_bitwise_repeatable(monkeypatch):
    q, k, v, d_out, d_lse = inputs(1, 4, 2, 40, 24, 48)
    mask = masks.sliding_window(9, 3)

    def grads(deterministic):
        return run(
            lambda q, k, v: attention_with_lse(q, k, v, predicate=mask, deterministic=deterministic),
            q, k, v, d_out, d_lse,
        )  # fmt: skip

    first, second, atomic = grads(True), grads(True), grads(False)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    for a, b in zip(first, atomic, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # the same sums, possibly in another order
    kernels = sys.modules["headwise.backends.triton.kernels"]
    asked = []
    backward = kernels.backward
    monkeypatch.setattr(kernels, "backward", lambda *a: asked.append(a[8]) or backward(*a))
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    run(lambda q, k, v: attention_with_lse(q, k, v, predicate=mask), q, k, v, d_out, d_lse)
    assert asked == [True]  # torch.use_deterministic_algorithms(True) picks the deterministic kernels


def test_plan_compiles_predicates():
    q, k = torch.randn(2, 4, 12, 8), torch.randn(2, 2, 20, 8)
    ids = torch.tensor([[0] * 7 + [1] * 9 + [2] * 4, [0] * 20])  # (B, Nk), packed
    mask = masks.documents(ids[:, 8:], ids) & masks.key_lengths(torch.tensor([18, 5])) & masks.causal()
    plan = make_plan(q, k, None, mask & masks.sliding_window(4, 9), 1.0, 0.0, 0, None)
    assert plan.window == (4, 0) and plan.dense is None and plan.documents is None
    lo, hi = plan.row_range  # (B, Nq): query i sees keys lo <= j < hi (before the window)
    dense = (masks.documents(ids[:, 8:], ids) & masks.key_lengths(torch.tensor([18, 5]))).materialize(
        2, 1, 12, 20
    )
    keys = torch.arange(20)
    assert torch.equal((keys >= lo[..., None]) & (keys < hi[..., None]), dense[:, 0])
    col_lo, col_hi = plan.col_range  # (B, Nk): key j is seen by queries col_lo <= i < col_hi
    queries = torch.arange(12)
    assert torch.equal(
        (queries >= col_lo[..., None]) & (queries < col_hi[..., None]), dense[:, 0].transpose(1, 2)
    )
    prefix = masks.prefix_lm(3) & masks.causal()
    assert make_plan(q, k, None, prefix, 1.0, 0.0, 0, None).dense.shape == (2, 4, 12, 20)
    unsorted = make_plan(q, k, None, masks.documents(ids.flip(1)[:, 8:], ids.flip(1)), 1.0, 0.0, 0, None)
    assert unsorted.documents is not None and unsorted.row_range is None


def request(**overrides):
    fields = {
        "device": torch.device("cpu"),
        "dtype": torch.float32,
        "return_weights": False,
        "tracing": False,
    }
    return Request(**{**fields, **overrides})


def test_declares_what_it_cannot_do(monkeypatch):
    q, k, v, _, _ = inputs(1, 2, 1, 4, 6, 32)
    refusals = [
        ({"return_weights": True}, "cannot return the attention weights"),
        (
            {"score_mod": masks.softcap(2).then(masks.softcap(3))},
            r"cannot apply the score modifier softcap\(2\)",
        ),
    ]
    for kwargs, message in refusals:
        with pytest.raises(ValueError, match=f"backend 'triton' {message}"):
            headwise.attention(q, k, v, backend="triton", **kwargs)
    with pytest.raises(ValueError, match="cannot run bfloat16 under Triton's CPU interpreter"):
        headwise.attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), backend="triton")
    cuda = torch.device("cuda")
    assert choose("auto", request(device=cuda, dtype=torch.float16)).backend == "sdpa"
    window = masks.sliding_window(8)
    assert choose("auto", request(device=cuda, dtype=torch.float16, predicate=window)).backend == "triton"
    assert choose("auto", request(device=cuda, dtype=torch.float16, return_lse=True)).backend == "triton"
    assert choose("auto", request(device=cuda, return_weights=True)).backend == "dense"
    twice = masks.softcap(2).then(masks.softcap(3))
    assert choose("auto", request(device=cuda, score_mod=twice)).backend == "dense"
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="cannot run on the CPU unless TRITON_INTERPRET=1"):
        headwise.attention(q, k, v, backend="triton")
    assert choose("auto", request()).backend != "triton"
    monkeypatch.setattr(triton_backend, "_triton_installed", lambda: False)
    assert "pip install 'headwise[gpu]'" in triton_backend.CAPABILITIES.unsupported(request(device=cuda))


def test_headwise_imports_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # import triton now fails
        "import headwise, torch\n"
        "from headwise.backends import BACKENDS, Request\n"
        "print(BACKENDS['triton'].unsupported(Request(torch.device('cuda'), torch.float16)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "run without Triton, which is not installed (pip install 'headwise[gpu]')" in result.stdout


if not IN_PROCESS:  # this process imported triton for the GPU: only test_in_a_fresh_process stays collected
    for _name in [name for name in globals() if name.startswith("test_") and name != CHILD]:
        del globals()[_name]
