"""`headwise explain`: the terminal walkthrough of the lectures' example; with --book, Raschka's chapter 3;
with --by-hand, the pencil-and-paper exercise next to headwise's exact numbers (--worksheet: a printable
worksheet of it); with --model or --checkpoint, each head's strongest keys for one token. --html and
--png draw any of them instead."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from functools import partial
from typing import TYPE_CHECKING

from ..checks import printable
from ..explain.example import (
    CROSS_TOKENS,
    EXAMPLES,
    LECTURE_DIM,
    LECTURE_HEADS,
    LECTURE_SEED,
    LECTURE_TOKENS,
    run_example,
)
from ..files import file_target, kind_of
from ..inspection.words import PIECES
from .arguments import integer_in, path, text
from .explain_sources import example_from, make_report, read_input
from .heads import model_argument

if TYPE_CHECKING:
    from rich.console import Console

    from ..explain.exercise import Exercise

NEEDS_RICH = "headwise explain draws its tables with rich, which is missing: pip install 'headwise[cli]'"
MAX_WIDTH = 512  # D and Dh: wider, a walkthrough shows little but elided columns
MAX_HEADS = 16
MAX_SEED = 2**64 - 1  # torch.manual_seed's range
MAX_TOKENS = 512  # per sequence: the steps hold (H, N, N) matrices, so the tables and pages grow as N²


def words(value: str) -> tuple[str, ...]:
    """An argparse type: the whitespace-separated words of `value`, 1 to MAX_TOKENS of them."""
    tokens = tuple(text(value).split())
    if not tokens:
        raise argparse.ArgumentTypeError(f"expected at least one word, got {value!r}")
    if len(tokens) > MAX_TOKENS:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_TOKENS} words (tokens; the pages and tables grow as their square), got "
            f"{len(tokens)}"
        )
    return tokens


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare `headwise explain` and its options."""
    parser = subparsers.add_parser(
        "explain",
        help="walk through multi-head attention step by step, in the terminal",
        description="Run the lectures' example (Raschka's six tokens, 3 dimensions, two heads, causal) "
        "through headwise.MultiHeadAttention and print every step with its shape, formula and values, "
        "checking as it goes what a learner should see.",
    )
    parser.add_argument(
        "--example",
        metavar="NAME",
        help="the walkthrough's example: book (the default: the lectures' hands-on test, Raschka's 3.6.2 "
        "MultiHeadAttention(d_in=3, d_out=2, num_heads=2) on the batch of two, number for number) or wide "
        "(headwise's own MultiHeadAttention(3, 2, head_dim=2): d_out = 4, one sequence; the options below "
        "change it); with --by-hand, a sample exercise shipped with headwise: 6-3 (the lecture page's, the "
        "default) or 6-6 (two 6-3 heads side by side), whose file it names so that you can copy it",
    )
    group = parser.add_argument_group("the walkthrough (not with --by-hand; they start from --example wide)")
    walkthrough_options = [
        group.add_argument(
            "--tokens",
            type=words,
            default=LECTURE_TOKENS,
            metavar="TEXT",
            help=f"your own tokens, separated by spaces, at most {MAX_TOKENS}, each embedded by a seeded "
            f"random vector (default: {' '.join(LECTURE_TOKENS)!r}, with the book's embeddings when --dim "
            f"is {LECTURE_DIM})",
        ),
        group.add_argument(
            "--dim",
            type=integer_in(1, MAX_WIDTH),
            default=LECTURE_DIM,
            help="embedding width D (default: %(default)s)",
        ),
        group.add_argument(
            "--heads",
            type=integer_in(1, MAX_HEADS),
            default=LECTURE_HEADS,
            help="number of heads H (default: %(default)s)",
        ),
        group.add_argument(
            "--head-dim",
            type=integer_in(1, MAX_WIDTH),
            default=None,
            help="width Dh of each head (default: D / H, rounded up when H does not divide D)",
        ),
        group.add_argument(
            "--seed",
            type=integer_in(0, MAX_SEED),
            default=LECTURE_SEED,
            help="seed of the module's weights and of the embeddings (default: %(default)s, as in the book)",
        ),
        group.add_argument(
            "--causal",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="each query sees only the keys up to its own position (default: on, off with --cross)",
        ),
        group.add_argument(
            "--cross",
            type=words,
            nargs="?",
            const=CROSS_TOKENS,
            default=None,
            metavar="TEXT",
            help=f"cross-attention: a second sequence of at most {MAX_TOKENS} tokens supplies the keys and "
            f"values (default text: {' '.join(CROSS_TOKENS)!r})",
        ),
    ]
    sources = parser.add_argument_group("other sources (instead of the lectures' example)")
    source = sources.add_mutually_exclusive_group()
    source.add_argument(
        "--book",
        action="store_true",
        help="Raschka's chapter 3, sections 3.3 to 3.6: every value the book prints, computed by headwise "
        "with the book's seeds, shapes and order of initialisation (with --html, as a page)",
    )
    source.add_argument(
        "--by-hand",
        action="store_true",
        help="the pencil-and-paper exercise: 4 tokens, 6 features, one head of width 3, small integers",
    )
    source.add_argument(
        "--model",
        type=model_argument,
        metavar="minilm|DIR",
        help="the heads of a pretrained model reading TEXT: minilm (all-MiniLM-L6-v2, 6 layers × 12 heads) "
        "or a Hugging Face model folder (config.json, safetensors, tokenizer files: an encoder, a decoder "
        "or an encoder-decoder); prints each head's strongest keys for one token (--token), or draws "
        "every head with --html or --png",
    )
    source.add_argument(
        "--checkpoint",
        type=path,
        metavar="DIR",
        help="the heads of a model trained with `headwise train` (its --out folder), reading TEXT (default: "
        "an example of its task); printed or drawn as with --model",
    )
    sources.add_argument("text", nargs="?", type=text, help="the text --model or --checkpoint reads")
    sources.add_argument(
        "--token",
        type=text,
        metavar="WORD|INDEX",
        help="with --model or --checkpoint in the terminal: the query token whose strongest keys are "
        "listed, a word of TEXT or a position from 0 (default: the first token that is not a special one "
        "such as [CLS])",
    )
    sources.add_argument(
        "--pieces",
        choices=PIECES,
        default=None,
        help="with --model: the tokens as words (the default: GPT-2's Ġ, SentencePiece's ▁ and WordPiece's "
        "## read), raw as the tokenizer gives them, or merged: one per word (weights summed over a word's "
        "key tokens, averaged over its query tokens)",
    )
    sources.add_argument(
        "--input",
        type=path,
        metavar="FILE",
        help='with --by-hand: your own exercise, a .json object {"X": d × n (a token per column), "W_Q", '
        '"W_K", "W_V": d_k × d} of small integers whose scores Kᵀ·Q are >= 0, optionally a second head '
        '"W_Q2", "W_K2", "W_V2" and "rules" {"divide_by", "power_base", "decimals"}; or a .csv file of the '
        "same blocks, each a line with its name, then its rows",
    )
    outputs = parser.add_argument_group("pages and pictures (instead of the terminal)")
    outputs.add_argument(
        "--html",
        type=path,
        metavar="FILE",
        help="write one self-contained HTML page: the walkthrough, a head view and a model view (through a "
        "symbolic link, to the file it points to)",
    )
    outputs.add_argument(
        "--worksheet",
        type=path,
        metavar="FILE",
        help="with --by-hand: write a printable HTML worksheet of the exercise, blanks to fill and the "
        "answers on pages of their own",
    )
    outputs.add_argument(
        "--png",
        type=path,
        metavar="DIR",
        help="write the same views as PNG files into DIR (created if missing)",
    )
    parser.set_defaults(run=partial(run, parser, walkthrough_options))


