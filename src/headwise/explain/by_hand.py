"""Self-attention by hand: the lectures' pencil-and-paper exercise (LECTURES.md, section 2).

Four tokens of 6 features, x1..x4, become 3-dimensional attention-weighted features z1..z4 through one
"6-3 head" (two such heads side by side make 6-6 multi-head attention). As in the exercise, vectors are
columns: Q = W_Q·X, the scores Kᵀ·Q hold one query per column, and each column of the weights A sums to 1.

Two steps are approximations that keep the numbers small enough for pencil and paper: x/√3 becomes
floor(x/2) and e^x becomes 3^x. The exact numbers come from headwise.attention(backend="reference") in
float64 and are printed beside the hand-made ones.

A teacher's own exercise (`headwise explain --by-hand --input FILE`) is a JSON or a CSV file of small
integer matrices: X, d × n (one token per column), and W_Q, W_K, W_V, d_k × d; optionally a second head
W_Q2, W_K2, W_V2 (all three, the same shape), worked after the first and then stacked with it, and the
rules learners follow (Rules: the divisor that stands for √d_k, the base that stands for e, and whether A
and Z are written as fractions or rounded to some decimals). As JSON, one object:

    {"X": [[1, 0, 1], ...], "W_Q": [[...], ...], "W_K": ..., "W_V": ...,
     "rules": {"divide_by": 2, "power_base": 3, "decimals": 2}}

As CSV, one block per matrix, one after the other: a line with its name alone, then its rows, one per
line; a `rules` block holds one `name,value` line per rule; blank lines and lines starting with # are
skipped:

    X
    1,0,1
    0,1,1
    ...
    W_Q
    1,0,1,0
    ...
    rules
    divide_by,2
    decimals,2

Entries are integers from -MAX_ENTRY to MAX_ENTRY, at most
MAX_TOKENS tokens and MAX_FEATURES features, and every score Kᵀ·Q must be >= 0, so that the powers stay
integers by hand.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..files import read_regular
from ..functional import attention
from ..pages.model import Check, HeadMaps, Matrix, Report, WalkStep
from ..trace import trace
from .answers import matches
from .book.weights import headwise_module
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

MATRICES = ("X", "W_Q", "W_K", "W_V")  # what an exercise file must give
SECOND_HEAD = ("W_Q2", "W_K2", "W_V2")  # what it may give for a second head (all three)
RULES = "rules"
MAX_TOKENS, MAX_FEATURES, MAX_ENTRY = 8, 12, 9  # pencil and paper: small matrices of small integers
MAX_POWER = 10**6  # the largest power_base^x worked by hand (and far inside int64 and float64's exp)
MAX_FILE_BYTES = 64 << 10  # an exercise file beyond 64 KiB is not read (a whole one is a few hundred bytes)
RULE_RANGES = {"divide_by": (1, 9), "power_base": (2, 9), "decimals": (1, 4)}  # each rule's integers
INTEGER = re.compile(r"[+-]?\d+")


def labels(prefix: str, count: int) -> list[str]:
    """'x1', 'x2', ... (or '1', '2', ... without a prefix)."""
    return [f"{prefix}{i}" for i in range(1, count + 1)]


@dataclass(frozen=True)
class Rules:
    """What learners do by hand: x/√d_k ≈ floor(x / divide_by), e^x ≈ power_base^x, and A and Z as exact
    fractions (decimals None) or each number rounded, half away from zero, to `decimals` places (then Z
    is V times the rounded A)."""

    divide_by: int = 2
    power_base: int = 3
    decimals: int | None = None

    def scale(self) -> str:
        """'floor(x/2)'."""
        return f"floor(x/{self.divide_by})"

    def power(self) -> str:
        """'3^x'."""
        return f"{self.power_base}^x"

    def writing(self) -> str:
        """How A and Z are written: 'as exact fractions' or 'rounded to 2 decimals'."""
        return "as exact fractions" if self.decimals is None else f"rounded to {self.decimals} decimals"


@dataclass(frozen=True)
class HeadWeights:
    """One head's weights W_Q, W_K, W_V, each (d_k, d)."""

    w_query: torch.Tensor
    w_key: torch.Tensor
    w_value: torch.Tensor


