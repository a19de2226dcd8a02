"""Show a traced run in the terminal: every step with its shape, formula, sentence and values, and the
checks a learner should see, as it goes. Needs rich (pip install 'headwise[cli]').

Values are drawn as matrices of the last two axes, one per head for per-head steps (batch of one), with
the tokens on the rows and the keys or the features on the columns; columns that would not fit the
terminal's width (shutil.get_terminal_size: $COLUMNS, the terminal, or 80 when the output is not one) are
elided. User text (the tokens) is printed with its control characters escaped (\x1b), never acted on.
An output that cannot encode the walkthrough's symbols (PYTHONIOENCODING=ascii, a C locale) gets them
spelt in ASCII (· as *, ᵀ as ^T, √ as sqrt, ✓ as +; rich draws the tables in ASCII) and every other
character it lacks as an escape (\xe9).
"""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Sequence
from typing import TextIO, cast

import torch
from rich import box
from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..checks import printable
from ..pages.model import LEGEND, Check, HeadMaps, Report, WalkStep
from .book.chapter import chapter
from .book.printout import BOOK, SECTIONS, Printout
from .example import LECTURE_DIM, LECTURE_TOKENS, Example, Run
from .lecture import HEAD_COLUMNS, LECTURE_LEGEND
from .walkthrough import lecture_steps

WIDTH = 80  # when the output is not a terminal and $COLUMNS is not set
MIN_WIDTH = 40  # narrower terminals get 40 columns anyway (and wrap them)
LABEL_WIDTH = 10  # row labels (tokens) longer than this are cut with …
TOP_KEYS = 3  # the strongest keys per head in a model's summary
COLUMN_GAP = 3  # each column's padding and separator in a SIMPLE_HEAD table without edges
SYMBOLS = "·ᵀ√─✓✗…×≈"  # what the walkthrough prints beyond ASCII
ASCII = str.maketrans(
    {"·": "*", "ᵀ": "^T", "√": "sqrt ", "─": "-", "✓": "+", "✗": "x", "…": "...", "×": "x", "≈": "~"}
)


