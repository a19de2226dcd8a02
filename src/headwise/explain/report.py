"""What a picture of attention shows, apart from how it is drawn: the walkthrough's steps as labelled
matrices, and the attention weights of layers × heads with the tokens on both axes.

The renderers (html.py, png.py) draw a Report; the sources below (and explain/models.py for pretrained and
trained models) make one. Nothing here needs rich or matplotlib.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..trace import Step
from .checks import Check, checks_after
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
HEAD_COLUMNS = "Columns hH:i: feature i of head H (one projection makes the heads side by side)."
# The lectures' (and Raschka's chapter 3) code for each step of the walkthrough, in the book's names:
# d_in = D, d_out = H·Dh, num_tokens = N, num_heads = H, head_dim = Dh.
LECTURE_CODE: dict[str, str] = {
    "inputs": "x  # (b, num_tokens, d_in)",
    "W_q": "self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)",
    "W_k": "self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)",
    "W_v": "self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)",
    "queries": "queries = self.W_query(x)  # (b, num_tokens, d_out)",
    "keys": "keys = self.W_key(x)",
    "values": "values = self.W_value(x)",
    "unrolled": "queries = queries.view(b, num_tokens, self.num_heads, self.head_dim)",
    "queries_by_head": "queries = queries.transpose(1, 2)  # (b, num_heads, num_tokens, head_dim)",
    "keys_by_head": "keys = keys.transpose(1, 2)",
    "values_by_head": "values = values.transpose(1, 2)",
    "scores": "attn_scores = queries @ keys.transpose(2, 3)",
    "scaled_scores": "attn_scores / keys.shape[-1]**0.5",
    "masked_scores": "attn_scores.masked_fill_(mask_bool, -torch.inf)",
    "weights": "attn_weights = torch.softmax(attn_scores / keys.shape[-1]**0.5, dim=-1)",
    "dropout": "attn_weights = self.dropout(attn_weights)",
    "context_by_head": "context_vec = (attn_weights @ values).transpose(1, 2)",
    "context": "context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)",
    "W_o": "self.out_proj = nn.Linear(d_out, d_out)",
    "output": "context_vec = self.out_proj(context_vec)",
}
ROLES = {"W_q": "queries", "W_k": "keys", "W_v": "values"}


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
    """One step of the walkthrough: its name, formula, sentence, shape with the axes' letters, values, the
    lectures' code for it, and the checks its numbers make possible."""

    name: str
    formula: str
    sentence: str
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    matrices: tuple[Matrix, ...]
    lecture: str = ""  # the lectures' code for the step, when they have one
    checks: tuple[Check, ...] = ()  # what the step's numbers bear out (shown with ✓ or ✗)


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
        LECTURE_CODE.get(step.name, ""),
    )


def weight_step(name: str, weight: torch.Tensor, bias: torch.Tensor | None, example: Example) -> WalkStep:
    """A projection's weights as the lectures write them, Wᵀ (D, H·Dh) = (d_in, d_out), so that a token's
    row times Wᵀ (plus the bias (H·Dh,)) is its projection; `weight` is (H·Dh, D) as stored (nn.Linear's
    layout), W_o (D, H·Dh) makes Wᵀ_o (H·Dh, D)."""
    letter = name[-1]
    into, out_of = ("H·Dh", "D") if name == "W_o" else ("D", "H·Dh")
    transposed = weight.detach().T.to(torch.float64)  # (in, out)
    rows, columns = (
        tuple(axis_labels(axis, size, example))
        for axis, size in zip((into, out_of), transposed.shape, strict=True)
    )
    matrices = [Matrix(transposed, rows, columns, f"W_{letter}ᵀ")]
    if bias is not None:
        matrices.append(
            Matrix(bias.detach().to(torch.float64)[None], (f"b_{letter}",), columns, f"b_{letter}")
        )
    made = (
        f"{ROLES[name]} = x · W_{letter}ᵀ + b_{letter}" if name in ROLES else "output = context · W_oᵀ + b_o"
    )
    sentence = (
        f"The trainable weights that make the {ROLES[name]}: one column per output feature, "
        f"drawn at random (seed {example.seed}) and learnt in training."
        if name in ROLES
        else "The output projection's weights: they mix the heads' side-by-side results into the output."
    )
    no_bias = "" if bias is not None else ", no bias"
    formula = f"W_{letter}ᵀ  ({made}{no_bias})"
    shape = tuple(transposed.shape)
    return WalkStep(name, formula, sentence, shape, (into, out_of), tuple(matrices), LECTURE_CODE[name])


def unrolled_step(run: Run) -> WalkStep:
    """The queries (B, Nq, H·Dh) viewed as (B, Nq, H, Dh), before the transpose that groups them by head:
    the same numbers, read with the last axis split into heads."""
    example = run.example
    queries = run.trace["queries"].tensor  # (1, Nq, H·Dh)
    shape = (*queries.shape[:2], example.heads, example.head_dim)  # (1, Nq, H, Dh)
    columns = tuple(axis_labels("H·Dh", queries.shape[-1], example))
    matrix = Matrix(queries[0].to(torch.float64), tuple(example.tokens), columns)
    sentence = (
        "Unroll the last axis into heads: view() moves no number, column hH:i is now feature i of head H. "
        "The keys and values are unrolled the same way; the transpose then groups each head's rows."
    )
    axes = ("B", "Nq", "H", "Dh")
    return WalkStep(
        "unrolled", "queries.view(B, Nq, H, Dh)", sentence, shape, axes, (matrix,), LECTURE_CODE["unrolled"]
    )


def lecture_steps(run: Run) -> tuple[WalkStep, ...]:
    """Every step of the lectures' calculation (LECTURES.md, lecture 1) in their order: the traced steps,
    with the weights W_q, W_k, W_v before the projections, the unrolled queries before the transpose, the
    value of 1/√Dh, a word on dropout when it is off, and W_o before the output."""
    example, module = run.example, run.module
    projections = dict(zip(ROLES, module.projections(), strict=True))  # name -> (W (H·Dh, D), b or None)
    names = run.trace.names()
    steps: list[WalkStep] = []
    for step in run.trace:
        if step.name == "queries":
            steps += [weight_step(name, *projections[name], example) for name in ROLES]
        elif step.name == "queries_by_head":
            steps.append(unrolled_step(run))
        elif step.name == "output":
            steps.append(weight_step("W_o", module.out_proj.weight, module.out_proj.bias, example))
        walk = replace(walk_step(step, example), checks=tuple(checks_after(step.name, run)))
        if step.name == "scaled_scores":
            scale = f"1/√Dh = 1/√{example.head_dim} = {1 / math.sqrt(example.head_dim):.4f}"
            walk = replace(walk, sentence=f"{walk.sentence} Here {scale}.")
        elif step.name == "weights" and "dropout" not in names:
            off = "Dropout, the lectures' next step, acts in training only: it is off in evaluation."
            walk = replace(walk, sentence=f"{walk.sentence} {off}")
        steps.append(walk)
    return tuple(steps)


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
            f"from headwise's reference backend in float64. {HEAD_COLUMNS}"
        ),
        steps=lecture_steps(run),
        attention=(HeadMaps(kind, example.tokens, example.key_tokens, weights[0][None].to(torch.float64)),),
    )