@dataclass(frozen=True)
class Exercise:
    """The matrices a learner works with: X (d, n), one token per column, one or two heads of weights
    W_Q, W_K, W_V (d_k, d), and the rules of the pencil work."""

    features: torch.Tensor
    heads: tuple[HeadWeights, ...]
    rules: Rules = field(default_factory=Rules)

    @property
    def tokens(self) -> int:
        return self.features.shape[1]  # n

    @property
    def width(self) -> int:
        return self.features.shape[0]  # d

    @property
    def head_width(self) -> int:
        return self.heads[0].w_query.shape[0]  # d_k

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


LECTURE = Exercise(FEATURES, (HeadWeights(W_QUERY, W_KEY, W_VALUE),))


def read_exercise(path: str | os.PathLike[str]) -> Exercise:
    """A teacher's exercise from a .json or a .csv file (see the module's docstring); an OSError if it
    cannot be read, a ValueError naming the matrix or rule and what it got when the exercise cannot use it."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".csv"):
        raise ValueError(f"{os.fspath(path)} must be a .json or a .csv file, got {suffix or 'no suffix'}")
    try:
        text = read_regular(path, MAX_FILE_BYTES)  # a regular file (not /dev/zero, a FIFO), size-bounded
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{os.fspath(path)} is not UTF-8 text: {error.reason} at byte {error.start}"
        ) from None
    if suffix == ".csv":
        return exercise_from(csv_blocks(io.StringIO(text, newline=""), os.fspath(path)), os.fspath(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{os.fspath(path)} is not JSON: {error}") from None
    except RecursionError:
        raise ValueError(f"{os.fspath(path)} nests its JSON too deeply to be an exercise") from None
    return exercise_from(data, os.fspath(path))


def csv_blocks(lines: Iterable[str], source: str) -> dict[str, object]:
    """A CSV exercise's blocks as the JSON form has them: {matrix: rows of integers, "rules": {rule:
    value}}. A block starts at a line holding only its name; cells are stripped, empty trailing cells
    (a spreadsheet's padding) dropped."""
    blocks: dict[str, list[list[str]]] = {}
    name = None
    for number, row in enumerate(csv.reader(lines), start=1):
        cells = [cell.strip() for cell in row]
        while cells and not cells[-1]:
            cells.pop()
        if not cells or cells[0].startswith("#"):
            continue
        if len(cells) == 1 and not INTEGER.fullmatch(cells[0]):
            name = cells[0]
            if name in blocks:
                raise ValueError(f"{source}, line {number}: a second block named {name!r}")
            blocks[name] = []
        elif name is None:
            raise ValueError(
                f"{source}, line {number}: expected a block's name (X, W_Q, W_K, W_V, rules) before its "
                f"rows, got {','.join(cells)!r:.60}"
            )
        else:
            blocks[name].append(cells)
    data: dict[str, object] = {}
    for name, rows in blocks.items():
        if name == RULES:
            if any(len(row) != 2 for row in rows):
                raise ValueError(f"{source}: each line of the rules block must be name,value")
            data[name] = {row[0]: int(row[1]) if INTEGER.fullmatch(row[1]) else row[1] for row in rows}
        else:
            data[name] = [[int(cell) if INTEGER.fullmatch(cell) else cell for cell in row] for row in rows]
    return data


def exercise_from(data: object, source: str) -> Exercise:
    """The exercise that `data` (a JSON object, or csv_blocks' dict) describes, or a ValueError naming
    `source` and what it got."""
    keys = set(data) if isinstance(data, dict) else set()
    second = keys & set(SECOND_HEAD)
    if not set(MATRICES) <= keys <= {*MATRICES, *SECOND_HEAD, RULES} or second not in (
        set(),
        set(SECOND_HEAD),
    ):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{source} must give the matrices {list(MATRICES)}, optionally a second head "
            f"{list(SECOND_HEAD)} (all three) and {RULES!r}; got {got}"
        )
    x = integer_matrix(data["X"], "X")
    if not 1 <= x.shape[1] <= MAX_TOKENS or not 1 <= x.shape[0] <= MAX_FEATURES:
        raise ValueError(
            f"X must be d × n with 1 <= n <= {MAX_TOKENS} tokens and 1 <= d <= {MAX_FEATURES} features "
            f"(pencil and paper), got {x.shape[0]} × {x.shape[1]}"
        )
    names = [MATRICES[1:], *([SECOND_HEAD] if second else [])]
    heads = tuple(HeadWeights(*(integer_matrix(data[name], name) for name in head)) for head in names)
    d_k = heads[0].w_query.shape[0]
    rules = read_rules(data.get(RULES, {}))
    for head, head_names in zip(heads, names, strict=True):
        for name, w in zip(head_names, (head.w_query, head.w_key, head.w_value), strict=True):
            if tuple(w.shape) != (d_k, x.shape[0]) or d_k > MAX_FEATURES:
                raise ValueError(
                    f"{name} must be d_k × d = d_k × {x.shape[0]} (X's d), the same d_k <= {MAX_FEATURES} "
                    f"for every W, got {w.shape[0]} × {w.shape[1]}"
                )
        scores = (head.w_key @ x).T @ (head.w_query @ x)  # Kᵀ·Q (n, n)
        lowest, highest = scores.min().item(), scores.max().item()
        if lowest < 0:
            raise ValueError(
                f"the scores Kᵀ·Q of {head_names[0]}, {head_names[1]} must be >= 0 so that the powers stay "
                f"integers by hand; these matrices give a score of {lowest}"
            )
        exponent = highest // rules.divide_by
        digits = exponent * math.log10(rules.power_base)  # power_base^exponent has about this many
        largest = rules.power_base**exponent if digits < 300 else None  # never a number of millions of digits
        if largest is None or largest > MAX_POWER:
            shown = f"{largest:.3g}" if largest is not None else f"about 10^{digits:,.0f}"
            raise ValueError(
                f"the scores Kᵀ·Q of {head_names[0]}, {head_names[1]} reach {highest}, so by hand "
                f"{rules.power_base}^floor({highest}/{rules.divide_by}) = {shown} (at most "
                f"{MAX_POWER:,} by pencil): use smaller entries, or a larger divide_by in the rules"
            )
    return Exercise(x, heads, rules)


