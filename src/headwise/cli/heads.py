"""`headwise heads "text" ...`: what each head of a model does, as a ranked table (headwise.inspection's
analysis), and with --link QUERY KEY the heads that link one token of the first text to another. With
--target, an encoder-decoder's decoder reads a target text of its own for each text (else the text itself).
With --pieces merged, each word is one token (a word's sub-tokens merged: inspection/words.py); --link
merges a word it names that the tokenizer split, whatever --pieces says, and says so."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from ..checks import printable
from ..inspection.folder import MINILM, model_source
from ..inspection.words import MERGED, PIECES
from .arguments import integer_in, path, text

DEFAULT_TOP = 12


def model_argument(value: str) -> str | Path:
    """An argparse type: "minilm" or a Hugging Face model folder (inspection.folder.model_source)."""
    try:
        return model_source(path(value))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare `headwise heads` and its options."""
    parser = subparsers.add_parser(
        "heads",
        help="name what each head of a model does (previous token, [CLS] sink, ...), from its attention",
        description="Run a model over the texts with its attention weights kept, and rank its heads by "
        "what they do: per head, the share of attention on the previous, next and same token, on the first "
        "token and on special tokens, the entropy and the mean distance, averaged over the texts.",
    )
    parser.add_argument("texts", nargs="+", type=text, metavar="TEXT", help="one or more texts, each quoted")
    parser.add_argument(
        "--model",
        type=model_argument,
        default=MINILM,
        metavar="minilm|DIR",
        help="minilm (all-MiniLM-L6-v2 on headwise's encoder, the default) or a Hugging Face model folder",
    )
    parser.add_argument(
        "--target",
        nargs="+",
        type=text,
        metavar="TARGET",
        help="an encoder-decoder's decoder reads TARGET, teacher-forced (a translation or summary of the "
        "TEXT), one per TEXT in order; without it the decoder reads the TEXT itself",
    )
    parser.add_argument(
        "--top",
        type=integer_in(1),
        default=DEFAULT_TOP,
        help="print the first TOP heads of each table (default: %(default)s)",
    )
    parser.add_argument(
        "--link",
        nargs=2,
        type=text,
        metavar=("QUERY", "KEY"),
        help="also rank the heads by the weight from token QUERY to token KEY in the first text, "
        "e.g. --link it animal",
    )
    parser.add_argument(
        "--pieces",
        choices=PIECES,
        default="words",
        help="the tokens as words (GPT-2's Ġ, SentencePiece's ▁ and WordPiece's ## read; the default), raw "
        "as the tokenizer gives them, or merged: one per word, a word's sub-tokens merged (weights summed "
        "over its key tokens, averaged over its query tokens), so the roles are the words'",
    )
    parser.set_defaults(run=partial(run, parser))


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Print the tables; 0 on success, 1 when a package, the model or a token is missing (or a target
    given to a model that is not an encoder-decoder)."""
    from ..inspection import analyse, as_pieces, heads_linking, load_model, read

    targets = args.target or [None] * len(args.texts)
    if len(targets) != len(args.texts):
        parser.error(f"--target takes one TARGET per TEXT: got {len(targets)} for {len(args.texts)} texts")
    try:
        model, tokenizer = load_model(args.model)
        raw = [  # per text, per kind, the tokenizer's own tokens
            read(model, tokenizer, sentence, target=target, pieces="raw")
            for sentence, target in zip(args.texts, targets, strict=True)
        ]
        texts = [[as_pieces(maps, args.pieces) for maps in kinds] for kinds in raw]
        if args.pieces == "merged":
            print(f"Each word is one token: {MERGED}.", end="\n\n")
        for kind, maps in enumerate(texts[0]):
            if maps.query_tokens != maps.key_tokens:
                continue  # cross-attention: no previous or next token to speak of
            print(analyse([kinds[kind] for kinds in texts]).top(args.top).text(), end="\n\n")
        if args.link:
            query, key = args.link
            maps = texts[0][0]
            merged = as_pieces(raw[0][0], "merged")
            if {query, key} <= set(merged.query_tokens) and not {query, key} <= set(maps.query_tokens):
                maps = merged  # a word the tokenizer split: its pieces merged
                print(printable(f"{query!r} and {key!r} as words: {MERGED}."))
            linking = heads_linking(maps, query, key)[: args.top]
            print(printable(f"{maps.title}: the weight of {query!r} on {key!r} in text 1, highest first"))
            print("layer  head  weight")
            for pair in linking:
                print(f"{pair.layer:<5}  {pair.head:<4}  {pair.weight:.3f}")
    except (ImportError, OSError, ValueError) as error:
        print(f"headwise heads: {printable(str(error))}", file=sys.stderr)
        return 1
    return 0
