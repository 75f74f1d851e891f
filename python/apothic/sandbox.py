"""Sandboxes, with Modal's names: a workspace on a worker where you run commands, read and
write files, and keep named shell sessions; every handle is resumable (`from_id`, `from_name`,
pickle) from any process.

A sandbox's filesystem paths are relative to its root directory (a leading `/` is the root
itself); each command starts there, or in `workdir`. Nothing can leave the root through the
filesystem API: `..`, absolute paths and symlinks pointing out are refused with
`sandbox.path_escape`. `sb.info()["isolation"]` says how processes are isolated: "bubblewrap"
(namespaces; only the root and the host's read-only system directories are visible) or
"process" (plain processes that see the host as the worker does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apothic import _ids, _loop, _wire
from apothic._client import get_client
from apothic._utils.dual import dual
from apothic.exception import (
    InvalidError,
    NotFoundError,
    SandboxTerminatedError,
    SandboxTimeoutError,
)
from apothic.placement import placements_from_options

if TYPE_CHECKING:
    from apothic.app import App
    from apothic.image import Image

_POLL_S = 50.0  # one long poll; the server caps it below its own timeouts
_READ_ALL_BYTES = 1024 * 1024  # read() asks for this much per round trip (a quarter of the window)
TERMINAL = ("exited", "terminated", "timed_out", "worker_lost", "failed")


def _check_id(sandbox_id: str) -> str:
    if not isinstance(sandbox_id, str) or not _ids.is_valid("sandbox", sandbox_id):
        raise NotFoundError(f"{sandbox_id!r} is not a sandbox id (they look like sb-01J...)",
                            code="sandbox.not_found")
    return sandbox_id


def _returncode(info: dict[str, Any]) -> int | None:
    if info["status"] not in TERMINAL:
        return None
    code = info.get("returncode")
    return code if code is not None else -1  # ended without an exit status of its own


# ---- process streams -------------------------------------------------------------------------
class StreamReader:
    """A process's stdout or stderr: `read()` everything until it ends, or iterate by line."""

    def __init__(self, sandbox_id: str, process_id: str, fd: int, text: bool) -> None:
        self._path = f"/v1/sandboxes/{sandbox_id}/processes/{process_id}/output"
        self._fd = fd
        self._text = text
        self._offset = 0
        self._pending = b""  # read from the server, not yet handed out
        self._eof = False

    def _out(self, data: bytes) -> Any:
        return data.decode("utf-8", "replace") if self._text else data

    async def _fetch(self, min_bytes: int = 1) -> None:
        client = await get_client()
        _, _, body = await client.request("GET", self._path, params={
            "fd": str(self._fd), "offset": str(self._offset), "timeout": str(_POLL_S), "min_bytes": str(min_bytes)})
        header, data = _wire.unpack(body)
        # Reading from our offset acknowledged what came before; the server answers from there.
        self._offset = header["offset"] + len(data)
        self._pending += data
        self._eof = header["eof"]

    async def _read_all(self) -> Any:
        while not self._eof:
            await self._fetch(_READ_ALL_BYTES)
        data, self._pending = self._pending, b""
        return self._out(data)

    async def _next_line(self) -> Any:
        while b"\n" not in self._pending and not self._eof:
            await self._fetch()
        if not self._pending:
            return None
        cut = self._pending.find(b"\n") + 1 or len(self._pending)
        line, self._pending = self._pending[:cut], self._pending[cut:]
        return self._out(line)

    @dual
    async def read(self) -> Any:
        """Everything until the stream ends (str with text=True, else bytes)."""
        return await self._read_all()

    def __iter__(self) -> Iterator[Any]:
        while (line := _loop.run(self._next_line())) is not None:
            yield line

    async def __aiter__(self) -> AsyncIterator[Any]:
        while (line := await _loop.run_async(self._next_line())) is not None:
            yield line