def read_rules(value: object) -> Rules:
    """The rules an exercise file gives: an object with some of RULE_RANGES' keys, each an integer in its
    range; a ValueError naming the rule and what it got otherwise."""
    if not isinstance(value, dict) or not set(value) <= RULE_RANGES.keys():
        got = sorted(value) if isinstance(value, dict) else repr(value)
        raise ValueError(f"rules must be an object with some of the keys {list(RULE_RANGES)}, got {got}")
    for name, entry in value.items():
        low, high = RULE_RANGES[name]
        if isinstance(entry, bool) or not isinstance(entry, int) or not low <= entry <= high:
            raise ValueError(f"rules: {name} must be an integer from {low} to {high}, got {entry!r}")
    return Rules(**value)


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
    """Every number of one head as worked with pencil and paper: integers, then fractions (rounded when
    the rules say so)."""

    exercise: Exercise
    head: int  # which of the exercise's heads, from 0
    queries: torch.Tensor  # Q (3, 4): q1..q4 as columns
    keys: torch.Tensor  # K (3, 4)
    values: torch.Tensor  # V (3, 4)
    scores: torch.Tensor  # Kᵀ·Q (4, 4): row i = key i, column j = query j
    scaled: torch.Tensor  # floor(scores / divide_by) (4, 4)
    powers: torch.Tensor  # power_base^scaled (4, 4)
    sums: torch.Tensor  # (4,): one sum per column
    weights: list[list[Fraction]]  # A (4, 4): each column divided by its sum
    context: list[list[Fraction]]  # Z = V·A (3, 4)

    @property
    def suffix(self) -> str:
        """'' with one head; '0', '1' after the names of a head's matrices (Q0, A1) with two: heads are
        numbered from 0, as in the walkthrough (h0, h1)."""
        return "" if len(self.exercise.heads) == 1 else str(self.head)

    @property
    def prefix(self) -> str:
        """'' with one head; 'head 0: ' before its steps' titles with two."""
        return f"head {self.suffix}: " if self.suffix else ""


@dataclass(frozen=True)
class ExactWork:
    """The same steps from headwise's reference backend in float64, turned into the column layout."""

    scores: torch.Tensor  # Kᵀ·Q (4, 4)
    scaled: torch.Tensor  # scores / √d_k (4, 4)
    exps: torch.Tensor  # e^scaled (4, 4)
    sums: torch.Tensor  # (4,)
    weights: torch.Tensor  # A (4, 4)
    context: torch.Tensor  # Z (3, 4)


