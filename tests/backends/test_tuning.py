"""The tuner: measured choices per key, kept in memory and in the cache file, which survives corruption and
a torch upgrade; the static order the backends' declared ranks give; measuring on first use, by default for
CPU bf16/fp16 and training calls, never where it must not, with one notice per process."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import warnings
import weakref

import pytest
import torch

import headwise
from headwise import masks
from headwise.backends import BACKENDS, Choice, Rank, Request, auto_order, choose, tuning
from headwise.backends.dispatch import _serves, first_use_candidates


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh cache folder and an empty memory for each test; tuning as HEADWISE_TUNE says (unset: the
    default), and the process's notice not yet given."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HEADWISE_TUNE", raising=False)
    monkeypatch.setattr(tuning.TUNER, "enabled", None)
    monkeypatch.setattr(tuning, "STEADY", math.inf)  # every measurement written (steadiness: its own tests)
    monkeypatch.setattr(tuning.TUNER, "noticed", False)
    tuning.forget()
    yield tmp_path / "headwise" / "dispatch.json"
    tuning.forget()


def small_call(requires_grad=False, dtype=torch.float32, length=96):
    q, k, v = (torch.randn(2, 4, length, 16, dtype=dtype, requires_grad=requires_grad) for _ in range(3))
    return q, k, v


def request_of(q, k, requires_grad=False, **fields) -> Request:
    return Request(
        q.device, q.dtype, batch=2, q_heads=4, kv_heads=4, num_queries=q.shape[2], num_keys=k.shape[2],
        head_dim=q.shape[3], value_dim=q.shape[3], requires_grad=requires_grad, **fields,
    )  # fmt: skip


def saved_choices(cache) -> dict:
    return json.loads(cache.read_text())["choices"] if cache.exists() else {}


# The declared ranks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("predicate", [None, masks.causal(), masks.sliding_window(64)])
def test_the_rank_each_backend_declares_orders_the_static_candidates(device, predicate):
    request = Request(
        torch.device(device), torch.float32, num_queries=1024, num_keys=1024, predicate=predicate
    )
    placed = tuning.structured(request)
    ranks = {name: b.capabilities.rank.of(device, placed) for name, b in BACKENDS.items()}
    ranked = [name for name in BACKENDS if ranks[name] is not None]
    assert auto_order(request) == tuple(sorted(ranked, key=ranks.get))
    assert "flex" not in auto_order(request)  # declares no rank: by name (and `headwise tune`) only
    assert placed == (predicate is not None and type(predicate) is not masks.Causal)  # a window of 64: sparse
    first = "triton" if device == "cuda" else "blocksparse"
    assert (auto_order(request)[0] == first) == placed


def test_a_backend_that_declares_a_better_rank_comes_first(monkeypatch):
    dense = BACKENDS["dense"]
    promoted = dataclasses.replace(dense.capabilities, rank=Rank(cpu=0))
    monkeypatch.setitem(BACKENDS, "dense", dataclasses.replace(dense, capabilities=promoted))
    q, k, _ = small_call()
    assert auto_order(request_of(q, k))[:2] == ("dense", "sdpa")
    assert choose("auto", request_of(q, k)) == Choice("dense", torch.float32)
    unranked = dataclasses.replace(dense.capabilities, rank=Rank())
    monkeypatch.setitem(BACKENDS, "dense", dataclasses.replace(dense, capabilities=unranked))
    assert "dense" not in auto_order(request_of(q, k))


def test_the_remembered_static_choice_follows_the_registry_and_the_cpu_kind(monkeypatch):
    """auto remembers a plain call's static choice (dispatch.static_choice); a backend replaced in the
    registry, or another CPU kind, decides again: each answer is the table's first served choice."""
    q, k, _ = small_call()
    request = request_of(q, k)
    assert choose("auto", request) == choose("auto", request) == Choice("sdpa", torch.float32)
    dense = BACKENDS["dense"]
    promoted = dataclasses.replace(dense.capabilities, rank=Rank(cpu=0))
    monkeypatch.setitem(BACKENDS, "dense", dataclasses.replace(dense, capabilities=promoted))
    assert choose("auto", request) == Choice("dense", torch.float32)
    monkeypatch.setitem(BACKENDS, "dense", dense)
    assert choose("auto", request) == Choice("sdpa", torch.float32)
    low = request_of(q.bfloat16(), k.bfloat16(), requires_grad=True)  # bf16 forward + backward, N=96
    chosen = {}
    for kind in ("AVX2", "AVX512-bf16-fp16-amx", "AVX2", "AVX512-bf16-fp16-amx"):
        monkeypatch.setattr(tuning, "cpu_kind", lambda kind=kind: kind)
        chosen[kind] = choose("auto", low)
        assert chosen[kind] == next(c for c in tuning.static_choices(low) if _serves(c, low))
    assert chosen["AVX2"] == Choice("dense", torch.float32)  # no native bf16: computed in float32
    assert chosen["AVX512-bf16-fp16-amx"] == Choice("dense", torch.bfloat16)


