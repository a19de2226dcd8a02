"""An exercise worked: one head by hand (integers, then fractions, rounded when the rules say so) and the same
steps exactly, by headwise's reference backend in float64, turned into the exercise's column layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from ..functional import attention
from ..trace import trace
from .book.weights import headwise_module
from .exercise import LECTURE, Exercise, Rules


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


def unrounded_context(hand: HandWork) -> list[list[Fraction]]:
    """Z = V·A of one head in exact fractions, A unrounded: (d_k, n)."""
    return divide_columns(hand.values @ hand.powers, hand.sums)


def written(matrix: Sequence[Sequence[Fraction]], rules: Rules) -> list[list[str]]:
    """(R, C) fractions -> R rows of C printed cells: fractions such as 27/32, or the rules' decimals."""
    if rules.decimals is None:
        return [[str(value) for value in row] for row in matrix]
    return [[f"{float(value):.{rules.decimals}f}" for value in row] for row in matrix]


def as_tensor(matrix: Sequence[Sequence[Fraction]]) -> torch.Tensor:
    """(R, C) fractions -> (R, C) float64."""
    return torch.tensor([[float(value) for value in row] for row in matrix], dtype=torch.float64)
