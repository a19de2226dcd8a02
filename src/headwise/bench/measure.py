"""How the benchmarks measure: interleaved timing, peak memory, a memory guard, the matmul ceiling, and the
machine they ran on."""

from __future__ import annotations

import os
import platform
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import __version__
from ..backends.tuning import cpu_kind
from ..checks import physical_memory
from .grid import DTYPES, Config

ISA_CAPS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")  # set: an emulated kind
PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
PROBE_N = 512  # where a contender's memory is measured first when a larger N might not fit
SCORE_COPIES = 4  # with nothing measured, a contender may hold this many (B, H, N, N) score tensors
GB = 1024**3
MB = 1024**2


def time_interleaved(
    steps: Mapping[str, Callable[[], object]], budget_s: float, min_reps: int, max_reps: int, seed: int = 0
) -> dict[str, list[float]]:
    """Seconds per call of each step. Every repetition runs every step once, in a freshly shuffled order,
    so that a slow spell of the machine hits all of them alike; repetitions stop at `max_reps`, or once
    `budget_s` has passed and each step has run `min_reps` times."""
    order = list(steps)
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in order}
    start = time.perf_counter()
    for rep in range(max_reps):
        if rep >= min_reps and time.perf_counter() - start >= budget_s:
            break
        rng.shuffle(order)
        for name in order:
            begin = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - begin)
    return times


@dataclass(frozen=True)
class Measurement:
    """One run of a contender at one configuration: its peak memory growth and how long it took."""

    peak_bytes: int
    seconds: float


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: its high-water mark), in bytes."""
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # "VmRSS:   13488 kB"
    raise KeyError(field)


def _max_rss_bytes() -> int:
    """The process's peak resident memory so far (ru_maxrss: kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def measure_call(fn: Callable[[], None]) -> Measurement:
    """Run fn() once: how far the resident memory rose above its level before the call, and the time.

    On Linux the high-water mark is reset before the call, so the number is fn's own peak. Elsewhere it
    is the growth of the process's lifetime peak (ru_maxrss), which is 0 when fn stays below an earlier
    peak."""
    exact = _reset_peak()
    before = _status_bytes("VmRSS") if exact else _max_rss_bytes()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    after = _status_bytes("VmHWM") if exact else _max_rss_bytes()
    return Measurement(max(0, after - before), seconds)


def default_memory_cap() -> int:
    """Half of the machine's physical memory, in bytes."""
    return physical_memory() // 2


class Guard:
    """Predicts a contender's peak memory and call time at a configuration from the same configuration at
    the largest smaller N measured, scaled by (N / N_measured)²: right for the O(N²) costs, an overestimate
    for the O(N) ones. Refuses what would need more memory than the cap (so that a run reports it instead
    of being killed) or a call longer than the time limit (so that a slow contender cannot stall a run)."""

    def __init__(self, cap_bytes: int, max_call_s: float) -> None:
        self.cap_bytes = cap_bytes
        self.max_call_s = max_call_s
        # (contender, configuration at N=0) -> {N: what it measured}
        self._runs: dict[tuple[str, Config], dict[int, Measurement]] = {}

    def record(self, name: str, config: Config, measurement: Measurement) -> None:
        self._runs.setdefault((name, config.at(0)), {})[config.n] = measurement

    def _measured_below(self, name: str, config: Config) -> dict[int, Measurement]:
        """{N: measurement} for `name` at `config` with a smaller N."""
        return {n: run for n, run in self._runs.get((name, config.at(0)), {}).items() if n < config.n}

    def needs_probe(self, name: str, config: Config) -> bool:
        """True when nothing smaller than config has been measured and the worst case, SCORE_COPIES copies
        of the scores (B, H, N, N), could exceed the cap: measure at PROBE_N first."""
        c = config
        worst = SCORE_COPIES * c.batch * c.heads * c.n**2 * c.torch_dtype.itemsize
        return c.n > PROBE_N and worst > self.cap_bytes and not self._measured_below(name, config)

    def refusal(self, name: str, config: Config) -> str | None:
        """Why `name` must not run at `config` (predicted over the memory cap or the time limit), or None."""
        below = self._measured_below(name, config)
        if not below:
            return None
        smaller = max(below)
        run, growth = below[smaller], (config.n / smaller) ** 2
        basis = f"measured at N={smaller}, × (N/{smaller})²"
        if run.peak_bytes * growth > self.cap_bytes:
            return (
                f"needs ~{run.peak_bytes * growth / GB:.1f} GB ({run.peak_bytes / GB:.2f} GB {basis}), "
                f"over the {self.cap_bytes / GB:.1f} GB cap"
            )
        if run.seconds * growth > self.max_call_s:
            return (
                f"takes ~{run.seconds * growth:.0f} s a call ({run.seconds:.2f} s {basis}), "
                f"over the {self.max_call_s:g} s limit"
            )
        return None


def matmul_ceiling(dtype: str, size: int, budget_s: float, min_reps: int, max_reps: int) -> dict:
    """torch.matmul's speed on (size, size) @ (size, size) in `dtype`: median ms, GFLOP/s (2·size³ FLOPs)."""
    a, b = (torch.randn(size, size).to(DTYPES[dtype]) for _ in range(2))
    with torch.inference_mode():
        torch.matmul(a, b)  # warm-up
        times = time_interleaved({"matmul": lambda: torch.matmul(a, b)}, budget_s, min_reps, max_reps)
    seconds = statistics.median(times["matmul"])
    return {"size": size, "ms": seconds * 1e3, "gflops": 2 * size**3 / seconds / 1e9}


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo, or what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """Where and when a benchmark ran, to store with its numbers."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": "cpu",
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_kind": cpu_kind(),  # with whether oneDNN runs bf16/fp16 natively
        "isa_caps": {name: os.environ[name] for name in ISA_CAPS if name in os.environ},
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "memory_gb": round(2 * default_memory_cap() / GB, 1),
        "load_average": round(os.getloadavg()[0], 2),  # other work on the machine slows every contender
        "torch": torch.__version__,
        "headwise": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
