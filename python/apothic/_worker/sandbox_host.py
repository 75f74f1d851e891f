"""The agent's side of sandboxes: real processes under a per-sandbox root directory.

The control plane speaks to it in `sb_*` frames on the worker session's control stream (see
`handle`): down `sb_create`, `sb_exec`, `sb_fs`, `sb_session`, `sb_terminate`; up `sb_reply`
(the answer to any request that carries `req`) and `sb_exit`. A process's I/O does not ride the
control stream, where a big output would sit in front of function results: the agent opens two
session streams per process (headers `SANDBOX_HEADERS` + "<sandbox> <process> <fd>"), fd 1
carrying stdout up and stdin down, fd 2 stderr. The session's per-stream flow control, credited
by the control plane only as the SDK reads, holds a process whose output nobody reads on its
pipe, as under Modal, without holding back anything else.

Isolation is bubblewrap where the host has a working `bwrap` (its own mount, pid, ipc and uts
namespaces; the host's /usr and /etc read-only; only the sandbox root writable, bound at its own
path so that paths read the same inside and out), else plain processes ("process"): then the
filesystem API is still confined to the root, but processes see the host as the agent does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apothic._bridge.session import SANDBOX_HEADERS, SessionStream
from apothic._worker.sandbox_fs import ConfinedFS
from apothic.exception import Error, ExecTimeoutError, InvalidError, NotFoundError, SandboxTerminatedError

log = logging.getLogger("apothic.sandbox")

_CHUNK = 64 * 1024
_BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Send = Callable[[dict[str, Any], bytes], None]
OpenStream = Callable[[bytes], SessionStream]


def _bwrap_works(bwrap: str) -> bool:
    try:
        result = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--", "true"],
                                capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def detect_isolation() -> str:
    """'bubblewrap' where `bwrap` exists and can make namespaces here, else 'process'.
    APOTHIC_SANDBOX_ISOLATION=process forces plain processes (bubblewrap cannot be forced)."""
    wanted = os.environ.get("APOTHIC_SANDBOX_ISOLATION", "auto")
    if wanted == "process":
        return "process"
    bwrap = shutil.which("bwrap")
    if bwrap is None or not _bwrap_works(bwrap):
        if wanted == "bubblewrap":
            log.warning("APOTHIC_SANDBOX_ISOLATION=bubblewrap but bwrap is missing or cannot run here")
        return "process"
    return "bubblewrap"


def _die_with_agent() -> None:
    """Runs in the child before exec: the kernel kills it if the agent dies (PR_SET_PDEATHSIG).
    It reaches only that one process (and bwrap 0.8.0 drops it when it changes credentials:
    measured, bwrap outlived a SIGKILLed agent), so the lifeline watchdog (`_start`) does the
    rest; this covers the moment before the watchdog runs."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _bwrap_prefix(root: Path) -> list[str]:
    args = ["bwrap", "--unshare-all", "--share-net", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        target = os.path.join("/", link)
        if os.path.islink(target):
            args += ["--symlink", os.readlink(target), target]
        elif os.path.isdir(target):
            args += ["--ro-bind", target, target]
    return [*args, "--bind", str(root), str(root)]


@dataclass(eq=False)
class _Proc:
    id: str
    proc: asyncio.subprocess.Process
    lifeline: int  # see SandboxHost._start
    streams: list[SessionStream]  # fd 1 (stdout up, stdin down), fd 2 (stderr)
    timed_out: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


@dataclass(eq=False)
class _Session:
    """A persistent shell. Each command runs in the shell itself (`eval`), so `cd` and `export`
    carry to the next; its end is marked on both pipes by a NUL and a random token that user
    output will not contain, followed on stdout by the exit status."""

    name: str
    proc: asyncio.subprocess.Process
    lifeline: int
    token: str
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


@dataclass(eq=False)
class _Sandbox:
    id: str
    root: Path
    fs: ConfinedFS
    env: dict[str, str]
    workdir: Path
    procs: dict[str, _Proc] = field(default_factory=dict)
    sessions: dict[str, _Session] = field(default_factory=dict)
    ended: bool = False


class SandboxHost:
    def __init__(self, home: Path, send: Send, open_stream: OpenStream) -> None:
        self.base = home / "worker" / "sandboxes"
        self.send = send
        self.open_stream = open_stream
        self.isolation = detect_isolation()
        self.sandboxes: dict[str, _Sandbox] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- frames ------------------------------------------------------------------------------
    def handle(self, header: dict[str, Any], payload: bytes) -> None:
        """Takes one `sb_*` frame. Never blocks the session: requests run as tasks."""
        task = asyncio.create_task(self._request(header["t"], header, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(self, kind: str, header: dict[str, Any], payload: bytes) -> None:
        reply: dict[str, Any] = {"t": "sb_reply", "req": header.get("req"), "ok": True}
        body = b""
        try:
            if kind == "sb_create":
                reply["isolation"] = await self._create(header)
            elif kind == "sb_exec":
                await self._exec(header)
            elif kind == "sb_fs":
                result, body = await self._fs(header, payload)
                reply["result"] = result
            elif kind == "sb_session":
                reply |= await self._session(header)
            elif kind == "sb_terminate":
                await self.terminate(header["sandbox"])
            else:
                raise InvalidError(f"unknown sandbox frame {kind!r}")
        except Error as e:
            reply |= {"ok": False, "error": {"code": e.code, "message": e.message}}
        except Exception as e:
            log.exception("sandbox request %s failed", kind)
            reply |= {"ok": False, "error": {"code": "internal", "message": f"{type(e).__name__}: {e}"}}
        self.send(reply, body)

    def _get(self, sandbox_id: str) -> _Sandbox:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None or sb.ended:
            raise SandboxTerminatedError(f"sandbox {sandbox_id} is not running on this worker")
        return sb

    # ---- lifecycle ---------------------------------------------------------------------------
    async def _create(self, header: dict[str, Any]) -> str:
        sandbox_id = header["sandbox"]
        root = self.base / sandbox_id / "root"
        root.mkdir(parents=True, exist_ok=True)
        fs = ConfinedFS(root)
        workdir = header.get("workdir") or "/"
        await asyncio.to_thread(fs.make_directory, workdir)
        sb = _Sandbox(id=sandbox_id, root=root, fs=fs, env=dict(header.get("env") or {}),
                      workdir=self._host_path(fs, workdir))
        self.sandboxes[sandbox_id] = sb
        if header.get("cmd"):
            try:
                await self._spawn(sb, "main", header["cmd"], None, {}, None)
            except BaseException:
                await self.terminate(sandbox_id)
                raise
        return self.isolation

    @staticmethod
    def _host_path(fs: ConfinedFS, path: str) -> Path:
        """Where a sandbox directory is on this host, after checking that it stays inside."""
        info = fs.stat(path)
        if info["type"] != "directory":
            raise InvalidError(f"workdir {path!r} is not a directory in the sandbox")
        return fs.root / info["path"].lstrip("/")

    async def terminate(self, sandbox_id: str) -> None:
        sb = self.sandboxes.pop(sandbox_id, None)
        if sb is None:
            return
        sb.ended = True
        for p in [*sb.procs.values(), *sb.sessions.values()]:
            _kill(p.proc)
            _close(p)
        for proc in sb.procs.values():
            _reset(proc.streams)  # what the control plane has not taken of their output goes too
        waits = [p.proc.wait() for p in sb.procs.values()] + [s.proc.wait() for s in sb.sessions.values()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 5)
        for task in [t for p in sb.procs.values() for t in p.tasks] + [t for s in sb.sessions.values()
                                                                       for t in s.tasks]:
            task.cancel()
        await asyncio.to_thread(shutil.rmtree, sb.root.parent, True)

    def kill_all(self) -> None:
        """Synchronous last resort (session lost, agent stopping): every process dies now."""
        for sb in list(self.sandboxes.values()):
            sb.ended = True
            for p in [*sb.procs.values(), *sb.sessions.values()]:
                _kill(p.proc)
                _close(p)
            for proc in sb.procs.values():
                _reset(proc.streams)
            shutil.rmtree(sb.root.parent, ignore_errors=True)
        self.sandboxes.clear()

    # ---- processes ---------------------------------------------------------------------------
    async def _start(self, sb: _Sandbox, args: list[str], cwd: Path,
                     env: dict[str, str]) -> tuple[asyncio.subprocess.Process, int]:
        """Starts `args` in the sandbox; returns the process and its lifeline: the write end of a
        pipe that only this agent holds. A watchdog shell beside the command waits for that pipe
        to close (the agent closed it, or died, even by SIGKILL) and then kills everything the
        command started: its process group, or under bubblewrap its whole pid namespace."""
        if not _findable(args[0], cwd, env["PATH"]):
            raise NotFoundError(f"no such command in the sandbox: {args[0]!r}", code="sandbox.process_not_found")
        read_end, lifeline = os.pipe()
        target = "-1" if self.isolation == "bubblewrap" else "0"
        # dash takes only one-digit fds in redirections, so the pipe is reopened by its /proc path.
        watchdog = (f"(read -r _ </proc/self/fd/{read_end}; kill -KILL {target}) </dev/null >/dev/null 2>&1 & "
                    'exec "$@"')
        argv = ["sh", "-c", watchdog, "sh", *args]
        if self.isolation == "bubblewrap":
            argv = [*_bwrap_prefix(sb.root), "--chdir", str(cwd), "--", *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                cwd=cwd, env=env, start_new_session=True, pass_fds=(read_end,), preexec_fn=_die_with_agent)
        except BaseException:
            os.close(lifeline)
            raise
        finally:
            os.close(read_end)
        return proc, lifeline

    def _env(self, sb: _Sandbox, extra: dict[str, str]) -> dict[str, str]:
        # Never the agent's own environment: it holds the worker's join token.
        return {"PATH": _BASE_PATH, "HOME": str(sb.root), "LANG": "C.UTF-8",
                "APOTHIC_SANDBOX_ID": sb.id, "APOTHIC_SANDBOX_ROOT": str(sb.root)} | sb.env | extra

    async def _exec(self, header: dict[str, Any]) -> None:
        sb = self._get(header["sandbox"])
        args = header.get("args") or []
        if not args or not all(isinstance(a, str) for a in args):
            raise InvalidError("exec needs a command: one or more strings")
        cwd = self._host_path(sb.fs, header["workdir"]) if header.get("workdir") else sb.workdir
        await self._spawn(sb, header["proc"], args, cwd, header.get("env") or {}, header.get("timeout"))

    async def _spawn(self, sb: _Sandbox, proc_id: str, args: list[str], cwd: Path | None,
                     env: dict[str, str], timeout: float | None) -> None:
        proc, lifeline = await self._start(sb, args, cwd or sb.workdir, self._env(sb, env))
        try:
            streams = [self.open_stream(SANDBOX_HEADERS + f"{sb.id} {proc_id} {fd}".encode()) for fd in (1, 2)]
        except BaseException:
            _kill(proc)
            os.close(lifeline)
            raise
        p = _Proc(id=proc_id, proc=proc, lifeline=lifeline, streams=streams)
        sb.procs[proc_id] = p
        p.tasks = [asyncio.create_task(self._pump(proc.stdout, streams[0])),
                   asyncio.create_task(self._pump(proc.stderr, streams[1]))]
        p.tasks += [asyncio.create_task(self._watch(sb, p, timeout)),
                    asyncio.create_task(self._feed_stdin(p, streams[0]))]

    @staticmethod
    async def _pump(pipe: asyncio.StreamReader | None, stream: SessionStream) -> None:
        assert pipe is not None
        try:
            while chunk := await pipe.read(_CHUNK):
                stream.write(chunk)
                # Waits while the stream's window is full, that is while the SDK reads nothing:
                # the pipe then fills and the process blocks on it.
                await stream.drain()
            stream.close()
        except Error:
            pass  # the stream was reset (sandbox terminated) or the session ended: no reader is left

    @staticmethod
    async def _feed_stdin(p: _Proc, stream: SessionStream) -> None:
        """What the control plane writes down the fd 1 stream goes to the process's stdin; its
        end of that stream (b"") closes stdin. Reading only as fast as the pipe takes it is what
        holds back a writer whose process does not read."""
        stdin = p.proc.stdin
        assert stdin is not None
        try:
            while data := await stream.read():
                if stdin.is_closing():
                    continue  # like writing to a closed pipe: its data has no reader
                try:
                    stdin.write(data)
                    await stdin.drain()
                except (ConnectionError, RuntimeError):
                    stdin.close()
        except Error:
            pass  # reset or session ended
        finally:
            with contextlib.suppress(ConnectionError, RuntimeError):
                stdin.close()

    async def _watch(self, sb: _Sandbox, p: _Proc, timeout: float | None) -> None:
        try:
            await asyncio.wait_for(p.proc.wait(), timeout)
        except TimeoutError:
            p.timed_out = True
            _kill(p.proc)
            await p.proc.wait()
        _close(p)  # whatever the command left running goes with it
        # The control plane takes the exit as final once both output streams have ended, so it
        # goes after the pumps have put everything on them (or given up waiting for a reader).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*p.tasks[:2], return_exceptions=True), 5)
        self.send({"t": "sb_exit", "sandbox": sb.id, "proc": p.id, "returncode": p.proc.returncode,
                   "timed_out": p.timed_out}, b"")

    # ---- filesystem --------------------------------------------------------------------------
    async def _fs(self, header: dict[str, Any], payload: bytes) -> tuple[Any, bytes]:
        fs = self._get(header["sandbox"]).fs
        op, path = header["op"], header.get("path", "")
        if op == "read_bytes":
            return None, await asyncio.to_thread(fs.read_bytes, path)
        if op == "write_bytes":
            await asyncio.to_thread(fs.write_bytes, payload, path)
            return None, b""
        if op == "list_files":
            return await asyncio.to_thread(fs.list_files, path), b""
        if op == "stat":
            return await asyncio.to_thread(fs.stat, path), b""
        if op == "make_directory":
            await asyncio.to_thread(fs.make_directory, path, create_parents=bool(header.get("create_parents", True)))
            return None, b""
        if op == "remove":
            await asyncio.to_thread(fs.remove, path, recursive=bool(header.get("recursive")))
            return None, b""
        raise InvalidError(f"unknown filesystem operation {op!r}")

    # ---- sessions ----------------------------------------------------------------------------
    async def _session(self, header: dict[str, Any]) -> dict[str, Any]:
        sb = self._get(header["sandbox"])
        name = header["session"]
        session = sb.sessions.get(name)
        if session is not None and session.proc.returncode is not None:
            sb.sessions.pop(name, None)
            session = None
        if session is None:
            if not header.get("create"):
                raise NotFoundError(f"sandbox {sb.id} has no session {name!r}", code="sandbox.session_not_found")
            session = await self._open_session(sb, name)
        if header.get("op") == "open":
            return {"session": name}
        return await self._run(sb, session, header.get("cmd") or "", header.get("timeout"))

    async def _open_session(self, sb: _Sandbox, name: str) -> _Session:
        shell = ["bash", "--noprofile", "--norc"] if shutil.which("bash") else ["sh"]
        proc, lifeline = await self._start(sb, shell, sb.workdir, self._env(sb, {}))
        session = _Session(name=name, proc=proc, lifeline=lifeline, token=secrets.token_hex(16))

        async def pump(pipe: asyncio.StreamReader | None, buf: bytearray) -> None:
            assert pipe is not None
            while chunk := await pipe.read(_CHUNK):
                buf.extend(chunk)
                session.changed.set()
            session.changed.set()

        async def watch() -> None:
            await proc.wait()  # the exit status lands apart from the pipes' end: wake the reader for both
            _close(session)
            session.changed.set()

        session.tasks = [asyncio.create_task(pump(proc.stdout, session.out)),
                         asyncio.create_task(pump(proc.stderr, session.err)), asyncio.create_task(watch())]
        sb.sessions[name] = session
        return session

    async def _run(self, sb: _Sandbox, s: _Session, cmd: str, timeout: float | None) -> dict[str, Any]:
        async with s.lock:  # one command at a time, in arrival order
            out_mark = b"\x00" + s.token.encode() + b" "
            err_mark = b"\x00" + s.token.encode() + b"\n"
            # The command's stdin is /dev/null: it must not eat the commands that follow it.
            script = (f"eval {shlex.quote(cmd)} </dev/null\n"
                      f"printf '\\000%s %d\\n' {s.token} $?\nprintf '\\000%s\\n' {s.token} >&2\n")
            assert s.proc.stdin is not None
            try:
                s.proc.stdin.write(script.encode())
            except (ConnectionError, RuntimeError):
                pass  # the shell is gone: reported below
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + float(timeout)
            while True:
                done_out = s.out.find(out_mark)
                if done_out >= 0 and s.err.find(err_mark) >= 0 and s.out.find(b"\n", done_out) >= 0:
                    break
                if s.proc.returncode is not None and all(t.done() for t in s.tasks):
                    # The command ended the shell itself (`exit`): report what it said and how.
                    out, err = bytes(s.out), bytes(s.err)
                    sb.sessions.pop(s.name, None)
                    return {"stdout": out.decode("utf-8", "replace"), "stderr": err.decode("utf-8", "replace"),
                            "returncode": s.proc.returncode, "session_ended": True}
                s.changed.clear()
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    _kill(s.proc)
                    sb.sessions.pop(s.name, None)
                    raise ExecTimeoutError(f"session {s.name!r}: command did not finish within {timeout} s; "
                                           "its shell was killed and the session ended")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(s.changed.wait(), left if left is None else max(left, 0.001))
            end = s.out.index(b"\n", done_out)
            returncode = int(s.out[done_out + len(out_mark):end])
            stdout, stderr = bytes(s.out[:done_out]), bytes(s.err[:s.err.find(err_mark)])
            del s.out[:end + 1]
            del s.err[:s.err.find(err_mark) + len(err_mark)]
            return {"stdout": stdout.decode("utf-8", "replace"), "stderr": stderr.decode("utf-8", "replace"),
                    "returncode": returncode, "session_ended": False}


def _findable(command: str, cwd: Path, path: str) -> bool:
    """Whether `command` names an executable, as execvp would look for it. The host's view
    stands for the sandbox's: bubblewrap shows the host's /usr and the root at their own paths."""
    if "/" in command:
        return os.access(cwd / command, os.X_OK)
    return shutil.which(command, path=path) is not None


def _close(holder: _Proc | _Session) -> None:
    if holder.lifeline >= 0:
        os.close(holder.lifeline)
        holder.lifeline = -1


def _reset(streams: list[SessionStream]) -> None:
    for stream in streams:
        with contextlib.suppress(Error):
            stream.reset()


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    # Each process leads its own group: the whole tree it started goes with it. Not also
    # proc.kill(): Popen.send_signal polls first, and a poll that reaps the child just killed
    # leaves asyncio's watcher to report returncode 255 in place of -9 (seen 1 run in 5).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
