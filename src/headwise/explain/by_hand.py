"""Self-attention by hand: the lectures' pencil-and-paper exercise (LECTURES.md, section 2).

Four tokens of 6 features, x1..x4, become 3-dimensional attention-weighted features z1..z4 through one
"6-3 head" (two such heads side by side make 6-6 multi-head attention). As in the exercise, vectors are
columns: Q = W_Q·X, the scores Kᵀ·Q hold one query per column, and each column of the weights A sums to 1.

Two steps are approximations that keep the numbers small enough for pencil and paper: x/√3 becomes
floor(x/2) and e^x becomes 3^x. The exact numbers come from headwise.attention(backend="reference") in
float64 and are printed beside the hand-made ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..functional import attention
from ..trace import trace
from .checks import Check, matches
from .report import HeadMaps, Matrix, Report, WalkStep
from .terminal import WIDTH, matrix_table, numbers, show_check, summarize

FEATURES = torch.tensor(  # X (6, 4): the tokens x1..x4 as columns of 0/1 features
    [
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [1, 1, 1, 0],
        [1, 1, 0, 0],
        [1, 0, 1, 1],
        [0, 0, 1, 1],
    ]
)
W_QUERY = torch.tensor([[0, 0, 0, 0, 1, 0], [2, -1, 0, 0, 0, 1], [0, 1, 0, 0, 0, 2]])  # W_Q (3, 6)
W_KEY = torch.tensor([[2, -1, 0, 1, 0, 1], [-1, -1, 0, 1, 0, 2], [0, 2, 0, 0, 0, 0]])  # W_K (3, 6)
W_VALUE = torch.tensor([[0, 0, 1, 0, 0, -1], [1, 2, 0, 0, 0, 0], [-1, 0, 0, 0, 1, 0]])  # W_V (3, 6)
EXACT_DECIMALS = 3  # enough to compare with the hand-made numbers, narrow enough to print side by side
PANEL_GAP = 3

TOKENS = [f"x{j}" for j in range(1, 5)]
QUERIES = [f"q{j}" for j in range(1, 5)]
KEYS = [f"k{i}" for i in range(1, 5)]
VALUES = [f"v{j}" for j in range(1, 5)]
OUTPUTS = [f"z{j}" for j in range(1, 5)]
FEATURE_LABELS = [str(i) for i in range(1, 7)]
DIM_LABELS = ["1", "2", "3"]


@dataclass(frozen=True)
class HandWork:
    """Every number of the exercise as worked with pencil and paper: integers, then fractions."""

    queries: torch.Tensor  # Q (3, 4): q1..q4 as columns
    keys: torch.Tensor  # K (3, 4)
    values: torch.Tensor  # V (3, 4)
    scores: torch.Tensor  # Kᵀ·Q (4, 4): row i = key i, column j = query j
    scaled: torch.Tensor  # floor(scores / 2) (4, 4)
    powers: torch.Tensor  # 3^scaled (4, 4)
    sums: torch.Tensor  # (4,): one sum per column
    weights: list[list[Fraction]]  # A (4, 4): each column divided by its sum
    context: list[list[Fraction]]  # Z = V·A (3, 4)


@dataclass(frozen=True)
class ExactWork:
    """The same steps from headwise's reference backend in float64, turned into the column layout."""

    scores: torch.Tensor  # Kᵀ·Q (4, 4)
    scaled: torch.Tensor  # scores / √3 (4, 4)
    exps: torch.Tensor  # e^scaled (4, 4)
    sums: torch.Tensor  # (4,)
    weights: torch.Tensor  # A (4, 4)
    context: torch.Tensor  # Z (3, 4)


def floor_half(scores: torch.Tensor) -> torch.Tensor:
    """≈ x / √3 (√3 ≈ 1.73, close enough to 2): floor(x / 2), an integer again. (4, 4) -> (4, 4)."""
    return torch.div(scores, 2, rounding_mode="floor")


def power_of_three(scaled: torch.Tensor) -> torch.Tensor:
    """≈ e^x (e ≈ 2.72, close enough to 3): 3^x, an integer for x >= 0 as here. (4, 4) -> (4, 4)."""
    return 3**scaled