def run(
    parser: argparse.ArgumentParser, walkthrough_options: list[argparse.Action], args: argparse.Namespace
) -> int:
    """Print the walkthrough or the exercise; 0 when every check passed, 1 otherwise."""
    given = [
        action.option_strings[0]
        for action in walkthrough_options
        if getattr(args, action.dest) != action.default
    ]
    other_source = (
        "--book"
        if args.book
        else "--by-hand"
        if args.by_hand
        else "--model"
        if args.model
        else "--checkpoint"
        if args.checkpoint
        else None
    )
    if other_source and given:
        parser.error(f"{other_source} replaces the lectures' example; leave out {', '.join(given)}")
    args.options_given = given
    if not args.by_hand and args.example is not None:
        if other_source:
            parser.error(
                f"--example ({args.example!r}) chooses the walkthrough's example; leave out {other_source}"
            )
        if args.example not in EXAMPLES:
            parser.error(f"argument --example: expected one of {', '.join(EXAMPLES)}, got {args.example!r}")
        if args.example == "book" and given:
            parser.error(
                f"--example book is the book's hands-on test as it is; {', '.join(given)} change --example "
                "wide: leave out --example book"
            )
    if args.input is not None and not args.by_hand:
        parser.error(f"--input ({args.input!r}) is an exercise for --by-hand; add --by-hand")
    if args.worksheet is not None and not args.by_hand:
        parser.error(
            f"--worksheet ({args.worksheet!r}) is a worksheet of --by-hand's exercise; add --by-hand"
        )
    if args.pieces is not None and not args.model:
        parser.error(f"--pieces ({args.pieces}) shows the tokens of a --model; add --model")
    if args.text is not None and not (args.model or args.checkpoint):
        parser.error(f"TEXT ({args.text!r}) is read by --model or --checkpoint only")
    if args.model and not args.text:
        parser.error("--model needs TEXT, the sentence the model reads, e.g. --model minilm 'The cat sat.'")
    pictures = args.html is not None or args.png is not None
    if args.token is not None and not (args.model or args.checkpoint):
        parser.error(f"--token ({args.token!r}) chooses a query token of --model or --checkpoint only")
    if args.token is not None and pictures:
        parser.error(
            f"--token ({args.token!r}) chooses the query of the terminal summary; the pictures show every "
            "token: leave out --html and --png, or --token"
        )
    check_outputs(parser, args)
    if importlib.util.find_spec("rich") is None:
        print(NEEDS_RICH, file=sys.stderr)
        return 1
    exercise = read_input(parser, args) if args.by_hand else None
    if args.worksheet is not None and exercise is not None:  # --worksheet comes with --by-hand (checked)
        from ..explain.worksheet import write_worksheet

        try:
            write_worksheet(exercise, args.worksheet)
        except OSError as error:
            print(f"headwise explain: {printable(str(error))}", file=sys.stderr)
            return 1
        print(f"wrote {printable(args.worksheet)}")
        if not pictures:
            return 0
    if pictures:
        return draw(args, exercise)
    from ..explain import by_hand, terminal  # rich is there, so the renderers can load

    console = terminal.make_console()
    if args.model or args.checkpoint:
        return summarize_model(parser, args, console)
    if args.book:
        return 0 if terminal.book_walkthrough(console) else 1
    if exercise is not None:  # --by-hand
        return 0 if by_hand.explain_by_hand(console, exercise) else 1
    return 0 if terminal.walkthrough(run_example(example_from(args)), console) else 1