class StreamWriter:
    """A process's stdin: `write()` buffers, `drain()` sends, `write_eof()` closes it (sent by
    the next `drain()`), as Modal's."""

    def __init__(self, sandbox_id: str, process_id: str) -> None:
        self._path = f"/v1/sandboxes/{sandbox_id}/processes/{process_id}/stdin"
        self._buffer = bytearray()
        self._eof = False

    def write(self, data: bytes | bytearray | str) -> None:
        if self._eof:
            raise InvalidError("stdin was closed with write_eof()")
        self._buffer += data.encode() if isinstance(data, str) else bytes(data)

    def write_eof(self) -> None:
        self._eof = True

    @dual
    async def drain(self) -> None:
        client = await get_client()
        data, self._buffer = bytes(self._buffer), bytearray()
        await client.request("POST", self._path, data=data, params={"eof": "1" if self._eof else "0"})


class ContainerProcess:
    """A command running in a sandbox (`sb.exec(...)`)."""

    def __init__(self, sandbox_id: str, process_id: str, text: bool = True) -> None:
        self.sandbox_id = sandbox_id
        self.process_id = process_id
        self.stdin = StreamWriter(sandbox_id, process_id)
        self.stdout = StreamReader(sandbox_id, process_id, 1, text)
        self.stderr = StreamReader(sandbox_id, process_id, 2, text)
        self._returncode: int | None = None
        self.timed_out = False  # killed because its exec timeout passed

    def __repr__(self) -> str:
        return f"ContainerProcess({self.sandbox_id!r}, {self.process_id!r})"

    @property
    def returncode(self) -> int | None:
        return self._returncode

    async def _wait(self, timeout: float) -> int | None:
        client = await get_client()
        result = await client.json("GET", f"/v1/sandboxes/{self.sandbox_id}/processes/{self.process_id}/wait",
                                   params={"timeout": str(timeout)})
        self._returncode, self.timed_out = result["returncode"], result["timed_out"]
        return self._returncode

    @dual
    async def wait(self) -> int:
        """Waits for the process to exit; returns its exit code (negative: killed by that signal)."""
        while (code := await self._wait(_POLL_S)) is None:
            pass
        return code

    @dual
    async def poll(self) -> int | None:
        return await self._wait(0)


# ---- filesystem ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileInfo:
    path: str  # from the sandbox root, starting with '/'
    type: str  # file | directory | symlink | other
    size: int
    mtime: float
    mode: int


class SandboxFilesystem:
    """`sb.filesystem`: files in the sandbox, every path confined to its root."""

    def __init__(self, sandbox_id: str) -> None:
        self._path = f"/v1/sandboxes/{sandbox_id}/filesystem"

    async def _call(self, op: str, path: str, payload: bytes = b"", **options: Any) -> tuple[Any, bytes]:
        if not isinstance(path, str):
            path = str(path)
        client = await get_client()
        _, _, body = await client.request("POST", self._path, data=_wire.pack({"op": op, "path": path, **options},
                                                                              payload))
        header, data = _wire.unpack(body)
        return header.get("result"), data

    @dual
    async def read_bytes(self, path: str) -> bytes:
        return (await self._call("read_bytes", path))[1]

    @dual
    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self._call("read_bytes", path))[1].decode(encoding)

    @dual
    async def write_bytes(self, data: bytes, path: str) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidError("write_bytes takes bytes; use write_text for str")
        await self._call("write_bytes", path, bytes(data))

    @dual
    async def write_text(self, data: str, path: str, encoding: str = "utf-8") -> None:
        if not isinstance(data, str):
            raise InvalidError("write_text takes a str; use write_bytes for bytes")
        await self._call("write_bytes", path, data.encode(encoding))

    @dual
    async def list_files(self, path: str = "/") -> list[FileInfo]:
        result, _ = await self._call("list_files", path)
        return [FileInfo(**entry) for entry in result]

    @dual
    async def stat(self, path: str) -> FileInfo:
        result, _ = await self._call("stat", path)
        return FileInfo(**result)

    @dual
    async def make_directory(self, path: str, *, create_parents: bool = True) -> None:
        await self._call("make_directory", path, create_parents=create_parents)

    @dual
    async def remove(self, path: str, *, recursive: bool = False) -> None:
        await self._call("remove", path, recursive=recursive)

    @dual
    async def copy_from_local(self, local_path: str | Path, remote_path: str) -> None:
        await self._call("write_bytes", remote_path, Path(local_path).read_bytes())

    @dual
    async def copy_to_local(self, remote_path: str, local_path: str | Path) -> None:
        _, data = await self._call("read_bytes", remote_path)
        Path(local_path).write_bytes(data)


