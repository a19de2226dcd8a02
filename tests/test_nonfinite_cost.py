"""Issue 23: the non-finite rule decided from what the kernel produced (running.run). Finite inputs pay
one pass over out (and one over k unless k and v are known finite), never the passes over q, k and v that
checked them before; the inputs that out alone cannot reveal (a -inf score from a non-finite q or k, a
NaN query in a fully masked row) still follow the rule, on every backend, with finite gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from oracle import require
from test_hostile import assert_follows_the_rule
from torch.utils._python_dispatch import TorchDispatchMode

import headwise
from headwise.backends import BACKENDS, Request
from headwise.checks import GRAIN_SIZE, PROBE, CheckThreads, PassTimes

aten = torch.ops.aten

# Every op that could check finiteness by reading a tensor: reductions and elementwise tests.
CHECKS = {
    aten.sum,
    aten.nansum,
    aten.isfinite,
    aten.isnan,
    aten.isinf,
    aten.all,
    aten.any,
    aten.amax,
    aten.amin,
    aten.aminmax,
    aten.max,
    aten.min,
    aten.linalg_vector_norm,
    aten.eq,
    aten.ne,
}


class CheckReads(TorchDispatchMode):
    """Records the numel of every tensor that a finiteness-checking op (CHECKS) reads, and which of them
    a row-wise reduction read (one given a dim)."""

    def __init__(self):
        super().__init__()
        self.read: list[int] = []
        self.by_rows: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in CHECKS:
            tensors = [a.numel() for a in args if isinstance(a, torch.Tensor)]
            self.read += tensors
            if func.overloadpacket is aten.sum and len(args) > 1 and args[1]:  # sum(t, dim, ...)
                self.by_rows += tensors
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kv_finite", [False, True])
@pytest.mark.parametrize("num_queries, num_keys", [(3, 50), (1, 4096)])  # a call; a decoding step
def test_finite_inputs_are_checked_by_reading_out_and_never_q_or_v(num_queries, num_keys, kv_finite):
    """Sizes chosen so that q, k, v and out differ: q 2·4·Nq·8, k 2·2·Nk·8, v 2·2·Nk·6, out 2·4·Nq·6. On
    the finite path the checks read out (and its row sums, 2·4·Nq, a few times) and, unless kv_finite, k
    (and its row sums); before issue 23 they read q, k and v (one sum each)."""
    q = torch.randn(2, 4, num_queries, 8)  # (B, Hq, Nq, Dh)
    k, v = torch.randn(2, 2, num_keys, 8), torch.randn(2, 2, num_keys, 6)  # (B, Hkv, Nk, Dh | Dv)
    with CheckReads() as reads:
        out = headwise.attention(q, k, v, backend="sdpa", kv_finite=kv_finite)
    rows = out.numel() // out.shape[-1]  # B·Hq·Nq
    key_rows = k.numel() // k.shape[-1]  # B·Hkv·Nk: k is summed by rows first (checks.row_total)
    allowed = {out.numel(), rows, 1} | (set() if kv_finite else {k.numel(), key_rows})
    assert reads.read and set(reads.read) <= allowed, reads.read
    assert q.numel() not in reads.read and v.numel() not in reads.read
    read = sum(reads.read)
    keys = 0 if kv_finite else k.numel() + key_rows
    assert read <= out.numel() + 3 * rows + 4 + keys  # out's row sums: summed, == 0, any


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kv_finite", [False, True])
def test_where_the_flash_kernel_ran_its_lse_replaces_out_s_row_sums(dtype, kv_finite):
    """Values as wide as the queries: the sdpa backend runs SDPA's CPU flash kernel itself and keeps its lse
    (B·Hq·Nq), so the check reads lse, out in one sum (no row sums: float16's excepted, whose total would
    pass 65504) and k; with k and v known finite, lse alone. Never q or v."""
    q = torch.randn(2, 4, 3, 8, dtype=dtype)  # (B, Hq, Nq, Dh)
    k, v = torch.randn(2, 2, 50, 8, dtype=dtype), torch.randn(2, 2, 50, 8, dtype=dtype)  # (B, Hkv, Nk, D)
    with CheckReads() as reads:
        out = headwise.attention(q, k, v, backend="sdpa", kv_finite=kv_finite)
    rows = out.numel() // out.shape[-1]  # B·Hq·Nq: lse
    key_rows = k.numel() // k.shape[-1]
    half = dtype == torch.float16  # row sums first, then their float32 total (checks.row_total)
    expected = [rows] if kv_finite else [k.numel(), *([key_rows] if half else []), out.numel(), rows]
    expected += [rows] * half * (not kv_finite)  # float16: out's row sums, summed
    assert sorted(n for n in reads.read if n > 1) == sorted(expected), reads.read
    assert reads.by_rows == ([] if not half or kv_finite else [k.numel(), out.numel()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize(
    "options",
    [{}, {"causal": True}, {"mask": "bool"}, {"mask": "float"}, {"gqa": True}, {"transposed": True}],
    ids=["plain", "causal", "bool mask", "float mask", "gqa", "transposed"],
)
def test_the_sdpa_backend_s_own_flash_call_is_sdpa_s_result_bit_for_bit(dtype, options):
    """The sdpa backend calls SDPA's CPU flash kernel itself (for its lse) only where SDPA would: the
    same bits as torch's scaled_dot_product_attention on the same inputs."""
    gen = torch.Generator().manual_seed(3)
    heads = 2 if options.get("gqa") else 4
    causal = options.get("causal", False)
    num_queries = 9 if causal else 6  # square: headwise's causal (bottom-right) is then SDPA's is_causal
    q = torch.randn(2, 4, num_queries, 8, generator=gen).to(dtype)  # (B, Hq, Nq, Dh)
    k, v = (torch.randn(2, heads, 9, 8, generator=gen).to(dtype) for _ in range(2))  # (B, Hkv, Nk, D)
    if options.get("transposed"):  # (B, N, H, D) storage, as a projection leaves it
        q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    mask = None
    if "mask" in options:
        mask = torch.rand(2, 1, 6, 9, generator=gen) > 0.3
        mask = (
            mask if options["mask"] == "bool" else torch.zeros(mask.shape).masked_fill(~mask, -1e4).to(dtype)
        )
    causal = options.get("causal", False)
    out = headwise.attention(q, k, v, mask=mask, causal=causal, backend="sdpa")
    expected = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=heads != 4
    )
    assert torch.equal(out, expected)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("num_queries, num_keys", [(0, 4), (3, 0)])
