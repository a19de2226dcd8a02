"""Show a traced run in an 80-column terminal: every step with its shape, formula, sentence and values, and
the checks a learner should see, as it goes. Needs rich (pip install 'headwise[cli]').

Values are drawn as matrices of the last two axes, one per head for per-head steps (batch of one), with
the tokens on the rows and the keys or the features on the columns; columns that would not fit are elided.
User text (the tokens) is printed with its control characters escaped (\x1b), never acted on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..checks import printable
from ..trace import Step
from .checks import Check, checks_after
from .example import LECTURE_DIM, LECTURE_TOKENS, Example, Run
from .report import AXES, LEGEND, axis_labels

WIDTH = 80
LABEL_WIDTH = 10  # row labels (tokens) longer than this are cut with …
COLUMN_GAP = 3  # each column's padding and separator in a SIMPLE_HEAD table without edges


def make_console() -> Console:
    """An 80-column console that prints tokens as typed (no markup) and numbers plainly (no highlighting)."""
    return Console(width=WIDTH, markup=False, highlight=False, emoji=False)


def number(value: float, decimals: int = 4) -> str:
    """Rounded to `decimals`; an integer (such as an exact 0 or 1) as it is; -inf as -inf."""
    return str(int(value)) if value.is_integer() else f"{value:.{decimals}f}"


def numbers(matrix: torch.Tensor, decimals: int = 4) -> list[list[str]]:
    """(R, C), integers or floating -> R rows of C printed numbers."""
    return [[number(value, decimals) for value in row] for row in matrix.to(torch.float64).tolist()]


def visible_columns(count: int, room: int) -> list[int | None]:
    """The columns to draw when `room` of them fit: all, or the first room - 2, … (None) and the last."""
    if count <= room:
        return list(range(count))
    return [*range(room - 2), None, count - 1]


def matrix_table(
    cells: Sequence[Sequence[str]],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    width: int = WIDTH,
) -> tuple[Table, int]:
    """A table of `cells` (R rows of C) with labelled rows and columns, at most `width` columns wide.

    Returns the table and how many columns were hidden behind … to make it fit."""
    label_width = min(LABEL_WIDTH, max(map(cell_len, row_labels)))
    widest_cell = max(cell_len(cell) for row in cells for cell in row)
    widest_label = min(LABEL_WIDTH, max(map(cell_len, column_labels)))
    natural = max(widest_cell, widest_label)
    fits = label_width + len(column_labels) * (natural + COLUMN_GAP) <= width
    cell_width = natural if fits else widest_cell  # whole column labels, unless that hides columns
    shown = visible_columns(len(column_labels), (width - label_width) // (cell_width + COLUMN_GAP))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("", width=label_width, no_wrap=True, overflow="ellipsis")
    for j in shown:
        header = "…" if j is None else column_labels[j]
        table.add_column(header, width=cell_width, justify="right", no_wrap=True, overflow="ellipsis")
    for label, row in zip(row_labels, cells, strict=True):
        table.add_row(label, *("…" if j is None else row[j] for j in shown))
    hidden = len(column_labels) - len(shown) + (None in shown)
    return table, hidden


def show_step(console: Console, index: int, step: Step, example: Example) -> None:
    """Header (number, name, shape), formula, sentence, then the values: one matrix, or one per head."""
    axes = AXES[step.name]
    console.print()
    shape = ", ".join(map(str, step.shape))
    console.rule(Text(f"{index}. {step.name}  ({shape}) = ({', '.join(axes)})", style="bold"), align="left")
    console.print(Text(step.formula, style="bold cyan"))
    console.print(Text(step.sentence, style="italic"))
    rows, columns = (
        [printable(label) for label in axis_labels(axis, size, example)]
        for axis, size in zip(axes[-2:], step.shape[-2:], strict=True)
    )
    matrices = step.tensor.flatten(0, -3)  # (H, R, C) per head, or (1, R, C): the batch holds one sequence
    for head, matrix in enumerate(matrices):
        if "H" in axes:
            console.print(Text(f"head {head}", style="bold"))
        table, hidden = matrix_table(numbers(matrix), rows, columns)  # hidden: the same for every head
        console.print(table)
    if hidden:
        console.print(
            Text(f"… {hidden} of {len(columns)} columns hidden to fit {WIDTH} columns", style="dim")
        )


def show_check(console: Console, check: Check) -> None:
    """✓ or ✗ and the claim, wrapped with a hanging indent."""
    line = Table.grid(padding=(0, 1))
    line.add_column(width=1)
    line.add_column()
    mark, style = ("✓", "green") if check.passed else ("✗", "bold red")
    line.add_row(Text(mark, style=style), Text(printable(check.text)))
    console.print(line)


def summarize(checks: Sequence[Check], console: Console) -> None:
    """One closing line: all checks passed, or how many failed."""
    failed = sum(not check.passed for check in checks)
    if failed:
        console.print(Text(f"✗ {failed} of {len(checks)} checks failed", style="bold red"))
    else:
        console.print(Text(f"✓ all {len(checks)} checks passed", style="bold green"))


def introduce(example: Example, console: Console) -> None:
    """What runs: the tokens, where keys and values come from, the embedding, the module, the mask."""
    console.print(Text("headwise explain: multi-head attention, step by step", style="bold"))
    if example.tokens == LECTURE_TOKENS:
        console.print('Example from Raschka, "Build a Large Language Model from Scratch", chapter 3.')
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    facts.add_row("tokens", f"Nq = {len(example.tokens)}: {printable(' '.join(example.tokens))}")
    if example.kv_tokens is None:
        facts.add_row("keys, values", "from the same tokens: self-attention")
    else:
        kv_tokens = printable(" ".join(example.kv_tokens))
        facts.add_row("keys, values", f"Nk = {len(example.kv_tokens)}: {kv_tokens} (cross-attention)")
    facts.add_row("embedding", embedding_source(example))
    facts.add_row(
        "module", f"MultiHeadAttention({example.dim}, {example.heads}, head_dim={example.head_dim}), float64"
    )
    facts.add_row("weights", f"drawn after torch.manual_seed({example.seed})")
    facts.add_row("mask", mask_description(example))
    console.print(facts)
    console.print(Text(LEGEND, style="dim"))
    console.print(
        Text("Numbers are rounded to 4 decimals; a plain integer such as 0 or 1 is exact.", style="dim")
    )


def embedding_source(example: Example) -> str:
    """Where the token vectors come from (see example.embedding_table)."""
    words = set(example.tokens + (example.kv_tokens or ()))
    known = [word for word in LECTURE_TOKENS if word in words] if example.dim == LECTURE_DIM else []
    if len(known) == len(words):
        return f"the book's rows, D = {example.dim}"
    drawn = f"D = {example.dim}, one vector per word, numbers in [0, 1] drawn with seed {example.seed}"
    return f"{drawn}; the book's rows for {', '.join(known)}" if known else drawn


def mask_description(example: Example) -> str:
    """What the causal flag means here."""
    if not example.causal:
        return "none: every query sees every key"
    if example.kv_tokens is None:
        return "causal: each token sees itself and the tokens before it"
    return "causal, aligned bottom-right: the last query sees the last key"


def walkthrough(run: Run, console: Console) -> bool:
    """Print the whole run, step after step, with the checks; True when every check passed."""
    introduce(run.example, console)
    checks: list[Check] = []
    for index, step in enumerate(run.trace, start=1):
        show_step(console, index, step, run.example)
        for check in checks_after(step.name, run):
            show_check(console, check)
            checks.append(check)
    summarize(checks, console)
    return all(check.passed for check in checks)