# ---- sessions --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionResult:
    stdout: str
    stderr: str
    returncode: int


class SandboxSession:
    """A named, persistent shell in a sandbox: `cd` and `export` in one `run()` hold for the
    next, and any process that names the session reaches the same shell. A command that exits
    the shell ends the session; a later `sb.session(name)` starts a fresh one."""

    def __init__(self, sandbox_id: str, name: str) -> None:
        self.sandbox_id = sandbox_id
        self.name = name

    def __repr__(self) -> str:
        return f"SandboxSession({self.sandbox_id!r}, {self.name!r})"

    @dual
    async def run(self, command: str, *, timeout: float | None = None) -> SessionResult:
        """Runs one shell command line in the session; its stdin is empty. With `timeout`, a
        command still running then is killed with its shell (ExecTimeoutError)."""
        if not isinstance(command, str):
            raise InvalidError("a session runs one shell command line, as a str")
        client = await get_client()
        result = await client.json("POST", f"/v1/sandboxes/{self.sandbox_id}/sessions/{self.name}",
                                   json={"cmd": command, "timeout": timeout, "create": False})
        return SessionResult(result["stdout"], result["stderr"], result["returncode"])


# ---- sandboxes -------------------------------------------------------------------------------
class Sandbox:
    """A handle to one sandbox. It holds only the id, so it pickles and works in any process."""

    def __init__(self, sandbox_id: str, info: dict[str, Any] | None = None) -> None:
        self.object_id = _check_id(sandbox_id)
        self._info = info or {}

    def __repr__(self) -> str:
        return f"Sandbox({self.object_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sandbox) and other.object_id == self.object_id

    def __hash__(self) -> int:
        return hash(self.object_id)

    def __getstate__(self) -> dict[str, Any]:
        return {"object_id": self.object_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.object_id, self._info = state["object_id"], {}

    @dual
    async def create(
        cls,
        *args: str,
        app: App | None = None,
        name: str | None = None,
        image: Image | None = None,
        timeout: float = 300,
        workdir: str | None = None,
        env: dict[str, str] | None = None,
        cpu: float | None = None,
        memory: int | None = None,
        gpu: str | list[str] | None = None,
        gpu_count: int | None = None,
        min_vram_gb: float | None = None,
        geolocation: str | list[str] | None = None,
        max_cost_per_hour_usd: float | None = None,
        offer_filters: dict[str, Any] | None = None,
    ) -> Sandbox:
        """Starts a sandbox on a worker. With `*args`, that command runs in it and the sandbox
        ends when it exits; without, it stays up until `terminate()` or its `timeout` (seconds).
        `cpu` and `memory` (MiB) choose a worker that has them, as for functions; they are not
        enforced as limits on the processes. `image` may only be the worker's own environment
        (`Image.debian_slim()`) until images are built."""
        if app is None:
            raise InvalidError("Sandbox.create needs app=: a sandbox belongs to an app (apothic.App('name'))")
        app_name = app.name or app.app_id
        if not app_name:
            raise InvalidError("the sandbox's app needs a name (apothic.App('name')) or must be running")
        if not all(isinstance(a, str) for a in args):
            raise InvalidError("a sandbox's command is strings: Sandbox.create('python', '-c', '...')")
        if image is not None:
            image.check_supported()
        placements = placements_from_options(
            "Sandbox.create", gpu=gpu, gpu_count=gpu_count, min_vram_gb=min_vram_gb, geolocation=geolocation,
            max_cost_per_hour_usd=max_cost_per_hour_usd, offer_filters=offer_filters)
        client = await get_client()
        info = await client.json("POST", "/v1/sandboxes", json={
            "app_name": app_name, "app_id": app.app_id, "name": name, "cmd": list(args) or None,
            "workdir": workdir, "env": env, "timeout": timeout, "cpu": cpu, "memory": memory,
            "placements": [p.spec() for p in placements] or None})
        return cls(info["id"], info)

    @dual
    async def from_id(cls, sandbox_id: str) -> Sandbox:
        client = await get_client()
        info = await client.json("GET", f"/v1/sandboxes/{_check_id(sandbox_id)}")
        return cls(info["id"], info)

    @dual
    async def from_name(cls, app_name: str, name: str) -> Sandbox:
        """The running sandbox called `name` in app `app_name`."""
        client = await get_client()
        rows = await client.json("GET", "/v1/sandboxes", params={"app": app_name, "name": name})
        running = [r for r in rows if r["status"] not in TERMINAL]
        if not running:
            raise NotFoundError(f"app {app_name!r} has no running sandbox named {name!r}", code="sandbox.not_found")
        return cls(running[0]["id"], running[0])

    @dual
    async def info(self) -> dict[str, Any]:
        """The sandbox's record: status, isolation, worker, created_at, timeout, returncode, reason."""
        client = await get_client()
        self._info = await client.json("GET", f"/v1/sandboxes/{self.object_id}")
        return self._info

    @property
    def returncode(self) -> int | None:
        """As of the last `poll()`, `wait()` or `info()`: the command's exit code, -1 for a
        sandbox that ended without one (terminated, timed out, worker lost), None while running."""
        return _returncode(self._info) if self._info else None

    @dual
    async def poll(self) -> int | None:
        return _returncode(await self.info.aio())

    @dual
    async def wait(self, raise_on_termination: bool = True) -> int:
        """Waits for the sandbox to end; returns its returncode. Raises SandboxTimeoutError if
        its timeout ended it, SandboxTerminatedError if its worker was lost (with
        `raise_on_termination`); a `terminate()` you asked for returns normally."""
        client = await get_client()
        while True:
            info = await client.json("GET", f"/v1/sandboxes/{self.object_id}/wait", params={"timeout": str(_POLL_S)})
            self._info = info
            if info["status"] in TERMINAL:
                break
        if raise_on_termination and info["status"] == "timed_out":
            raise SandboxTimeoutError(f"sandbox {self.object_id} timed out: {info.get('reason')}")
        if raise_on_termination and info["status"] in ("worker_lost", "failed"):
            raise SandboxTerminatedError(f"sandbox {self.object_id} ended: {info['status']}: {info.get('reason')}")
        code = _returncode(info)
        return -1 if code is None else code

    @dual
    async def terminate(self, *, wait: bool = False) -> int | None:
        client = await get_client()
        self._info = await client.json("POST", f"/v1/sandboxes/{self.object_id}/terminate")
        return _returncode(self._info) if wait else None

    @dual
    async def exec(self, *args: str, workdir: str | None = None, env: dict[str, str] | None = None,
                   timeout: float | None = None, text: bool = True) -> ContainerProcess:
        """Starts a command in the sandbox. Read its output: a process whose output nobody reads
        stops once 4 MiB per stream waits unread, as under Modal. With `timeout`, the command is
        killed then (`returncode` -9, `timed_out` True)."""
        if not args or not all(isinstance(a, str) for a in args):
            raise InvalidError("exec takes a command as strings: sb.exec('ls', '-l')")
        client = await get_client()
        result = await client.json("POST", f"/v1/sandboxes/{self.object_id}/processes", json={
            "args": list(args), "workdir": workdir, "env": env, "timeout": timeout})
        return ContainerProcess(self.object_id, result["process"], text=text)

    @property
    def stdout(self) -> StreamReader:
        """The output of the sandbox's own command (`Sandbox.create(*args)`)."""
        return self._main.stdout

    @property
    def stderr(self) -> StreamReader:
        return self._main.stderr

    @property
    def stdin(self) -> StreamWriter:
        return self._main.stdin

    @property
    def _main(self) -> ContainerProcess:
        main = self.__dict__.get("_main_process")
        if main is None:
            main = self.__dict__["_main_process"] = ContainerProcess(self.object_id, "main")
        return main

    @property
    def filesystem(self) -> SandboxFilesystem:
        return SandboxFilesystem(self.object_id)

    @dual
    async def session(self, name: str, *, create_if_missing: bool = True) -> SandboxSession:
        """The named session: created on first use, reattached by any later call or process.
        With `create_if_missing=False`, a name with no live shell is `sandbox.session_not_found`."""
        client = await get_client()
        await client.request("POST", f"/v1/sandboxes/{self.object_id}/sessions/{name}",
                             json={"create": create_if_missing})
        return SandboxSession(self.object_id, name)

