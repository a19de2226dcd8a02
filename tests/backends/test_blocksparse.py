"""The block-sparse plan and backend (issue 22): every predicate of the masks package and their
combinations against the reference on the dense mask, gradients included; the plan's bounds; no (Nq, Nk)
tensor on its path; auto choosing it; torch.compile carrying the predicate instead of a dense mask.

Small blocks (BLOCK = 4) and chunks make a 13 × 17 call exercise everything a long one does: partial
and full blocks, padding past Nq and Nk, several groups and several chunks per group.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from mask_catalogue import B, everything
from oracle import assert_by_ratio, naive_attention
from torch.utils._python_dispatch import TorchDispatchMode

import headwise
from headwise import masks
from headwise.backends import BACKENDS, Request, blocksparse, choose
from headwise.backends.plan import make_plan, visible_pairs
from headwise.masks.spec import decode, encode

F64 = torch.float64
SIZES = [(13, 17), (17, 13), (16, 16), (1, 9)]  # (Nq, Nk): ragged blocks, cross attention, one query


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 4 and chunks of two query blocks' scores or so."""
    monkeypatch.setattr(blocksparse, "BLOCK", 4)
    monkeypatch.setattr(blocksparse, "CHUNK_BYTES", 2 * B * 4 * 4 * 8 * 8)


def inputs(nq, nk, dtype=F64, q_heads=4, kv_heads=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, q_heads, nq, 8, generator=gen, dtype=F64)  # (B, Hq, Nq, Dh)
    k = torch.randn(B, kv_heads, nk, 8, generator=gen, dtype=F64)  # (B, Hkv, Nk, Dh)
    v = torch.randn(B, kv_heads, nk, 5, generator=gen, dtype=F64)  # (B, Hkv, Nk, Dv)
    return [t.to(dtype).requires_grad_() for t in (q, k, v)]


def outputs_and_grads(q, k, v, backend, **options):
    """(out, lse, dq, dk, dv) of one call, lse's -inf rows set to 0 so that they compare."""
    out, lse = headwise.attention(q, k, v, backend=backend, return_lse=True, **options)
    upstream = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out * upstream).sum() + lse.clamp(min=-30).sum(), (q, k, v))
    return (out, lse.masked_fill(lse == float("-inf"), 0.0), *grads)


@pytest.mark.parametrize("nq, nk", SIZES)
def test_the_plan_never_skips_a_visible_pair_nor_calls_a_block_full_that_is_not(nq, nk):
    for predicate, expected in everything(nq, nk):  # expected (B, 1, Nq, Nk)
        plan = make_plan(predicate, nq, nk, 3, 4)
        for qb in range(plan.query_blocks):
            for kb in range(plan.key_blocks):
                block = expected[:, :, qb * 3 : qb * 3 + 3, kb * 4 : kb * 4 + 4]
                assert plan.visible[qb, kb] or not block.any(), (predicate, qb, kb)
                assert not plan.full[qb, kb] or (block.all() and block.shape[-1] == 4), (predicate, qb, kb)


@pytest.mark.parametrize("nq, nk", SIZES)
def test_the_plans_key_bounds_hold_every_visible_key_and_never_decrease(nq, nk):
    """Plan.key_bounds (what bounds the Triton kernels' loops for the predicates they read as a dense
    mask): each query's visible keys lie in [lo, hi), and lo and hi never decrease along the queries."""
    keys = torch.arange(nk)
    for predicate, expected in everything(nq, nk):  # expected (B, 1, Nq, Nk)
        lo, hi = make_plan(predicate, nq, nk, 3, 4).key_bounds()  # (Nq,) each
        inside = (keys >= lo[:, None]) & (keys < hi[:, None])  # (Nq, Nk)
        assert not (expected & ~inside).any(), predicate
        assert (lo.diff() >= 0).all() and (hi.diff() >= 0).all() and (lo <= hi).all(), predicate


