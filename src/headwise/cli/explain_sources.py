"""What `headwise explain` explains, from its options: the lectures' example they describe (example_from),
the by-hand exercise --input or --example names (read_input), and the Report of the chosen source, for
--html and --png (make_report).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..checks import printable
from ..explain.example import (
    EXAMPLES,
    Example,
    default_head_dim,
    run_example,
)
from ..inspection.folder import MINILM

if TYPE_CHECKING:
    from ..explain.exercise import Exercise
    from ..pages.model import Report


def example_from(args: argparse.Namespace) -> Example:
    """The example the options describe: --example's (book without options), or wide changed by them."""
    if args.example == "book" or (args.example is None and not args.options_given):
        return EXAMPLES["book"]
    return Example(
        tokens=args.tokens,
        kv_tokens=args.cross,
        dim=args.dim,
        heads=args.heads,
        head_dim=default_head_dim(args.dim, args.heads) if args.head_dim is None else args.head_dim,
        seed=args.seed,
        causal=args.cross is None if args.causal is None else args.causal,
    )


def read_input(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Exercise:
    """The exercise --input or --example names (a by_hand.Exercise), the lectures' without them; an
    unreadable file, or rules that destroy the exercise (teaching.refusal), are argument errors, before
    anything is computed. Needs rich (by_hand draws with it). A sample's file is named on stdout."""
    from ..explain.exercise import LECTURE, read_exercise
    from ..explain.teaching import SAMPLES, read_sample, refusal

    if args.input is not None and args.example is not None:
        parser.error(
            f"--input ({args.input!r}) and --example ({args.example!r}) both give the exercise: keep one"
        )
    if args.example is not None and args.example not in SAMPLES:
        names = "; ".join(f"{name}: {what}" for name, what in SAMPLES.items())
        parser.error(
            f"argument --example: with --by-hand, expected a sample exercise ({names}), got {args.example!r}"
        )
    if args.example is not None:
        exercise, where = read_sample(args.example)
        print(f"sample {args.example}: {where} (.csv beside it); copy one to edit, then --input")
        return exercise
    if args.input is None:
        return LECTURE
    try:
        exercise = read_exercise(args.input)
    except (OSError, ValueError) as error:
        parser.error(f"argument --input: {printable(str(error))}")
    reason = refusal(exercise)
    if reason is not None:
        parser.error(f"argument --input: {printable(reason)}")
    return exercise


def make_report(args: argparse.Namespace, exercise: Exercise | None) -> Report | None:
    """The report of the chosen source; None, with a one-line message, when it cannot be made (a missing
    package, an unreadable folder, ...)."""
    from ..explain.walkthrough import lecture_report

    try:
        if args.book:
            from ..explain.book.chapter import book_report

            report = book_report()
        elif exercise is not None:  # --by-hand
            from ..explain.by_hand import by_hand_report

            report = by_hand_report(exercise)
        elif args.model == MINILM:
            from ..inspection.reports import minilm_report

            report = minilm_report(args.text, args.pieces or "words")
        elif args.model:
            from ..inspection.reports import folder_report

            report = folder_report(args.model, args.text, args.pieces or "words")
        elif args.checkpoint:
            from ..inspection.reports import checkpoint_report

            report = checkpoint_report(args.checkpoint, args.text)
        else:
            report = lecture_report(run_example(example_from(args)))
    except (ImportError, OSError, ValueError) as error:
        print(f"headwise explain: {printable(str(error))}", file=sys.stderr)
        return None
    return report