def test_auto_keeps_no_tensor_of_the_callers_alive():
    """A predicate or score modifier that holds tensors (documents' ids, ALiBi's slopes) is not remembered
    with the call's choice: once the caller drops them they are freed."""
    q, k, v = small_call()
    ids = (torch.arange(96) // 32).expand(2, 96)  # (B, N): three documents
    slopes = torch.rand(4)  # (Hq,)
    headwise.attention(q, k, v, mask=masks.documents(ids), score_mod=masks.alibi(slopes))
    headwise.attention(q, k, v, mask=masks.documents(ids))
    freed = [weakref.ref(ids), weakref.ref(slopes)]
    del ids, slopes
    gc.collect()
    assert [ref() for ref in freed] == [None, None]


# Measuring on first use --------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "requires_grad"), [(torch.bfloat16, False), (torch.float16, True)])
def test_first_use_measures_low_precision_calls_by_default_and_caches_a_capable_choice(
    cache, dtype, requires_grad
):
    q, k, v = small_call(requires_grad, dtype)
    request = request_of(q, k, requires_grad)
    with pytest.warns(tuning.TuningNotice, match="HEADWISE_TUNE=0"):
        out = headwise.attention(q, k, v)
    ((entry_key, entry),) = saved_choices(cache).items()
    assert entry_key == tuning.key(request)
    chosen = Choice(entry["backend"], getattr(torch, entry["compute_dtype"]))
    assert chosen in first_use_candidates(request) and _serves(chosen, request)
    expected = headwise.attention(q.double(), k.double(), v.double(), backend="reference")
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-2)  # bf16/fp16 rounding of |out| < 1
    cache.unlink()  # the next call of that key is served from memory: it measures nothing, writes nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        headwise.attention(q, k, v)
    assert not cache.exists() and tuning.TUNER.lookup(request) == chosen


def test_a_long_float32_forward_is_not_measured_by_default_but_training_and_short_calls_are(cache):
    q, k, v = small_call(length=tuning.SHORT + 1)
    headwise.attention(q, k, v)
    assert not cache.exists()  # SDPA from the static order: what auto is when it is right
    trained = small_call(requires_grad=True, length=tuning.SHORT + 1)
    with pytest.warns(tuning.TuningNotice):
        headwise.attention(*trained).sum().backward()
    short = small_call(length=tuning.SHORT)
    headwise.attention(*short)  # the notice came once already
    assert set(saved_choices(cache)) == {
        tuning.key(request_of(trained[0], trained[1], True)),
        tuning.key(request_of(short[0], short[1])),
    }


@pytest.mark.parametrize(
    ("device", "num_queries", "num_keys", "measured"),
    [("cpu", 128, 128, True), ("cpu", 64, 256, True), ("cpu", 1, 128, False), ("cpu", 128, 512, False),
     ("cuda", 128, 128, False)],
)  # fmt: skip
def test_short_float32_forward_calls_are_measured_by_default_but_not_decoding_steps(
    device, num_queries, num_keys, measured
):
    request = Request(torch.device(device), torch.float32, num_queries=num_queries, num_keys=num_keys)
    assert tuning.tunes_by_default(request) == measured