def test_the_plan_groups_query_blocks_by_their_key_block_count():
    plan = make_plan(masks.sliding_window(8) & masks.causal(), 64, 64, 4, 4)
    groups = plan.groups()
    assert [g.width for g in groups] == [1, 2, 3]  # the first blocks see fewer keys; then 3 blocks each
    assert sorted(torch.cat([g.query_blocks for g in groups]).tolist()) == list(range(16))
    last = groups[-1]
    assert torch.equal(last.key_blocks[-1], torch.tensor([13, 14, 15]))
    assert last.partial[-1].tolist() == [True, False, True]  # the band's edges are partial, its middle full
    assert plan.density() == pytest.approx(sum(g.width * len(g.query_blocks) for g in groups) / 256)


@pytest.mark.parametrize("nq, nk", SIZES)
def test_every_predicate_matches_the_reference_with_gradients(nq, nk, small_blocks):
    """Float64: out, lse and every gradient equal the reference's on the dense mask, to rounding."""
    for predicate, expected in everything(nq, nk):
        q, k, v = inputs(nq, nk)
        fast = outputs_and_grads(q, k, v, "blocksparse", mask=predicate)
        golden = outputs_and_grads(q, k, v, "reference", mask=expected)
        for name, got, want in zip(("out", "lse", "dq", "dk", "dv"), fast, golden, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=f"{predicate!r}: {name}")


