"""How "auto" picks a backend and a compute dtype: a measurement on this machine when there is one; else,
for the calls whose ranking moves from one CPU to the next, a measurement made on first use; else the
static order the backends declare (their Capabilities.rank) and the rules below.

A choice is a backend and the dtype it computes in: a bf16/fp16 call may run in float32 and be cast back
(more accurate, so the ratio rule holds) where that is faster, as on CPUs without AVX-512 bf16 (AVX2),
where torch's bf16 matmul runs ~150x slower than float32.

Defaults on a machine nobody measured (issue 23). Two AVX2 CPUs (an AMD Zen 3, a Xeon under the AVX2 caps)
rank SDPA in bf16, dense in float32 and SDPA on float32 copies differently, and so do AVX-512-bf16 Xeons
with and without AMX: no rule keyed by the CPU's kind puts auto within 5% of the best everywhere, and a
cost model would need the rates of SDPA's fused kernels (which convert, block and parallelise their own
way) as well as matmul rates and bandwidths, each to a few %, to rank candidates that often lie within
10-30% of each other. So the defaults are a hybrid:
- float32/float64 forward with Nq or Nk outside SHORT_FROM..SHORT (64..256), and every CUDA call: the
  static order (SDPA first, which is what auto is when it is right: SDPA plus headwise's checks), no
  measurement.
- CPU calls in bf16/fp16, CPU calls a backward follows, and short CPU calls (Nq and Nk in 64..256, where dense
  beats SDPA's fused kernel on some CPUs and not on others) (`tunes_by_default`): measured on first use, once
  per key (below), unless switched off. The measurement times the static table's capable candidates
  (dispatch.first_use_candidates: not the reference, and on a CPU without fast bf16/fp16 matmuls none computed
  in bf16/fp16 there but SDPA's forward, each many times slower), interleaved, and keeps the static choice
  unless another beats it clearly round by round, writing it only when the measurement was steady (`decide`: a
  busy machine's stalls once made the fastest single call pick a candidate 3x slower; `steady`). Its cost,
  once per key, process-wide cached in the file when steady (an unsteady measurement takes up to BUDGET_S
  more, and a later process measures again): one warm-up call of each of the first three candidates, of the
  others while under BUDGET_S (1 s), then one interleaved round of each and more rounds while under BUDGET_S:
  about 1 s for calls under 0.1 s, and for a call longer than 0.3 s six calls' time (three candidates' warm-up
  and timed calls; bf16 N=2048 forward, B=4, H=8, one thread: 4-7 s on a 2-core Xeon at load 3-8,
  benchmarks/results/defaults-cpu-native.md). When the two fastest lie within CLOSE (15%) of each other, they
  are timed on, alone, until each has SETTLE (3) timed calls, while a round fits in BUDGET_S more: a slow call
  otherwise gets one or two timed calls, too few to tell 10% apart (fp16 N=2048 forward picked SDPA on float32
  copies, 164 ms, over SDPA in fp16, 144 ms, from one timed call each). The first such call of a process emits
  one TuningNotice (a warnings.warn: stderr, never stdout) naming the cache file and the off switch.
HEADWISE_TUNE=0 (or `enable(False)`) turns measuring off (the static order decides); HEADWISE_TUNE=1 (or
`enable()`) measures every new key with more than one candidate, long float32 forward and CUDA included. No
measurement runs while torch.compile or torch.jit.trace traces, under torch.func's transforms or
torch.use_deterministic_algorithms(True); `headwise tune` fills the cache ahead of time.

Measurements are keyed by everything that moves the ranking (`key`): the device kind (CPU capability and
whether oneDNN runs bf16/fp16 natively, or the GPU's name and compute capability), torch's version, the
thread count, the dtype, power-of-two buckets of Nq, Nk and the head width, the mask kind, whether a
backward follows and whether dropout is on. They live in memory and in the cache file (cachefile.py).
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from ..masks import Causal
from . import blocksparse, flash_cpu
from .cachefile import FORMAT, MAX_CACHE_BYTES, cache_path, read_choices, write_choices
from .capabilities import Choice, Request
from .plan import make_plan
from .registry import BACKENDS

__all__ = [
    "FORMAT",
    "MAX_CACHE_BYTES",
    "Choice",
    "TuningNotice",
    "cache_path",
    "cpu_kind",
    "enable",
    "forget",
]

LOW_PRECISION = (torch.bfloat16, torch.float16)
ROUNDS = 15  # interleaved rounds of timed calls at most, after one warm-up call each; the fastest counts
SLOWER = 2.0  # after a round, a candidate this many times the fastest is not timed further
BUDGET_S = 1.0  # once a key's measurement has taken this long, no further candidate or round starts
ALWAYS = 3  # the first candidates, timed whatever the budget (the static choice and SDPA's two dtypes)
CLOSE = 1.15  # two fastest candidates this close ...
SETTLE = 3  # ... are timed until each has this many calls after its warm-up (for BUDGET_S more at most)
CLEARLY = 1.03  # another candidate replaces the static choice when this many times faster, round by round
STEADY = 1.5  # a measurement is steady when the chosen candidate's median call is this close to its fastest
LONG_S = 0.01  # ... and has SETTLE calls, or two for calls this long


# The device kind ---------------------------------------------------------------------------------------


def _read_cpu_kind() -> str:
    kind = torch.backends.cpu.get_cpu_capability()
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        kind += "-bf16"
    if torch.ops.mkldnn._is_mkldnn_fp16_supported():
        kind += "-fp16"
    if "bf16" in kind and _cpu_flag("amx_bf16"):
        kind += "-amx"
    return kind


def _cpu_flag(flag: str) -> bool:
    """Whether /proc/cpuinfo lists `flag` (False where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return any(line.startswith("flags") and flag in line.split() for line in cpuinfo)
    except OSError:
        return False


_CPU_KIND = _read_cpu_kind()  # read at import, so that torch.compile sees a constant


def cpu_kind() -> str:
    """'AVX2', 'AVX512' or 'AVX512-bf16' (then '-fp16', '-amx'): ATen's vector capability, whether oneDNN
    runs bf16 (fp16) matmuls natively, and whether the CPU has AMX tiles for bf16. ATEN_CPU_CAPABILITY
    and ONEDNN_MAX_CPU_ISA, read at start-up, move it."""
    return _CPU_KIND


def device_kind(device: torch.device) -> str:
    """What the ranking depends on about the device: the CPU's kind, or the GPU's name and compute
    capability ('cuda:NVIDIA H100 80GB HBM3:9.0')."""
    if device.type == "cuda":
        if not torch.cuda.is_available():  # a request made without a GPU (tests of the CUDA table)
            return "cuda"
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda:{torch.cuda.get_device_name(device)}:{major}.{minor}"
    if device.type == "cpu":
        return f"cpu:{cpu_kind()}"
    return device.type


def fast_low_precision(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether matmuls in `dtype` on `device` run at least at the float32 rate: always in float32/64 and on
    CUDA; on the CPU only where oneDNN computes bf16/fp16 natively (AVX-512 bf16/fp16, AMX)."""
    if dtype not in LOW_PRECISION or device.type != "cpu":
        return True
    return ("-bf16" if dtype == torch.bfloat16 else "-fp16") in cpu_kind()


# The static table -------------------------------------------------------------------------------------

DENSE_LOW_PRECISION = 512 * 512  # bf16 on an AVX-512-bf16 CPU: dense up to Nq·Nk = 512²


def static_choices(request: Request) -> list[Choice]:
    """The candidates in the order the table ranks them, without a measurement; the dispatcher takes the
    first one the backend can serve. The backends come in the order of the rank each declares beside its
    capabilities (Capabilities.rank: on the CPU sdpa, chunked, blocksparse, dense, reference; on CUDA sdpa,
    triton, chunked, dense, reference; blocksparse on the CPU and triton on CUDA first for a structured
    predicate), in the input dtype and, for bf16/fp16 on the CPU, in float32, placed by these rules and the
    measurements behind them:

    - CUDA (unmeasured so far: benchmarks/triton_gpu.py will decide): SDPA's flash kernel first for plain
      calls; triton first where SDPA would read a materialised (Nq, Nk) mask (a predicate other than plain
      causal), since triton evaluates predicates in the kernel; triton next either way (lse, modifiers).
    - CPU, bf16/fp16 without native low precision (AVX2; benchmarks/results/speed-cpu-avx2.md, B=4, H=8,
      Dh=64): forward in the input dtype with SDPA (its flash kernel converts blocks itself: 8.3 ms vs 40 ms
      for SDPA on float32 copies at N=128; a tie at N=1024); forward + backward in float32, where SDPA's bf16
      backward is 13× slower (N=1024: 5283 ms vs 371 ms), with the dense path up to Nq·Nk = 512² (N=128:
      9.3 ms vs SDPA's 10.3) and SDPA beyond.
    - CPU, bf16 with native low precision (AVX-512-bf16; benchmarks/results/speed-cpu-bf16.md, an AMD EPYC):
      the dense path up to Nq·Nk = 512² (its matmuls run at the bf16 rate where SDPA's kernel does not),
      SDPA from there. With AMX (speed-cpu-avx512.md, a Sapphire Rapids Xeon), SDPA's bf16 forward is the
      faster one (N=128: 1.1 vs 2.1 ms; N=512: 16.5 vs 31.6), so there dense serves the short
      forward + backward only (N=512: 91.7 vs SDPA's 148 ms).
    - otherwise: SDPA; weights asked for go to dense, lse to chunked, traces to the reference.
    """
    dtype, device = request.dtype, request.device
    same = [Choice(name, dtype) for name in ranked_backends(request)]
    if device.type == "cpu" and dtype in LOW_PRECISION:
        upcast = [Choice(name, torch.float32) for name in ranked_backends(request)]
        if not fast_low_precision(device, dtype):
            if not request.requires_grad:
                return [*same, *upcast]
            if request.num_queries * request.num_keys <= DENSE_LOW_PRECISION:
                return [Choice("dense", torch.float32), *upcast, *same]
            return [*upcast, *same]
        short = request.num_queries * request.num_keys <= DENSE_LOW_PRECISION
        if short and (request.requires_grad or "-amx" not in cpu_kind()):
            return [Choice("dense", dtype), *same, *upcast]
        return [*same, *upcast]
    return _accurate_backward_first(request, same)


DENSE_FLOAT32_BACKWARD = 384 * 384  # float32 forward + backward on the CPU: dense up to Nq·Nk = 384²


def accurate_backward(choice: Choice, request: Request) -> bool:
    """Whether `choice` differentiates `request` as accurately as eager attention does. Not SDPA on the
    CPU for float32 inputs that a backward follows unless flash_cpu serves it: the flash kernel recomputes
    each weight as exp(score - lse) from a float32 lse, so every weight carries lse's rounding, |lse|·2^-24
    relative, where eager's softmax subtracts each row's maximum exactly (T5's unscaled scores of ±700
    gave dq 300 times less accurate than eager's); flash_cpu takes the kernel's backward only where lse is
    small enough, and eager's (dense; chunked when long) beyond. In bf16/fp16 computed in float32 that
    rounding stays below the result's own (2^-9) up to |lse| = 2^15, and float64 keeps a float64 lse."""
    return not (
        choice.backend == "sdpa"
        and request.device.type == "cpu"
        and request.requires_grad
        and request.dtype == choice.compute_dtype == torch.float32
        and not flash_cpu.checks(request)
    )


def _accurate_backward_first(request: Request, choices: list[Choice]) -> list[Choice]:
    """`choices` without those `accurate_backward` rules out; a CPU float32 call that a backward follows
    goes to dense up to Nq·Nk = 384², to chunked beyond (both recompute the weights from the running
    maximum, as eager does). Forward + backward, B=4, H=8, Dh=64, one thread, AVX512-bf16-fp16-amx, in ms,
    SDPA / dense / chunked: N=128 7.4 / 5.8 / 11.0, N=384 42 / 53 / 58, N=512 75 / 148 / 108,
    N=1024 214 / 497 / 364, N=2048 1027 / 3690 / 1705 (causal 677 / 5819 / 1124)."""
    kept = [c for c in choices if accurate_backward(c, request)]
    if len(kept) == len(choices) or request.num_queries * request.num_keys > DENSE_FLOAT32_BACKWARD:
        return kept
    return [Choice("dense", request.dtype), *(c for c in kept if c.backend != "dense")]


def ranked_backends(request: Request) -> tuple[str, ...]:
    """The backends ranked on the request's device, in the order of their declared Rank (ties: MODULES'
    order), each at its `structured` rank for a structured call."""
    placed = structured(request)
    ranks = {name: b.capabilities.rank.of(request.device.type, placed) for name, b in BACKENDS.items()}
    ranked = {name: rank for name, rank in ranks.items() if rank is not None}  # those ranked on this device
    return tuple(sorted(ranked, key=ranked.__getitem__))


def structured(request: Request) -> bool:
    """Whether the call carries a predicate other than plain causal (which SDPA runs as is_causal) and a
    fused kernel would read it materialised as an (Nq, Nk) mask where a backend of its own skips what it
    rules out: on CUDA any such predicate (triton evaluates it in the kernel), on the CPU one whose block
    plan is sparse (`_sparse`: blocksparse)."""
    plain = request.predicate is None or (type(request.predicate) is Causal and request.mask == "none")
    return not plain and (request.device.type != "cpu" or _sparse(request))


SPARSE = 0.6  # blocksparse for predicates whose plan computes at most this share of the blocks


def _sparse(request: Request) -> bool:
    """Whether the predicate's block plan computes at most SPARSE of the (Nq, Nk) blocks: there the
    blocksparse backend beats SDPA on the materialised mask (fp32, one thread, B=1, H=8, Dh=64, N=4096,
    Sapphire Rapids: a causal window of 256, 0.08 of the blocks, 78 vs 459 ms; a prefix LM of N/4, 0.54,
    332 vs 430; key lengths of 3N/4, 0.75, 616 vs 431: SDPA's fused kernel is the faster dense one)."""
    block = blocksparse.BLOCK
    plan = make_plan(request.predicate, request.num_queries, request.num_keys, block, block)
    return plan.density() <= SPARSE


# Measurements -----------------------------------------------------------------------------------------


def key(request: Request) -> str:
    """The measurement key of a request: what moves the ranking, with lengths and widths in powers of two."""
    predicate = "none" if request.predicate is None else type(request.predicate).__name__
    parts = (
        device_kind(request.device),
        f"torch {torch.__version__}",
        f"threads {torch.get_num_threads()}",
        str(request.dtype).removeprefix("torch."),
        f"Nq {_bucket(request.num_queries)}",
        f"Nk {_bucket(request.num_keys)}",
        f"Dh {_bucket(request.head_dim)}",
        f"G {request.q_heads // max(request.kv_heads, 1)}",
        f"mask {request.mask}+{predicate}",
        f"score_mod {'none' if request.score_mod is None else type(request.score_mod).__name__}",
        "fwd+bwd" if request.requires_grad else "fwd",
        "dropout" if request.dropout_p > 0 else "no dropout",
        "weights" if request.return_weights else "",
        "lse" if request.return_lse else "",
    )
    return " | ".join(p for p in parts if p)


def _bucket(n: int) -> int:
    """The power of two at or above n (0 for 0); n may be a 0-D tensor (a size while torch.jit.trace runs)."""
    n = int(n)
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


def tunes_by_default(request: Request) -> bool:
    """Whether a new key is measured on first use when HEADWISE_TUNE is unset: CPU calls in bf16/fp16, that
    a backward follows, or short (Nq and Nk from SHORT_FROM to SHORT), whose ranking moves from one CPU to
    the next (the module's docstring)."""
    if request.device.type != "cpu":
        return False
    if request.dtype in LOW_PRECISION or request.requires_grad:
        return True
    lengths = (_bucket(request.num_queries), _bucket(request.num_keys))
    return all(SHORT_FROM <= n <= SHORT for n in lengths)


# Up to this length a float32 forward is measured too: there the whole score matrix fits in a core's cache
# and dense can beat SDPA's fused kernel, whose fixed costs dominate (B=4, H=8, N=128, Dh=64, 2 threads:
# 0.55 vs 0.66 ms on a Sapphire Rapids Xeon, but 2.9 vs 1.3 ms on it under the AVX2 caps, and even at
# one thread); measuring such calls takes about 0.1 s at B=4, H=8. Not below SHORT_FROM: a decoding step
# (Nq = 1) would pause at each power of two its cache passes, for a choice that fixed costs dominate.
SHORT = 256
SHORT_FROM = 64


def slow_here(choice: Choice, request: Request) -> bool:
    """Whether `choice` is known to be many times slower than a float32 copy on this device: computed in
    bf16/fp16 on a CPU without fast matmuls in that dtype (AVX2), except SDPA's forward, whose flash
    kernel converts its blocks to float32 itself (speed-cpu-avx2.md: dense in bf16 4-150x, SDPA's bf16
    backward 13x). Tuning on first use does not time those: one warm-up call would cost more than the
    whole measurement."""
    low = choice.compute_dtype in LOW_PRECISION and not fast_low_precision(
        request.device, choice.compute_dtype
    )
    return low and (request.requires_grad or choice.backend != "sdpa")


class TuningNotice(UserWarning):
    """The one notice a process gets when auto first measures on first use (filter it by this class)."""


class Tuner:
    """The measured choices: in memory, read from and written to `cache_path()`."""

    def __init__(self) -> None:
        self.enabled: bool | None = None  # None: as HEADWISE_TUNE says
        self._choices: dict[str, Choice] | None = None  # read on first use
        self.noticed = False  # the TuningNotice went out in this process

    def choices(self) -> dict[str, Choice]:
        if self._choices is None:
            self._choices = read_choices(cache_path())
        return self._choices

    def lookup(self, request: Request) -> Choice | None:
        """The measured choice for `request`'s key, or None. While torch.compile traces, None: the static
        table decides there (the key reads the thread count and the file, which would break the graph)."""
        if torch.compiler.is_compiling():
            return None
        choices = self.choices()
        return choices.get(key(request)) if choices else None  # no measurements: no key to build (~4 µs)

    def may_tune(self, request: Request) -> bool:
        """Whether `request`, whose key has no measurement, may be measured now: switched on (enable(),
        HEADWISE_TUNE=1) or, unset, a call `tunes_by_default`; never switched off (enable(False),
        HEADWISE_TUNE=0), while torch.compile or torch.jit.trace traces, under torch.func's transforms or
        under torch.use_deterministic_algorithms(True)."""
        tracing = torch.compiler.is_compiling() or torch.jit.is_tracing() or request.transforms
        if tracing or torch.are_deterministic_algorithms_enabled():  # first: reads no size while tracing
            return False
        setting = os.environ.get("HEADWISE_TUNE", "") if self.enabled is None else str(int(self.enabled))
        return setting == "1" or (setting != "0" and tunes_by_default(request))

    def first_use(self, request: Request, candidates: list[Choice], run: Callable[[Choice], None]) -> Choice:
        """Measure a call's key on first use (`tune`); the process's first one emits the TuningNotice."""
        if not self.noticed:
            self.noticed = True
            warnings.warn(
                f"headwise: auto times its candidates once for each new kind of call ({key(request)}), "
                f"about a second each, and keeps its choice in {cache_path()}; HEADWISE_TUNE=0 turns this "
                "off, `headwise tune` measures ahead of time",
                TuningNotice,
                stacklevel=5,
            )
        return self.tune(request, candidates, run)["choice"]

    def tune(self, request: Request, candidates: list[Choice], run: Callable[[Choice], None]) -> dict:
        """Time `run(choice)` for each candidate and keep the choice for `request`'s key (`decide`): in
        memory, and in the file when the measurement is `steady`. One warm-up call each, in order (the
        first ALWAYS always, the others while the measurement is under BUDGET_S; a first call may pay
        set-up costs several times its own, so it decides nothing alone); then rounds that call each
        candidate still timed once, interleaved so that a slow spell of the machine hits them alike: the
        first always, the others while under BUDGET_S (ROUNDS at most); after each round a candidate
        SLOWER times the fastest is not timed further, but for the first candidate (the static choice,
        against which `decide` compares the others round by round). Then, while the two fastest lie
        within CLOSE of each other and either has fewer than SETTLE timed calls (slow calls leave one or
        two in the budget), rounds of those two alone, while a round fits in BUDGET_S more. Then, while
        the measurement is not steady (a busy machine), rounds of the first candidate and the two
        fastest, while a round fits in BUDGET_S more. An unsteady measurement serves this process alone,
        and a later one measures again. -> {"choice": Choice, "ms": {label: fastest ms, warm-up included,
        or None (not timed)}, "steady": whether the choice was written to the file, "cost_s": seconds}."""
        start = time.perf_counter()
        fastest: dict[Choice, float] = {}
        rounds: list[dict[Choice, float]] = []  # each round's seconds per candidate timed in it

        def timed_round(choices: list[Choice]) -> None:
            rounds.append({choice: _seconds(run, choice) for choice in choices})
            fastest.update({choice: min(fastest[choice], rounds[-1][choice]) for choice in choices})

        for index, choice in enumerate(candidates):
            if index < ALWAYS or time.perf_counter() - start <= BUDGET_S:
                fastest[choice] = _seconds(run, choice)
        warm_up = dict(fastest)  # the first call of each
        first = candidates[0]
        timing = list(fastest)
        for round_ in range(ROUNDS):
            if round_ > 0 and time.perf_counter() - start > BUDGET_S:
                break
            timed_round(timing)
            best = min(fastest.values())
            timing = [c for c in timing if c == first or fastest[c] <= SLOWER * best]
        settle_until = time.perf_counter() + BUDGET_S
        while True:
            close = sorted(fastest, key=fastest.__getitem__)[:2]  # the two fastest
            if len(close) < 2 or fastest[close[1]] > CLOSE * fastest[close[0]]:
                break
            round_s = fastest[close[0]] + fastest[close[1]]
            settled = min(_timed_calls(c, rounds) for c in close) >= SETTLE
            if settled or time.perf_counter() + round_s > settle_until:
                break
            timed_round(close)
        steady_until = time.perf_counter() + BUDGET_S
        while not steady(decide(first, fastest, rounds), warm_up, rounds):  # a busy machine: more rounds
            contenders = list(dict.fromkeys([first, *sorted(fastest, key=fastest.__getitem__)[:2]]))
            if time.perf_counter() + sum(fastest[c] for c in contenders) > steady_until:
                break
            timed_round(contenders)
        chosen = decide(first, fastest, rounds)
        trusted = steady(chosen, warm_up, rounds)
        kept = {key(request): chosen}
        self._choices = {**self.choices(), **(write_choices(cache_path(), kept) if trusted else kept)}
        labels = {c.label(request.dtype): fastest[c] * 1e3 if c in fastest else None for c in candidates}
        return {"choice": chosen, "ms": labels, "steady": trusted, "cost_s": time.perf_counter() - start}


def steady(chosen: Choice, warm_up: dict[Choice, float], rounds: list[dict[Choice, float]]) -> bool:
    """Whether a measurement can be trusted beyond this process: the chosen candidate has at least SETTLE
    timed calls (2 for calls of LONG_S or more, which a busy machine's stalls barely move; its warm-up
    counts when it has one timed call only) whose median is within STEADY of their fastest. On this
    2-core Xeon, the median / fastest of the static choice's calls was 1.03-1.14 forward and 1.27-1.40
    forward + backward on a quiet machine; with two processes spinning, 1.2-5.3, often with one round in
    the budget."""
    own = [times[chosen] for times in rounds if chosen in times]
    own = own if len(own) >= 2 else [warm_up[chosen], *own]
    enough = SETTLE if min(own) < LONG_S else 2
    return len(own) >= enough and statistics.median(own) <= STEADY * min(own)


def decide(first: Choice, fastest: dict[Choice, float], rounds: list[dict[Choice, float]]) -> Choice:
    """The choice to keep, `first` being the static table's: `first` unless another candidate beats it
    clearly, by a median per-round ratio of at least CLEARLY over the rounds that timed both (calls made
    moments apart), and has the faster fastest call; of those, the one that beats it most. On a busy
    machine single calls move 2-10x (a descheduled thread stalls a parallel kernel), and the fastest of a
    few calls picked a candidate 3x slower (blocksparse over SDPA, float32, N=128, two processes spinning
    on two cores); the median of per-round ratios is not moved by a stall here and there."""

    def gain(choice: Choice) -> float:  # how many times faster than `first`, round by round
        ratios = [times[first] / times[choice] for times in rounds if first in times and choice in times]
        return statistics.median(ratios) if ratios else fastest[first] / fastest[choice]

    beating = [c for c in fastest if c != first and fastest[c] < fastest[first] and gain(c) >= CLEARLY]
    return max(beating, key=gain, default=first)


def _timed_calls(choice: Choice, rounds: list[dict[Choice, float]]) -> int:
    return sum(choice in times for times in rounds)


def _seconds(run: Callable[[Choice], None], choice: Choice) -> float:
    """The seconds `run(choice)` took, at least 1 ns (a coarse clock reads 0, which no ratio can take)."""
    begin = time.perf_counter()
    run(choice)
    return max(time.perf_counter() - begin, 1e-9)


TUNER = Tuner()


def enable(on: bool | None = True) -> None:
    """Measure every new key on first use (True) or none (False), whatever HEADWISE_TUNE says; None: as
    HEADWISE_TUNE says (unset: the calls that `tunes_by_default`)."""
    TUNER.enabled = None if on is None else bool(on)


def forget() -> None:
    """Drop the in-memory choices, so that the cache file is read again (tests, `headwise tune`)."""
    TUNER._choices = None