def test_the_notice_comes_once_per_process_and_nothing_is_printed(cache, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for length in (32, 64, 128):  # three keys
            headwise.attention(*small_call(dtype=torch.bfloat16, length=length))
    notices = [w for w in caught if issubclass(w.category, tuning.TuningNotice)]
    assert len(saved_choices(cache)) == 3 and len(notices) == 1
    assert str(tuning.cache_path()) in str(notices[0].message)
    assert capsys.readouterr().out == ""


def test_first_use_skips_what_is_many_times_slower_on_this_kind_of_cpu(monkeypatch):
    """On a CPU without fast bf16 matmuls, only SDPA's forward is measured in bf16 (its kernel converts its
    blocks to float32 itself); with them, every ranked backend in both dtypes; never the reference."""
    q, k, _ = small_call(dtype=torch.bfloat16)
    for kind, grad in (("AVX2", False), ("AVX2", True), ("AVX512-bf16-fp16", False)):
        monkeypatch.setattr(tuning, "cpu_kind", lambda kind=kind: kind)
        timed = first_use_candidates(request_of(q, k, grad))
        in_bf16 = {c.backend for c in timed if c.compute_dtype == torch.bfloat16}
        expected = {"AVX2": set() if grad else {"sdpa"}}.get(
            kind, {"sdpa", "chunked", "blocksparse", "dense"}
        )
        in_float32 = {c.backend for c in timed if c.compute_dtype == torch.float32}
        assert in_bf16 == expected and in_float32 == {"sdpa", "chunked", "blocksparse", "dense"}


def test_tuning_can_be_switched_on_and_persists_what_it_measured(cache):
    q, k, v = small_call()
    tuning.enable()  # every new key, float32 forward included
    out = headwise.attention(q, k, v)
    torch.testing.assert_close(out, headwise.attention(q, k, v, backend="reference"), rtol=0, atol=1e-6)
    saved = json.loads(cache.read_text())
    assert saved["torch"] == torch.__version__ and len(saved["choices"]) == 1
    ((entry_key, entry),) = saved["choices"].items()
    assert entry_key == tuning.key(request_of(q, k))
    tuning.forget()  # a new process: the choice is read back from the file, and used without measuring
    tuning.enable(False)
    assert choose("auto", request_of(q, k)) == Choice(
        entry["backend"], getattr(torch, entry["compute_dtype"])
    )


def test_a_tuned_key_times_each_candidate_and_is_looked_up_after(cache):
    q, k, v = small_call(requires_grad=True)
    report = tuning.TUNER.tune(
        request_of(q, k, True), [Choice("dense", torch.float32), Choice("chunked", torch.float32)],
        lambda choice: headwise.attention(q, k, v, backend=choice.backend).sum().backward(),
    )  # fmt: skip
    assert set(report["ms"]) == {"dense", "chunked"} and report["ms"][report["choice"].backend] is not None
    assert tuning.TUNER.lookup(request_of(q, k, True)) == report["choice"]


class FakeClock:
    """A clock that moves only when a timed call runs, by that call's cost: the tuner's rounds exactly."""

    def __init__(self, costs):
        self.now, self.costs, self.calls = 0.0, costs, {choice: 0 for choice in costs}

    def perf_counter(self):
        return self.now

    def run(self, choice):
        self.now += self.costs[choice]
        self.calls[choice] += 1


@pytest.mark.parametrize(("second", "settled"), [(1.1, True), (1.3, False)])
def test_two_close_candidates_of_a_slow_call_are_timed_until_each_has_settle_calls(
    cache, monkeypatch, second, settled
):
    """A call of 0.2 s leaves one timed call each in the budget; two within CLOSE are timed on alone,
    while a round of the two fits in BUDGET_S more."""
    fast, close, slow = (Choice(name, torch.float32) for name in ("sdpa", "dense", "chunked"))
    clock = FakeClock({fast: 0.2, close: 0.2 * second, slow: 1.0})
    monkeypatch.setattr(tuning, "time", clock)
    q, k, _ = small_call()
    report = tuning.TUNER.tune(request_of(q, k), [fast, close, slow], clock.run)
    assert report["choice"] == fast
    timed = 1 + tuning.SETTLE if settled else 2  # the warm-up, then the rounds
    assert clock.calls == {fast: timed, close: timed, slow: 2}  # slow: a warm-up and the first round
    settle = tuning.BUDGET_S if settled else 0.0
    assert report["cost_s"] <= 2 * sum(clock.costs.values()) + settle


class BusyClock(FakeClock):
    """A FakeClock whose calls of one choice cost, in turn, the values of a list: the stalls of a busy
    machine, where a descheduled thread holds up a parallel kernel."""

    def __init__(self, costs):
        super().__init__({choice: 0.0 for choice in costs})
        self.sequences = {choice: list(values) for choice, values in costs.items()}

    def run(self, choice):
        values = self.sequences[choice]
        self.now += values[self.calls[choice] % len(values)]
        self.calls[choice] += 1


def test_a_candidate_with_one_lucky_call_does_not_replace_the_static_choice(cache, monkeypatch):
    """Round by round the static choice is faster (1.0 against 1.2 ms); the other's one call of 0.9 ms
    (its fastest) does not make it the choice: candidates are compared by their per-round ratio."""
    monkeypatch.setattr(tuning, "STEADY", 1.5)
    static, lucky = Choice("sdpa", torch.float32), Choice("dense", torch.float32)
    clock = BusyClock({static: [1e-3], lucky: [1.2e-3, 1.2e-3, 0.9e-3, 1.2e-3]})
    monkeypatch.setattr(tuning, "time", clock)
    q, k, _ = small_call()
    report = tuning.TUNER.tune(request_of(q, k), [static, lucky], clock.run)
    assert report["ms"]["dense"] < report["ms"]["sdpa"]  # by its fastest call, the lucky one wins ...
    assert report["choice"] == static and report["steady"]  # ... but not round by round
    assert saved_choices(cache) == {
        tuning.key(request_of(q, k)): {"backend": "sdpa", "compute_dtype": "float32"}
    }


@pytest.mark.parametrize(("gain", "replaced"), [(1.10, True), (1.01, False)])
def test_the_static_choice_is_replaced_only_when_beaten_clearly(cache, monkeypatch, gain, replaced):
    monkeypatch.setattr(tuning, "STEADY", 1.5)
    static, other = Choice("sdpa", torch.float32), Choice("dense", torch.float32)
    clock = FakeClock({static: 1e-3, other: 1e-3 / gain})
    monkeypatch.setattr(tuning, "time", clock)
    q, k, _ = small_call()
    report = tuning.TUNER.tune(request_of(q, k), [static, other], clock.run)
    assert report["choice"] == (other if replaced else static) and report["steady"]


def test_an_unsteady_measurement_serves_this_process_and_is_not_written(cache, monkeypatch):
    """Calls that move 1-5x from one to the next (a busy machine): the candidate twice as fast round by
    round is the choice, kept in memory (no second measurement in this process), nothing in the file."""
    monkeypatch.setattr(tuning, "STEADY", 1.5)
    static, other = Choice("sdpa", torch.float32), Choice("dense", torch.float32)
    stalls = [1e-3, 5e-3, 4e-3, 1.2e-3, 3e-3]
    clock = BusyClock({static: stalls, other: [0.5 * s for s in stalls]})
    monkeypatch.setattr(tuning, "time", clock)
    q, k, _ = small_call()
    report = tuning.TUNER.tune(request_of(q, k), [static, other], clock.run)
    assert report["choice"] == other and not report["steady"]
    assert not cache.exists() and tuning.TUNER.lookup(request_of(q, k)) == other


@pytest.mark.parametrize("stall", [tuning.BUDGET_S, 0.0])
def test_a_busy_machine_gets_more_rounds_but_no_more_than_a_budget(cache, monkeypatch, stall):
    """A short call that stalls for a whole budget every other call: more rounds of the contenders, for
    one budget more at most, and still not steady; without the stalls, steady and written."""
    monkeypatch.setattr(tuning, "STEADY", 1.5)
    static, other = Choice("sdpa", torch.float32), Choice("dense", torch.float32)
    clock = BusyClock({static: [1e-3 + stall, 1e-3], other: [2e-3]})
    monkeypatch.setattr(tuning, "time", clock)
    q, k, _ = small_call()
    report = tuning.TUNER.tune(request_of(q, k), [static, other], clock.run)
    assert report["choice"] == static and report["steady"] == (stall == 0.0) == cache.exists()
    assert report["cost_s"] <= 3 * tuning.BUDGET_S + 2 * stall


def test_the_static_choice_stays_timed_after_a_stalled_start(cache, monkeypatch):
    """The static choice's warm-up and first timed call stall (3 and 4 ms against the other's 1 ms): it
    is not dropped as SLOWER, so the rounds that follow compare it with the other, as fast as it."""
    monkeypatch.setattr(tuning, "STEADY", 1.5)
    static, other = Choice("sdpa", torch.float32), Choice("dense", torch.float32)
    clock = BusyClock({static: [3e-3, 4e-3, *[1e-3] * 30], other: [1e-3]})
    monkeypatch.setattr(tuning, "time", clock)
    q, k, _ = small_call()
    report = tuning.TUNER.tune(request_of(q, k), [static, other], clock.run)
    assert clock.calls[static] > 2 and report["choice"] == static and report["steady"]


def test_a_clock_that_reads_zero_breaks_no_ratio(cache, monkeypatch):
    static, other = Choice("sdpa", torch.float32), Choice("dense", torch.float32)
    clock = FakeClock({static: 0.0, other: 0.0})
    monkeypatch.setattr(tuning, "time", clock)
    q, k, _ = small_call()
    assert tuning.TUNER.tune(request_of(q, k), [static, other], clock.run)["choice"] == static


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"format": 1, "torch": torch.__version__, "choices": {"k": {"backend": 3}}}),
    ],
)
def test_a_corrupt_cache_is_ignored_with_a_warning(cache, content):
    cache.parent.mkdir(parents=True)
    cache.write_text(content)
    q, k, v = small_call(length=tuning.SHORT + 1)  # a long float32 forward: nothing measured
    with pytest.warns(UserWarning, match="headwise: ignoring"):
        out = headwise.attention(q, k, v)
    assert torch.isfinite(out).all()


