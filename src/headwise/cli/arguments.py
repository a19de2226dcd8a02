"""argparse's parser class and types shared by the subcommands. Each type refuses a bad value with what it got
and what it expected; argparse puts the option's name in front and exits with code 2, never a traceback."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import NoReturn

from ..checks import printable


class Parser(argparse.ArgumentParser):
    """argparse's parser (its subcommands' parsers are of the same class), whose error messages show the
    control characters of what the user typed escaped, never acted on by the terminal."""

    def error(self, message: str) -> NoReturn:
        super().error(printable(message))


def text(value: str) -> str:
    """An argparse type: text that decodes as UTF-8. Python hands undecodable bytes of the command line over
    as lone surrogates, which would fail later, when printed or written."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"expected UTF-8 text, got the bytes {os.fsencode(value)!r}"
        ) from None
    return value


def path(value: str) -> str:
    """An argparse type: a file or folder name, not empty, in UTF-8 (so that it can be printed)."""
    if not text(value):
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return value


def integer_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high` (no limit if None)."""
    expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}") from None
        if number < low or (high is not None and number > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
        return number

    return parse
