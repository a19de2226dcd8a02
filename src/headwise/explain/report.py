"""What a picture of attention shows, apart from how it is drawn: the walkthrough's steps as labelled
matrices, and the attention weights of layers × heads with the tokens on both axes.

The renderers (html.py, png.py) draw a Report; the sources below (and explain/models.py for pretrained and
trained models) make one. Nothing here needs rich or matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..trace import Step
from .example import Example, Run

# Each traced step's axes in the shape legend's letters (self-attention has Nq = Nk = N).
PER_HEAD_SCORES = ("B", "H", "Nq", "Nk")
AXES: dict[str, tuple[str, ...]] = {
    "inputs": ("B", "Nq", "D"),
    "kv_inputs": ("B", "Nk", "D"),
    "queries": ("B", "Nq", "H·Dh"),
    "keys": ("B", "Nk", "H·Dh"),
    "values": ("B", "Nk", "H·Dh"),
    "queries_by_head": ("B", "H", "Nq", "Dh"),
    "keys_by_head": ("B", "H", "Nk", "Dh"),
    "values_by_head": ("B", "H", "Nk", "Dh"),
    "scores": PER_HEAD_SCORES,
    "scaled_scores": PER_HEAD_SCORES,
    "modified_scores": PER_HEAD_SCORES,
    "masked_scores": PER_HEAD_SCORES,
    "weights": PER_HEAD_SCORES,
    "dropout": PER_HEAD_SCORES,
    "context_by_head": ("B", "H", "Nq", "Dh"),
    "context": ("B", "Nq", "H·Dh"),
    "output": ("B", "Nq", "D"),
}
LEGEND = "B batch · N tokens (Nq queries, Nk keys) · D width · H heads · Dh head width"


@dataclass(frozen=True)
class Matrix:
    """A step's values for one head (or the only matrix of a step without heads): values (R, C) with a
    label per row and per column, and the printed cells when they are not plain numbers (fractions)."""

    values: torch.Tensor
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    caption: str = ""
    cells: tuple[tuple[str, ...], ...] | None = None


@dataclass(frozen=True)
class WalkStep:
    """One step of the walkthrough: its name, formula, sentence, shape with the axes' letters, and values."""

    name: str
    formula: str
    sentence: str
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    matrices: tuple[Matrix, ...]


@dataclass(frozen=True)
class HeadMaps:
    """The attention weights of one kind of attention ("self-attention", "cross-attention", ...) in every
    layer and head: weights (L, H, Nq, Nk), row i the distribution of query token i over the key tokens."""

    title: str
    query_tokens: tuple[str, ...]
    key_tokens: tuple[str, ...]
    weights: torch.Tensor

    def __post_init__(self) -> None:
        if self.weights.dim() != 4 or tuple(self.weights.shape[2:]) != (
            len(self.query_tokens),
            len(self.key_tokens),
        ):
            raise ValueError(
                f"{self.title}: weights (L, H, Nq, Nk) = {tuple(self.weights.shape)} do not match "
                f"{len(self.query_tokens)} query tokens and {len(self.key_tokens)} key tokens"
            )


@dataclass(frozen=True)
class Report:
    """Everything one report shows: a title, a sentence on where the numbers come from, the walkthrough's
    steps (possibly none) and the attention maps (possibly none)."""

    title: str
    description: str
    steps: tuple[WalkStep, ...]
    attention: tuple[HeadMaps, ...]


def axis_labels(axis: str, size: int, example: Example) -> list[str]:
    """The labels along one axis: the tokens, the features (hN:i for feature i of head N), or indices."""
    if axis == "Nq":
        return list(example.tokens)
    if axis == "Nk":
        return list(example.key_tokens)
    if axis == "H·Dh":
        return [f"h{h}:{i}" for h in range(size // example.head_dim) for i in range(example.head_dim)]
    return [str(i) for i in range(size)]


def walk_step(step: Step, example: Example) -> WalkStep:
    """A traced step (batch of one) as one matrix, or one per head, with its axes labelled."""
    axes = AXES[step.name]
    rows, columns = (
        tuple(axis_labels(axis, size, example)) for axis, size in zip(axes[-2:], step.shape[-2:], strict=True)
    )
    per_head = "H" in axes
    matrices = step.tensor.flatten(0, -3).to(torch.float64)  # (H, R, C), or (1, R, C) without heads
    return WalkStep(
        step.name,
        step.formula,
        step.sentence,
        step.shape,
        axes,
        tuple(
            Matrix(matrix, rows, columns, f"head {head}" if per_head else "")
            for head, matrix in enumerate(matrices)
        ),
    )


def lecture_report(run: Run) -> Report:
    """The lectures' example (or the example the options describe): every traced step, and its weights."""
    example = run.example
    weights = run.trace["weights"].tensor  # (1, H, Nq, Nk)
    kind = "self-attention" if example.kv_tokens is None else "cross-attention"
    mask = "causal" if example.causal else "no mask"
    return Report(
        title=f"Multi-head {kind}, step by step",
        description=(
            f"{len(example.tokens)} tokens, D = {example.dim}, {example.heads} heads of width "
            f"Dh = {example.head_dim}, {mask}, weights drawn with seed {example.seed}; every number comes "
            "from headwise's reference backend in float64."
        ),
        steps=tuple(walk_step(step, example) for step in run.trace),
        attention=(HeadMaps(kind, example.tokens, example.key_tokens, weights[0][None].to(torch.float64)),),
    )
