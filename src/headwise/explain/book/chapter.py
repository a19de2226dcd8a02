"""The chapter's values in the book's order (chapter) and as a Report (book_report)."""

from __future__ import annotations

import torch

from ...pages.model import HeadMaps, Report, WalkStep
from ..example import LECTURE_TOKENS
from .causal import causal_attention
from .multi_head import multi_head_attention
from .printout import (
    BOOK,
    SECTIONS,
    Printout,
)
from .simplified import simplified_attention
from .trainable import trainable_attention


def chapter() -> tuple[list[Printout], torch.Tensor]:
    """Every value sections 3.3 to 3.6 print, in the book's order, and the attention weights
    (num_heads, num_tokens, num_tokens) of 3.6.2's weight-split module on the first batch element. The
    book seeds torch's global generator; the caller's state of it is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        causal = causal_attention()
        context = next(p.value for p in causal if p.name == "context_vecs")  # 3.5.3's (2, 6, 2)
        multi, split = multi_head_attention(context)
        printouts = simplified_attention() + trainable_attention() + causal + multi
    return printouts, split["weights"].tensor[0]


def book_report() -> Report:
    """The chapter as a Report: one step per printed value, named by section and the book's name, and
    3.6.2's attention weights for the head and model views."""
    printouts, weights = chapter()
    steps = tuple(
        WalkStep(
            f"{p.section} {p.name}",
            p.code,
            f"{SECTIONS[p.section]}. {p.sentence}",
            tuple(p.value.shape),
            p.axes,
            p.matrices(),
            checks=p.checks,
        )
        for p in printouts
    )
    return Report(
        title=f"{BOOK}, sections 3.3 to 3.6",
        description=(
            "Every value the chapter prints, computed by headwise in float64 with the book's seeds, shapes "
            "and order of initialisation; the head view shows 3.6.2's weight-split MultiHeadAttention."
        ),
        steps=steps,
        attention=(HeadMaps("causal self-attention (3.6.2)", LECTURE_TOKENS, LECTURE_TOKENS, weights[None]),),
    )