def divide_columns(numerators: torch.Tensor, sums: torch.Tensor) -> list[list[Fraction]]:
    """Each column of `numerators` (R, C) divided by its sum (C,), as exact fractions (R, C)."""
    return [[Fraction(n, s) for n, s in zip(row, sums.tolist(), strict=True)] for row in numerators.tolist()]


def work_by_hand() -> HandWork:
    """The exercise, step by step, in integers until the last division."""
    queries = W_QUERY @ FEATURES  # (3, 4)
    keys = W_KEY @ FEATURES  # (3, 4)
    values = W_VALUE @ FEATURES  # (3, 4)
    scores = keys.T @ queries  # (4, 4)
    scaled = floor_half(scores)  # (4, 4)
    powers = power_of_three(scaled)  # (4, 4)
    sums = powers.sum(dim=0)  # (4,)
    # V·A = (V·powers) / sums, column by column: dividing last keeps the pencil work in integers.
    return HandWork(
        queries,
        keys,
        values,
        scores,
        scaled,
        powers,
        sums,
        weights=divide_columns(powers, sums),  # (4, 4)
        context=divide_columns(values @ powers, sums),  # (3, 4)
    )


def work_exactly(hand: HandWork) -> ExactWork:
    """Attention on the hand-made Q, K, V by headwise's reference backend, traced, in float64."""
    as_rows = (m.T.to(torch.float64)[None, None] for m in (hand.queries, hand.keys, hand.values))
    q, k, v = as_rows  # (1, 1, 4, 3) each: (B, H, N, Dh), one row per token as headwise takes them
    with trace() as steps:
        attention(q, k, v, backend="reference")  # scale 1/√Dh = 1/√3
    scores, scaled, weights, context = (
        steps[name].tensor[0, 0].T  # (Nk, Nq) or (Dh, Nq): one column per query, as in the exercise
        for name in ("scores", "scaled_scores", "weights", "context_by_head")
    )
    exps = scaled.exp()  # (4, 4): the softmax's e^x, which the reference computes but does not record
    return ExactWork(scores, scaled, exps, exps.sum(dim=0), weights, context)


def fractions(matrix: Sequence[Sequence[Fraction]]) -> list[list[str]]:
    """(R, C) fractions -> R rows of C printed fractions such as 27/32."""
    return [[str(value) for value in row] for row in matrix]


def as_tensor(matrix: Sequence[Sequence[Fraction]]) -> torch.Tensor:
    """(R, C) fractions -> (R, C) float64."""
    return torch.tensor([[float(value) for value in row] for row in matrix], dtype=torch.float64)


@dataclass(frozen=True)
class Panel:
    """One titled matrix of printed cells."""

    title: str
    cells: list[list[str]]
    rows: list[str]
    columns: list[str]


@dataclass(frozen=True)
class HandStep:
    """One step of the exercise: its panels (columns of them, side by side), how far the hand-made numbers
    land from the exact ones (None where there is nothing to compare), and its checks."""

    title: str
    sentence: str
    columns: list[list[Panel]]
    difference: float | None = None
    checks: tuple[Check, ...] = ()
    approximate: bool = False


def compared(
    title: str,
    sentence: str,
    hand: Panel,
    hand_values: torch.Tensor,
    exact_title: str,
    exact: torch.Tensor,
    *,
    approximate: bool = False,
    checks: tuple[Check, ...] = (),
) -> HandStep:
    """A step whose hand-made matrix (R, C) is shown beside the exact one from headwise (R, C)."""
    exact_panel = Panel(exact_title, numbers(exact, EXACT_DECIMALS), hand.rows, hand.columns)
    difference = (hand_values.to(torch.float64) - exact).abs().max().item()
    return HandStep(title, sentence, [[hand], [exact_panel]], difference, checks, approximate)


def hand_steps(hand: HandWork, exact: ExactWork) -> list[HandStep]:
    """The exercise's steps in the order it teaches them, with the exact numbers beside the hand-made ones."""
    return [*integer_steps(hand, exact), *softmax_steps(hand, exact), context_step(hand, exact)]


