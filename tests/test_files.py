"""headwise.files: atomic writes that go through symbolic links, refuse what is not a regular file, name the
path (never the temporary file) in their errors, and clean up after interrupted folder replacements."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from headwise.files import file_target, folder_leftovers, replacing, replacing_folder


def write(path, text: str) -> None:
    with replacing(path) as temporary:
        temporary.write_text(text)


def test_a_file_is_replaced_whole_and_keeps_its_permissions(tmp_path):
    target = tmp_path / "page.html"
    target.write_text("old")
    target.chmod(0o600)
    write(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["page.html"]  # no temporary file left


def test_a_symbolic_link_is_written_through_to_its_target(tmp_path):
    target = tmp_path / "target.html"
    target.write_text("stale")
    (tmp_path / "link.html").symlink_to("target.html")
    (tmp_path / "chain.html").symlink_to("link.html")
    write(tmp_path / "chain.html", "fresh")
    assert (tmp_path / "link.html").is_symlink() and (tmp_path / "chain.html").is_symlink()
    assert target.read_text() == "fresh"
    (tmp_path / "dangling.html").symlink_to("new.html")  # a link to a file not written yet
    write(tmp_path / "dangling.html", "made")
    assert (tmp_path / "dangling.html").is_symlink() and (tmp_path / "new.html").read_text() == "made"


def _fifo(path):
    os.mkfifo(path)


def _socket(path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    return server


def _character_device(path):
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # as /dev/null
    except PermissionError:
        pytest.skip("making a device file needs root")


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (os.mkdir, "is a directory"),
        (_fifo, r"is a FIFO \(named pipe\)"),
        (_socket, "is a socket"),
        (_character_device, "is a character device"),
    ],
)
def test_what_is_not_a_regular_file_is_refused_and_left_alone(tmp_path, make, kind):
    path = tmp_path / "out.html"
    made = make(path)
    before = path.lstat()
    with pytest.raises(OSError, match=f"^{path} {kind}") as error:
        write(path, "page")
    assert ".tmp" not in str(error.value) and "Errno" not in str(error.value)
    after = path.lstat()
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert os.listdir(tmp_path) == ["out.html"]
    (tmp_path / "link.html").symlink_to("out.html")  # and through a link to it
    with pytest.raises(OSError, match=f"link.html {kind}"):
        write(tmp_path / "link.html", "page")
    if made is not None:
        made.close()


def test_errors_name_the_path_never_the_temporary_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"cannot write {tmp_path}/missing/page.html: the folder"):
        write(tmp_path / "missing" / "page.html", "page")
    with pytest.raises(FileNotFoundError, match="the file name is empty"):
        file_target("")
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(OSError, match=f"{tmp_path}/loop"):
        write(tmp_path / "loop", "page")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match=r"'[^']*locked/page.html'") as error:
            write(locked / "page.html", "page")
        assert ".tmp" not in str(error.value)


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "page.html"
    target.write_text("old")
    with pytest.raises(RuntimeError), replacing(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["page.html"]


def test_a_folder_is_replaced_through_a_link_and_leftovers_are_removed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.txt").write_text("old")
    (tmp_path / "link").symlink_to("real")
    for name in (".real.tmp-killed", ".real.old-killed"):  # as an interrupted replacement leaves them
        (tmp_path / name).mkdir()
    assert {path.name for path in folder_leftovers(tmp_path / "link")} == {
        ".real.tmp-killed",
        ".real.old-killed",
    }
    with replacing_folder(tmp_path / "link") as temporary:
        (temporary / "a.txt").write_text("new")
    assert (tmp_path / "link").is_symlink() and (real / "a.txt").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]
