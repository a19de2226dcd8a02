"""Self-attention by hand: the lectures' pencil-and-paper exercise (LECTURES.md, section 2).

Four tokens of 6 features, x1..x4, become 3-dimensional attention-weighted features z1..z4 through one
"6-3 head" (two such heads side by side make 6-6 multi-head attention). As in the exercise, vectors are
columns: Q = W_Q·X, the scores Kᵀ·Q hold one query per column, and each column of the weights A sums to 1.

Two steps are approximations that keep the numbers small enough for pencil and paper: x/√3 becomes
floor(x/2) and e^x becomes 3^x. The exact numbers come from headwise.attention(backend="reference") in
float64 and are printed beside the hand-made ones.

A teacher's own exercise (`headwise explain --by-hand --input FILE`) is a JSON object of small integer
matrices: {"X": d × n (one token per column), "W_Q": d_k × d, "W_K": d_k × d, "W_V": d_k × d}.
"""

from __future__ import annotations

import json
import os
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
from .terminal import matrix_table, numbers, plain, show_check, summarize

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

MATRICES = ("X", "W_Q", "W_K", "W_V")  # an exercise file's keys
MAX_TOKENS, MAX_FEATURES, MAX_ENTRY = 8, 12, 9  # pencil and paper: small matrices of small integers


def labels(prefix: str, count: int) -> list[str]:
    """'x1', 'x2', ... (or '1', '2', ... without a prefix)."""
    return [f"{prefix}{i}" for i in range(1, count + 1)]


@dataclass(frozen=True)
class Exercise:
    """The matrices a learner works with: X (d, n), one token per column, and W_Q, W_K, W_V (d_k, d)."""

    features: torch.Tensor
    w_query: torch.Tensor
    w_key: torch.Tensor
    w_value: torch.Tensor

    @property
    def tokens(self) -> int:
        return self.features.shape[1]  # n

    @property
    def width(self) -> int:
        return self.features.shape[0]  # d

    @property
    def head_width(self) -> int:
        return self.w_query.shape[0]  # d_k

    @property
    def head(self) -> str:
        """'6-3': d features in, d_k out."""
        return f"{self.width}-{self.head_width}"

    def names(self) -> Names:
        """The labels of the tokens (x1..xn, q1.., k1.., v1.., z1..), the features (1..d) and the head's
        features (1..d_k)."""
        n = self.tokens
        tokens, queries, keys, values, outputs = (labels(prefix, n) for prefix in "xqkvz")
        return Names(
            tokens, queries, keys, values, outputs, labels("", self.width), labels("", self.head_width)
        )


@dataclass(frozen=True)
class Names:
    """An exercise's row and column labels."""

    tokens: list[str]
    queries: list[str]
    keys: list[str]
    values: list[str]
    outputs: list[str]
    features: list[str]
    dims: list[str]


LECTURE = Exercise(FEATURES, W_QUERY, W_KEY, W_VALUE)


def read_exercise(path: str | os.PathLike[str]) -> Exercise:
    """A teacher's exercise from a JSON file (see the module's docstring); an OSError if it cannot be read,
    a ValueError naming the matrix and what it got when it is not one the exercise can use."""
    with open(path, encoding="utf-8") as file:
        try:
            data = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{os.fspath(path)} is not JSON: {error}") from None
    if not isinstance(data, dict) or set(data) != set(MATRICES):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{os.fspath(path)} must be a JSON object with the keys {list(MATRICES)}, got {got}")
    x, w_q, w_k, w_v = (integer_matrix(data[name], name) for name in MATRICES)
    if not 1 <= x.shape[1] <= MAX_TOKENS or not 1 <= x.shape[0] <= MAX_FEATURES:
        raise ValueError(
            f"X must be d × n with 1 <= n <= {MAX_TOKENS} tokens and 1 <= d <= {MAX_FEATURES} features "
            f"(pencil and paper), got {x.shape[0]} × {x.shape[1]}"
        )
    for name, w in zip(MATRICES[1:], (w_q, w_k, w_v), strict=True):
        if tuple(w.shape) != (w_q.shape[0], x.shape[0]) or w.shape[0] > MAX_FEATURES:
            raise ValueError(
                f"{name} must be d_k × d = d_k × {x.shape[0]} (X's d), the same d_k <= {MAX_FEATURES} for "
                f"W_Q, W_K and W_V, got {w.shape[0]} × {w.shape[1]}"
            )
    lowest = ((w_k @ x).T @ (w_q @ x)).min().item()  # the smallest score of Kᵀ·Q (n, n)
    if lowest < 0:
        raise ValueError(
            "the scores Kᵀ·Q must be >= 0 so that 3^floor(x/2) stays an integer by hand; these matrices give "
            f"a score of {lowest}"
        )
    return Exercise(x, w_q, w_k, w_v)


