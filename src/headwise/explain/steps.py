"""A traced step as a WalkStep (headwise.pages.model): its tensor cut into one labelled Matrix per head of
each batch element shown (rows and columns named by tokens, features hH:i or indices), its axes in the
legend's letters and in the lectures' names, the lectures' code for it and the stage it belongs to, and the
checks its numbers bear out (answers.py). walkthrough.py builds the lectures' steps from these.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..pages.model import Check, Matrix, WalkStep, caption
from .answers import checks_after
from .example import Example, Run
from .lecture import (
    AXES,
    LECTURE_CODE,
    LECTURE_NAMES,
    STAGE_OF,
    STAGES,
)


def axis_labels(axis: str, size: int, example: Example) -> list[str]:
    """The labels along one axis: the tokens, the features (hN:i for feature i of head N), or indices."""
    if axis == "Nq":
        return list(example.tokens)
    if axis == "Nk":
        return list(example.key_tokens)
    if axis == "H·Dh":
        return [f"h{h}:{i}" for h in range(size // example.head_dim) for i in range(example.head_dim)]
    return [str(i) for i in range(size)]


def step_axes(name: str, run: Run) -> tuple[str, ...]:
    """AXES[name], the output's D written out_dim where the output projection is not D wide."""
    if name in ("out_proj", "output") and run.module.out_dim != run.example.dim:
        return tuple("out_dim" if axis == "D" else axis for axis in AXES[name])
    return AXES[name]


def stage(name: str, run: Run) -> str:
    """'8. Attention weights: ...': the lectures' step that the walkthrough step `name` belongs to."""
    number = 10 if name == "output" and run.example.book_weights else STAGE_OF[name]
    return f"{number}. {STAGES[number]}"


def matrices_of(
    tensor: torch.Tensor, axes: tuple[str, ...], example: Example, batches: int
) -> tuple[Matrix, ...]:
    """`tensor` (B, [H,] R, C) as one Matrix per head of each of the first `batches` batch elements, its
    rows and columns labelled, each captioned with its batch element (when B > 1) and head."""
    shown = tensor[:batches].to(torch.float64)  # (batches, [H,] R, C)
    rows, columns = (
        tuple(axis_labels(axis, size, example))
        for axis, size in zip(axes[-2:], shown.shape[-2:], strict=True)
    )
    leading = axes[:-2]
    named = tuple(axis for axis in leading if axis == "H" or (axis == "B" and example.batch > 1))
    flat = shown.reshape(-1, *shown.shape[-2:])  # (batches·H, R, C)
    sizes = shown.shape[:-2]
    return tuple(
        Matrix(matrix, rows, columns, caption(named, index, tuple(sizes[leading.index(a)] for a in named)))
        if named
        else Matrix(matrix, rows, columns)
        for index, matrix in enumerate(flat)
    )


def lecture_walk_step(
    name: str,
    tensor: torch.Tensor,
    formula: str,
    sentence: str,
    run: Run,
    *,
    batches: int = 1,
    checks: Sequence[Check] = (),
) -> WalkStep:
    """A step of the walkthrough: `tensor` (B, ...) drawn for its first `batches` batch elements, with its
    axes in the legend's letters and in the lectures' names, the lectures' code and stage."""
    axes = step_axes(name, run)
    return WalkStep(
        name,
        formula,
        sentence,
        tuple(tensor.shape),
        axes,
        matrices_of(tensor, axes, run.example, batches),
        LECTURE_CODE.get(name, ""),
        tuple(checks),
        stage(name, run),
        tuple(LECTURE_NAMES.get(axis, axis) for axis in axes),
    )


def traced_step(
    name: str, run: Run, *, batches: int = 1, formula: str | None = None, sentence: str = ""
) -> WalkStep:
    """The traced step `name` with its formula (or `formula`), its sentence (and `sentence` after it) and
    the checks it makes possible."""
    step = run.trace[name]
    return lecture_walk_step(
        name,
        step.tensor,
        step.formula if formula is None else formula,
        f"{step.sentence} {sentence}".strip(),
        run,
        batches=batches,
        checks=checks_after(name, run),
    )
