"""The pencil-and-paper exercise and the file a teacher writes it in: the lecture's matrices (LECTURE), an
Exercise (X, one or two heads of weights, the Rules), read_exercise.

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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..files import read_regular

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
    if (
        not isinstance(data, dict)
        or not set(MATRICES) <= keys <= {*MATRICES, *SECOND_HEAD, RULES}
        or second
        not in (
            set(),
            set(SECOND_HEAD),
        )
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