def test_a_cache_from_another_torch_is_ignored(cache):
    q, k, _ = small_call()
    stale_key = tuning.key(request_of(q, k))
    cache.parent.mkdir(parents=True)
    old = {
        "format": tuning.FORMAT,
        "torch": "2.5.0",
        "choices": {stale_key: {"backend": "reference", "compute_dtype": "float32"}},
    }
    cache.write_text(json.dumps(old))
    with pytest.warns(UserWarning, match="another headwise format or torch version"):
        assert choose("auto", request_of(q, k)).backend != "reference"


def test_never_tunes_under_deterministic_algorithms_or_when_disabled(cache, monkeypatch):
    q, k, v = small_call()
    monkeypatch.setenv("HEADWISE_TUNE", "1")
    tuning.enable(False)  # the function wins over the variable
    headwise.attention(q, k, v)
    assert not cache.exists()
    tuning.TUNER.enabled = None  # as the variable says: on
    torch.use_deterministic_algorithms(True)
    try:
        headwise.attention(q, k, v)
    finally:
        torch.use_deterministic_algorithms(False)
    assert not cache.exists()
    headwise.attention(q, k, v)
    assert cache.exists()


def test_the_default_measures_nothing_when_switched_off_or_traced(cache, monkeypatch):
    q, k, v = small_call(dtype=torch.bfloat16)
    monkeypatch.setenv("HEADWISE_TUNE", "0")
    headwise.attention(q, k, v)
    monkeypatch.delenv("HEADWISE_TUNE")
    tuning.enable(False)
    headwise.attention(q, k, v)
    tuning.enable(None)  # as HEADWISE_TUNE says: unset, the default
    torch.jit.trace(lambda q, k, v: headwise.attention(q, k, v), (q, k, v), check_trace=False)
    stacked = (t[None] for t in (q, k, v))  # (1, B, H, N, Dh): vmap over the leading dimension
    torch.func.vmap(lambda q, k, v: headwise.attention(q, k, v))(*stacked)
    assert not cache.exists()
    with pytest.warns(tuning.TuningNotice):
        headwise.attention(q, k, v)
    assert cache.exists()


