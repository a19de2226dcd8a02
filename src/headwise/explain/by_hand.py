"""Self-attention by hand: the lectures' pencil-and-paper exercise (LECTURES.md, section 2).

Four tokens of 6 features, x1..x4, become 3-dimensional attention-weighted features z1..z4 through one
"6-3 head" (two such heads side by side make 6-6 multi-head attention). As in the exercise, vectors are
columns: Q = W_Q·X, the scores Kᵀ·Q hold one query per column, and each column of the weights A sums to 1.

Two steps are approximations that keep the numbers small enough for pencil and paper: x/√3 becomes
floor(x/2) and e^x becomes 3^x. The exact numbers come from headwise.attention(backend="reference") in
float64 and are printed beside the hand-made ones.

    exercise.py    the exercise and its file (JSON or CSV): X, the heads' weights, the rules
    hand_work.py   one head worked by hand in integers and fractions, and exactly by headwise
    hand_steps.py  the steps the exercise teaches, hand-made numbers beside exact ones, with checks
    by_hand.py     the steps in the terminal (explain_by_hand, needs rich) and as a Report (by_hand_report)
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import torch
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..pages.model import HeadMaps, Matrix, Report, WalkStep
from .exercise import LECTURE, Exercise
from .hand_steps import HandStep, Panel, describe, rules_sentence, work
from .hand_work import as_tensor
from .terminal import matrix_table, plain, show_check, summarize

PANEL_GAP = 3


def show_side_by_side(console: Console, *columns: Sequence[Panel]) -> None:
    """Columns of panels side by side, sharing the console's width; the panels of a column stacked."""
    room = (console.width - PANEL_GAP * (len(columns) - 1)) // len(columns)
    grid = Table.grid(padding=(0, PANEL_GAP))
    grid.add_row(
        *(
            Group(*(line for panel in column for line in panel_lines(console, panel, room)))
            for column in columns
        )
    )
    console.print(grid)


def panel_lines(console: Console, panel: Panel, room: int) -> tuple[Text, Table]:
    """A panel's title and its table, at most `room` columns wide."""
    table, _ = matrix_table(panel.cells, panel.rows, panel.columns, room)
    return plain(console, panel.title, "bold"), table


def show_hand_step(console: Console, index: int, step: HandStep) -> None:
    """A rule with the number and title (≈ and "approximation" when it is one), a sentence, the panels,
    how close the hand-made numbers came, and the checks."""
    console.print()
    mark, label = ("≈ ", "  (approximation)") if step.approximate else ("", "")
    console.rule(plain(console, f"{index}. {mark}{step.title}{label}", "bold"), align="left")
    console.print(plain(console, step.sentence, "italic"))
    show_side_by_side(console, *step.columns)
    if step.difference is not None:
        console.print(plain(console, f"≈ by hand vs exact: at most {step.difference:.3f} apart", "yellow"))
    for check in step.checks:
        show_check(console, check)


def explain_by_hand(console: Console, exercise: Exercise = LECTURE) -> bool:
    """Print the exercise with the exact numbers beside it; True when every check passed."""
    steps = work(exercise).steps
    console.print(plain(console, "headwise explain --by-hand: self-attention with pencil and paper", "bold"))
    introduction = (
        f"{describe(exercise)}. As in the exercise, every vector is a "
        "column, so each query's scores and weights are a column too. Steps marked ≈ swap exact arithmetic "
        'for pencil-friendly approximations; the exact numbers, from headwise.attention(backend="reference") '
        f"in float64, are printed beside them, rounded to 3 decimals. {rules_sentence(exercise)}"
    )
    console.print(plain(console, introduction))
    for index, step in enumerate(steps, start=1):
        show_hand_step(console, index, step)
    checks = [check for step in steps for check in step.checks]
    summarize(checks, console)
    return all(check.passed for check in checks)


def by_hand_report(exercise: Exercise = LECTURE) -> Report:
    """The exercise as a Report: each step's panels as matrices (hand-made and exact side by side), and the
    weights A by hand and exactly as attention maps, one head each (queries as rows there, as in every
    map)."""
    worked = work(exercise)
    tokens = tuple(exercise.names().tokens)
    steps = tuple(
        WalkStep(
            name=step.title,
            formula=("≈ " if step.approximate else "") + step.title,
            sentence=step.sentence,
            shape=(len(step.columns[0][0].rows), len(step.columns[0][0].columns)),
            axes=(),
            matrices=tuple(_matrix(panel) for column in step.columns for panel in column),
            checks=step.checks,
        )
        for step in worked.steps
    )
    return Report(
        title="Self-attention by hand",
        description=(
            f"{describe(exercise)}, vectors as columns as in the exercise, with the exact numbers from "
            f"headwise's reference backend in float64 beside them. {rules_sentence(exercise)}"
        ),
        steps=steps,
        attention=tuple(
            HeadMaps(
                title, tokens, tokens, torch.stack([weights.T for weights in heads])[None]
            )  # (1, H, Nq, Nk)
            for title, heads in (
                ("weights A by hand", [as_tensor(hand.weights) for hand in worked.hands]),
                ("weights A", [exact.weights for exact in worked.exacts]),
            )
        ),
    )


def _matrix(panel: Panel) -> Matrix:
    """A printed panel as a Matrix: its cells parsed back into numbers (fractions and decimals included)."""
    values = torch.tensor(
        [[float(Fraction(cell)) for cell in row] for row in panel.cells], dtype=torch.float64
    )
    return Matrix(
        values, tuple(panel.rows), tuple(panel.columns), panel.title, tuple(map(tuple, panel.cells))
    )