def rounded(value: Fraction, decimals: int) -> Fraction:
    """`value` rounded half away from zero to `decimals` places, as with pencil and paper."""
    scale = 10**decimals
    magnitude = math.floor(abs(value) * scale + Fraction(1, 2))
    return Fraction(magnitude if value >= 0 else -magnitude, scale)


def divide_columns(numerators: torch.Tensor, sums: torch.Tensor) -> list[list[Fraction]]:
    """Each column of `numerators` (R, C) divided by its sum (C,), as exact fractions (R, C)."""
    return [[Fraction(n, s) for n, s in zip(row, sums.tolist(), strict=True)] for row in numerators.tolist()]


def work_by_hand(exercise: Exercise = LECTURE, head: int = 0) -> HandWork:
    """One head of the exercise, step by step, in integers until the last division."""
    rules, weights = exercise.rules, exercise.heads[head]
    queries = weights.w_query @ exercise.features  # (3, 4) = (d_k, n)
    keys = weights.w_key @ exercise.features  # (3, 4)
    values = weights.w_value @ exercise.features  # (3, 4)
    scores = keys.T @ queries  # (4, 4)
    scaled = torch.div(scores, rules.divide_by, rounding_mode="floor")  # ≈ x/√d_k: (4, 4)
    powers = rules.power_base**scaled  # ≈ e^x, an integer as scaled >= 0: (4, 4)
    sums = powers.sum(dim=0)  # (4,)
    if rules.decimals is None:
        # V·A = (V·powers) / sums, column by column: dividing last keeps the pencil work in integers.
        a = divide_columns(powers, sums)  # (4, 4)
        z = divide_columns(values @ powers, sums)  # (3, 4)
    else:
        a = [[rounded(w, rules.decimals) for w in row] for row in divide_columns(powers, sums)]  # (4, 4)
        z = [  # (3, 4): V times the rounded A, rounded
            [
                rounded(sum(v * w for v, w in zip(row, column, strict=True)), rules.decimals)
                for column in zip(*a, strict=True)
            ]
            for row in values.tolist()
        ]
    return HandWork(exercise, head, queries, keys, values, scores, scaled, powers, sums, a, z)


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


def multi_head_context(exercise: Exercise) -> torch.Tensor:
    """The context of headwise.MultiHeadAttention(d, H, head_dim=d_k) whose projections are the heads'
    weights stacked (W_q = [W_Q; W_Q2], ...), on the tokens of X, in the exercise's layout: (H·d_k, n)."""
    w_query, w_key, w_value = (
        torch.cat([getattr(head, role) for head in exercise.heads]).to(torch.float64)  # (H·d_k, d)
        for role in ("w_query", "w_key", "w_value")
    )
    module = headwise_module(w_query, w_key, w_value, num_heads=len(exercise.heads))
    with torch.no_grad(), trace() as steps:
        module(exercise.features.T.to(torch.float64)[None])  # x (1, n, d): one row per token
    return steps["context"].tensor[0].T  # (H·d_k, n): head 0's features above head 1's


def written(matrix: Sequence[Sequence[Fraction]], rules: Rules) -> list[list[str]]:
    """(R, C) fractions -> R rows of C printed cells: fractions such as 27/32, or the rules' decimals."""
    if rules.decimals is None:
        return [[str(value) for value in row] for row in matrix]
    return [[f"{float(value):.{rules.decimals}f}" for value in row] for row in matrix]


def as_tensor(matrix: Sequence[Sequence[Fraction]]) -> torch.Tensor:
    """(R, C) fractions -> (R, C) float64."""
    return torch.tensor([[float(value) for value in row] for row in matrix], dtype=torch.float64)


@dataclass(frozen=True)
class Panel:
    """One titled matrix of printed cells; `exact` when it holds headwise's numbers rather than the
    learner's; `answer` when it is the unrounded fractions beside a rounded A or Z (an answer only: a
    worksheet's questions leave it out)."""

    title: str
    cells: list[list[str]]
    rows: list[str]
    columns: list[str]
    exact: bool = False
    answer: bool = False