def test_an_empty_q_or_k_never_reaches_the_flash_kernel(num_queries, num_keys, requires_grad):
    """SDPA's CPU flash kernel divides by Nq and Nk: called with an empty q or k it stops the process with
    SIGFPE (torch 2.13). The sdpa backend leaves those to SDPA: zeros, and zero gradients."""
    q = torch.randn(1, 2, num_queries, 8, requires_grad=requires_grad)
    k, v = torch.randn(1, 2, num_keys, 8), torch.randn(1, 2, num_keys, 8)
    for backend in ("sdpa", "auto"):
        out = headwise.attention(q, k, v, backend=backend)
        assert out.shape == (1, 2, num_queries, 8) and not out.any()
        if requires_grad:
            (grad,) = torch.autograd.grad(out.sum(), q)
            assert grad.shape == q.shape and not grad.any()


@pytest.mark.parametrize("queries_grad", [False, True])
def test_a_float_mask_that_needs_a_gradient_keeps_the_sdpa_backend_off_the_flash_kernel(queries_grad):
    """The flash kernel does not differentiate its mask: a mask that requires grad, alone or with q, runs
    by SDPA, and its gradient is SDPA's."""
    gen = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, 2, 5, 8, generator=gen) for _ in range(3))
    q.requires_grad_(queries_grad)
    mask = torch.randn(1, 1, 5, 5, generator=gen).requires_grad_()
    out = headwise.attention(q, k, v, mask=mask, backend="sdpa")
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    upstream = torch.randn(out.shape, generator=gen)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(
        torch.autograd.grad(out, mask, upstream), torch.autograd.grad(expected, mask, upstream)
    )


