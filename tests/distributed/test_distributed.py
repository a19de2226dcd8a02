"""headwise.distributed: context-parallel attention on 2 and 4 processes (gloo) equals the single-process
reference on the full sequence, output and q/k/v gradients: to 1e-12 in float64, by the ratio rule in
float32 and bfloat16; both layouts, causal or not, grouped-query heads, key padding and predicates. Also:
where a rank's positions lie, which blocks causal attention skips, and the errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from oracle import assert_by_ratio, naive_attention

import headwise
from headwise import masks
from headwise.backends.chunked import BLOCK
from headwise.distributed import LAYOUTS, context_parallel_attention, shard, unshard
from headwise.distributed.layout import Placed, chunk_starts
from headwise.distributed.ring import _Plan

pytestmark = pytest.mark.slow  # process groups of 2 and 4: ~20 s

BATCH, Q_HEADS, KV_HEADS, HEAD_DIM, VALUE_DIM = 2, 4, 2, 16, 8  # GQA: G = 2; Dv != Dh
PER_RANK = 16  # N/P: N = 32 on 2 ranks, 64 on 4
TIMEOUT_S = 120  # for a whole run of the processes, and for one collective in it
RESULTS = ("out", "dq", "dk", "dv")


@dataclass(frozen=True)
class Case:
    dtype: torch.dtype
    layout: str
    causal: bool
    mask: str  # none; padding (key padding); empty (a batch element of padding only); window; documents


CASES = (
    [
        Case(torch.float64, layout, causal, mask)
        for layout in LAYOUTS
        for causal in (False, True)
        for mask in ("none", "padding", "window", "documents")
    ]
    + [Case(torch.float64, "zigzag", True, "empty")]
    + [
        Case(dtype, layout, causal, "padding")
        for dtype in (torch.float32, torch.bfloat16)
        for layout in LAYOUTS
        for causal in (False, True)
    ]
)


def case_inputs(case: Case, world: int):
    """The full sequence's q, k, v and d_out in the case's dtype, its key padding (B, N) or None and its
    predicate or None: the same in every process."""
    length = PER_RANK * world  # N
    gen = torch.Generator().manual_seed(100 * world + CASES.index(case))
    q = torch.randn(BATCH, Q_HEADS, length, HEAD_DIM, generator=gen).to(case.dtype)  # (B, Hq, N, Dh)
    k = torch.randn(BATCH, KV_HEADS, length, HEAD_DIM, generator=gen).to(case.dtype)  # (B, Hkv, N, Dh)
    v = torch.randn(BATCH, KV_HEADS, length, VALUE_DIM, generator=gen).to(case.dtype)  # (B, Hkv, N, Dv)
    d_out = torch.randn(BATCH, Q_HEADS, length, VALUE_DIM, generator=gen).to(case.dtype)  # (B, Hq, N, Dv)
    padding = predicate = None
    if case.mask in ("padding", "empty"):  # batch 1: only the first half of rank 0's keys are real, or none
        lengths = torch.tensor([length - 3, PER_RANK // 2 if case.mask == "padding" else 0])  # (B,)
        padding = torch.arange(length) < lengths[:, None]  # (B, N), True = a real token
    elif case.mask == "window":
        predicate = masks.sliding_window(left=5, right=3)
    elif case.mask == "documents":
        ids = torch.sort(torch.randint(0, 4, (BATCH, length), generator=gen), dim=1).values  # (B, N), packed
        predicate = masks.documents(ids)
    return q, k, v, d_out, padding, predicate


def with_grads(fn, q, k, v, d_out):
    """(out, dq, dk, dv) of fn(q, k, v) for the loss sum(out · d_out)."""
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)
    return (out.detach(), *torch.autograd.grad(out, leaves, d_out))


# What each process runs.


def rank_main(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=TIMEOUT_S),
    )
    try:
        results = {"errors": refusals(rank, world), "positions": positions(world)}
        cases = [attend_in_ring(case, world) for case in CASES]  # every rank takes part; rank 0 keeps them
        if rank == 0:
            results["cases"] = cases
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def attend_in_ring(case: Case, world: int) -> list[torch.Tensor]:
    """This rank's share of the case, gathered: [out (B, Hq, N, Dv), dq, dk, dv] of the full sequence."""
    q, k, v, d_out, padding, predicate = case_inputs(case, world)
    layout = case.layout
    mask = predicate if padding is None else shard(padding, 1, layout)  # predicate, or (B, N/P)

    def ring(q, k, v):
        return context_parallel_attention(q, k, v, causal=case.causal, mask=mask, layout=layout)

    local = with_grads(ring, *(shard(t, 2, layout) for t in (q, k, v, d_out)))  # each (B, H, N/P, ·)
    return [unshard(t, 2, layout) for t in local]  # each (B, H, N, ·)