@dataclass(frozen=True)
class HandStep:
    """One step of the exercise: its panels (columns of them, side by side), how far the hand-made numbers
    land from the exact ones (None where there is nothing to compare), and its checks. `given`: the step
    only shows the exercise's own matrices (nothing to work out)."""

    title: str
    sentence: str
    columns: list[list[Panel]]
    difference: float | None = None
    checks: tuple[Check, ...] = ()
    approximate: bool = False
    given: bool = False


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
    unrounded: Panel | None = None,
) -> HandStep:
    """A step whose hand-made matrix (R, C) is shown beside the exact one from headwise (R, C), with the
    `unrounded` fractions under it when the rules round it."""
    exact_panel = Panel(exact_title, numbers(exact, EXACT_DECIMALS), hand.rows, hand.columns, exact=True)
    difference = (hand_values.to(torch.float64) - exact).abs().max().item()
    hands = [hand] if unrounded is None else [hand, unrounded]
    return HandStep(title, sentence, [hands, [exact_panel]], difference, checks, approximate)


def unrounded_panel(
    name: str, fractions: Sequence[Sequence[Fraction]], rows: list[str], columns: list[str], rules: Rules
) -> Panel | None:
    """The fractions (R, C) of A or Z before the rules round them, as an answer panel; None when the rules
    keep fractions (the hand-made panel holds them already)."""
    if rules.decimals is None:
        return None
    cells = [[str(value) for value in row] for row in fractions]
    return Panel(f"{name} unrounded (fractions)", cells, rows, columns, answer=True)


def unrounded_context(hand: HandWork) -> list[list[Fraction]]:
    """Z = V·A of one head in exact fractions, A unrounded: (d_k, n)."""
    return divide_columns(hand.values @ hand.powers, hand.sums)


@dataclass(frozen=True)
class Worked:
    """An exercise worked through: each head by hand and exactly, and the steps that show them."""

    hands: tuple[HandWork, ...]
    exacts: tuple[ExactWork, ...]
    steps: tuple[HandStep, ...]


def work(exercise: Exercise = LECTURE) -> Worked:
    """Every head by hand and exactly; the steps in the order the exercise teaches them, head after head,
    then, with two heads, the heads stacked."""
    hands = tuple(work_by_hand(exercise, head) for head in range(len(exercise.heads)))
    exacts = tuple(work_exactly(hand) for hand in hands)
    steps = [
        step
        for hand, exact in zip(hands, exacts, strict=True)
        for step in (*integer_steps(hand, exact), *softmax_steps(hand, exact), context_step(hand, exact))
    ]
    if len(hands) > 1:
        steps.append(stacked_step(hands, exacts))
    return Worked(hands, exacts, tuple(steps))


def weight_names(head: int) -> tuple[str, str, str]:
    """The names of a head's weights in the exercise file: W_Q, W_K, W_V, then W_Q2, W_K2, W_V2."""
    return MATRICES[1:] if head == 0 else tuple(f"{name}{head + 1}" for name in MATRICES[1:])


