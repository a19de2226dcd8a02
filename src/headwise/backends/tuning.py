"""How "auto" picks a backend and a compute dtype: from a measurement on this machine when there is one, else
from a static table keyed by the kind of device.

A choice is a backend and the dtype it computes in: a bf16/fp16 call may run in float32 and be cast back
(more accurate, so the ratio rule holds) where the hardware has no fast low-precision matmul, as on CPUs
without AVX-512 bf16 (AVX2), where torch's bf16 matmul runs ~150× slower than float32.

Measurements are keyed by everything that moves the ranking (`key`): the device kind (CPU capability and
whether oneDNN runs bf16/fp16 natively, or the GPU's name and compute capability), torch's version, the
thread count, the dtype, power-of-two buckets of Nq, Nk and the head width, the mask kind, whether a
backward follows and whether dropout is on. They live in memory and in a JSON file under the user's cache
folder ($XDG_CACHE_HOME/headwise/dispatch.json, else ~/.cache/headwise/dispatch.json); a corrupt file, or
one written by another torch or format, is ignored with a warning, never an error. Only a regular file of at
most 4 MiB in a folder of the user's own is read (never a link, never waiting on a FIFO), each entry is
checked against its key (the compute dtype its input dtype allows, a backend that runs there), and writes
merge into the file under a lock and replace it in one step, never writing through a link.

Tuning a new key on first use is opt-in (HEADWISE_TUNE=1 or `enable()`): it times each capable candidate on
random inputs of the call's shape for a fraction of a second and keeps the fastest. It never runs while
torch.compile traces, under torch.use_deterministic_algorithms(True), or when disabled; `headwise tune`
fills the cache ahead of time.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..masks import Causal
from . import blocksparse
from .capabilities import Request
from .plan import make_plan

FORMAT = 1  # the cache file's layout; a file of another format is ignored
LOW_PRECISION = (torch.bfloat16, torch.float16)
REPS = 2  # timed calls per candidate, after one warm-up call; the faster counts
SLOWER = 2.0  # a candidate whose warm-up call is this many times the best time is not timed further
BUDGET_S = 1.0  # once a key's measurement has taken this long, the candidates left are not timed


@dataclass(frozen=True)
class Choice:
    """A backend and the dtype it computes in (the inputs are cast to it and the outputs back)."""

    backend: str
    compute_dtype: torch.dtype

    def label(self, input_dtype: torch.dtype) -> str:
        """'sdpa', or 'sdpa@float32' when the call is computed in another dtype than its inputs'."""
        if self.compute_dtype == input_dtype:
            return self.backend
        return f"{self.backend}@{str(self.compute_dtype).removeprefix('torch.')}"


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
    first one the backend can serve. The rules and the measurements behind them:

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
    same = [Choice(name, dtype) for name in _names(request)]
    if device.type == "cpu" and dtype in LOW_PRECISION:
        upcast = [Choice(name, torch.float32) for name in _names(request)]
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
    CPU for float32 inputs that a backward follows: its flash kernel recomputes each weight as
    exp(score - lse) from a float32 lse, so every weight carries lse's rounding, |lse|·2^-24 relative,
    where eager's softmax subtracts each row's maximum exactly. With unscaled scores (T5 at 4× its init:
    ±700) dq came out 300 times less accurate than eager's on some CPUs. In bf16/fp16 computed in float32
    that rounding stays below the result's own (2^-9) up to |lse| = 2^15, and float64 keeps a float64 lse."""
    return not (
        choice.backend == "sdpa"
        and request.device.type == "cpu"
        and request.requires_grad
        and request.dtype == choice.compute_dtype == torch.float32
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


def _names(request: Request) -> tuple[str, ...]:
    plain = request.predicate is None or (type(request.predicate) is Causal and request.mask == "none")
    if request.device.type == "cuda":
        if not plain:
            return ("triton", "sdpa", "chunked", "dense", "reference")
        return ("sdpa", "triton", "chunked", "dense", "reference")
    if not plain and _sparse(request):  # SDPA would read it materialised as (Nq, Nk)
        return ("blocksparse", "sdpa", "chunked", "dense", "reference")
    return ("sdpa", "chunked", "blocksparse", "dense", "reference")


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


def cache_path() -> Path:
    """$XDG_CACHE_HOME/headwise/dispatch.json, else ~/.cache/headwise/dispatch.json."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "headwise" / "dispatch.json"


class Tuner:
    """The measured choices: in memory, read from and written to `cache_path()`."""

    def __init__(self) -> None:
        self.enabled: bool | None = None  # None: as HEADWISE_TUNE says
        self._choices: dict[str, Choice] | None = None  # read on first use

    def choices(self) -> dict[str, Choice]:
        if self._choices is None:
            self._choices = _read(cache_path())
        return self._choices

    def lookup(self, request: Request) -> Choice | None:
        """The measured choice for `request`'s key, or None. While torch.compile traces, None: the static
        table decides there (the key reads the thread count and the file, which would break the graph)."""
        if torch.compiler.is_compiling():
            return None
        return self.choices().get(key(request))

    def may_tune(self) -> bool:
        """Whether a call may measure now: opted in, not tracing for torch.compile, not deterministic."""
        enabled = os.environ.get("HEADWISE_TUNE", "0") == "1" if self.enabled is None else self.enabled
        deterministic = torch.are_deterministic_algorithms_enabled()
        return enabled and not torch.compiler.is_compiling() and not deterministic

    def tune(self, request: Request, candidates: list[Choice], run: Callable[[Choice], None]) -> dict:
        """Time `run(choice)` for each candidate, in order, keep the fastest for `request`'s key and persist
        it. The first two candidates are always timed; the others while the measurement is under BUDGET_S.
        -> {"choice": Choice, "ms": {label: best ms, or None (not timed)}, "cost_s": seconds}."""
        start = time.perf_counter()
        best_times: dict[Choice, float | None] = {}
        best = math.inf
        for index, choice in enumerate(candidates):
            if index >= 2 and time.perf_counter() - start > BUDGET_S:
                best_times[choice] = None
                continue
            begin = time.perf_counter()
            run(choice)  # warm-up
            first = time.perf_counter() - begin
            if first > SLOWER * best:
                best_times[choice] = None
                continue
            times = []
            for _ in range(REPS):
                begin = time.perf_counter()
                run(choice)
                times.append(time.perf_counter() - begin)
            best_times[choice] = min(times)
            best = min(best, best_times[choice])
        chosen = min((c for c in best_times if best_times[c] is not None), key=lambda c: best_times[c])
        self._choices = {**self.choices(), **_write(cache_path(), {key(request): chosen})}
        labels = {c.label(request.dtype): (None if t is None else t * 1e3) for c, t in best_times.items()}
        return {"choice": chosen, "ms": labels, "cost_s": time.perf_counter() - start}


MAX_CACHE_BYTES = 4 << 20  # a cache file beyond 4 MiB (some 20,000 entries) is not read
COMPUTE_DTYPES = {  # a key's input dtype -> the dtypes its calls may be computed in
    "float64": ("float64",),
    "float32": ("float32",),
    "bfloat16": ("bfloat16", "float32"),
    "float16": ("float16", "float32"),
}


def _read(path: Path) -> dict[str, Choice]:
    """The choices in the cache file; {} without it. Anything but a regular file of at most
    MAX_CACHE_BYTES in a folder of the user's own (a link, a FIFO, a device, a huge file) is not opened
    for reading or refused at once, never waited on; a corrupt or stale file is ignored with a warning,
    and so, with one warning for all, are the entries that do not fit their key (see _entry)."""
    from ..files import own_folder, read_regular

    try:
        own_folder(path.parent)
        data = json.loads(read_regular(path, MAX_CACHE_BYTES, follow_links=False))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: JSON nested too deeply
        reason = "nested too deeply" if isinstance(error, RecursionError) else error
        warnings.warn(f"headwise: ignoring the unreadable dispatch cache {path}: {reason}", stacklevel=3)
        return {}
    written = (data.get("format"), data.get("torch")) if isinstance(data, dict) else None
    if written != (FORMAT, torch.__version__):
        warnings.warn(
            f"headwise: ignoring {path}: written by another headwise format or torch version "
            f"(now format {FORMAT}, torch {torch.__version__}); `headwise tune` measures again",
            stacklevel=3,
        )
        return {}
    entries = data.get("choices")
    if not isinstance(entries, dict):
        warnings.warn(f"headwise: ignoring the dispatch cache {path}: it has no choices", stacklevel=3)
        return {}
    choices, bad = {}, []
    for entry_key, entry in entries.items():
        try:
            choices[entry_key] = _entry(entry_key, entry)
        except ValueError as error:
            bad.append(str(error))
    if bad:
        warnings.warn(
            f"headwise: ignoring {len(bad)} of the {len(entries)} entries of the dispatch cache {path} "
            f"that do not fit their key (the first: {bad[0]}); auto decides for those keys as without them",
            stacklevel=3,
        )
    return choices


def _entry(entry_key: str, entry: object) -> Choice:
    """A cache entry {"backend": name, "compute_dtype": "float32"} under `entry_key` as a Choice, or a
    ValueError saying what does not fit: the compute dtype must be one the key's input dtype allows
    (COMPUTE_DTYPES: itself, and float32 for bf16/fp16), the backend a registered one that runs on the
    key's device in that dtype. Whether it serves each call is checked again when a call looks it up."""
    from . import BACKENDS

    parts = entry_key.split(" | ")
    allowed = COMPUTE_DTYPES.get(parts[3]) if len(parts) > 3 else None
    if allowed is None:
        raise ValueError(f"the key {entry_key[:80]!r} names no input dtype")
    if not isinstance(entry, dict) or set(entry) != {"backend", "compute_dtype"}:
        raise ValueError(f"an entry must be {{'backend': ..., 'compute_dtype': ...}}, got {str(entry)[:80]}")
    backend, compute = entry["backend"], entry["compute_dtype"]
    if compute not in allowed:
        expected = " or ".join(allowed)
        raise ValueError(
            f"a {parts[3]} call cannot be computed in {str(compute)[:20]!r} (expected {expected})"
        )
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {str(backend)[:40]!r}")
    capabilities, device = BACKENDS[backend].capabilities, parts[0].split(":")[0]
    if device not in capabilities.devices or getattr(torch, compute) not in capabilities.dtypes:
        raise ValueError(f"backend {backend!r} does not run on {device} in {compute}")
    return Choice(backend, getattr(torch, compute))


def _write(path: Path, updates: dict[str, Choice]) -> dict[str, Choice]:
    """Merge `updates` into the cache file and -> the merged choices. Under an exclusive lock on a lock
    file beside it, the file is read again and replaced in one step with what it had plus `updates`, so
    concurrent tuners keep every entry; the file is replaced as a folder entry, never written through a
    link. A cache that cannot be written only warns (-> `updates`)."""
    from ..files import locked, own_folder, replace_entry

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        own_folder(path.parent)
        with locked(path.with_name(path.name + ".lock")):
            with warnings.catch_warnings():  # the first read warned about what it ignores
                warnings.simplefilter("ignore")
                merged = {**_read(path), **updates}
            entries = {
                k: {"backend": c.backend, "compute_dtype": str(c.compute_dtype).removeprefix("torch.")}
                for k, c in sorted(merged.items())
            }
            document = {"format": FORMAT, "torch": torch.__version__, "choices": entries}
            replace_entry(path, json.dumps(document, indent=1))
        return merged
    except OSError as error:
        warnings.warn(f"headwise: could not write the dispatch cache {path}: {error}", stacklevel=3)
        return updates


TUNER = Tuner()


def enable(on: bool = True) -> None:
    """Turn tuning on first use on (or off), whatever HEADWISE_TUNE says."""
    TUNER.enabled = bool(on)


def forget() -> None:
    """Drop the in-memory choices, so that the cache file is read again (tests, `headwise tune`)."""
    TUNER._choices = None
