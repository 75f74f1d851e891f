"""Every filesystem call of a sandbox stays inside its root: `..`, absolute paths and symlinks
(made by anyone, pointing out by absolute or relative target) cannot leave it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apothic._worker.sandbox_fs import ConfinedFS
from apothic.exception import SandboxFilesystemNotFoundError, SandboxPathEscapeError

SECRET = b"outside the sandbox"


@pytest.fixture
def world(tmp_path: Path) -> tuple[ConfinedFS, Path]:
    """A sandbox root beside an `outside` directory, with every kind of link pointing out."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    (outside / "dir").mkdir()
    (root / "inside").mkdir()
    (root / "inside" / "file").write_bytes(b"in")
    os.symlink(outside, root / "link_abs")  # absolute target, out
    os.symlink("../outside", root / "link_rel")  # relative target, out
    os.symlink(outside / "secret", root / "link_file")  # straight at the secret
    os.symlink("../../outside", root / "inside" / "deep_rel")  # out from one level down
    os.symlink("/", root / "link_slash")
    os.symlink("inside", root / "link_in")  # stays inside: allowed
    return ConfinedFS(root), outside


def _snapshot(outside: Path) -> list[tuple[str, bytes | None]]:
    return sorted((str(p.relative_to(outside)), p.read_bytes() if p.is_file() else None) for p in outside.rglob("*"))


# Paths that leave the root. A last component that is itself a link counts only for calls that
# follow it; every call must refuse the rest.
ESCAPES_THROUGH = ["../outside/secret", "inside/../../outside/secret", "link_abs/secret", "link_rel/secret",
                   "inside/deep_rel/secret", "link_slash/etc/passwd", "link_in/../../outside/secret"]
ESCAPES_AT_LAST = ["link_file", "link_abs", "link_rel", "inside/deep_rel", "link_slash"]

CALLS: dict[str, Callable[[ConfinedFS, str], Any]] = {
    "read_bytes": lambda fs, p: fs.read_bytes(p),
    "write_bytes": lambda fs, p: fs.write_bytes(b"pwned", p),
    "list_files": lambda fs, p: fs.list_files(p),
    "stat": lambda fs, p: fs.stat(p),
    "make_directory": lambda fs, p: fs.make_directory(p + "/new"),
    "make_directory_no_parents": lambda fs, p: fs.make_directory(p, create_parents=False),
    "remove": lambda fs, p: fs.remove(p),
    "remove_recursive": lambda fs, p: fs.remove(p, recursive=True),
}
FOLLOWS_LAST = {"read_bytes", "write_bytes", "list_files", "stat", "make_directory"}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("path", ESCAPES_THROUGH)
def test_every_call_refuses_a_path_through_the_way_out(world: tuple[ConfinedFS, Path], call: str,
                                                        path: str) -> None:
    fs, outside = world
    before = _snapshot(outside)
    with pytest.raises(SandboxPathEscapeError) as info:
        CALLS[call](fs, path)
    assert info.value.code == "sandbox.path_escape"
    assert _snapshot(outside) == before


@pytest.mark.parametrize("call", sorted(FOLLOWS_LAST))
@pytest.mark.parametrize("path", ESCAPES_AT_LAST)
def test_calls_that_follow_a_link_refuse_one_pointing_out(world: tuple[ConfinedFS, Path], call: str,
                                                          path: str) -> None:
    fs, outside = world
    before = _snapshot(outside)
    with pytest.raises(SandboxPathEscapeError):
        CALLS[call](fs, path)
    assert _snapshot(outside) == before


@pytest.mark.parametrize("path", ESCAPES_AT_LAST)
def test_remove_takes_away_the_link_never_what_it_names(world: tuple[ConfinedFS, Path], path: str) -> None:
    fs, outside = world
    before = _snapshot(outside)
    fs.remove(path, recursive=True)
    assert not os.path.lexists(fs.root / path)
    assert _snapshot(outside) == before


@pytest.mark.parametrize("call", sorted(CALLS))
def test_an_absolute_path_names_a_place_under_the_root(world: tuple[ConfinedFS, Path], call: str) -> None:
    """The host's own absolute path of the secret is, inside the sandbox, just a missing path."""
    fs, outside = world
    before = _snapshot(outside)
    host_path = str(outside / "secret")
    if call.startswith("make_directory"):
        CALLS[call](fs, host_path) if call == "make_directory" else fs.make_directory(host_path)
        assert (fs.root / host_path.lstrip("/")).is_dir()
    elif call == "write_bytes":
        with pytest.raises(SandboxFilesystemNotFoundError):  # its parent does not exist under the root
            CALLS[call](fs, host_path)
    else:
        with pytest.raises(SandboxFilesystemNotFoundError):
            CALLS[call](fs, host_path)
    assert _snapshot(outside) == before


def test_links_that_stay_inside_work(world: tuple[ConfinedFS, Path]) -> None:
    fs, _ = world
    assert fs.read_bytes("link_in/file") == b"in"
    assert fs.read_bytes("/inside/../link_in/file") == b"in"
    fs.write_bytes(b"new", "link_in/other")
    assert (fs.root / "inside" / "other").read_bytes() == b"new"
    assert [e["path"] for e in fs.list_files("link_in")] == ["/inside/deep_rel", "/inside/file", "/inside/other"]
    assert fs.stat("link_in")["type"] == "directory"
    os.symlink(str(fs.root / "inside" / "file"), fs.root / "abs_in")  # absolute, but under the root
    assert fs.read_bytes("abs_in") == b"in"


def test_the_root_cannot_be_left_or_removed(world: tuple[ConfinedFS, Path]) -> None:
    fs, _ = world
    assert fs.stat("/")["type"] == "directory" and fs.stat("")["path"] == "/"
    with pytest.raises(SandboxPathEscapeError):
        fs.stat("..")
    with pytest.raises(Exception, match="root itself"):
        fs.remove("/", recursive=True)
    assert fs.root.is_dir()


def test_link_loops_end_with_an_error(world: tuple[ConfinedFS, Path]) -> None:
    fs, _ = world
    os.symlink("loop_b", fs.root / "loop_a")
    os.symlink("loop_a", fs.root / "loop_b")
    with pytest.raises(Exception, match="too many levels"):
        fs.read_bytes("loop_a")


def test_special_files_are_not_read(world: tuple[ConfinedFS, Path]) -> None:
    """A FIFO made inside would block a reader forever: it is refused, not opened for reading."""
    fs, _ = world
    os.mkfifo(fs.root / "fifo")
    with pytest.raises(Exception, match="not a regular file"):
        fs.read_bytes("fifo")