def integer_steps(hand: HandWork, exact: ExactWork) -> list[HandStep]:
    """Inputs, projections and scores: small integers, exact by hand."""
    weights = (("W_Q", W_QUERY), ("W_K", W_KEY), ("W_V", W_VALUE))
    return [
        HandStep(
            "inputs: X (6×4) and the weights W_Q, W_K, W_V (3×6)",
            "Each token is a column of 6 features; small integer weights keep the arithmetic easy.",
            [
                [Panel("X", numbers(FEATURES), FEATURE_LABELS, TOKENS)],
                [Panel(n, numbers(w), DIM_LABELS, FEATURE_LABELS) for n, w in weights],
            ],
        ),
        HandStep(
            "Q = W_Q·X, K = W_K·X, V = W_V·X (3×4)",
            "Each weight matrix turns a token's 6 features into 3; all three come from the same X "
            "(self-attention).",
            [
                [Panel("Q", numbers(hand.queries), DIM_LABELS, QUERIES)],
                [Panel("K", numbers(hand.keys), DIM_LABELS, KEYS)],
                [Panel("V", numbers(hand.values), DIM_LABELS, VALUES)],
            ],
        ),
        HandStep(
            "scores = Kᵀ·Q (4×4)",
            "Keys as rows, queries as columns: entry (ki, qj) is the dot product ki·qj, how well key i "
            "matches query j. Column j holds query j's scores.",
            [[Panel("Kᵀ·Q", numbers(hand.scores), KEYS, QUERIES)]],
            checks=(
                Check(
                    torch.equal(hand.scores.to(torch.float64), exact.scores),
                    "Kᵀ·Q by hand equals headwise's scores (q·kᵀ, transposed), exactly",
                ),
            ),
        ),
    ]


def softmax_steps(hand: HandWork, exact: ExactWork) -> list[HandStep]:
    """Scale, e^x, Σ and 1/sum: the two approximations and what they lead to, beside the exact numbers."""
    weight_sums = exact.weights.sum(dim=0)  # (4,)
    return [
        compared(
            "scale: floor(x/2) for x/√3",
            "Dividing by √d_k = √3 keeps the scores from growing with the width; by hand, halve and round "
            "down.",
            Panel("by hand: floor(x/2)", numbers(hand.scaled), KEYS, QUERIES),
            hand.scaled,
            "exact: x/√3",
            exact.scaled,
            approximate=True,
        ),
        compared(
            "softmax, e^x: 3^x for e^x",
            "The softmax raises e to each scaled score; by hand, raise 3 instead, which keeps integers.",
            Panel("by hand: 3^x", numbers(hand.powers), KEYS, QUERIES),
            hand.powers,
            "exact: e^x",
            exact.exps,
            approximate=True,
        ),
        compared(
            "softmax, Σ: sum each column",
            "One sum per query: the total its keys' numbers add up to.",
            Panel("by hand: Σ 3^x", numbers(hand.sums[None]), ["Σ"], QUERIES),  # (1, 4)
            hand.sums[None],  # (1, 4)
            "exact: Σ e^x",
            exact.sums[None],  # (1, 4)
        ),
        compared(
            "softmax, 1/sum: A = each column / its sum",
            "Each column becomes a probability distribution: how much query j attends to each key.",
            Panel("by hand: A", fractions(hand.weights), KEYS, QUERIES),
            as_tensor(hand.weights),
            "exact: A",
            exact.weights,
            checks=(
                Check(
                    all(sum(column) == 1 for column in zip(*hand.weights, strict=True)),
                    "each column of A by hand sums to 1, exactly (as fractions)",
                ),
                matches(weight_sums, torch.ones_like(weight_sums), "each column of headwise's A sums to 1"),
                matches(
                    exact.exps / exact.sums, exact.weights, "e^x / Σ e^x, column by column, is headwise's A"
                ),
            ),
        ),
    ]


def context_step(hand: HandWork, exact: ExactWork) -> HandStep:
    """Z = V·A, by hand in fractions and exactly."""
    return compared(
        "Z = V·A (3×4)",
        "Each token's new features: the values averaged with its column of weights. They go on to the "
        "feed-forward network; two such 6-3 heads side by side make 6-6 multi-head attention.",
        Panel("by hand: Z", fractions(hand.context), DIM_LABELS, OUTPUTS),
        as_tensor(hand.context),
        "exact: Z",
        exact.context,
    )