class AsciiFallback(io.TextIOBase):
    """A text stream onto `stream` for an encoding that lacks SYMBOLS: those spelt in ASCII, every other
    character the encoding lacks written as a backslash escape, instead of a UnicodeEncodeError."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream

    @property  # typeshed declares TextIOBase.encoding an attribute; CPython's is read-only, hence a property
    def encoding(self) -> str:  # type: ignore[override]  # rich reads it: a non-UTF encoding makes it draw ASCII boxes and rules
        return self._stream.encoding

    def write(self, text: str) -> int:
        spelt = text.translate(ASCII).encode(self.encoding, "backslashreplace").decode(self.encoding)
        self._stream.write(spelt)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


def encodes(encoding: str | None, text: str) -> bool:
    """Whether `encoding` (None: UTF-8) can write `text`."""
    try:
        text.encode(encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def shown(label: str, console: Console) -> str:
    """A label as `console` prints it: control characters escaped, and what its encoding lacks too (so that
    the table measures the label as printed)."""
    text = printable(label)
    if encodes(console.encoding, text):
        return text
    return text.translate(ASCII).encode(console.encoding, "backslashreplace").decode(console.encoding)


def plain(console: Console, text: str, style: str = "") -> Text:
    """`text` as a rich Text for `console`, in a style, without markup: shown(), so that rich lays out
    what is printed."""
    return Text(shown(text, console), style=style)


def make_console(stream: TextIO | None = None) -> Console:
    """A console on `stream` (default sys.stdout) as wide as the terminal (at least MIN_WIDTH), that prints
    tokens as typed (no markup) and numbers plainly (no highlighting), in ASCII where it must."""
    stream = sys.stdout if stream is None else stream
    if not encodes(getattr(stream, "encoding", None), SYMBOLS):
        stream = cast(TextIO, AsciiFallback(stream))  # a TextIOBase, which typeshed does not count as TextIO
    width = max(MIN_WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)
    return Console(file=stream, width=width, markup=False, highlight=False, emoji=False)


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


def show_step(console: Console, index: int, step: WalkStep) -> None:
    """Header (number, name, shape), formula, the lectures' code, sentence, then the values: one matrix, or
    one per head (or per part: a weight matrix and its bias)."""
    console.print()
    shape = f"  ({', '.join(map(str, step.shape))})" if step.shape else ""
    console.rule(plain(console, f"{index}. {step.name}{shape}", "bold"), align="left")
    if step.axes:
        lecture = f"({', '.join(step.lecture_axes)}) = " if step.lecture_axes else ""
        console.print(plain(console, f"shape {lecture}({', '.join(step.axes)})", "bold"))
    console.print(plain(console, step.formula, "bold cyan"))
    if step.lecture:
        console.print(plain(console, f"book: {step.lecture}", "dim"))
    console.print(plain(console, step.sentence, "italic"))
    hidden = 0
    for matrix in step.matrices:
        if matrix.caption:
            console.print(plain(console, matrix.caption, "bold"))
        rows, columns = (
            [shown(label, console) for label in labels] for labels in (matrix.rows, matrix.columns)
        )
        table, hidden = matrix_table(numbers(matrix.values), rows, columns, console.width)  # same for each
        console.print(table)
    if hidden:
        elided = f"{hidden} of {len(step.matrices[-1].columns)} columns"
        console.print(plain(console, f"… {elided} hidden to fit {console.width} columns", "dim"))


def show_check(console: Console, check: Check) -> None:
    """✓ or ✗ and the claim, wrapped with a hanging indent."""
    line = Table.grid(padding=(0, 1))
    line.add_column(width=1)
    line.add_column()
    mark, style = ("✓", "green") if check.passed else ("✗", "bold red")
    line.add_row(plain(console, mark, style), plain(console, check.text))
    console.print(line)


def summarize(checks: Sequence[Check], console: Console) -> None:
    """One closing line: all checks passed, or how many failed."""
    failed = sum(not check.passed for check in checks)
    if failed:
        console.print(plain(console, f"✗ {failed} of {len(checks)} checks failed", "bold red"))
    else:
        console.print(plain(console, f"✓ all {len(checks)} checks passed", "bold green"))


def introduce(example: Example, console: Console) -> None:
    """What runs: the example, the tokens, where keys and values come from, the embedding, the widths, the
    module, its weights and the mask."""
    console.print(plain(console, "headwise explain: multi-head attention, step by step", "bold"))
    if example.book_weights:
        console.print(
            plain(
                console,
                'The lectures\' hands-on test: Raschka, "Build a Large Language Model from Scratch", 3.6.2, '
                "number for number (--example wide: headwise's own wider example).",
            )
        )
    elif example.tokens == LECTURE_TOKENS:
        console.print('Example from Raschka, "Build a Large Language Model from Scratch", chapter 3.')
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    facts.add_row("tokens", f"Nq = {len(example.tokens)}: {shown(' '.join(example.tokens), console)}")
    if example.batch > 1:
        facts.add_row("batch", f"b = {example.batch} copies of the tokens: torch.stack((inputs, inputs))")
    if example.kv_tokens is None:
        facts.add_row("keys, values", "from the same tokens: self-attention")
    else:
        kv_tokens = shown(" ".join(example.kv_tokens), console)
        facts.add_row("keys, values", f"Nk = {len(example.kv_tokens)}: {kv_tokens} (cross-attention)")
    facts.add_row("embedding", embedding_source(example))
    facts.add_row(
        "widths",
        f"d_in = {example.dim}, d_out = {example.d_out}, num_heads = {example.heads}, "
        f"head_dim = {example.head_dim}",
    )
    if example.book_weights:
        module = (
            f"the book's MultiHeadAttention(d_in, d_out, context_length={len(example.tokens)}, dropout=0.0, "
            f"num_heads={example.heads}) as MultiHeadAttention({example.dim}, {example.heads}, "
            f"head_dim={example.head_dim}, out_dim={example.d_out}, qkv_bias=False), float64"
        )
        weights = "drawn as the book's code draws them: nn.Linear after torch.manual_seed(123)"
    else:
        module = f"MultiHeadAttention({example.dim}, {example.heads}, head_dim={example.head_dim}), float64"
        weights = f"drawn after torch.manual_seed({example.seed})"
    facts.add_row("module", module)
    facts.add_row("weights", weights)
    facts.add_row("mask", mask_description(example))
    console.print(facts)
    console.print(plain(console, LEGEND, "dim"))
    console.print(plain(console, LECTURE_LEGEND, "dim"))
    console.print(plain(console, HEAD_COLUMNS, "dim"))
    console.print(
        plain(console, "Numbers are rounded to 4 decimals; a plain integer such as 0 or 1 is exact.", "dim")
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


def show_printout(console: Console, printout: Printout) -> list[Check]:
    """The book's name for a value with its shape and axes, the book's code, a sentence, the value (one
    matrix per batch element or head) and the checks it makes; returns the checks."""
    shape = f"({', '.join(map(str, printout.value.shape))})"
    axes = f" = ({', '.join(printout.axes)})" if printout.axes else ""
    console.print()
    console.print(plain(console, f"{printout.name}  {shape}{axes}", "bold"))
    console.print(plain(console, printout.code, "bold cyan"))
    console.print(plain(console, printout.sentence, "italic"))
    for matrix in printout.matrices():
        if matrix.caption:
            console.print(plain(console, matrix.caption, "bold"))
        table, _ = matrix_table(numbers(matrix.values), matrix.rows, matrix.columns, console.width)
        console.print(table)
    for check in printout.checks:
        show_check(console, check)
    return list(printout.checks)


def book_walkthrough(console: Console) -> bool:
    """Print every value of the book's sections 3.3 to 3.6, section by section, with the checks; True when
    every check passed."""
    console.print(plain(console, f"headwise explain --book: {BOOK}, sections 3.3 to 3.6", "bold"))
    console.print(
        "Every value the chapter prints, in its order and under its names, computed by headwise in float64 "
        "with the book's seeds (torch.manual_seed(123), 789 for SelfAttention_v2), shapes (d_in = 3, "
        "d_out = 2) and order of initialisation. The book's classes end where headwise's context step does; "
        "its weight-split MultiHeadAttention is headwise.MultiHeadAttention(3, 2, head_dim=1, out_dim=2, "
        "qkv_bias=False)."
    )
    console.print(
        plain(
            console,
            "Numbers are rounded to 4 decimals, as the book prints them; a plain integer is exact.",
            style="dim",
        )
    )
    printouts, _ = chapter()
    checks: list[Check] = []
    section = None
    for printout in printouts:
        if printout.section != section:
            section = printout.section
            console.print()
            console.rule(plain(console, f"{section} {SECTIONS[section]}", "bold"), align="left")
        checks += show_printout(console, printout)
    summarize(checks, console)
    return all(check.passed for check in checks)


def walkthrough(run: Run, console: Console) -> bool:
    """Print the whole run, step after step, with the checks; True when every check passed."""
    introduce(run.example, console)
    checks: list[Check] = []
    stage = None
    for index, step in enumerate(lecture_steps(run), start=1):
        if step.stage != stage:
            stage = step.stage
            console.print()
            console.print(plain(console, f"Lecture step {stage}", "bold magenta"))
        show_step(console, index, step)
        for check in step.checks:
            show_check(console, check)
        checks += step.checks
    summarize(checks, console)
    return all(check.passed for check in checks)


def cut(label: str, width: int = LABEL_WIDTH) -> str:
    """A label of at most `width` cells, cut with … when longer."""
    return label if cell_len(label) <= width else set_cell_size(label, width - 1).rstrip() + "…"


def strongest_keys(console: Console, maps: HeadMaps, query: int) -> None:
    """For query token `query`, one line per layer and head: the TOP_KEYS keys it weights most, each with
    its weight (2 decimals), strongest first."""
    layers, heads = maps.weights.shape[:2]
    top = min(TOP_KEYS, len(maps.key_tokens))
    weights, keys = maps.weights[:, :, query].topk(top, dim=-1)  # (L, H, top) each
    name = shown(maps.query_tokens[query], console)
    console.print()
    console.rule(plain(console, f"{maps.title}: query {query} {name}", "bold"), align="left")
    console.print(
        plain(console, f"The {top} keys that each of the {layers} × {heads} heads weights most.", "italic")
    )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("layer", justify="right")
    table.add_column("head", justify="right")
    for rank in ("1st", "2nd", "3rd")[:top]:
        table.add_column(rank, no_wrap=True)
    for layer in range(layers):
        for head in range(heads):
            cells = (
                f"{cut(shown(maps.key_tokens[key], console))} {weight:.2f}"
                for key, weight in zip(keys[layer, head].tolist(), weights[layer, head].tolist(), strict=True)
            )
            table.add_row(str(layer), str(head), *cells)
    console.print(table)


def model_summary(console: Console, report: Report, queries: Sequence[int]) -> None:
    """A model's report in the terminal: its title and description, its tokens numbered, and for the query
    at position queries[i] (inspection.reports.query_position finds it from --token) each head's strongest
    keys, in every kind of attention report.attention[i] the report has."""
    console.print(plain(console, f"headwise explain: {report.title}", "bold"))
    console.print(plain(console, report.description))
    for maps in report.attention:
        numbered = "  ".join(f"{i} {cut(t)}" for i, t in enumerate(maps.query_tokens))
        console.print(plain(console, f"{maps.title}, query tokens: {numbered}", "dim"))
    console.print(plain(console, "Choose the query with --token WORD or --token INDEX.", "dim"))
    for maps, query in zip(report.attention, queries, strict=True):
        strongest_keys(console, maps, query)