@pytest.mark.parametrize("nq, nk", [(64, 64), (62, 62), (61, 64)])
def test_narrow_diagonal_bands_run_as_a_band_and_match_the_reference(nq, nk, small_blocks):
    """Windows over as many key blocks as query blocks take the band layout (one strided view of the keys,
    flat over batch and heads, with mask tiles), whose edges are the sequence's and the heads' ends;
    float64: out, lse and every gradient equal the reference's, rows that see no key included."""
    shift = nk - nq
    bands = [
        (masks.sliding_window(9) & masks.causal(), lambda i, j: i + shift - 9 <= j <= i + shift),
        (masks.sliding_window(5, 3), lambda i, j: i + shift - 5 <= j <= i + shift + 3),
        (masks.sliding_window(6) & ~masks.sliding_window(0), lambda i, j: i + shift - 6 <= j < i + shift),
        (masks.sliding_window(3, 9) & masks.sliding_window(7), lambda i, j: i + shift - 3 <= j <= i + shift),
    ]
    for predicate, rule in bands:
        q, k, v = inputs(nq, nk)
        plan = make_plan(predicate, nq, nk, blocksparse.BLOCK, blocksparse.BLOCK)
        assert blocksparse._band_of(predicate, plan) is not None
        dense = torch.tensor([[rule(i, j) for j in range(nk)] for i in range(nq)])  # (Nq, Nk)
        fast = outputs_and_grads(q, k, v, "blocksparse", mask=predicate)
        golden = outputs_and_grads(q, k, v, "reference", mask=dense)
        for name, got, want in zip(("out", "lse", "dq", "dk", "dv"), fast, golden, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=f"{predicate!r}: {name}")
    lengths = masks.sliding_window(9) & masks.key_lengths(torch.tensor([50, 64]))  # depends on the batch
    plan = make_plan(lengths, nq, nk, blocksparse.BLOCK, blocksparse.BLOCK)
    assert not lengths.translation_invariant
    assert blocksparse._band_of(lengths, plan) is None


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_a_tensor_mask_beside_a_predicate(kind, small_blocks):
    nq, nk = 13, 17
    gen = torch.Generator().manual_seed(4)
    keep = torch.rand(B, 4, nq, nk, generator=gen) < 0.8  # (B, Hq, Nq, Nk)
    mask = keep if kind == "bool" else torch.randn(B, 1, 1, nk, generator=gen, dtype=F64)  # (B, 1, 1, Nk)
    predicate = masks.sliding_window(5, 2)
    q, k, v = inputs(nq, nk)
    fast = outputs_and_grads(q, k, v, "blocksparse", mask=mask, causal=True)
    dense = masks.combine(mask, masks.causal().materialize(B, 4, nq, nk), F64)  # the tensor mask & causal
    golden = outputs_and_grads(q, k, v, "reference", mask=dense)
    fast_window = outputs_and_grads(q, k, v, "blocksparse", mask=predicate)
    golden_window = outputs_and_grads(q, k, v, "reference", mask=predicate)
    for got, want in zip((*fast, *fast_window), (*golden, *golden_window), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", ["documents", "window"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_by_the_ratio_rule(dtype, case, small_blocks):
    """Against float64, no worse than twice plain PyTorch in the same dtype (3× for gradients); the
    window runs as a band."""
    nq = nk = 40
    ids = torch.arange(nq).div(9, rounding_mode="floor").expand(B, nq)  # (B, N): documents of 9
    window = masks.sliding_window(9) & masks.causal()
    predicate = masks.documents(ids) & masks.causal() if case == "documents" else window
    dense = predicate.materialize(B, 1, nq, nk)  # (B, 1, Nq, Nk)
    q, k, v = inputs(nq, nk, dtype)
    golden_inputs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    base_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = headwise.attention(q, k, v, mask=predicate, backend="blocksparse")
    golden, _ = naive_attention(*golden_inputs, mask=dense)
    baseline, _ = naive_attention(*base_inputs, mask=dense)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(out, (q, k, v), upstream.to(dtype))
    golden_grads = torch.autograd.grad(golden, golden_inputs, upstream.double())
    base_grads = torch.autograd.grad(baseline, base_inputs, upstream.to(dtype))
    assert_by_ratio(out, golden, baseline, 2)
    for name, *triple in zip("qkv", grads, golden_grads, base_grads, strict=True):
        assert_by_ratio(*triple, 3, what=f"d{name}")


class _Pairs(TorchDispatchMode):
    """Records the largest tensor any aten op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for t in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return result


@pytest.mark.parametrize("backend", ["blocksparse", "auto"])
def test_no_quadratic_tensor_forward_or_backward(backend):
    """N = 4096, a causal window of 64: no op makes a tensor of Nq · Nk / 8 elements or more."""
    n = 4096
    q, k, v = (torch.randn(1, 2, n, 16, requires_grad=True) for _ in range(3))  # (B, H, N, Dh)
    recorder = _Pairs()
    with recorder:
        out = headwise.attention(q, k, v, mask=masks.sliding_window(64) & masks.causal(), backend=backend)
        out.sum().backward()
    assert 0 < recorder.largest < n * n / 8, recorder.largest


def cpu_request(predicate, mask="none", **more):
    return Request(
        torch.device("cpu"), torch.float32, num_queries=4096, num_keys=4096, predicate=predicate, mask=mask,
        batch=1, q_heads=8, kv_heads=8, head_dim=64, value_dim=64, **more,
    )  # fmt: skip


def test_auto_takes_blocksparse_for_structured_predicates_and_sdpa_otherwise(monkeypatch):
    monkeypatch.setenv("HEADWISE_TUNE", "0")
    monkeypatch.setattr(headwise.backends.tuning.TUNER, "_choices", {})
    ids = (torch.arange(4096) * 8 // 4096)[None]  # (1, N): 8 documents
    sparse = [  # at most 0.6 of the blocks (tuning.SPARSE): windows, documents, a prefix LM
        masks.sliding_window(256) & masks.causal(),
        masks.documents(ids) & masks.causal(),
        masks.prefix_lm(1024),
        masks.causal() & masks.key_lengths(3000),
    ]
    for predicate in sparse:
        for requires_grad in (False, True):
            request = cpu_request(predicate, requires_grad=requires_grad)
            assert choose("auto", request).backend == "blocksparse", predicate
    assert choose("auto", cpu_request(masks.key_lengths(3072))).backend == "sdpa"  # 0.75 of the blocks
    assert choose("auto", cpu_request(masks.causal())).backend == "sdpa"  # is_causal: SDPA's own kernel
    assert choose("auto", cpu_request(None)).backend == "sdpa"


def test_spec_round_trips_every_predicate():
    for predicate, expected in everything(7, 5):
        spec, tensors = encode(predicate)
        again = decode(spec, tensors)
        assert repr(again) == repr(predicate)
        assert torch.equal(again.materialize(B, 1, 7, 5).expand(B, 1, 7, 5), expected), spec
    with pytest.raises(ValueError, match="not a predicate spec"):
        decode("causal() & rm", [])


@dataclasses.dataclass(frozen=True)
class EveryOther(masks.Predicate):
    """A user's predicate: even keys only, with a scalar block bound of its own."""

    @property
    def title(self) -> str:
        return "every_other()"

    def allowed(self, batch_idx, head_idx, q_idx, kv_idx, num_queries, num_keys):
        return (kv_idx % 2 == 0) & (q_idx >= 0)

    def block_is_empty(self, q_start, q_end, k_start, k_end, num_queries, num_keys):
        return k_end - k_start == 1 and k_start % 2 == 1


def test_a_users_predicate_with_scalar_bounds(small_blocks, monkeypatch):
    monkeypatch.setattr(blocksparse, "BLOCK", 1)  # blocks of one key: the odd ones are empty
    predicate = EveryOther() & masks.causal()
    assert make_plan(predicate, 6, 6, 1, 1).visible.sum() == 12  # 1 + 1 + 2 + 2 + 3 + 3 of 21 causal
    assert encode(predicate) is None  # no spec: compiled code materialises it
    q, k, v = inputs(6, 6)
    fast = outputs_and_grads(q, k, v, "blocksparse", mask=predicate)
    golden = outputs_and_grads(q, k, v, "reference", mask=predicate.materialize(B, 1, 6, 6))
    for got, want in zip(fast, golden, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", ["window", "documents", "users"])
def test_compile_keeps_the_predicate_in_one_graph(case):
    n = 96
    ids = torch.arange(n).div(40, rounding_mode="floor")[None]  # (1, N): documents of 40
    predicate = {
        "window": masks.sliding_window(20) & masks.causal(),
        "documents": masks.documents(ids) & masks.causal(),
        "users": EveryOther() & masks.causal(),
    }[case]
    q, k, v = (torch.randn(1, 2, n, 8, requires_grad=True) for _ in range(3))

    def attend(q, k, v):
        return headwise.attention(q, k, v, mask=predicate)

    explained = torch._dynamo.explain(attend)(q, k, v)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    targets = {str(node.target) for node in explained.graphs[0].graph.nodes if node.op == "call_function"}
    op = "headwise.attention.default" if case == "users" else "headwise.predicate_attention.default"
    assert op in targets, targets
    compiled = torch.compile(attend, fullgraph=True, backend="aot_eager")
    out = compiled(q, k, v)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    eager = headwise.attention(q, k, v, mask=predicate, backend="reference")
    eager_grads = torch.autograd.grad(eager.sum(), (q, k, v))
    for got, want in zip((out, *grads), (eager, *eager_grads), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_visible_pairs_counts_the_dense_mask():
    ids = torch.arange(50).div(7, rounding_mode="floor").expand(2, 50)  # (B, N)
    predicate = masks.documents(ids) & masks.causal()
    assert visible_pairs(predicate, 2, 3, 50, 50) == 3 * int(predicate.materialize(2, 1, 50, 50).sum())


def test_blocksparse_refuses_what_it_cannot_do():
    reason = BACKENDS["blocksparse"].unsupported(cpu_request(masks.causal(), dropout_p=0.1))
    assert reason == "apply dropout"


@pytest.mark.parametrize("nq, nk", [(256, 256), (200, 333)])
def test_flex_block_mask_from_the_plan_matches_torchs_own(nq, nk):
    """For predicates whose bounds are exact, the plan's BlockMask has FlexAttention's own blocks (from
    create_block_mask, which reads the mask_mod at every pair); and flex computes the reference's out."""
    from torch.nn.attention.flex_attention import create_block_mask

    from headwise.backends.flex import BLOCK, block_mask_of

    for predicate in (masks.causal(), masks.sliding_window(100, 20), masks.prefix_lm(150)):

        def allowed(b, h, q_idx, kv_idx, predicate=predicate):
            return predicate.allowed(b, h, q_idx, kv_idx, nq, nk)

        ours = block_mask_of(make_plan(predicate, nq, nk, BLOCK, BLOCK), allowed, torch.device("cpu"))
        theirs = create_block_mask(allowed, 1, 1, nq, nk, device="cpu")
        assert torch.equal(
            ours.kv_num_blocks + ours.full_kv_num_blocks, theirs.kv_num_blocks + theirs.full_kv_num_blocks
        )
        # torch calls no ragged block full; the prefix's full bound is conservative
        if nq % BLOCK == nk % BLOCK == 0 and type(predicate) is not masks.PrefixLM:
            assert torch.equal(ours.full_kv_num_blocks, theirs.full_kv_num_blocks), predicate
        q, k, v = (t.detach() for t in inputs(nq, nk, torch.float32))
        with torch.no_grad():
            out = headwise.attention(q, k, v, mask=predicate, backend="flex")
            golden = headwise.attention(
                q.double(), k.double(), v.double(), mask=predicate, backend="reference"
            )
        torch.testing.assert_close(out.double(), golden, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_long_packed_documents_run_as_one_kernel_call_per_run_of_equal_lengths(causal):
    """documents(ids) (& causal()) with documents of at least varlen.MIN_LENGTH: each document's output is
    the sdpa backend's on that document alone, bit for bit (two packings in one batch, grouped-query
    heads), and out and the gradients hold to the float64 reference by the ratio rule."""
    lengths = [[128, 128, 384], [256, 384]]  # two rows of N = 640: runs (128 x 2, 384) and (256, 384)
    ids = torch.stack([torch.arange(len(row)).repeat_interleave(torch.tensor(row)) for row in lengths])
    gen = torch.Generator().manual_seed(7)
    q, d_out = (torch.randn(2, 4, 640, 16, generator=gen) for _ in range(2))  # (B, Hq, N, Dh)
    k, v = (torch.randn(2, 2, 640, 16, generator=gen) for _ in range(2))  # (B, Hkv, N, Dh)
    predicate = masks.documents(ids) & masks.causal() if causal else masks.documents(ids)
    assert blocksparse.varlen.runs(predicate.first if causal else predicate) is not None

    def gradients(dtype, backend, mask=predicate):
        inputs = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        out = headwise.attention(*inputs, mask=mask, backend=backend)
        return [out, *torch.autograd.grad(out, inputs, d_out.to(dtype))]

    ours = gradients(torch.float32, "blocksparse")
    for row, row_lengths in enumerate(lengths):
        start = 0
        for length in row_lengths:
            piece = slice(start, start + length)
            alone = headwise.attention(
                *(t[row : row + 1, :, piece] for t in (q, k, v)), causal=causal, backend="sdpa"
            )  # (1, Hq, L, Dh)
            assert torch.equal(ours[0][row : row + 1, :, piece], alone)
            start += length
    golden = gradients(F64, "reference")
    dense = predicate.materialize(2, 4, 640, 640)  # (B, 1, N, N) bool
    naive = lambda q, k, v: naive_attention(q, k, v, mask=dense)[0]  # noqa: E731
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    baseline_out = naive(*inputs)
    baseline = [baseline_out, *torch.autograd.grad(baseline_out, inputs, d_out)]
    magnitude = max(t.abs().max().item() for t in golden)
    for what, fast, want, base in zip(("out", "dq", "dk", "dv"), ours, golden, baseline, strict=True):
        assert_by_ratio(fast, want, base, 3, what, magnitude)


def test_short_or_many_documents_stay_on_the_block_path():
    """A document under varlen.MIN_LENGTH, or more than MAX_RUNS runs, keeps the block-sparse loop."""
    short = masks.documents(torch.arange(4).repeat_interleave(100)[None])  # 4 documents of 100
    many = masks.documents(torch.arange(40).repeat_interleave(torch.tensor([128, 129] * 20))[None])
    assert blocksparse.varlen.runs(short) is None and blocksparse.varlen.runs(many) is None
    both = masks.documents(torch.arange(2).repeat_interleave(128)[None]) & masks.sliding_window(8)
    assert blocksparse.varlen.documents_of(both) is None