def integer_matrix(value: object, name: str) -> torch.Tensor:
    """`value` as a (rows, columns) integer tensor: a non-empty list of equally long lists of integers
    between -MAX_ENTRY and MAX_ENTRY, or a ValueError naming `name`."""
    rows = (
        value if isinstance(value, list) and value and all(isinstance(r, list) and r for r in value) else None
    )
    if rows is None or len({len(row) for row in rows}) != 1:
        raise ValueError(f"{name} must be a list of equally long, non-empty lists (rows), got {value!r:.60}")
    for row in rows:
        for entry in row:
            if isinstance(entry, bool) or not isinstance(entry, int) or abs(entry) > MAX_ENTRY:
                raise ValueError(
                    f"{name} must hold integers from -{MAX_ENTRY} to {MAX_ENTRY} (pencil and paper), "
                    f"got {entry!r}"
                )
    return torch.tensor(rows)


@dataclass(frozen=True)
class HandWork:
    """Every number of the exercise as worked with pencil and paper: integers, then fractions."""

    exercise: Exercise
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
    scaled: torch.Tensor  # scores / √d_k (4, 4)
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


def work_by_hand(exercise: Exercise = LECTURE) -> HandWork:
    """The exercise, step by step, in integers until the last division."""
    queries = exercise.w_query @ exercise.features  # (3, 4) = (d_k, n)
    keys = exercise.w_key @ exercise.features  # (3, 4)
    values = exercise.w_value @ exercise.features  # (3, 4)
    scores = keys.T @ queries  # (4, 4)
    scaled = floor_half(scores)  # (4, 4)
    powers = power_of_three(scaled)  # (4, 4)
    sums = powers.sum(dim=0)  # (4,)
    # V·A = (V·powers) / sums, column by column: dividing last keeps the pencil work in integers.
    return HandWork(
        exercise,
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
        attention(q, k, v, backend="reference")  # scale 1/√Dh = 1/√d_k
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
    """Inputs, projections, the prepared Kᵀ and Q, and the scores: small integers, exact by hand."""
    e, at = hand.exercise, hand.exercise.names()
    weights = (("W_Q", e.w_query), ("W_K", e.w_key), ("W_V", e.w_value))
    n, d, d_k = e.tokens, e.width, e.head_width
    return [
        HandStep(
            f"inputs: X ({d}×{n}) and the weights W_Q, W_K, W_V ({d_k}×{d})",
            f"Each token is a column of {d} features; small integer weights keep the arithmetic easy.",
            [
                [Panel("X", numbers(e.features), at.features, at.tokens)],
                [Panel(name, numbers(w), at.dims, at.features) for name, w in weights],
            ],
        ),
        HandStep(
            f"Q = W_Q·X, K = W_K·X, V = W_V·X ({d_k}×{n})",
            f"Each weight matrix turns a token's {d} features into {d_k}; all three come from the same X "
            "(self-attention).",
            [
                [Panel("Q", numbers(hand.queries), at.dims, at.queries)],
                [Panel("K", numbers(hand.keys), at.dims, at.keys)],
                [Panel("V", numbers(hand.values), at.dims, at.values)],
            ],
        ),
        HandStep(
            "prepare: copy Q, write K transposed",
            "Copy the queries as they are, one column per query, and write the keys transposed, one row per "
            "key: each score is then a row of Kᵀ times a column of Q.",
            [
                [Panel("Kᵀ", numbers(hand.keys.T), at.keys, at.dims)],
                [Panel("Q (copied)", numbers(hand.queries), at.dims, at.queries)],
            ],
        ),
        HandStep(
            f"scores = Kᵀ·Q ({n}×{n})",
            "Keys as rows, queries as columns: entry (ki, qj) is the dot product ki·qj, how well key i "
            "matches query j. Column j holds query j's scores.",
            [[Panel("Kᵀ·Q", numbers(hand.scores), at.keys, at.queries)]],
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
    at, d_k = hand.exercise.names(), hand.exercise.head_width
    return [
        compared(
            f"scale: floor(x/2) for x/√{d_k}",
            f"Dividing by √d_k = √{d_k} keeps the scores from growing with the width; by hand, halve and "
            "round down.",
            Panel("by hand: floor(x/2)", numbers(hand.scaled), at.keys, at.queries),
            hand.scaled,
            f"exact: x/√{d_k}",
            exact.scaled,
            approximate=True,
        ),
        compared(
            "softmax, e^x: 3^x for e^x",
            "The softmax raises e to each scaled score; by hand, raise 3 instead, which keeps integers.",
            Panel("by hand: 3^x", numbers(hand.powers), at.keys, at.queries),
            hand.powers,
            "exact: e^x",
            exact.exps,
            approximate=True,
        ),
        compared(
            "softmax, Σ: sum each column",
            "One sum per query: the total its keys' numbers add up to.",
            Panel("by hand: Σ 3^x", numbers(hand.sums[None]), ["Σ"], at.queries),  # (1, 4)
            hand.sums[None],  # (1, 4)
            "exact: Σ e^x",
            exact.sums[None],  # (1, 4)
        ),
        compared(
            "softmax, 1/sum: A = each column / its sum",
            "Each column becomes a probability distribution: how much query j attends to each key.",
            Panel("by hand: A", fractions(hand.weights), at.keys, at.queries),
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
    e, at = hand.exercise, hand.exercise.names()
    return compared(
        f"Z = V·A ({e.head_width}×{e.tokens})",
        "Each token's new features: the values averaged with its column of weights. They go on to the "
        f"feed-forward network; two such {e.head} heads side by side make {e.width}-{2 * e.head_width} "
        "multi-head attention.",
        Panel("by hand: Z", fractions(hand.context), at.dims, at.outputs),
        as_tensor(hand.context),
        "exact: Z",
        exact.context,
    )


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


def describe(exercise: Exercise) -> str:
    """'4 tokens x1..x4 of 6 features through one 6-3 head'."""
    n = exercise.tokens
    return f"{n} tokens x1..x{n} of {exercise.width} features through one {exercise.head} head"


def explain_by_hand(console: Console, exercise: Exercise = LECTURE) -> bool:
    """Print the exercise with the exact numbers beside it; True when every check passed."""
    hand = work_by_hand(exercise)
    steps = hand_steps(hand, work_exactly(hand))
    console.print(plain(console, "headwise explain --by-hand: self-attention with pencil and paper", "bold"))
    introduction = (
        f"{describe(exercise)}. As in the exercise, every vector is a "
        "column, so each query's scores and weights are a column too. Steps marked ≈ swap exact arithmetic "
        'for pencil-friendly approximations; the exact numbers, from headwise.attention(backend="reference") '
        "in float64, are printed beside them, rounded to 3 decimals."
    )
    console.print(plain(console, introduction))
    for index, step in enumerate(steps, start=1):
        show_hand_step(console, index, step)
    checks = [check for step in steps for check in step.checks]
    summarize(checks, console)
    return all(check.passed for check in checks)


def by_hand_report(exercise: Exercise = LECTURE) -> Report:
    """The exercise as a Report: each step's panels as matrices (hand-made and exact side by side), and the
    weights A by hand and exactly as attention maps (queries as rows there, as in every map)."""
    hand = work_by_hand(exercise)
    tokens = tuple(exercise.names().tokens)
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
            f"{describe(exercise)}, vectors as columns as in the exercise; floor(x/2) stands for "
            f"x/√{exercise.head_width} and 3^x for e^x, with the exact numbers from headwise's reference "
            "backend in float64 beside them."
        ),
        steps=steps,
        attention=tuple(
            HeadMaps(title, tokens, tokens, weights.T[None, None])  # (1, 1, Nq, Nk)
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