def test_sdpa_kernel_choosing_math_keeps_the_sdpa_backend_off_the_flash_kernel():
    """torch.nn.attention.sdpa_kernel([MATH]) rules SDPA's flash kernel out: the backend follows it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 4, 40, 16, generator=gen) for _ in range(3))
    with sdpa_kernel([SDPBackend.MATH]):
        out = headwise.attention(q, k, v, backend="sdpa")
        assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))


def capable(dtype, **asks) -> list[str]:
    request = Request(torch.device("cpu"), dtype, **asks)
    return ["auto", *(n for n, b in BACKENDS.items() if b.unsupported(request) is None)]


def planted(case: str):
    """(q, k, v, options) with the non-finite entries that out alone cannot reveal, B=1, H=2, N=4, D=8."""
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, 4, 8, generator=gen, dtype=torch.float64).float() for _ in range(3))
    options = {}
    if case == "-inf query":  # q·k = -inf for every key: a run as if finite gives a row of zeros
        k[..., 0] = k[..., 0].abs() + 0.1
        q[0, 0, 1, 0] = -math.inf
    elif case in ("-inf key", "-inf key, causal"):  # every query's score of key 2 is -inf: weight 0
        q[..., 0] = q[..., 0].abs() + 0.1
        k[0, 1, 2, 0] = -math.inf
        options = {"causal": True} if case.endswith("causal") else {}
    elif case == "NaN query, fully masked row":  # the rule makes that row NaN all the same
        q[0, 0, 0, 3] = math.nan
        mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
        mask[..., 0, :] = False  # query 0 sees no key
        options = {"mask": mask}
    elif case == "NaN key and inf value, padded":  # masked for every query: no effect at all
        k[0, 0, 3, 1] = math.nan
        v[0, 1, 3, 0] = math.inf
        options = {"mask": torch.tensor([True, True, True, False])}
    return q, k, v, options


CASES = (
    "-inf query",
    "-inf key",
    "-inf key, causal",
    "NaN query, fully masked row",
    "NaN key and inf value, padded",
)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", capable(torch.float32, requires_grad=True, mask="bool"))
def test_what_out_alone_cannot_reveal_follows_the_rule_on_every_backend(backend, case):
    """The rule's oracle as in tests/test_hostile.py: float64 attention on the inputs with their non-finite
    entries set to 0; a row is NaN exactly when its query is non-finite or it gives nonzero weight to a
    key whose k or v is; the other rows and every gradient equal the oracle's and are finite."""
    q, k, v, options = planted(case)
    require(backend, torch.float32, requires_grad=True, mask="bool" if "mask" in options else "none")
    sees_bad = assert_follows_the_rule(q, k, v, backend, options, options, torch.Generator().manual_seed(1))
    if case.startswith("NaN key"):
        assert not sees_bad.any()
    else:
        assert sees_bad.any() and not sees_bad.all()


@pytest.mark.parametrize("case", (*CASES, "+inf in one query entry"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_a_forward_through_the_flash_kernel_s_lse_follows_the_rule(dtype, case):
    """Without a backward the sdpa backend's check reads the flash kernel's lse instead of out's row
    sums: the same rule, in every dtype the kernel takes. (In bfloat16 and float16 a +inf score gives a
    row of zeros and lse = inf, where float32 gives NaN.) Rows that follow the rule agree with the
    oracle to 4 ulps of the dtype at the values' size."""
    q, k, v, options = planted("-inf query" if case.startswith("+inf") else case)
    if case.startswith("+inf"):
        q = q.clone()
        q[0, 1, 2, 3] = math.inf
    q, k, v = (t.to(dtype) for t in (q, k, v))
    finite_v = torch.where(torch.isfinite(v), v, 0.0).abs().max().item()
    tolerance = 1e-5 if dtype == torch.float32 else 4 * torch.finfo(dtype).eps * finite_v
    oracle = {"mask": options["mask"]} if "mask" in options else dict(options)
    sees_bad = assert_follows_the_rule(
        q, k, v, "sdpa", options, oracle, None, backward=False, tolerance=tolerance
    )
    assert sees_bad.any() != case.startswith("NaN key")


@pytest.mark.parametrize("backend", capable(torch.float32, dropout_p=0.5))
def test_a_rerun_draws_the_dropout_of_the_first_run(backend):
    """A NaN in one value makes the careful path rerun the call: it draws the same dropout masks as the
    run as if finite did, so every row that does not see the NaN equals the same call on finite inputs,
    and the generator ends where that call leaves it."""
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 6, 8, generator=gen) for _ in range(3))  # (B, H, N, D)
    bad = v.clone()
    bad[0, 1, 5, 2] = math.nan  # key 5 of head 1: causal, only query 5 sees it
    torch.manual_seed(7)
    finite = headwise.attention(q, k, v, causal=True, dropout_p=0.5, backend=backend)
    after_finite = torch.get_rng_state()
    torch.manual_seed(7)
    out = headwise.attention(q, k, bad, causal=True, dropout_p=0.5, backend=backend)
    assert torch.equal(torch.get_rng_state(), after_finite)
    torch.testing.assert_close(out[0, 0], finite[0, 0])
    torch.testing.assert_close(out[0, 1, :5], finite[0, 1, :5])


