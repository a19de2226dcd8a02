"""`headwise bench`: a short speed benchmark of headwise against torch's attention, with a progress bar;
--full runs the whole grid of benchmarks/speed.py."""

from __future__ import annotations

import argparse
from functools import partial

from ..bench import speed
from ..bench.options import settings_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Declare `headwise bench` and its options."""
    parser = subparsers.add_parser(
        "bench",
        help="time headwise against torch's attention on this machine",
        description="Time headwise.attention (auto and every backend) and headwise.MultiHeadAttention "
        "against torch's scaled_dot_product_attention (default and math), a naive implementation and "
        "torch.nn.MultiheadAttention, interleaved, and print a markdown table of median ms, GFLOP/s and "
        "speed-ups. The progress bar goes to stderr, the table to stdout.",
    )
    speed.add_arguments(parser, preset="quick")
    parser.set_defaults(run=partial(run, parser))


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the benchmark, after refusing a grid that does not fit the memory cap (exit code 2)."""
    try:
        settings_from_args(args, speed.PRESETS)
    except ValueError as error:
        parser.error(str(error))
    return speed.run_from_args(args)
