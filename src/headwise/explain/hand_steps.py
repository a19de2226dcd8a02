"""The exercise's steps in the order it teaches them: each a HandStep of titled panels, the hand-made numbers
beside headwise's exact ones, how far apart they land, and the checks their numbers bear out. Renderers
(by_hand.py for the terminal and the page, worksheet.py for paper) draw them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from ..pages.model import Check
from .answers import matches
from .exercise import LECTURE, MATRICES, Exercise, Rules
from .hand_work import (
    ExactWork,
    HandWork,
    as_tensor,
    divide_columns,
    multi_head_context,
    unrounded_context,
    work_by_hand,
    work_exactly,
    written,
)
from .terminal import numbers

EXACT_DECIMALS = 3  # enough to compare with the hand-made numbers, narrow enough to print side by side


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
    w_query, w_key, w_value = MATRICES[1:]
    suffix = "" if head == 0 else str(head + 1)
    return f"{w_query}{suffix}", f"{w_key}{suffix}", f"{w_value}{suffix}"


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
