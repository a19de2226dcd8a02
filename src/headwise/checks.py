"""Argument checks shared by the modules: each raises an error that names the argument and what it got.
Also: whether this machine can hold an allocation (fits_in_memory), and user text made safe to print in a
terminal (printable)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import numbers
import os
import time
import unicodedata
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    import torch
    from _typeshed import DataclassInstance

T = TypeVar("T")
DataclassT = TypeVar("DataclassT", bound="DataclassInstance")


def positive_int(value: object, name: str) -> int:
    """`value` as an int (numpy's integers included, as torch accepts them), or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def probability(value: object, name: str) -> float:
    """`value` as a float in [0, 1) (a dropout probability), or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def positive_number(value: object, name: str) -> float:
    """`value` as a finite float > 0, or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def finite_number(value: object, name: str) -> float:
    """`value` as a finite float (any sign), or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r:.100}")
    return float(value)


def non_negative_int(value: object, name: str) -> int:
    """`value` as an int >= 0, or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def non_negative_number(value: object, name: str) -> float:
    """`value` as a finite float >= 0, or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def fraction(value: object, name: str, *, below_one: bool = False) -> float:
    """`value` as a float in [0, 1] (in [0, 1) if below_one), or a ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= float(value) <= 1
        or (below_one and value == 1)
    ):
        raise ValueError(f"{name} must be a number in [0, 1{')' if below_one else ']'}, got {value!r}")
    return float(value)


def boolean(value: object, name: str) -> bool:
    """`value` if it is a bool (not merely truthy), or a TypeError."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def known_keys(data: object, known: Iterable[str], what: str) -> dict:
    """`data` if it is a dict whose keys are all in `known`; else a TypeError, or a ValueError that lists
    the unknown keys and the known ones. `what` names one key, e.g. "TransformerConfig field"."""
    if not isinstance(data, dict):
        raise TypeError(f"expected a dict of {what}s, got {type(data).__name__}")
    known = list(known)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; the {what}s are {known}")
    return data


def strict_from_dict(cls: type[DataclassT], data: object, what: str) -> DataclassT:
    """The dataclass `cls` made from the dict `data`, whose keys must be its fields (see known_keys); the
    fields left out take their defaults, and `cls` checks the values."""
    return cls(**known_keys(data, (field.name for field in dataclasses.fields(cls)), what))


KIND_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "a bool"}


@overload
def of_type(value: object, kind: type[T], name: str) -> T: ...
@overload
def of_type(value: object, kind: tuple[type, ...], name: str) -> Any: ...
def of_type(value: object, kind: type | tuple[type, ...], name: str) -> Any:
    """`value` if it is an instance of `kind` (a bool is not an int here), or a TypeError."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join(KIND_NAMES.get(k, k.__name__) for k in kinds)
        raise TypeError(f"{name} must be {wanted}, got {value!r:.100}")
    return value


def all_finite(*tensors: torch.Tensor) -> bool:
    """Whether every entry of every tensor is finite: one sum each (NaN and ±inf survive a sum; a sum that
    overflows says False for finite entries, which callers treat as "check more carefully"), on all threads or
    one (check_threads: one on a busy machine)."""
    import torch

    with check_threads(*tensors):
        total = functools.reduce(torch.add, (row_total(t) for t in tensors))  # () tensor
        return bool(torch.isfinite(total))  # NaN and ±inf survive the sum of sums too (inf - inf is NaN)


def row_total(t: torch.Tensor) -> torch.Tensor:
    """The sum of every entry of `t` as a () tensor, NaN and ±inf surviving: one sum in t's own dtype
    (torch's CPU sum accumulates bfloat16 in float32 anyway and rounds only the total; asking for a
    float32 result takes another kernel: 1.4 ms instead of 0.27 over 4 MiB of bf16), except float16,
    whose range a total passes at 65504: its last dimension summed first, then those sums in float32.
    A float16 row whose sum passes 65504 says inf; so does any total past 3.4e38."""
    import torch

    if t.dtype == torch.float16 and t.dim():
        return t.sum(-1).sum(dtype=torch.float32)
    return t.sum()


GRAIN_SIZE = 32768  # ATen's at::internal::GRAIN_SIZE: a reduction over fewer elements is not parallelised


PROBE = 16  # CheckThreads times the way not taken after this many passes of a size at first ...
PROBE_MAX = 1024  # ... and at most this many apart, while such probes keep confirming the choice
# One thread only when it was this many times faster than all: on a quiet machine all threads read 1.5-2x
# faster, and a pass on one that a lucky probe timed fast kept the check there for stretches (B=4, H=8,
# N=128, float32, 2 threads: 27% of 2,800 passes on one thread, 167 µs each against 91); on a busy machine
# all threads are 10-100x slower.
ALONE_BY = 1.5


