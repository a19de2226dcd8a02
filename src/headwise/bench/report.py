"""The benchmarks' outputs: markdown tables, JSON, and PNG plots (matplotlib, from headwise[bench])."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import file_target, replacing, write_text
from .contenders import HEADWISE
from .grid import LEVELS, Config
from .measure import GB, MB

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

NEEDS_MATPLOTLIB = "the plot needs matplotlib, which is missing: pip install 'headwise[bench]'"
BUSY_LOAD = 0.5  # a load average above this share of the cores means other work was running
LEVEL_TITLES = {
    "kernel": "Attention kernels on q, k, v (B={batch}, H={heads}, N, Dh={head_dim})",
    "module": "Modules on x (B={batch}, N, E={embed_dim}), self-attention",
}


def _ms(ms: float) -> str:
    """Milliseconds to three significant digits, never in scientific notation."""
    decimals = max(0, 2 - math.floor(math.log10(ms))) if ms > 0 else 3
    return f"{ms:.{decimals}f}"


def _gflops(gflops: float) -> str:
    return f"{gflops:.0f}" if gflops >= 10 else f"{gflops:.1f}"


def _size(num_bytes: float) -> str:
    return f"{num_bytes / GB:.2f} GB" if num_bytes >= GB else f"{num_bytes / MB:.0f} MB"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table, its columns padded to line up; the first column left-aligned, the rest right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if i else "-" * w for i, w in enumerate(widths)) + " |"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def _bullets(items: dict[str, str]) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in items.items())


def _machine_line(machine: dict) -> str:
    m = machine
    caps = m.get("isa_caps") or {}
    emulated = f", run as {', '.join(f'{k}={v}' for k, v in caps.items())}" if caps else ""
    return (
        f"{m['date']} · {m['cpu']} ({m.get('cpu_kind', m['cpu_capability'])}{emulated}), {m['cores']} cores, "
        f"{m['threads']} torch threads, {m['memory_gb']} GB, load average {m['load_average']} at the start "
        f"· torch {m['torch']} · headwise {m['headwise']}"
    )


def _load_warning(machine: dict) -> list[str]:
    """A warning when other work kept the cores busy at the start: torch's threads then wait on each other
    and every contender runs several times slower than the machine can."""
    if machine["load_average"] < BUSY_LOAD * machine["cores"]:
        return []
    return [
        f"**Warning**: the load average was {machine['load_average']} on {machine['cores']} cores at the "
        "start: other work was running, and these times are slower than this machine can do. Run again on a "
        "quiet one."
    ]


def _not_run(rows: list[tuple[str, str, dict]]) -> list[str]:
    """Bullet lines for the (configuration, contender, outcome) that did not run."""
    return [f"- {where}, {name}: {outcome['status']}: {outcome['reason']}" for where, name, outcome in rows]


def _config_cells(config: dict) -> list[str]:
    return [config["dtype"], config["mode"], "causal" if config["causal"] else "", str(config["n"])]


def _speed_table(results: dict, level: str) -> str:
    """Rows: configurations. Columns: each contender's median ms / GFLOP/s; then, when headwise's contender
    of this level ran, its share of the matmul ceiling and its speed-up over each peer."""
    names = [n for n, c in results["contenders"].items() if c["level"] == level]
    ours = HEADWISE[level] if HEADWISE[level] in names else None
    peers = [n for n in names if n != ours] if ours else []
    header = ["dtype", "pass", "causal", "N", *names, *([f"{ours} % matmul"] if ours else [])]
    header += [f"vs {p}" for p in peers]
    rows = []
    for row in results["results"]:
        outcomes = row["contenders"]
        cells = [_cell(outcomes[n]) for n in names]
        if ours:
            ceiling = results["ceiling"][row["config"]["dtype"]]["gflops"]
            ok = outcomes[ours]["status"] == "ok"
            cells.append(f"{100 * outcomes[ours]['gflops'] / ceiling:.0f}%" if ok else "")
            cells += [_ratio(row["ratios"].get(ours, {}).get(p)) for p in peers]
        rows.append([*_config_cells(row["config"]), *cells])
    return _table(header, rows)


def _cell(outcome: dict) -> str:
    """ "12.3 / 170" (median ms / GFLOP/s), or why there is no number."""
    if outcome["status"] != "ok":
        return outcome["status"]
    return f"{_ms(outcome['ms'])} / {_gflops(outcome['gflops'])}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


def speed_markdown(results: dict) -> str:
    """The speed results as markdown: one table per level (rows: configurations; cells: median ms / GFLOP/s;
    the headwise contender's share of the matmul ceiling and its speed-up over each peer)."""
    settings = results["settings"]
    shape = {k: settings[k] for k in ("batch", "heads", "head_dim")}
    shape["embed_dim"] = shape["heads"] * shape["head_dim"]
    ceilings = ", ".join(
        f"{dtype} {c['gflops']:.0f} GFLOP/s ({c['size']}³)" for dtype, c in results["ceiling"].items()
    )
    parts = [
        "# headwise speed benchmark",
        _machine_line(results["machine"]),
        *_load_warning(results["machine"]),
        f"Cells: median ms / GFLOP/s over the repetitions. 'vs X': X's time ÷ headwise's (above 1: headwise "
        f"is faster). Ceiling, torch.matmul: {ceilings}.",
        "FLOPs per call:\n" + _bullets(results["flop_formulas"]),
    ]
    levels_run = {c["level"] for c in results["contenders"].values()}
    for level in (lvl for lvl in LEVELS if lvl in levels_run):
        parts += [f"## {LEVEL_TITLES[level].format(**shape)}", _speed_table(results, level)]
    parts.append("Contenders:\n" + _bullets({n: c["description"] for n, c in results["contenders"].items()}))
    missing = [
        (Config(**row["config"]).label(), name, outcome)
        for row in results["results"]
        for name, outcome in row["contenders"].items()
        if outcome["status"] not in ("ok", "n/a")
    ]
    if missing:
        parts.append("Not run:\n" + "\n".join(_not_run(missing)))
    return "\n\n".join(parts) + "\n"


def memory_markdown(results: dict) -> str:
    """The memory results as markdown: one table per dtype and mask (rows: contenders; columns: N)."""
    s = results["settings"]
    sizes = sorted({r["config"]["n"] for r in results["results"]})
    parts = [
        "# headwise memory benchmark",
        _machine_line(results["machine"]),
        f"Peak resident memory growth of one call in a fresh process (B={s['batch']}, H={s['heads']}, "
        f"Dh={s['head_dim']}): above the level with the inputs allocated, so the outputs, what autograd "
        f"keeps and the gradients count. Configurations predicted over {s['cap_gb']:g} GB are skipped.",
    ]
    for group, rows in _groups(results["results"]).items():
        by_name: dict[str, dict[int, str]] = {}
        for row in rows:
            outcome = row["outcome"]
            cell = _size(outcome["peak_bytes"]) if outcome["status"] == "ok" else outcome["status"]
            by_name.setdefault(row["contender"], {})[row["config"]["n"]] = cell
        table = [[name, *(cells.get(n, "") for n in sizes)] for name, cells in by_name.items()]
        parts += [f"## {group}", _table(["contender", *(f"N={n}" for n in sizes)], table)]
    missing = [
        (Config(**r["config"]).label(), r["contender"], r["outcome"])
        for r in results["results"]
        if r["outcome"]["status"] != "ok"
    ]
    if missing:
        parts.append("Not run:\n" + "\n".join(_not_run(missing)))
    return "\n\n".join(parts) + "\n"


def _groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows of results grouped by their configuration without N (dtype, pass and mask), in order."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(Config(**row["config"]).group(), []).append(row)
    return groups


def _figure(panels: int) -> tuple[Figure, np.ndarray]:
    """A matplotlib Figure with `panels` axes in two columns (no pyplot, so no global state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise RuntimeError(NEEDS_MATPLOTLIB) from error
    columns = 2 if panels > 1 else 1
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(6.5 * columns, 4 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in axes[panels:]:
        unused.set_visible(False)
    return figure, axes[:panels]


def _style(index: int, name: str, level: str) -> dict:
    """A contender's line: its own colour (tab20's dark shades, then its light ones); headwise's solid, the
    peers' dashed; kernels with dots, modules with squares."""
    from matplotlib import colormaps

    return {
        "color": colormaps["tab20"]((2 * index) % 20 + (index // 10) % 2),
        "linestyle": "-" if name.startswith("hw-") else "--",
        "marker": "o" if level == "kernel" else "s",
        "markersize": 3,
        "label": name,
    }


def _plot(
    results: dict,
    path: Path,
    value: Callable[[dict, str], float | None],
    ylabel: str,
    lines: Callable[[list[dict]], list[tuple[float, str, str]]],
    log_y: bool = False,
) -> None:
    """One panel per configuration without N; in each, one line per contender through the points
    (N, value(row, contender)) where the value is not None, and horizontal lines (y, label, colour)."""
    groups = _groups(results["results"])
    figure, axes = _figure(len(groups))
    for ax, (title, rows) in zip(axes, groups.items(), strict=True):
        for index, (name, contender) in enumerate(results["contenders"].items()):
            points = [(row["config"]["n"], y) for row in rows if (y := value(row, name)) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), **_style(index, name, contender["level"]))
        for y, label, colour in lines(rows):
            ax.axhline(y, color=colour, linestyle=":", label=label)
        ax.set(title=title, xlabel="N", ylabel=ylabel)
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(textwrap.fill(_machine_line(results["machine"]), 100), fontsize=8)
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=120)