def test_never_tunes_while_torch_compile_traces(cache):
    """A call that torch.compile traces through (here: one returning lse) never measures; a call that
    becomes headwise's custom op measures when the op runs, as an eager call does (headwise.ops)."""
    tuning.enable()
    traced_through = torch.compile(
        lambda q, k, v: headwise.attention(q, k, v, return_lse=True), backend="eager"
    )
    traced_through(*small_call())
    assert not cache.exists()
    opaque = torch.compile(lambda q, k, v: headwise.attention(q, k, v), backend="eager", fullgraph=True)
    opaque(*small_call())
    assert cache.exists()


def test_the_key_names_what_moves_the_ranking():
    q, k, _ = small_call()
    text = tuning.key(request_of(q, k, True))
    for part in (f"torch {torch.__version__}", "cpu:", "float32", "Nq 128", "Nk 128", "Dh 16", "fwd+bwd"):
        assert part in text
    assert tuning.key(request_of(q[:, :, :65], k)) == tuning.key(request_of(q[:, :, :96], k))  # one bucket


def test_headwise_tune_fills_the_cache_and_prints_its_choices(cache, capsys):
    from headwise.cli.main import main

    assert main(["tune", "--sizes", "16", "32", "--dtypes", "fp32", "--modes", "fwd", "--batch", "1"]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| fp32")]
    assert len(rows) == 2 and all(" | fwd | " in row for row in rows)
    assert len(json.loads(cache.read_text())["choices"]) == 2
    assert f"choices written to {cache}" in printed
