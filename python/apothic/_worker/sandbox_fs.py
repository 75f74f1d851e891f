"""A sandbox's filesystem, confined to its root directory.

Every path is taken relative to the root (a leading `/` names the root itself, as inside a
container). Paths are resolved one component at a time with `openat(..., O_NOFOLLOW)` from a
file descriptor of the root, never by handing a joined string to the kernel: a process inside
the sandbox that swaps a directory for a symlink between our check and our use cannot make us
follow it. Symlinks are resolved by hand within the root, so a link that points inside works,
and one that points out (by `..`, or by an absolute target outside the root) is refused with
`sandbox.path_escape`, whoever created it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat as stat_module
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apothic.exception import (
    Error,
    InvalidError,
    SandboxFilesystemError,
    SandboxFilesystemNotFoundError,
    SandboxPathEscapeError,
)

MAX_FILE_BYTES = 64 * 1024 * 1024
_MAX_LINKS = 40  # as the kernel's ELOOP limit
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _escape(path: str) -> SandboxPathEscapeError:
    return SandboxPathEscapeError(f"path {path!r} leaves the sandbox root")


def _os_error(path: str, e: OSError) -> Error:
    if isinstance(e, FileNotFoundError):
        return SandboxFilesystemNotFoundError(f"no such file or directory in the sandbox: {path!r}")
    return SandboxFilesystemError(f"{path!r}: {e.strerror or e}")


@dataclass(frozen=True)
class _Resolved:
    parent_fd: int  # an open directory inside the root; the caller closes it
    name: str  # the last component ('' when the path is the root itself)
    display: str  # the path relative to the root, for messages and results


class ConfinedFS:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_real = os.path.realpath(root)

    # ---- resolution ------------------------------------------------------------------------
    def _split(self, path: str) -> list[str]:
        if not isinstance(path, str) or "\x00" in path:
            raise InvalidError("a sandbox path is a string without NUL bytes")
        parts: list[str] = []
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    raise _escape(path)
                parts.pop()
            else:
                parts.append(part)
        return parts

    def _link_parts(self, original: str, target: str) -> tuple[bool, list[str]]:
        """A symlink's target as (from the root?, components). An absolute target counts only
        where it names a place under the root's real path (how processes inside see it)."""
        if target.startswith("/"):
            prefix = self._root_real.rstrip("/") + "/"
            if target.rstrip("/") == self._root_real:
                return True, []
            if not target.startswith(prefix):
                raise _escape(original)
            return True, [p for p in target[len(prefix):].split("/") if p not in ("", ".")]
        return False, [p for p in target.split("/") if p not in ("", ".")]

    def _resolve(self, path: str, *, follow_last: bool) -> _Resolved:
        """Opens the directory that holds `path`'s last component, following symlinks inside
        the root only. The returned parent fd must be closed by the caller."""
        todo = self._split(path)
        todo.reverse()  # a stack: the next component is at the end
        stack: list[int] = []  # open fds of the directories walked, root first
        names: list[str] = []
        links = 0
        try:
            stack.append(os.open(self.root, _DIR_FLAGS))
            while todo:
                part = todo.pop()
                if part == "..":
                    if len(stack) == 1:
                        raise _escape(path)
                    os.close(stack.pop())
                    names.pop()
                    continue
                last = not todo
                try:
                    st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
                except FileNotFoundError:
                    if last:
                        return _Resolved(stack.pop(), part, "/".join([*names, part]))
                    raise
                if stat_module.S_ISLNK(st.st_mode) and (follow_last or not last):
                    links += 1
                    if links > _MAX_LINKS:
                        raise SandboxFilesystemError(f"{path!r}: too many levels of symbolic links")
                    absolute, target = self._link_parts(path, os.readlink(part, dir_fd=stack[-1]))
                    if absolute:
                        while len(stack) > 1:
                            os.close(stack.pop())
                        names.clear()
                    todo.extend(reversed(target))
                    continue
                if last:
                    return _Resolved(stack.pop(), part, "/".join([*names, part]))
                if not stat_module.S_ISDIR(st.st_mode):
                    raise SandboxFilesystemError(f"{path!r}: {part!r} is not a directory")
                stack.append(os.open(part, _DIR_FLAGS, dir_fd=stack[-1]))
                names.append(part)
            # The path named a directory we walked into (or the root): hand back that directory
            # itself, reopened from its parent, or the root with no name.
            if len(stack) == 1:
                return _Resolved(stack.pop(), "", "")
            os.close(stack.pop())
            return _Resolved(stack.pop(), names[-1], "/".join(names))
        except OSError as e:
            raise _os_error(path, e) from None
        finally:
            for fd in stack:
                os.close(fd)

    @contextlib.contextmanager
    def _at(self, path: str, *, follow_last: bool = True) -> Iterator[_Resolved]:
        resolved = self._resolve(path, follow_last=follow_last)
        try:
            yield resolved
        finally:
            os.close(resolved.parent_fd)

    @contextlib.contextmanager
    def _dir(self, path: str) -> Iterator[tuple[int, str]]:
        """An open fd of the directory `path` names."""
        with self._at(path) as r:
            try:
                fd = os.open(r.name, _DIR_FLAGS, dir_fd=r.parent_fd) if r.name else os.dup(r.parent_fd)
            except OSError as e:
                raise _os_error(path, e) from None
            try:
                yield fd, r.display
            finally:
                os.close(fd)

    # ---- operations --------------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        with self._at(path) as r:
            if not r.name:
                raise SandboxFilesystemError(f"{path!r} is a directory")
            try:
                fd = os.open(r.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=r.parent_fd)
            except OSError as e:
                raise _os_error(path, e) from None
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat_module.S_ISREG(st.st_mode):
                    kind = "a directory" if stat_module.S_ISDIR(st.st_mode) else "not a regular file"
                    raise SandboxFilesystemError(f"{path!r} is {kind}")
                if st.st_size > MAX_FILE_BYTES:
                    raise InvalidError(f"{path!r} is {st.st_size} bytes; files of at most {MAX_FILE_BYTES} bytes "
                                       "travel in one piece", code="sandbox.file_too_large")
                return f.read(MAX_FILE_BYTES + 1)

    def write_bytes(self, data: bytes, path: str) -> None:
        if len(data) > MAX_FILE_BYTES:
            raise InvalidError(f"{len(data)} bytes; files of at most {MAX_FILE_BYTES} bytes travel in one piece",
                               code="sandbox.file_too_large")
        with self._at(path) as r:
            if not r.name:
                raise SandboxFilesystemError(f"{path!r} is a directory")
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            try:
                fd = os.open(r.name, flags, 0o644, dir_fd=r.parent_fd)
            except OSError as e:
                raise _os_error(path, e) from None
            with os.fdopen(fd, "wb") as f:
                if not stat_module.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise SandboxFilesystemError(f"{path!r} is not a regular file")
                f.write(data)

    def list_files(self, path: str) -> list[dict[str, Any]]:
        with self._dir(path) as (fd, display):
            entries = []
            for name in sorted(os.listdir(fd)):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while we listed
                entries.append(_entry("/".join(p for p in (display, name) if p), st))
            return entries

    def stat(self, path: str) -> dict[str, Any]:
        with self._at(path) as r:
            try:
                st = os.stat(r.name, dir_fd=r.parent_fd, follow_symlinks=False) if r.name else os.fstat(r.parent_fd)
            except OSError as e:
                raise _os_error(path, e) from None
            return _entry(r.display, st)

    def make_directory(self, path: str, *, create_parents: bool = True) -> None:
        parts = self._split(path)
        if not parts:
            return  # the root exists
        if not create_parents:
            with self._at(path) as r:
                try:
                    os.mkdir(r.name, 0o755, dir_fd=r.parent_fd)
                except FileExistsError:
                    if not stat_module.S_ISDIR(os.stat(r.name, dir_fd=r.parent_fd, follow_symlinks=False).st_mode):
                        raise SandboxFilesystemError(f"{path!r} exists and is not a directory") from None
                except OSError as e:
                    raise _os_error(path, e) from None
            return
        for depth in range(1, len(parts) + 1):
            self.make_directory("/".join(parts[:depth]), create_parents=False)

    def remove(self, path: str, *, recursive: bool = False) -> None:
        with self._at(path, follow_last=False) as r:
            if not r.name:
                raise InvalidError("the sandbox root itself cannot be removed")
            try:
                st = os.stat(r.name, dir_fd=r.parent_fd, follow_symlinks=False)
                if not stat_module.S_ISDIR(st.st_mode):
                    os.unlink(r.name, dir_fd=r.parent_fd)  # a symlink goes, never what it names
                elif recursive:
                    shutil.rmtree(r.name, dir_fd=r.parent_fd)  # fd-based: follows no symlink
                else:
                    os.rmdir(r.name, dir_fd=r.parent_fd)
            except OSError as e:
                raise _os_error(path, e) from None


def _entry(path: str, st: os.stat_result) -> dict[str, Any]:
    mode = st.st_mode
    kind = ("directory" if stat_module.S_ISDIR(mode) else "file" if stat_module.S_ISREG(mode)
            else "symlink" if stat_module.S_ISLNK(mode) else "other")
    return {"path": "/" + path, "type": kind, "size": st.st_size, "mtime": st.st_mtime,
            "mode": stat_module.S_IMODE(mode)}
