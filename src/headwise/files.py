"""Writing files and folders so that a reader never sees half of one and a failure leaves the old one as it
was.

    replacing(path)          a file: written beside its target, then renamed onto it in one step
    replacing_folder(folder) a folder: written beside it, then swapped in with two renames

Both write through symbolic links (the file or folder a link points to is replaced, the link stays) and
refuse what is not theirs to replace (a directory where a file goes, a device, a FIFO, a socket), with an
error that names the path. For headwise's own files in its own folders (the dispatch cache):

    own_folder(folder)            an OSError unless `folder` is a directory of the current user's
    read_regular(path, limit)     the text of a regular file of at most `limit` bytes, never blocking
    locked(path)                  an exclusive lock held on a lock file, for a read-merge-write
    replace_entry(path, text)     `path` itself replaced in one step, never a file a link there points to
 An interrupted folder replacement leaves at most two folders beside the target,
`.<name>.tmp-*` (the new one) and `.<name>.old-*` (the one it replaces): folder_leftovers() finds them, and
the next replacement that succeeds removes them (as remove_folder_leftovers() does).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(path: str | os.PathLike[str]) -> str | None:
    """What `path` is, following symbolic links: None for a regular file, "missing" if there is nothing
    (or a dangling link), else "a directory", "a FIFO (named pipe)", ..."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in KINDS if test(mode)), "an unknown kind of file")


def file_target(path: str | os.PathLike[str]) -> Path:
    """The regular file that writing `path` replaces: `path`, or the file that a symbolic link there points
    to (through every link; it need not exist yet). An OSError names `path` when that is something else
    (a directory, a device, a FIFO, a socket), when its folder is missing, or when `path` is empty."""
    if os.fspath(path) == "":
        raise FileNotFoundError("the file name is empty: give a path such as report.html")
    target = Path(os.path.realpath(path))
    try:
        kind = kind_of(target)
    except OSError as error:  # a loop of links, a folder on the way that is a file, ...
        raise type(error)(error.errno, error.strerror, os.fspath(path)) from None
    if kind == "a directory":
        raise IsADirectoryError(f"{os.fspath(path)} is a directory: give the name of a file to write")
    if kind not in (None, "missing"):
        raise OSError(f"{os.fspath(path)} is {kind}: headwise writes regular files only")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {os.fspath(path)}: the folder {target.parent} does not exist")
    return target


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new temporary path beside the file_target of `path` (same suffix, so writers that go by it
    still can) for the block to write; when the block succeeds, flush it to disk and rename it onto the
    target in one step (keeping the permissions of a file it replaces); when it fails, remove it and leave
    the target untouched. Errors name `path`, never the temporary file."""
    target = file_target(path)
    temporary = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp{target.suffix}")
    try:
        yield temporary
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))
        fsync(temporary)
        os.replace(temporary, target)
        fsync(target.parent)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.filename in (os.fspath(temporary), temporary) and error.errno is not None:
            raise type(error)(error.errno, error.strerror, os.fspath(path)) from None
        raise
    except BaseException:  # Ctrl-C included
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8, "\\n" line ends) to `path` through `replacing`: a reader never sees half a file
    and a failure leaves the old one. Returns `path` as a Path."""
    with replacing(path) as temporary, open(temporary, "x", encoding="utf-8", newline="\n") as file:
        file.write(text)  # "x": a new file, with the usual permissions
    return Path(path)


def folder_target(folder: str | os.PathLike[str]) -> Path:
    """The folder that writing `folder` replaces: `folder`, or the one a symbolic link there points to."""
    if os.fspath(folder) == "":
        raise FileNotFoundError("the folder name is empty: give a path such as runs/dates")
    return Path(os.path.realpath(folder))


def folder_leftovers(folder: str | os.PathLike[str]) -> list[Path]:
    """The folders an interrupted replacing_folder(folder) left beside it: the new one (.<name>.tmp-*)
    and the one it was replacing (.<name>.old-*), oldest first."""
    target = folder_target(folder)
    found = [*target.parent.glob(f".{target.name}.tmp-*"), *target.parent.glob(f".{target.name}.old-*")]
    return sorted((path for path in found if path.is_dir()), key=lambda path: path.stat().st_mtime)