def positions(world: int) -> dict[str, list]:
    """Per layout: the global positions this rank holds, and whether unshard(shard(x)) gives x back."""
    sequence = torch.arange(PER_RANK * world)[None]  # (1, N)
    found = {}
    for layout in LAYOUTS:
        mine = shard(sequence, 1, layout)  # (1, N/P)
        found[layout] = [mine[0].tolist(), torch.equal(unshard(mine, 1, layout), sequence)]
    return found


def refusals(rank: int, world: int) -> dict[str, str]:
    """The ValueError messages of the calls that must fail, on this rank (all ranks must refuse alike)."""
    messages = {}

    def expect(name, call):
        try:
            call()
        except ValueError as error:
            messages[name] = str(error)

    def attend(length, heads=2, **options):  # shards of `length` positions
        q, kv = (
            torch.zeros(1, heads, length, 4),
            torch.zeros(1, 1, length, 4),
        )  # (B, Hq, ·, Dh), (B, Hkv, ·, Dh)
        return context_parallel_attention(q, kv, kv, **options)

    expect("shard contiguous", lambda: shard(torch.zeros(1, 2 * world + 1), 1, "contiguous"))  # N = 2P + 1
    expect("shard zigzag", lambda: shard(torch.zeros(1, 3 * world), 1, "zigzag"))  # N = 3P
    expect("different lengths", lambda: attend(4 + (rank == 0)))  # N = 4P + 1
    expect("zigzag odd", lambda: attend(3, layout="zigzag"))  # N = 3P
    expect("different heads", lambda: attend(4, heads=2 + 2 * (rank == 0)))
    return messages


# What the test process checks.


def run_ranks(world: int, tmp_path) -> list[dict]:
    """rank_main on `world` fresh processes; each one's results. A process that fails fails the test
    with its traceback; one that hangs, after TIMEOUT_S."""
    # A fork server that imported torch and headwise once (and started no threads) starts the processes
    # in a fraction of the time that spawning takes, where each process imports torch again.
    forkserver = mp.get_context("forkserver")
    forkserver.set_forkserver_preload(["headwise.distributed"])
    context = mp.start_processes(
        rank_main,
        args=(world, str(tmp_path / "store"), str(tmp_path)),
        nprocs=world,
        join=False,
        start_method="forkserver",
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {world} processes did not finish in {TIMEOUT_S} s")
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world)]


def check_case(case: Case, world: int, fast: list[torch.Tensor]) -> None:
    q, k, v, d_out, padding, predicate = case_inputs(case, world)
    mask = predicate if padding is None else padding[:, None, None, :]  # predicate, (B, 1, 1, N) or None

    def reference(q, k, v):
        return headwise.attention(q, k, v, causal=case.causal, mask=mask, backend="reference")

    golden = with_grads(reference, q.double(), k.double(), v.double(), d_out.double())
    magnitude = max(t.abs().max().item() for t in golden)
    if case.dtype == torch.float64:
        for what, f, g in zip(RESULTS, fast, golden, strict=True):
            torch.testing.assert_close(
                f, g, rtol=0, atol=1e-12 * max(1.0, magnitude), msg=lambda m, w=what: f"{w}: {m}"
            )
        return
    length = q.shape[2]  # N; the textbook takes the predicate as a tensor (B|1, Hq|1, N, N)
    dense = mask if predicate is None else predicate.materialize(BATCH, Q_HEADS, length, length)

    def textbook(q, k, v):
        return naive_attention(q, k, v, mask=dense, causal=case.causal)[0]

    baseline = with_grads(textbook, q, k, v, d_out)
    for what, f, g, b, ratio in zip(RESULTS, fast, golden, baseline, (2, 3, 3, 3), strict=True):
        assert f.dtype == case.dtype, what
        assert_by_ratio(f, g, b, ratio, what, magnitude)


