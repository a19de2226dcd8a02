"""The page model: what a page about attention shows, apart from how it is drawn (no rich, no matplotlib).

A Report is a title, a sentence on where its numbers come from, walkthrough steps (WalkStep: labelled
matrices, each a Matrix, with the Checks their numbers bear out) and attention maps (HeadMaps: layers ×
heads of weights with the tokens on both axes), and optionally what the neuron view (NeuronData) and the
page's "your own numbers" section (Playground) start from. headwise.explain and headwise.inspection make
Reports; html.py and png.py draw them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LEGEND = "B batch · N tokens (Nq queries, Nk keys) · D width · H heads · Dh head width"


@dataclass(frozen=True)
class Check:
    """One claim about the numbers and whether they bear it out (shown with ✓ or ✗)."""

    passed: bool
    text: str


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
    stage: str = ""  # the lectures' step it belongs to, "8. Attention weights: ...", when it has one
    lecture_axes: tuple[str, ...] = ()  # the axes in the lectures' names (d_in, num_tokens, ...)


@dataclass(frozen=True)
class HeadMaps:
    """The attention weights of one kind of attention ("self-attention", "cross-attention", ...) in every
    layer and head: weights (L, H, Nq, Nk), row i the distribution of query token i over the key tokens."""

    title: str
    query_tokens: tuple[str, ...]
    key_tokens: tuple[str, ...]
    weights: torch.Tensor
    pair_start: int | None = None  # a sentence pair read as one sequence: where sentence B starts

    def __post_init__(self) -> None:
        if self.weights.dim() != 4 or tuple(self.weights.shape[2:]) != (
            len(self.query_tokens),
            len(self.key_tokens),
        ):
            raise ValueError(
                f"{self.title}: weights (L, H, Nq, Nk) = {tuple(self.weights.shape)} do not match "
                f"{len(self.query_tokens)} query tokens and {len(self.key_tokens)} key tokens"
            )
        if self.pair_start is not None and (
            isinstance(self.pair_start, bool)
            or not isinstance(self.pair_start, int)
            or self.query_tokens != self.key_tokens
            or not 0 < self.pair_start < len(self.query_tokens)
        ):
            raise ValueError(
                f"{self.title}: pair_start (where sentence B starts) must be a position from 1 to "
                f"{len(self.query_tokens) - 1} of a self-attention map, got {self.pair_start!r}"
            )


@dataclass(frozen=True)
class NeuronData:
    """What the neuron view's page picks from: one sequence's tokens (N), every layer's queries
    (L, Hq, N, Dh) and keys (L, Hkv, N, Dh) (Hq/Hkv query heads share a key head), the masked scores
    scale · q · kᵀ + mask and the weights (L, Hq, N, N), the [layer, head, query] shown first (the layer
    as an index into these), and the model's numbers of the L layers held (all, or the chosen one)."""

    tokens: tuple[str, ...]
    queries: torch.Tensor
    keys: torch.Tensor
    scores: torch.Tensor
    weights: torch.Tensor
    selected: tuple[int, int, int] = (0, 0, 0)
    layer_numbers: tuple[int, ...] | None = None  # None: 0, 1, ..., L - 1


@dataclass(frozen=True)
class Playground:
    """What the page's "your own numbers" section starts from and recomputes in the page: the example's
    name, the tokens (N),
    the inputs x (N, d_in), W_query, W_key, W_value (d_in, d_out) as the lecture writes them and their
    biases (d_out,) (zeros where the module has none), out_proj as W_o (d_out, out) and b_o (out,), the
    number of heads (head_dim = d_out / heads), and whether attention is causal."""

    name: str
    tokens: tuple[str, ...]
    inputs: torch.Tensor
    w_query: torch.Tensor
    w_key: torch.Tensor
    w_value: torch.Tensor
    b_query: torch.Tensor
    b_key: torch.Tensor
    b_value: torch.Tensor
    w_out: torch.Tensor
    b_out: torch.Tensor
    heads: int
    causal: bool


@dataclass(frozen=True)
class Report:
    """Everything one report shows: a title, a sentence on where the numbers come from, the walkthrough's
    steps (possibly none), the attention maps (possibly none), and the layers and heads of them the model
    view draws (bertviz's include_layers and include_heads; the head view has them all)."""

    title: str
    description: str
    steps: tuple[WalkStep, ...]
    attention: tuple[HeadMaps, ...]
    model_layers: tuple[int, ...] | None = None  # the layers the model view draws (None: all)
    model_heads: tuple[int, ...] | None = None  # the heads it draws (None: all)
    neurons: NeuronData | None = None  # every layer's queries and keys, for the neuron view's page
    playgrounds: tuple[
        Playground, ...
    ] = ()  # examples' modules and inputs to edit in the page, its own first


def caption(axes: tuple[str, ...], index: int, sizes: tuple[int, ...]) -> str:
    """'batch 1, head 0' for matrix `index` of the leading axes `axes` of sizes `sizes` (the book's b and
    num_heads, or the legend's B and H); '' without."""
    names = {"b": "batch", "B": "batch", "num_heads": "head", "H": "head"}
    if not axes:
        return ""
    positions = torch.unravel_index(torch.tensor(index), tuple(sizes))
    return ", ".join(f"{names.get(axis, axis)} {int(p)}" for axis, p in zip(axes, positions, strict=True))