def check_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before anything is computed, an --html or --worksheet that is not a file to write (a
    directory, a device, a FIFO, a missing folder) and a --png that is not a folder."""
    for option, file in (("--html", args.html), ("--worksheet", args.worksheet)):
        if file is not None:
            try:
                file_target(file)
            except OSError as error:
                parser.error(f"argument {option}: {error}")
    if args.png is not None:
        try:
            kind = kind_of(args.png)
        except OSError as error:  # a loop of links, a file on the way
            parser.error(f"argument --png: {error}")
        if kind not in ("missing", "a directory"):
            parser.error(
                f"argument --png: {args.png} is {kind or 'a file'}, not a folder (it is created if missing)"
            )


def summarize_model(parser: argparse.ArgumentParser, args: argparse.Namespace, console: Console) -> int:
    """Print each head's strongest keys for the --token query of the --model or --checkpoint report; a
    --token that names no token is an argument error."""
    from ..explain.terminal import model_summary
    from ..inspection.reports import query_position

    report = make_report(args, None)
    if report is None:
        return 1
    try:  # every kind of attention's query found before anything is printed
        queries = [query_position(maps.query_tokens, args.token) for maps in report.attention]
    except ValueError as error:
        parser.error(f"argument --token: {printable(str(error))}")
    model_summary(console, report, queries)
    return 0


def draw(args: argparse.Namespace, exercise: Exercise | None) -> int:
    """Write the report of the chosen source as HTML and/or PNG; print where."""
    report = make_report(args, exercise)
    if report is None:
        return 1
    try:
        if args.html is not None:
            from ..pages.html import write_html

            write_html(report, args.html)
            print(f"wrote {printable(args.html)}")
        if args.png is not None:
            from ..pages.png import write_pngs

            files = write_pngs(report, args.png)
            print(f"wrote {len(files)} PNG files into {printable(args.png)}")
    except (ImportError, OSError) as error:
        print(f"headwise explain: {printable(str(error))}", file=sys.stderr)
        return 1
    return 0