def integer_steps(hand: HandWork, exact: ExactWork) -> list[HandStep]:
    """Inputs (or a further head's weights), projections, the prepared Kᵀ and Q, and the scores: small
    integers, exact by hand."""
    e, at, s, h = hand.exercise, hand.exercise.names(), hand.suffix, hand.prefix
    weights = e.heads[hand.head]
    panels = [
        Panel(name, numbers(w), at.dims, at.features)
        for name, w in zip(
            weight_names(hand.head), (weights.w_query, weights.w_key, weights.w_value), strict=True
        )
    ]
    n, d, d_k = e.tokens, e.width, e.head_width
    w_q, w_k, w_v = weight_names(hand.head)
    whose = "head 0's" if s else "the"
    first = (
        HandStep(
            f"inputs: X ({d}×{n}) and {whose} weights W_Q, W_K, W_V ({d_k}×{d})",
            f"Each token is a column of {d} features; small integer weights keep the arithmetic easy.",
            [[Panel("X", numbers(e.features), at.features, at.tokens)], panels],
            given=True,
        )
        if hand.head == 0
        else HandStep(
            f"{h}its weights {w_q}, {w_k}, {w_v} ({d_k}×{d})",
            f"Another head: weights of its own ({w_q}, {w_k}, {w_v} in the file), the same tokens X.",
            [panels],
            given=True,
        )
    )
    return [
        first,
        HandStep(
            f"{h}Q{s} = {w_q}·X, K{s} = {w_k}·X, V{s} = {w_v}·X ({d_k}×{n})",
            f"Each weight matrix turns a token's {d} features into {d_k}; all three come from the same X "
            "(self-attention).",
            [
                [Panel(f"Q{s}", numbers(hand.queries), at.dims, at.queries)],
                [Panel(f"K{s}", numbers(hand.keys), at.dims, at.keys)],
                [Panel(f"V{s}", numbers(hand.values), at.dims, at.values)],
            ],
        ),
        HandStep(
            f"{h}prepare: copy Q{s}, write K{s} transposed",
            "Copy the queries as they are, one column per query, and write the keys transposed, one row per "
            "key: each score is then a row of Kᵀ times a column of Q.",
            [
                [Panel(f"K{s}ᵀ", numbers(hand.keys.T), at.keys, at.dims)],
                [Panel(f"Q{s} (copied)", numbers(hand.queries), at.dims, at.queries)],
            ],
        ),
        HandStep(
            f"{h}scores = K{s}ᵀ·Q{s} ({n}×{n})",
            "Keys as rows, queries as columns: entry (ki, qj) is the dot product ki·qj, how well key i "
            "matches query j. Column j holds query j's scores.",
            [[Panel(f"K{s}ᵀ·Q{s}", numbers(hand.scores), at.keys, at.queries)]],
            checks=(
                Check(
                    torch.equal(hand.scores.to(torch.float64), exact.scores),
                    f"K{s}ᵀ·Q{s} by hand equals headwise's scores (q·kᵀ, transposed), exactly",
                ),
            ),
        ),
    ]


def softmax_steps(hand: HandWork, exact: ExactWork) -> list[HandStep]:
    """Scale, e^x, Σ and 1/sum: the two approximations and what they lead to, beside the exact numbers."""
    weight_sums = exact.weights.sum(dim=0)  # (4,)
    e, at, s, h = hand.exercise, hand.exercise.names(), hand.suffix, hand.prefix
    rules, d_k = e.rules, e.head_width
    of_head = f" (head {s})" if s else ""
    return [
        compared(
            f"{h}scale: {rules.scale()} for x/√{d_k}",
            f"Dividing by √d_k = √{d_k} keeps the scores from growing with the width; by hand, divide by "
            f"{rules.divide_by} and round down.",
            Panel(f"by hand: {rules.scale()}{of_head}", numbers(hand.scaled), at.keys, at.queries),
            hand.scaled,
            f"exact: x/√{d_k}{of_head}",
            exact.scaled,
            approximate=True,
        ),
        compared(
            f"{h}softmax, e^x: {rules.power()} for e^x",
            f"The softmax raises e to each scaled score; by hand, raise {rules.power_base} instead, which "
            "keeps integers.",
            Panel(f"by hand: {rules.power()}{of_head}", numbers(hand.powers), at.keys, at.queries),
            hand.powers,
            f"exact: e^x{of_head}",
            exact.exps,
            approximate=True,
        ),
        compared(
            f"{h}softmax, Σ: sum each column",
            "One sum per query: the total its keys' numbers add up to.",
            Panel(f"by hand: Σ {rules.power()}{of_head}", numbers(hand.sums[None]), ["Σ"], at.queries),
            hand.sums[None],  # (1, 4)
            f"exact: Σ e^x{of_head}",
            exact.sums[None],  # (1, 4)
        ),
        compared(
            f"{h}softmax, 1/sum: A{s} = each column / its sum",
            f"Each column becomes a probability distribution: how much query j attends to each key; "
            f"written {rules.writing()}.",
            Panel(f"by hand: A{s}", written(hand.weights, rules), at.keys, at.queries),
            as_tensor(hand.weights),
            f"exact: A{s}",
            exact.weights,
            unrounded=unrounded_panel(
                f"A{s}", divide_columns(hand.powers, hand.sums), at.keys, at.queries, rules
            ),
            checks=(
                columns_sum_to_one(hand.weights, rules, f"A{s}"),
                matches(
                    weight_sums, torch.ones_like(weight_sums), f"each column of headwise's A{s} sums to 1"
                ),
                matches(
                    exact.exps / exact.sums,
                    exact.weights,
                    f"e^x / Σ e^x, column by column, is headwise's A{s}",
                ),
            ),
        ),
    ]


