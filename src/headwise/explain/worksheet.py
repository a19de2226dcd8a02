"""The by-hand exercise as a printable worksheet: one self-contained HTML page (`headwise explain --by-hand
--worksheet FILE`) with the exercise's matrices, an empty table for every number the learner works out,
step by step, and the answers on pages of their own.

    write_worksheet(LECTURE, "worksheet.html")

The page has no script and needs no network: its CSS (assets/worksheet.css, with the @media print rules)
is inlined, and a Content-Security-Policy lets only that style (by hash) apply and forbids every request,
as for the HTML report (html.py). The steps, blanks and answers are by_hand's own (by_hand.work): the
given steps show their numbers, every other hand-made panel is a table of blanks, and the answers repeat
those panels filled in, after a page break, with how far each approximate step lands from the exact one.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from ..files import write_text
from ..pages.html import asset, page
from .exercise import LECTURE, Exercise
from .hand_steps import HandStep, Panel, describe, rules_sentence, work

STYLE = "worksheet.css"


def panel_table(panel: Panel, *, blank: bool) -> str:
    """A panel as a captioned <table>: its row and column labels, and its cells or (`blank`) empty ones."""
    head = "".join(f'<th scope="col">{html.escape(label)}</th>' for label in panel.columns)
    rows = []
    for label, cells in zip(panel.rows, panel.cells, strict=True):
        data = (
            '<td class="blank"></td>' * len(cells)
            if blank
            else "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
        )
        rows.append(f'<tr><th scope="row">{html.escape(label)}</th>{data}</tr>')
    caption = html.escape(panel.title.removeprefix("by hand: "))
    return (
        f'<figure><figcaption>{caption}</figcaption><table class="{"blank" if blank else "filled"}">'
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></figure>"
    )


def step_section(index: int, step: HandStep, *, answers: bool) -> str:
    """One step: its number and title, and its hand-made panels (never headwise's exact ones), filled when
    the step is given or in the answers, blank otherwise; in the answers only, the unrounded fractions
    beside a rounded A or Z and how far an approximate step lands from the exact numbers."""
    mark = "≈ " if step.approximate else ""
    panels = [
        panel
        for column in step.columns
        for panel in column
        if not panel.exact and (answers or not panel.answer)
    ]
    tables = "".join(panel_table(panel, blank=not (answers or step.given)) for panel in panels)
    sentence = "" if answers else f"<p>{html.escape(step.sentence)}</p>"
    off = (
        f'<p class="note">By hand vs exact: at most {step.difference:.3f} apart.</p>'
        if answers and step.approximate and step.difference is not None
        else ""
    )
    return (
        f'<section class="step"><h2>{index}. {html.escape(mark + step.title)}</h2>{sentence}'
        f'<div class="panels">{tables}</div>{off}</section>'
    )


def render_worksheet(exercise: Exercise = LECTURE) -> str:
    """The worksheet of `exercise` as one HTML page (a str): the questions, then the answers."""
    worked = work(exercise)
    steps = worked.steps
    parts = (
        f"{describe(exercise)}. Every vector is a column, so each query's scores and weights are a "
        "column too.",
        rules_sentence(exercise),
        "The answers give the unrounded fractions beside a rounded A and Z."
        if exercise.rules.decimals
        else "",
        "Fill in every empty table, step by step; steps marked ≈ are the approximations.",
    )
    introduction = " ".join(part for part in parts if part)
    questions = "".join(step_section(i, step, answers=False) for i, step in enumerate(steps, start=1))
    answers = "".join(
        step_section(i, step, answers=True) for i, step in enumerate(steps, start=1) if not step.given
    )
    body = f"""<main>
<section class="questions">
<h1>Self-attention by hand: worksheet</h1>
<p>{html.escape(introduction)}</p>
<p class="learner">Name: ______________________________ Date: ______________</p>
<p class="note screen-only">Print this page: the answers start on a page of their own.</p>
{questions}
</section>
<section class="answers">
<h1>Answers</h1>
<p class="note">The numbers of every step worked by hand, A and Z {html.escape(exercise.rules.writing())}.</p>
{answers}
</section>
</main>
"""
    return page("Self-attention by hand: worksheet", asset(STYLE, __package__), body)


def write_worksheet(exercise: Exercise, path: str | os.PathLike[str]) -> Path:
    """Write render_worksheet(exercise) to `path` through files.replacing (a reader never sees half a page,
    a failure leaves the old file). Returns the path."""
    return write_text(path, render_worksheet(exercise))
