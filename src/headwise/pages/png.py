"""A Report as PNG files, drawn with matplotlib: each walkthrough step, each layer and head's attention
map, and a layers × heads overview per kind of attention. Needs matplotlib (pip install 'headwise[bench]').

Files, in `folder`:
    step-01-inputs.png ...                    one per walkthrough step, a heatmap per matrix (per head)
    <kind>-layer0-head0.png ...               one per layer and head (numbered from 0, as the tensors):
                                              tokens on both axes, a colour bar
    <kind>-model-view.png                     every layer (rows) × head (columns), small
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..files import replacing
from ..optional import require
from .model import HeadMaps, Matrix, Report, WalkStep

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

NEEDS_MATPLOTLIB = "pip install 'headwise[bench]' (or any matplotlib >= 3.8)"
NUMBERS_UP_TO = 12  # print the values in the cells of matrices at most this many rows and columns
LABELS_UP_TO = 64  # label every token up to this many; beyond, every k-th so that about this many show
# The HTML page's colour scales (assets/report-common.js): white to blue for values of one sign,
# blue-white-red around 0 for signed ones, grey for -inf (masked): no weight, however small, is grey.
SEQUENTIAL = "Blues"
DIVERGING = "RdBu_r"
MASKED = (200 / 255, 200 / 255, 200 / 255)


def write_pngs(report: Report, folder: str | Path) -> list[Path]:
    """Draw every step and attention map of `report` into `folder` (created if missing); returns the files.
    Each file is written beside its place and renamed onto it; what is not a regular file (a directory, a
    FIFO, a device) is refused with an OSError naming it."""
    matplotlib = require("matplotlib", purpose="headwise explain --png", install=NEEDS_MATPLOTLIB)
    matplotlib.use("Agg")  # files only, no window
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        _save(_step_figure(step), folder / f"step-{index:02d}-{_slug(step.name)}.png")
        for index, step in enumerate(report.steps, start=1)
    ]
    for maps in report.attention:
        layers, heads = maps.weights.shape[:2]
        for layer in range(layers):
            for head in range(heads):
                path = folder / f"{_slug(maps.title)}-layer{layer}-head{head}.png"
                written.append(_save(_map_figure(maps, layer, head), path))
        written.append(_save(_model_view_figure(maps), folder / f"{_slug(maps.title)}-model-view.png"))
    return written


def _step_figure(step: WalkStep) -> Figure:
    """One heatmap per matrix of the step, side by side, on one colour scale (so that hand-made and exact
    panels compare), under the step's name, shape and formula."""
    from matplotlib import pyplot as plt

    count = len(step.matrices)
    rows, columns = step.matrices[0].values.shape
    width = min(6.0, 1.2 + 0.45 * columns) * count
    figure, axes = plt.subplots(
        1, count, figsize=(max(width, 5.0), 2.2 + 0.4 * min(rows, 24)), squeeze=False, layout="constrained"
    )
    scale = _scale(*(matrix.values for matrix in step.matrices))
    for axis, matrix in zip(axes[0], step.matrices, strict=True):
        image = _heatmap(axis, matrix.values, matrix.rows, matrix.columns, cells=_cells(matrix), scale=scale)
        axis.set_title(matrix.caption, fontsize=10)
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    shape = ", ".join(map(str, step.shape))
    axes_names = f" = ({', '.join(step.axes)})" if step.axes else ""
    figure.suptitle(f"{step.name}  ({shape}){axes_names}\n{step.formula}", fontsize=11)
    return figure


def _map_figure(maps: HeadMaps, layer: int, head: int) -> Figure:
    """One head's weights: queries down the side, keys along the top, a colour bar."""
    from matplotlib import pyplot as plt

    weights = maps.weights[layer, head]  # (Nq, Nk)
    size = min(12.0, 3.0 + 0.3 * max(weights.shape))
    figure, axis = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    small = max(weights.shape) <= NUMBERS_UP_TO
    cells = _numbers(weights) if small else None
    image = _heatmap(axis, weights, maps.query_tokens, maps.key_tokens, cells=cells, scale=_scale(weights))
    figure.colorbar(image, ax=axis, shrink=0.8)
    axis.set_xlabel("keys (attended to)")
    axis.set_ylabel("queries (attending)")
    axis.set_title(f"{maps.title}: layer {layer}, head {head}", fontsize=12)
    return figure