def columns_sum_to_one(weights: list[list[Fraction]], rules: Rules, name: str = "A") -> Check:
    """Each column of A (`name`) by hand sums to 1: exactly as fractions, within the rounding of its n entries
    when they are rounded to d decimals (at most n · ½ · 10^-d off)."""
    sums = [sum(column) for column in zip(*weights, strict=True)]
    if rules.decimals is None:
        return Check(
            all(total == 1 for total in sums),
            f"each column of {name} by hand sums to 1, exactly (as fractions)",
        )
    slack = Fraction(len(weights), 2 * 10**rules.decimals)
    return Check(
        all(abs(total - 1) <= slack for total in sums),
        f"each column of {name} by hand sums to 1 within its rounding (at most {float(slack):g} off)",
    )


def context_step(hand: HandWork, exact: ExactWork) -> HandStep:
    """Z = V·A, by hand and exactly."""
    e, at, s = hand.exercise, hand.exercise.names(), hand.suffix
    return compared(
        f"{hand.prefix}Z{s} = V{s}·A{s} ({e.head_width}×{e.tokens})",
        f"Each token's new features: the values averaged with its column of weights, written "
        f"{e.rules.writing()}. They go on to the feed-forward network; two such {e.head} heads side by side "
        f"make {e.width}-{2 * e.head_width} multi-head attention.",
        Panel(f"by hand: Z{s}", written(hand.context, e.rules), at.dims, at.outputs),
        as_tensor(hand.context),
        f"exact: Z{s}",
        exact.context,
        unrounded=unrounded_panel(f"Z{s}", unrounded_context(hand), at.dims, at.outputs, e.rules),
    )


def stacked_step(hands: Sequence[HandWork], exacts: Sequence[ExactWork]) -> HandStep:
    """Z = [Z1; Z2]: the heads' features stacked, each token's column now H·d_k long, beside the context
    of headwise.MultiHeadAttention with the heads' weights stacked."""
    e = hands[0].exercise
    heads, d_k = len(hands), e.head_width
    rows = [f"h{head}:{i}" for head in range(heads) for i in range(1, d_k + 1)]
    by_hand = [row for hand in hands for row in hand.context]  # (H·d_k, n)
    stacked = "; ".join(f"Z{head}" for head in range(heads))
    module = multi_head_context(e)  # (H·d_k, n)
    return compared(
        f"heads side by side: Z = [{stacked}] ({heads * d_k}×{e.tokens})",
        f"Stack each token's features from every head: two {e.head} heads make {e.width}-{heads * d_k} "
        "multi-head attention (an output projection would mix the heads next). Row hH:i is feature i of "
        "head H (heads from 0, as in the walkthrough).",
        Panel("by hand: Z", written(by_hand, e.rules), rows, e.names().outputs),
        as_tensor(by_hand),
        "exact: Z",
        module,
        unrounded=unrounded_panel(
            "Z", [row for hand in hands for row in unrounded_context(hand)], rows, e.names().outputs, e.rules
        ),
        checks=(
            matches(
                module,
                torch.cat([exact.context for exact in exacts]),
                f"headwise.MultiHeadAttention({e.width}, {heads}, head_dim={d_k}) with the heads' weights "
                f"stacked gives each head's Z, one above the other",
            ),
        ),
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
    """'4 tokens x1..x4 of 6 features through one 6-3 head' (or 'two 6-3 heads side by side')."""
    n = exercise.tokens
    heads = "one" if len(exercise.heads) == 1 else "two"
    side_by_side = "" if len(exercise.heads) == 1 else "s side by side"
    return (
        f"{n} tokens x1..x{n} of {exercise.width} features through {heads} {exercise.head} head{side_by_side}"
    )


def rules_sentence(exercise: Exercise) -> str:
    """What learners do: the two approximations and how A and Z are written, with the rounding rule when
    they are rounded."""
    rules = exercise.rules
    sentence = (
        f"By hand, {rules.scale()} stands for x/√{exercise.head_width} and {rules.power()} for e^x; A and Z "
        f"are written {rules.writing()}."
    )
    if rules.decimals is None:
        return sentence
    return (
        f"{sentence} Rounding: each number of A is rounded half away from zero to {rules.decimals} "
        "decimals, and Z is V times the rounded A, then rounded the same way, so Z's last decimal can "
        "differ from the exact fraction's (2.47 where 52/21 is 2.476)."
    )


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