@contextlib.contextmanager
def replacing_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside `folder` (its folder_target) for the block to fill; when the
    block succeeds, flush it to disk and put it in the place of `folder`: the old folder is renamed aside,
    the new one into place, then the old one and the leftovers of earlier interrupted replacements are
    deleted. When the block fails, the temporary folder is removed and `folder` is left as it was."""
    target = folder_target(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old = temporary.with_name(temporary.name.replace(".tmp-", ".old-", 1))
    moved_aside = replaced = False
    try:
        yield temporary
        mask = _umask()
        for file in temporary.iterdir():
            file.chmod(0o666 & ~mask)  # as an ordinary file (temporary files are private)
            fsync(file)
        temporary.chmod(0o777 & ~mask)
        fsync(temporary)  # its entries too, before it is renamed into place
        if target.exists():
            os.rename(target, old)  # the old folder stays whole until the new one is in place
            moved_aside = True
        os.rename(temporary, target)
        replaced = True
        fsync(target.parent)
    except BaseException:  # Ctrl-C included: put the old folder back, remove the new one
        if moved_aside and not replaced:
            os.rename(old, target)
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    remove_folder_leftovers(target)


def remove_folder_leftovers(folder: str | os.PathLike[str]) -> None:
    """Delete the folder_leftovers of `folder`."""
    for leftover in folder_leftovers(folder):
        shutil.rmtree(leftover, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, where the system allows it."""
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def own_folder(folder: str | os.PathLike[str]) -> None:
    """An OSError naming `folder` unless it is a directory that belongs to the current user (a link to one
    counts): headwise keeps its own files (the dispatch cache) only there."""
    status = os.stat(folder)
    if not stat.S_ISDIR(status.st_mode):
        raise NotADirectoryError(f"{os.fspath(folder)} is not a directory")
    if hasattr(os, "geteuid") and status.st_uid != os.geteuid():
        raise PermissionError(f"{os.fspath(folder)} belongs to another user (uid {status.st_uid})")


def read_regular(path: str | os.PathLike[str], limit: int, *, follow_links: bool = True) -> str:
    """The UTF-8 text of `path`, which must be a regular file of at most `limit` bytes; an OSError (or a
    UnicodeDecodeError) that names `path` otherwise. Never blocks: a FIFO is opened without waiting for
    a writer and then refused, as are devices (/dev/zero), directories and sockets. follow_links=False
    also refuses a symbolic link at `path` (the file a link points to may be someone else's)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= os.O_NOFOLLOW
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_links and os.path.islink(path):
            raise OSError(
                f"{os.fspath(path)} is a symbolic link: headwise reads only a regular file here"
            ) from None
        raise
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(descriptor)
        mode, size = status.st_mode, status.st_size
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in KINDS if test(mode)), "an unknown kind of file")
            raise OSError(f"{os.fspath(path)} is {kind}: headwise reads regular files only")
        if size > limit:
            raise OSError(f"{os.fspath(path)} has {size:,} bytes: headwise reads at most {limit:,} here")
        data = file.read(limit + 1)  # the size may have grown since fstat
    if len(data) > limit:
        raise OSError(f"{os.fspath(path)} has more than {limit:,} bytes: headwise reads at most {limit:,}")
    return data.decode("utf-8")


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], timeout_s: float = 10.0) -> Iterator[None]:
    """Hold an exclusive flock on the lock file `path` (created if missing, never through a link) for the
    block: writers that read, merge and replace one file take turns. A TimeoutError names `path` when
    another process holds it for longer than `timeout_s`."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(path, flags, 0o666)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(f"{os.fspath(path)} is not a regular file: it cannot serve as a lock")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{os.fspath(path)} stayed locked for {timeout_s:g} s") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def replace_entry(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to a new file beside `path`, flush it and rename it onto `path` in one step: a
    reader sees the old file or the new one, and whatever `path` was (a link, a FIFO) is replaced as a
    folder entry; nothing a link there points to is opened or changed. A directory at `path` is an
    IsADirectoryError."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        with os.fdopen(os.open(temporary, flags, 0o666), "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        fsync(path.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