@dataclasses.dataclass
class PassTimes:
    """What CheckThreads knows of the passes of one size: seconds per element on all threads and on one
    (the mean of the latest, clipped, and the earlier mean: `_mean`; or a probe's time alone, which
    replaces what was timed long before; 0.0 while untimed), the passes so far, the probe interval and the
    pass that probes next."""

    parallel: float = 0.0
    single: float = 0.0
    calls: int = 0
    interval: int = PROBE
    next_probe: int = PROBE

    def alone(self) -> bool:
        """Whether one thread has been the faster way by ALONE_BY (the first pass runs on all, the second
        on one)."""
        return self.single * ALONE_BY < self.parallel

    def probing(self) -> bool:
        """Whether the next pass is a probe."""
        return self.calls == self.next_probe

    def next_alone(self) -> bool:
        """Whether the next pass runs on one thread: the faster way, or the other one when probing."""
        return self.alone() != self.probing()

    def record(self, alone: bool, seconds: float) -> None:
        """Count a pass that took `seconds` per element on one thread (alone) or on all."""
        probing = self.probing()  # a probe's time replaces the stale one
        if alone:
            self.single = seconds if probing or self.single == 0.0 else _mean(self.single, seconds)
        else:
            self.parallel = seconds if probing or self.parallel == 0.0 else _mean(self.parallel, seconds)
        self.calls += 1
        if probing:  # the probe confirmed the choice: probe half as often; overturned it: soon again
            self.interval = min(2 * self.interval, PROBE_MAX) if self.alone() != alone else PROBE
            self.next_probe = self.calls + self.interval


def _mean(earlier: float, latest: float) -> float:
    """The mean of the earlier mean and the latest time, clipped to twice the earlier: one pass that a
    hiccup of the machine stalled moves the estimate by half at most, a machine that turned busy (10-100x)
    is seen within a few passes."""
    return 0.5 * (earlier + min(latest, 2.0 * earlier))


class CheckThreads:
    """How many threads a check's pass over CPU tensors runs on: all of torch's, or the calling thread
    alone, whichever has been faster lately for passes of that size (in powers of two of elements, per
    element width and thread count). Such a pass is memory-bound: on a quiet machine all threads read it
    1.2-2x faster (B=4, H=8, N=512, Dh=64, float32, 2 threads on 2 cores, out and k right after SDPA's
    10 ms: 0.33 ms on two threads, 0.5-0.6 ms on one), but a parallel region waits until the OS runs
    every worker, which a busy machine delays by many ms (the same check with two other processes
    spinning: 16 ms on two threads, 0.0 on one). So each pass is timed, the faster way so far is taken
    (one thread only when ALONE_BY faster), and now and then (PROBE passes, doubling up to PROBE_MAX
    while the probes confirm the choice) the other way is timed again, so that the choice follows the
    machine's load. Nothing changes for other devices, with one thread already, or for tensors under
    GRAIN_SIZE elements (ATen runs those on the calling thread anyway). torch.set_num_threads sets the
    calling thread's OpenMP count (and MKL's): a switch to one thread and back, about 5 µs."""

    def __init__(self) -> None:
        # by the bit length of the pass's element count, the widest element's bytes and torch's threads
        self.sizes: dict[tuple[int, int, int], PassTimes] = {}

    @contextlib.contextmanager
    def __call__(self, *tensors: torch.Tensor) -> Iterator[None]:
        import torch

        threads = torch.get_num_threads()
        small = all(t.numel() < GRAIN_SIZE for t in tensors)
        if threads == 1 or small or any(t.device.type != "cpu" for t in tensors):
            yield
            return
        elements = sum(t.numel() for t in tensors)
        size = (elements.bit_length(), max(t.element_size() for t in tensors), threads)
        times = self.sizes.setdefault(size, PassTimes())
        alone = times.next_alone()
        start = time.perf_counter()
        if alone:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if alone:
                torch.set_num_threads(threads)
        times.record(alone, (time.perf_counter() - start) / elements)  # a pass that raised is not timed


check_threads = CheckThreads()  # the process's one, used by every check


@functools.cache  # asked on every CPU call (running.check_size); two sysconf calls took ~3 µs of ~80
def physical_memory() -> int:
    """This machine's memory (RAM), in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fits_in_memory(needed: int, what: str) -> None:
    """A ValueError that gives both numbers if `needed` bytes (for `what`) exceed this machine's memory:
    asked for before allocating, so that an absurd size is refused at once instead of after minutes of
    swapping, or a crash."""
    available = physical_memory()
    if needed > available:
        raise ValueError(
            f"{what} needs about {needed / 2**30:,.1f} GiB, but this machine has "
            f"{available / 2**30:,.1f} GiB of memory"
        )


BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """`text` with every character a terminal would act on instead of showing written as an escape (\\x1b,
    \\n, \\u202e): control characters (C0, DEL, C1), bidirectional controls, and lone surrogates (the
    undecodable bytes of a command-line argument, \\udcff)."""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in ("Cc", "Cs") or char in BIDI_CONTROLS
        else char
        for char in text
    )
