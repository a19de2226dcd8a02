"""What the speed and memory benchmarks share: the settings of the grid they run over, and the command-line
options (a preset, and the grid options that override it)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from .contenders import all_contenders
from .grid import DTYPES, MASKS, MODES, Config, grid
from .measure import GB, default_memory_cap


@dataclass(frozen=True, kw_only=True)
class GridSettings:
    """The configurations a benchmark runs (sizes × dtypes × modes × masks at one batch, heads and head
    width), the contenders it runs, and the memory it may use."""

    sizes: tuple[int, ...]
    dtypes: tuple[str, ...]
    modes: tuple[str, ...]
    masks: tuple[str, ...]
    contenders: tuple[str, ...] | None = None  # None: all of them
    cap_gb: float = round(default_memory_cap() / GB, 1)
    batch: int = 4
    heads: int = 8
    head_dim: int = 64

    def __post_init__(self) -> None:
        """Refuse a memory cap that is not a finite number > 0, and a grid whose inputs alone (made before
        anything is measured or predicted) would exceed it."""
        if not 0 < self.cap_gb < math.inf:
            raise ValueError(f"the memory cap (--cap-gb) must be a finite number > 0, got {self.cap_gb!r}")
        largest = max(self.configs(), key=input_bytes, default=None)
        if largest is not None and input_bytes(largest) > self.cap_gb * GB:
            raise ValueError(
                f"the inputs alone of {largest.label()} (B={largest.batch}, H={largest.heads}, "
                f"Dh={largest.head_dim}) take {input_bytes(largest) / GB:.1f} GB, over the memory cap of "
                f"{self.cap_gb:g} GB (--cap-gb): choose smaller --sizes, --batch or --heads, or a larger cap"
            )

    def configs(self) -> list[Config]:
        shape = {"batch": self.batch, "heads": self.heads, "head_dim": self.head_dim}
        return grid(self.sizes, self.dtypes, self.modes, self.masks, **shape)


def input_bytes(config: Config) -> int:
    """The memory of the largest inputs a benchmark makes for `config` before it measures anything: a
    kernel's q, k and v (B, H, N, Dh) and, for forward+backward, the output's gradient (a module's input
    x (B, N, H·Dh) is one of them)."""
    c = config
    return (3 + c.backward) * c.batch * c.heads * c.n * c.head_dim * c.torch_dtype.itemsize


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: a positive int or a finite positive float."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    return parse


def _describe(settings: Any) -> str:
    s = settings
    parts = [f"N = {', '.join(map(str, s.sizes))}", ", ".join(s.dtypes), ", ".join(s.modes)]
    return "; ".join([*parts, f"masks: {', '.join(s.masks)}"])


def add_common_arguments(parser: argparse.ArgumentParser, presets: dict[str, Any], default: str) -> None:
    """--quick/--full (or whatever `presets` names), the grid, the memory cap and --out. An option left out
    takes the preset's value; the last preset flag given wins."""
    parser.set_defaults(preset=default)
    group = parser.add_argument_group("presets (the options below override them)")
    for name, settings in presets.items():
        group.add_argument(
            f"--{name}",
            dest="preset",
            action="store_const",
            const=name,
            help=_describe(settings) + (" (the default)" if name == default else ""),
        )
    group = parser.add_argument_group("the grid")
    group.add_argument("--sizes", nargs="+", type=positive(int), metavar="N", help="sequence lengths N")
    group.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), help="dtypes")
    group.add_argument("--modes", nargs="+", choices=MODES, help="forward only, or forward and backward")
    group.add_argument("--masks", nargs="+", choices=MASKS, help="no mask, or causal")
    names = [c.name for c in all_contenders()]
    group.add_argument(
        "--contenders", nargs="+", choices=names, metavar="NAME", help=f"only these: {', '.join(names)}"
    )
    group.add_argument("--batch", type=positive(int), help="batch size B")
    group.add_argument("--heads", type=positive(int), help="heads H")
    group.add_argument("--head-dim", type=positive(int), help="head width Dh")
    parser.add_argument(
        "--cap-gb",
        type=positive(float),
        help="skip what would need more memory than this (default: half the RAM)",
    )
    parser.add_argument("--out", metavar="PREFIX", help="write PREFIX.json, PREFIX.md and PREFIX.png")


def settings_from_args(args: argparse.Namespace, presets: dict[str, Any]) -> Any:
    """The chosen preset with every option given on the command line in place of its value."""
    preset = presets[args.preset]
    given = {
        f.name: tuple(value) if isinstance(value, list) else value
        for f in fields(preset)
        if (value := getattr(args, f.name, None)) is not None
    }
    return replace(preset, **given)