def _model_view_figure(maps: HeadMaps) -> Figure:
    """Every layer (rows) and head (columns) as a small map without labels, one shared colour scale."""
    from matplotlib import pyplot as plt

    layers, heads = maps.weights.shape[:2]
    figure, axes = plt.subplots(
        layers, heads, figsize=(1.3 * heads + 1.0, 1.3 * layers + 0.8), squeeze=False, layout="constrained"
    )
    for layer in range(layers):
        for head in range(heads):
            axis = axes[layer][head]
            image = axis.imshow(maps.weights[layer, head].numpy(), cmap=SEQUENTIAL, vmin=0.0, vmax=1.0)
            axis.set_xticks([])
            axis.set_yticks([])
            if layer == 0:
                axis.set_title(f"head {head}", fontsize=8)
            if head == 0:
                axis.set_ylabel(f"layer {layer}", fontsize=8)
    figure.colorbar(image, ax=axes, shrink=0.6, label="weight (one scale, 0 to 1, for every map)")
    figure.suptitle(f"{maps.title}: {_count(layers, 'layer')} × {_count(heads, 'head')}", fontsize=11)
    return figure


def _count(number: int, noun: str) -> str:
    """'1 layer', '6 layers'."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _scale(*matrices: torch.Tensor) -> dict[str, Any]:
    """imshow's colours for values drawn side by side: the page's white-to-blue scale from 0 to the largest
    magnitude (reversed for values all below 0), blue-white-red symmetric around 0 for signed values."""
    from matplotlib import colormaps

    finite = torch.cat([m.to(torch.float64).flatten() for m in matrices])  # every value, (n,)
    finite = finite[finite.isfinite()]
    low = min(finite.min().item(), 0.0) if finite.numel() else 0.0
    high = max(finite.max().item(), 0.0) if finite.numel() else 1.0
    if low < 0 < high:
        reach = max(-low, high)
        name, low, high = DIVERGING, -reach, reach
    else:
        name = SEQUENTIAL if high > 0 or low == 0 else f"{SEQUENTIAL}_r"
    cmap = colormaps[name].with_extremes(bad=MASKED)
    return {"cmap": cmap, "vmin": low, "vmax": high if high > low else low + 1}


def _heatmap(
    axis: Axes,
    values: torch.Tensor,
    rows: Sequence[str],
    columns: Sequence[str],
    *,
    cells: Sequence[Sequence[str]] | None,
    scale: dict[str, Any],
) -> AxesImage:
    """values (R, C) as an image on `scale` (see _scale) with tick labels (thinned past LABELS_UP_TO), -inf
    (masked) grey, and the printed cells over it when given; returns the image, for a colour bar."""
    values = values.to(torch.float64)
    finite = values.where(torch.isfinite(values), torch.nan)  # (R, C): -inf (masked) drawn grey
    image = axis.imshow(finite.numpy(), aspect="auto", **scale)
    for ticks, labels, rotation in ((axis.set_xticks, columns, 90), (axis.set_yticks, rows, 0)):
        step = max(1, -(-len(labels) // LABELS_UP_TO))
        positions = list(range(0, len(labels), step))
        ticks(positions, [labels[i] for i in positions], rotation=rotation, fontsize=8, parse_math=False)
    if cells is not None:
        for i, row in enumerate(cells):
            for j, text in enumerate(row):
                red, green, blue, _ = image.cmap(image.norm(finite[i, j].numpy()))  # grey where masked
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # white text on dark cells
                axis.text(
                    j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black"
                )
    return image


def _cells(matrix: Matrix) -> tuple[tuple[str, ...], ...] | None:
    """The printed cells of a small matrix (its own, such as fractions, or rounded values), else None."""
    if max(matrix.values.shape) > NUMBERS_UP_TO:
        return None
    return matrix.cells if matrix.cells is not None else _numbers(matrix.values)


def _numbers(values: torch.Tensor) -> tuple[tuple[str, ...], ...]:
    """(R, C) -> printed with 2 decimals (integers as they are, -inf as -inf)."""
    return tuple(
        tuple(str(int(v)) if float(v).is_integer() else f"{v:.2f}" for v in row)
        for row in values.to(torch.float64).tolist()
    )


def _slug(text: str) -> str:
    """'weights A by hand' -> 'weights-a-by-hand': a safe file name part."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "step"


def _save(figure: Figure, path: Path) -> Path:
    """Write `figure` to `path` as headwise.files.replacing does (a temporary file beside it, then a rename;
    an OSError naming `path` if it is a directory, a device or a FIFO, which would block the writer)."""
    from matplotlib import pyplot as plt

    try:
        with replacing(path) as temporary:
            figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path
