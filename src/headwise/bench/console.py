"""The progress bar the benchmarks show on stderr while they run (rich, from headwise[cli])."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

NEEDS_RICH = (
    "the benchmarks draw their progress bar with rich, which is missing: pip install 'headwise[bench]'"
)

Progress = Callable[[str, int, int], None]  # (what runs now, steps done, steps in all)


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """A progress bar on stderr, so that stdout keeps only the results; yields its update function."""
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError as error:
        raise SystemExit(NEEDS_RICH) from error
    columns = (TextColumn("{task.description:<36}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("starting", total=None)

        def update(label: str, done: int, total: int) -> None:
            progress.update(task, description=label, completed=done, total=total)

        yield update