# The check's threads: all of torch's on a quiet machine, one on a busy one ------------------------------


def test_a_pass_size_takes_whichever_way_was_faster_and_probes_the_other_less_often_while_confirmed():
    times = PassTimes()
    times.record(alone=times.alone(), seconds=2e-9)  # the first pass: all threads
    assert times.alone()  # the second pass: one thread, untimed so far
    times.record(alone=True, seconds=1e-9)
    ways = []
    while times.calls < 200:
        alone = times.next_alone()
        ways.append(alone)
        times.record(alone, 1e-9 if alone else 2e-9)  # one thread stays the faster way
    probes = [i + 2 for i, alone in enumerate(ways) if not alone]
    second = PROBE + 1 + 2 * PROBE  # each probe confirmed the choice: the next one twice as far
    assert probes == [PROBE, second, second + 1 + 4 * PROBE]
    times.next_probe = times.calls
    times.record(alone=False, seconds=1e-10)  # the machine went quiet: a probe on all threads wins
    assert not times.alone() and times.interval == PROBE


def test_one_stalled_pass_keeps_the_check_on_all_threads_and_a_busy_machine_moves_it_within_a_few():
    """All threads 1 ns per element, one 1.4 (a quiet machine). A pass that a hiccup stalled 100x moves the
    estimate by half at most; passes that stay 100x slower (a busy machine) move the check to one thread
    at the second."""
    times = PassTimes(parallel=1e-9, single=1.4e-9, calls=2, next_probe=10**9)
    times.record(alone=False, seconds=1e-7)
    assert not times.alone() and times.parallel == pytest.approx(1.5e-9)
    times.record(alone=False, seconds=1e-7)
    assert times.alone() and times.parallel == pytest.approx(2.25e-9)


def test_a_probe_that_overturns_the_choice_probes_again_soon():
    times = PassTimes(parallel=2e-9, single=1e-9, calls=PROBE, next_probe=PROBE, interval=8 * PROBE)
    times.record(alone=False, seconds=1e-12)  # the probe: all threads, far faster now
    assert not times.alone() and times.interval == PROBE and times.next_probe == PROBE + 1 + PROBE


@pytest.fixture
def two_threads():
    """torch on two threads (a test process may run on one), as before afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    if torch.get_num_threads() != 2:  # a torch built without a thread pool
        pytest.skip("torch cannot run on two threads here")
    yield 2
    torch.set_num_threads(before)


def passes(chooser, tensor, count, body=lambda: None):
    """The thread count inside each of `count` checks of `tensor`."""
    seen = []
    for _ in range(count):
        with chooser(tensor):
            seen.append(torch.get_num_threads())
            body()
    return seen


def test_the_check_runs_on_one_thread_once_that_was_faster_and_restores_the_thread_count(two_threads):
    tensor = torch.zeros(GRAIN_SIZE)
    chooser = CheckThreads()
    seen = passes(chooser, tensor, 2)  # all threads, then one: now both are timed
    times = chooser.sizes[(GRAIN_SIZE.bit_length(), tensor.element_size(), two_threads)]
    times.parallel, times.single = 1.0, 1e-9  # as on a busy machine
    seen += passes(chooser, tensor, 1)
    assert seen == [two_threads, 1, 1] and torch.get_num_threads() == two_threads
    assert passes(chooser, torch.zeros(GRAIN_SIZE - 1), 1) == [two_threads]  # ATen: the calling thread


def test_a_probe_through_the_check_runs_the_way_not_taken_and_a_pass_that_raises_restores_threads(
    two_threads,
):
    tensor = torch.zeros(GRAIN_SIZE)
    chooser = CheckThreads()
    passes(chooser, tensor, 2)
    times = chooser.sizes[(GRAIN_SIZE.bit_length(), tensor.element_size(), two_threads)]
    times.parallel, times.single = 1.0, 1e-9  # one thread is the way ...
    seen = passes(chooser, tensor, PROBE - 1)  # ... up to the probe, which runs on all threads
    assert seen == [1] * (PROBE - 2) + [two_threads]
    calls = times.calls

    def fail():
        raise RuntimeError("a pass that raised")

    with pytest.raises(RuntimeError, match="raised"):
        passes(chooser, tensor, 1, fail)
    assert torch.get_num_threads() == two_threads and times.calls == calls  # restored, and not timed