@pytest.mark.parametrize("world", [2, 4])
def test_ring_attention_equals_the_reference(world, tmp_path):
    """One run of `world` processes does every case: outputs and gradients gathered from the ranks
    against headwise.attention on the full sequence in one process; the positions of each layout; and the
    refusals of uneven sizes and shapes, raised on every rank alike."""
    results = run_ranks(world, tmp_path)
    failures = []
    for case, fast in zip(CASES, results[0]["cases"], strict=True):
        try:
            check_case(case, world, fast)
        except AssertionError as error:
            failures.append(f"{case}: {error}")
    assert not failures, "\n".join(failures)

    chunk = PER_RANK // 2
    for rank, result in enumerate(results):
        contiguous, zigzag = (result["positions"][layout] for layout in LAYOUTS)
        assert contiguous == [list(range(rank * PER_RANK, (rank + 1) * PER_RANK)), True]
        mirror = 2 * world - 1 - rank
        assert zigzag == [
            [*range(rank * chunk, (rank + 1) * chunk), *range(mirror * chunk, (mirror + 1) * chunk)],
            True,
        ]
        errors = result["errors"]
        expected = ["different heads", "different lengths", "shard contiguous", "shard zigzag", "zigzag odd"]
        assert sorted(errors) == expected, errors
        assert f"N = {2 * world + 1} is not a multiple of {world}" in errors["shard contiguous"]
        assert f"2P = {2 * world} equal chunks for P = {world}" in errors["shard zigzag"]
        assert f"N = {3 * world} is not a multiple of {2 * world}" in errors["shard zigzag"]
        lengths = [5] + [4] * (world - 1)
        assert (
            f"different lengths N/P = {lengths} (N = {4 * world + 1}, P = {world})"
            in errors["different lengths"]
        )
        assert f"N = {3 * world} is not a multiple of {2 * world}" in errors["zigzag odd"]
        shapes = [(4, 1, 4 if r == 0 else 2, 1, 4, 4, 0) for r in range(world)]
        assert "the ranks disagree on the shapes (N/P, B, Hq, Hkv, Dh, Dv" in errors["different heads"]
        assert str(shapes) in errors["different heads"]