def show_side_by_side(console: Console, *columns: Sequence[Panel]) -> None:
    """Columns of panels side by side, sharing the 80 columns; the panels of a column stacked."""
    room = (WIDTH - PANEL_GAP * (len(columns) - 1)) // len(columns)
    grid = Table.grid(padding=(0, PANEL_GAP))
    grid.add_row(
        *(Group(*(line for panel in column for line in panel_lines(panel, room))) for column in columns)
    )
    console.print(grid)


def panel_lines(panel: Panel, room: int) -> tuple[Text, Table]:
    """A panel's title and its table, at most `room` columns wide."""
    return Text(panel.title, style="bold"), matrix_table(panel.cells, panel.rows, panel.columns, room)[0]


def show_hand_step(console: Console, index: int, step: HandStep) -> None:
    """A rule with the number and title (≈ and "approximation" when it is one), a sentence, the panels,
    how close the hand-made numbers came, and the checks."""
    console.print()
    mark, label = ("≈ ", "  (approximation)") if step.approximate else ("", "")
    console.rule(Text(f"{index}. {mark}{step.title}{label}", style="bold"), align="left")
    console.print(Text(step.sentence, style="italic"))
    show_side_by_side(console, *step.columns)
    if step.difference is not None:
        console.print(Text(f"≈ by hand vs exact: at most {step.difference:.3f} apart", style="yellow"))
    for check in step.checks:
        show_check(console, check)


def explain_by_hand(console: Console) -> bool:
    """Print the exercise with the exact numbers beside it; True when every check passed."""
    hand = work_by_hand()
    steps = hand_steps(hand, work_exactly(hand))
    console.print(Text("headwise explain --by-hand: self-attention with pencil and paper", style="bold"))
    console.print(
        "Four tokens x1..x4 of 6 features go through one 6-3 head. As in the exercise, every vector is a "
        "column, so each query's scores and weights are a column too. Steps marked ≈ swap exact arithmetic "
        'for pencil-friendly approximations; the exact numbers, from headwise.attention(backend="reference") '
        "in float64, are printed beside them, rounded to 3 decimals."
    )
    for index, step in enumerate(steps, start=1):
        show_hand_step(console, index, step)
    checks = [check for step in steps for check in step.checks]
    summarize(checks, console)
    return all(check.passed for check in checks)


def by_hand_report() -> Report:
    """The exercise as a Report: each step's panels as matrices (hand-made and exact side by side), and the
    weights A by hand and exactly as attention maps (queries as rows there, as in every map)."""
    hand = work_by_hand()
    exact = work_exactly(hand)
    steps = tuple(
        WalkStep(
            name=step.title,
            formula=("≈ " if step.approximate else "") + step.title,
            sentence=step.sentence,
            shape=(len(step.columns[0][0].rows), len(step.columns[0][0].columns)),
            axes=(),
            matrices=tuple(_matrix(panel) for column in step.columns for panel in column),
        )
        for step in hand_steps(hand, exact)
    )
    return Report(
        title="Self-attention by hand",
        description=(
            "Four tokens x1..x4 of 6 features through one 6-3 head, vectors as columns as in the exercise; "
            "floor(x/2) stands for x/√3 and 3^x for e^x, with the exact numbers from headwise's reference "
            "backend in float64 beside them."
        ),
        steps=steps,
        attention=tuple(
            HeadMaps(title, tuple(TOKENS), tuple(TOKENS), weights.T[None, None])  # (1, 1, Nq, Nk)
            for title, weights in (
                ("weights A by hand", as_tensor(hand.weights)),
                ("weights A", exact.weights),
            )
        ),
    )


def _matrix(panel: Panel) -> Matrix:
    """A printed panel as a Matrix: its cells parsed back into numbers (fractions included)."""
    values = torch.tensor(
        [[float(Fraction(cell)) for cell in row] for row in panel.cells], dtype=torch.float64
    )
    return Matrix(
        values, tuple(panel.rows), tuple(panel.columns), panel.title, tuple(map(tuple, panel.cells))
    )
