"""`headwise explain`: the terminal walkthrough of the lectures' example, or, with --by-hand, the
pencil-and-paper exercise next to headwise's exact numbers."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from functools import partial

from ..explain.example import (
    CROSS_TOKENS,
    LECTURE_DIM,
    LECTURE_HEADS,
    LECTURE_SEED,
    LECTURE_TOKENS,
    Example,
    default_head_dim,
    run_example,
)

NEEDS_RICH = "headwise explain draws its tables with rich, which is missing: pip install 'headwise[cli]'"
MAX_WIDTH = 512  # D and Dh: wider, a walkthrough shows little but elided columns
MAX_HEADS = 16
MAX_SEED = 2**64 - 1  # torch.manual_seed's range


def integer_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {text!r}")
        return value

    return parse


def words(text: str) -> tuple[str, ...]:
    """An argparse type: the whitespace-separated words of `text`, at least one."""
    tokens = tuple(text.split())
    if not tokens:
        raise argparse.ArgumentTypeError(f"expected at least one word, got {text!r}")
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
    group = parser.add_argument_group("the walkthrough (not with --by-hand)")
    walkthrough_options = [
        group.add_argument(
            "--tokens",
            type=words,
            default=LECTURE_TOKENS,
            metavar="TEXT",
            help="your own tokens, separated by spaces, each embedded by a seeded random vector (default: "
            f"{' '.join(LECTURE_TOKENS)!r}, with the book's embeddings when --dim is {LECTURE_DIM})",
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
            help="cross-attention: a second sequence of tokens supplies the keys and values "
            f"(default text: {' '.join(CROSS_TOKENS)!r})",
        ),
    ]
    sources = parser.add_argument_group("other sources (instead of the lectures' example)")
    source = sources.add_mutually_exclusive_group()
    source.add_argument(
        "--by-hand",
        action="store_true",
        help="the pencil-and-paper exercise: 4 tokens, 6 features, one head of width 3, small integers",
    )
    source.add_argument(
        "--model",
        choices=["minilm"],
        help="the heads of a pretrained model reading TEXT: minilm (all-MiniLM-L6-v2, 6 layers × 12 heads); "
        "needs --html or --png",
    )
    source.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="the heads of a model trained with `headwise train` (its --out folder), reading TEXT (default: "
        "an example of its task); needs --html or --png",
    )
    sources.add_argument("text", nargs="?", help="the text --model or --checkpoint reads")
    outputs = parser.add_argument_group("pictures (instead of the terminal)")
    outputs.add_argument(
        "--html",
        metavar="FILE",
        help="write one self-contained HTML page: the walkthrough, a head view and a model view",
    )
    outputs.add_argument("--png", metavar="DIR", help="write the same views as PNG files into DIR")
    parser.set_defaults(run=partial(run, parser, walkthrough_options))


def example_from(args: argparse.Namespace) -> Example:
    """The example the options describe."""
    return Example(
        tokens=args.tokens,
        kv_tokens=args.cross,
        dim=args.dim,
        heads=args.heads,
        head_dim=default_head_dim(args.dim, args.heads) if args.head_dim is None else args.head_dim,
        seed=args.seed,
        causal=args.cross is None if args.causal is None else args.causal,
    )


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
        "--by-hand"
        if args.by_hand
        else "--model"
        if args.model
        else "--checkpoint"
        if args.checkpoint
        else None
    )
    if other_source and given:
        parser.error(f"{other_source} replaces the lectures' example; leave out {', '.join(given)}")
    if args.text is not None and not (args.model or args.checkpoint):
        parser.error(f"TEXT ({args.text!r}) is read by --model or --checkpoint only")
    if args.model and not args.text:
        parser.error("--model needs TEXT, the sentence the model reads, e.g. --model minilm 'The cat sat.'")
    pictures = args.html is not None or args.png is not None
    if (args.model or args.checkpoint) and not pictures:
        parser.error(f"{other_source} draws its layers × heads as pictures: add --html FILE or --png DIR")
    if importlib.util.find_spec("rich") is None:
        print(NEEDS_RICH, file=sys.stderr)
        return 1
    if pictures:
        return draw(args)
    from ..explain import by_hand, terminal  # rich is there, so the renderers can load

    console = terminal.make_console()
    if args.by_hand:
        return 0 if by_hand.explain_by_hand(console) else 1
    return 0 if terminal.walkthrough(run_example(example_from(args)), console) else 1


def draw(args: argparse.Namespace) -> int:
    """Write the report of the chosen source as HTML and/or PNG; print where."""
    from ..explain.report import lecture_report

    try:
        if args.by_hand:
            from ..explain.by_hand import by_hand_report

            report = by_hand_report()
        elif args.model:
            from ..explain.models import minilm_report

            report = minilm_report(args.text)
        elif args.checkpoint:
            from ..explain.models import checkpoint_report

            report = checkpoint_report(args.checkpoint, args.text)
        else:
            report = lecture_report(run_example(example_from(args)))
    except (ImportError, OSError, ValueError) as error:
        print(f"headwise explain: {error}", file=sys.stderr)
        return 1
    try:
        if args.html is not None:
            from ..explain.html import write_html

            write_html(report, args.html)
            print(f"wrote {args.html}")
        if args.png is not None:
            from ..explain.png import write_pngs

            files = write_pngs(report, args.png)
            print(f"wrote {len(files)} PNG files into {args.png}")
    except (ImportError, OSError) as error:
        print(f"headwise explain: {error}", file=sys.stderr)
        return 1
    return 0
