"""Writing files so that a reader never sees half of one and a failure leaves the old one as it was."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new temporary path beside `path` (same suffix, so writers that go by it still can) for the
    block to write; when the block succeeds, flush it to disk and rename it onto `path` in one step; when
    it fails, remove it and leave `path` untouched."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        yield temporary
        fsync(temporary)
        os.replace(temporary, path)
    except BaseException:  # Ctrl-C included
        temporary.unlink(missing_ok=True)
        raise


def fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, where the system allows it."""
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