def plot_speed(results: dict, path: Path) -> None:
    """GFLOP/s against N per contender, one panel per dtype, pass and mask, with the dtype's matmul
    ceiling."""

    def gflops(row: dict, name: str) -> float | None:
        outcome = row["contenders"][name]
        return outcome["gflops"] if outcome["status"] == "ok" else None

    def ceiling(rows: list[dict]) -> list[tuple[float, str, str]]:
        c = results["ceiling"][rows[0]["config"]["dtype"]]
        return [(c["gflops"], f"matmul {c['size']}³", "grey")]

    _plot(results, path, gflops, "GFLOP/s", ceiling)


def plot_memory(results: dict, path: Path) -> None:
    """Peak memory growth against N per contender, log-log, one panel per dtype, pass and mask, with 1 GB
    and the cap."""

    def megabytes(row: dict, name: str) -> float | None:
        ok = row["contender"] == name and row["outcome"]["status"] == "ok"
        return row["outcome"]["peak_bytes"] / MB if ok else None

    def limits(rows: list[dict]) -> list[tuple[float, str, str]]:
        return [(GB / MB, "1 GB", "grey"), (results["settings"]["cap_gb"] * GB / MB, "cap", "red")]

    _plot(results, path, megabytes, "peak growth (MB)", limits, log_y=True)


def publish(
    results: dict, markdown: Callable[[dict], str], plot: Callable[[dict, Path], None], prefix: str | None
) -> None:
    """Print the results as markdown; with a prefix, also write them (see write_outputs) and say where."""
    text = markdown(results)
    print(text)
    if prefix:
        for path in write_outputs(results, text, prefix, plot):
            print(f"wrote {path}")


def write_outputs(
    results: dict, markdown: str, prefix: str | Path, plot: Callable[[dict, Path], None]
) -> list[Path]:
    """Write PREFIX.json, PREFIX.md and PREFIX.png (if matplotlib is there); returns the paths written."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path, png_path = (
        prefix.parent / f"{prefix.name}.{ext}" for ext in ("json", "md", "png")
    )
    for path in (json_path, markdown_path, png_path):
        file_target(path)  # refuse a directory, device or FIFO among them before writing any
    write_text(json_path, json.dumps(results, indent=1) + "\n")
    write_text(markdown_path, markdown)
    written = [json_path, markdown_path]
    try:
        plot(results, png_path)
        written.append(png_path)
    except RuntimeError as error:
        if str(error) != NEEDS_MATPLOTLIB:
            raise
    return written
