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
    overflows says False for finite entries, which callers treat as "check more carefully"), on one thread
    (one_thread)."""
    import torch

    with one_thread(*tensors):
        total = functools.reduce(torch.add, (row_total(t) for t in tensors))  # () tensor
        return bool(torch.isfinite(total))  # NaN and ±inf survive the sum of sums too (inf - inf is NaN)


def row_total(t: torch.Tensor) -> torch.Tensor:
    """The sum of every entry of `t` as a () float32/float64 tensor, NaN and ±inf surviving: its last
    dimension summed in t's own dtype (torch's CPU sum accumulates bf16/fp16 in float32 anyway, and asking
    for a float32 result takes another kernel: 1.4 ms instead of 0.27 over 4 MiB of bf16, 14 ms instead of
    0.5 per row), then those sums in float32. A float16 row whose sum passes 65504 says inf."""
    import torch

    wide = torch.promote_types(t.dtype, torch.float32)
    return t.sum(-1).sum(dtype=wide) if t.dim() and t.dtype != wide else t.sum(dtype=wide)


GRAIN_SIZE = 32768  # ATen's at::internal::GRAIN_SIZE: a reduction over fewer elements is not parallelised


@contextlib.contextmanager
def one_thread(*tensors: torch.Tensor) -> Iterator[None]:
    """Inside, torch's CPU ops run on the calling thread alone, for checks that read CPU tensors once: such
    a pass is memory-bound and costs little on one core (a sum over 8 MiB: 0.35 ms, 0.17 ms on two
    threads), but a parallel region waits until the OS runs every worker thread, which on a busy machine
    took 22 ms for the same sum (2 threads, 2 cores, load average 4.2). Nothing changes for other devices,
    with one thread already, or for tensors under GRAIN_SIZE elements. torch.set_num_threads sets the
    calling thread's OpenMP count (and MKL's thread-local one), about 1 µs."""
    import torch

    threads = torch.get_num_threads()
    small = all(t.numel() < GRAIN_SIZE for t in tensors)  # ATen runs those on the calling thread anyway
    if threads == 1 or small or any(t.device.type != "cpu" for t in tensors):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