@pytest.fixture
def world_of_one(tmp_path):
    """A process group of this process alone (gloo), destroyed after the test."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_ring_of_one_is_the_chunked_kernel(world_of_one, layout):
    """P = 1: no communication; the same results as the reference, and shard/unshard are the identity."""
    case = Case(torch.float64, layout, True, "documents")
    q, k, v, d_out, _, predicate = case_inputs(case, 1)
    assert torch.equal(shard(q, 2, layout), q) and torch.equal(unshard(q, 2, layout), q)

    def ring(q, k, v):
        return context_parallel_attention(q, k, v, causal=True, mask=predicate, layout=layout, scale=0.3)

    def reference(q, k, v):
        return headwise.attention(q, k, v, causal=True, mask=predicate, scale=0.3, backend="reference")

    for what, f, g in zip(
        RESULTS, with_grads(ring, q, k, v, d_out), with_grads(reference, q, k, v, d_out), strict=True
    ):
        torch.testing.assert_close(f, g, rtol=0, atol=1e-12, msg=lambda m, w=what: f"{w}: {m}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_placed_predicate_is_the_global_mask_at_a_ranks_positions(layout):
    """Placed(predicate) on rank r's queries and rank s's keys, in local positions, is the predicate's
    global mask at their global positions, and its block bounds never contradict it."""
    world, length = 4, 64
    size = length // (world if layout == "contiguous" else 2 * world)  # positions per chunk
    local = length // world
    ids = torch.sort(
        torch.randint(0, 5, (BATCH, length), generator=torch.Generator().manual_seed(3)), dim=1
    ).values
    for predicate in (masks.causal(), masks.sliding_window(9, 2), masks.documents(ids) & masks.causal()):
        full = predicate.materialize(BATCH, Q_HEADS, length, length)  # (B|1, ·, N, N)
        at = {rank: chunk_starts(layout, rank, world, length) for rank in range(world)}
        held = {
            rank: torch.cat([torch.arange(s, s + size) for s in starts]) for rank, starts in at.items()
        }  # (N/P,)
        for rank in range(world):
            for source in range(world):
                placed = Placed(predicate, at[rank], at[source], size, length)
                expected = full[:, :, held[rank]][..., held[source]]  # (B|1, ·, N/P, N/P)
                assert torch.equal(placed.materialize(BATCH, Q_HEADS, local, local), expected)
                for start in range(0, local, 5):  # blocks of 5 straddle the chunks
                    piece = expected[:, :, start : start + 5, start // 2 : start // 2 + 5]
                    bounds = (
                        start,
                        min(start + 5, local),
                        start // 2,
                        min(start // 2 + 5, local),
                        local,
                        local,
                    )
                    assert not placed.block_is_empty(*bounds) or not piece.any()
                    assert not placed.block_is_full(*bounds) or piece.all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_causal_skips_blocks_and_zigzag_balances_them(layout):
    """The chunked kernel's blocks each rank computes for causal attention on 4 ranks (N = 64): with the
    contiguous layout rank r computes blocks of ranks <= r only (1, 2, 3, 4 blocks; those before its own
    unmasked); with zigzag every rank computes the same number (3 of 4 on its own block, 2 of 4 on each
    other)."""
    world, length = 4, 64
    computed = []
    for rank in range(world):
        plan = _Plan(None, world, rank, layout, length, masks.causal(), 1.0)
        size, local = min(BLOCK, plan.chunk), length // world
        count = 0
        for source in plan.sources():
            visible, predicate = plan.rule(source)
            assert visible == (layout == "zigzag" or source <= rank)
            assert (predicate is None) == ((layout == "contiguous" and source < rank) or not visible)
            if visible:
                starts = range(0, local, size)
                blocks = [(a, a + size, b, b + size, local, local) for a in starts for b in starts]
                count += sum(predicate is None or not predicate.block_is_empty(*block) for block in blocks)
        computed.append(count)
    assert computed == ([1, 2, 3, 4] if layout == "contiguous" else [9, 9, 9, 9])


def test_arguments_are_checked_before_any_communication():
    q, k, v = torch.zeros(2, 4, 8, 16), torch.zeros(2, 2, 8, 16), torch.zeros(2, 2, 8, 8)
    with pytest.raises(ValueError, match=r"layout must be one of \('contiguous', 'zigzag'\), got 'diagonal'"):
        context_parallel_attention(q, k, v, layout="diagonal")
    with pytest.raises(
        TypeError, match=r"bool key-padding mask \(B, N/P\) = \(2, 8\).*got dtype torch.float32"
    ):
        context_parallel_attention(q, k, v, mask=torch.ones(2, 8))
    with pytest.raises(ValueError, match=r"mask \(B, N/P\) = \(2, 8\).*got shape \(2, 9\)"):
        context_parallel_attention(q, k, v, mask=torch.ones(2, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="N/P = 8 queries and 4 keys on this rank"):
        context_parallel_attention(q, k[:, :, :4], v[:, :, :4])
    with pytest.raises(TypeError, match="causal must be a bool, got int"):
        context_parallel_attention(q, k, v, causal=1)
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match=r"needs torch\.distributed initialised"):
            context_parallel_attention(q, k, v)


def test_import_headwise_does_not_load_the_distributed_package():
    code = "import sys, headwise; assert 'headwise.distributed' not in sys.modules, 'loaded'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
