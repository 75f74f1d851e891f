"""Sandboxes on the control plane: placement, the durable record, and the relay of exec I/O,
filesystem calls and session commands between the SDK's HTTP requests and the worker agent.

Like the scheduler, this is one actor on the control plane's loop: its state is touched only by
these methods, so nothing needs a lock. The agent is reached by `sb_*` frames on its worker
session's control stream (see apothic._worker.sandbox_host for the vocabulary); each process's
output and stdin travel on session streams of their own that the agent opens (`on_stream`).
Output is kept here per pipe until the SDK reads it. The stream is credited as output arrives
while at most `READ_AHEAD` bytes sit here unread, and beyond that only as the SDK reads: so one
pipe's unread output holds at most READ_AHEAD plus a stream window here, and stalls only its own
stream (crediting only per SDK read, one window per round trip, read 71 MB at 10 MB/s; with the
read-ahead, as fast as the old 4 MiB window on the control stream did).

A record is written durably before any caller is told about it (created, started, ended). A
sandbox whose worker disconnects ends as `worker_lost`; after a control plane restart no worker
session survives, so unfinished records end the same way.
"""

from __future__ import annotations

import asyncio
import builtins  # its TimeoutError is what asyncio raises; the one imported below is the API's
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from apothic import _ids
from apothic._bridge.session import REFUSED, SANDBOX_HEADERS, SessionStream
from apothic.control.model import WorkerHandle
from apothic.control.placement import BY_OPTIONS, Placer
from apothic.control.store.sandboxes import SandboxStore
from apothic.exception import (
    ConflictError,
    Error,
    NotFoundError,
    SandboxTerminatedError,
    TimeoutError,
    error_for,
)

log = logging.getLogger("apothic.sandboxes")

TERMINAL = frozenset({"exited", "terminated", "timed_out", "worker_lost", "failed"})
DEFAULT_TIMEOUT_S = 300.0
MAX_TIMEOUT_S = 24 * 3600.0
_REQUEST_TIMEOUT_S = 60.0  # an agent that answers nothing in this long is treated as gone
_WORKER_WAIT_S = 30.0
# An ended sandbox stays in memory this long, so its processes' last output can still be read
# (`Sandbox.create("echo", "hi")`, then `wait()`, then `stdout.read()`).
_RETAIN_S = 600.0
# Unread output per pipe that is credited as it arrives (the old per-pipe window).
READ_AHEAD = 4 * 1024 * 1024
# The most one read answers: a pipe holds READ_AHEAD, then up to a window more, uncredited.
MAX_READ_BYTES = READ_AHEAD
# How long an exit waits for its process's output streams to end before it is taken as final
# anyway (a killed process whose output nobody reads has more queued than the window lets out).
_EXIT_GRACE_S = 5.0


@dataclass(eq=False)
class _Pipe:
    data: bytearray = field(default_factory=bytearray)
    start: int = 0  # the stream offset of data[0]: what came before was read and dropped
    eof: bool = False
    stream: SessionStream | None = None  # the agent's stream for it, once it has arrived
    owed: int = 0  # bytes at the end of data that arrived but are not credited to the stream yet

    def credit(self) -> None:
        """Credits what arrived while at most READ_AHEAD credited bytes sit here unread."""
        grant = min(self.owed, max(0, READ_AHEAD - (len(self.data) - self.owed)))
        if grant and self.stream is not None:
            self.owed -= grant
            # A stream that has ended or was reset owes nothing.
            with contextlib.suppress(Error):
                self.stream.consumed(grant)

    def drop(self, n: int) -> None:
        """The reader is done with the first n bytes: they go, and with them their credit."""
        del self.data[:n]
        self.start += n
        if self.owed > len(self.data):  # the reader took bytes never credited: credit them now
            self.owed, taken = len(self.data), self.owed - len(self.data)
            if self.stream is not None:
                with contextlib.suppress(Error):
                    self.stream.consumed(taken)
        self.credit()


@dataclass(eq=False)
class _Process:
    id: str
    pipes: dict[int, _Pipe] = field(default_factory=lambda: {1: _Pipe(), 2: _Pipe()})
    returncode: int | None = None
    timed_out: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    stdin_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one writer drains at a time
    stdin_closed: bool = False


@dataclass(eq=False)
class _Live:
    record: dict[str, Any]
    worker: WorkerHandle
    procs: dict[str, _Process] = field(default_factory=dict)
    proc_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None  # its timeout
    forget: asyncio.TimerHandle | None = None  # drops it from memory once it has ended

    @property
    def running(self) -> bool:
        return self.record["status"] not in TERMINAL


def summary(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "app_name", "app_id", "worker", "status", "isolation", "created_at", "timeout",
            "returncode", "ended_at", "reason")
    return {k: record.get(k) for k in keys}


class SandboxManager:
    def __init__(self, store: SandboxStore, workers: Callable[[], dict[str, WorkerHandle]],
                 want_capacity: Callable[[], None], placer: Placer | None = None) -> None:
        self.store = store
        self._workers = workers
        self._placer = placer or Placer()
        self._want_capacity = want_capacity
        self.live: dict[str, _Live] = {}
        # Requests awaiting the agent's sb_reply: req -> (sandbox id, future).
        self._requests: dict[int, tuple[str, asyncio.Future[tuple[dict[str, Any], bytes]]]] = {}
        self._request_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def restore(self) -> None:
        await self.store.open()
        for row in await self.store.unfinished():
            await self.store.update(row["id"], {"status": "worker_lost", "ended_at": time.time(), "returncode": None,
                                                "reason": "the control plane restarted; its worker session ended"})

    def close(self) -> None:
        for live in self.live.values():
            for timer in (live.timer, live.forget):
                if timer is not None:
                    timer.cancel()

    # ---- lookups ---------------------------------------------------------------------------
    async def record(self, account: str, sandbox_id: str) -> dict[str, Any]:
        live = self.live.get(sandbox_id)
        if live is not None and live.record["account"] == account:
            return live.record
        row = await self.store.get(sandbox_id) if _ids.is_valid("sandbox", sandbox_id) else None
        if row is None or row.get("account") != account:
            raise NotFoundError(f"no sandbox {sandbox_id}", code="sandbox.not_found")
        return row

    def _live(self, account: str, sandbox_id: str) -> _Live:
        live = self.live.get(sandbox_id)
        if live is None or live.record["account"] != account:
            raise NotFoundError(f"no sandbox {sandbox_id}", code="sandbox.not_found")
        return live

    async def _running(self, account: str, sandbox_id: str) -> _Live:
        """The live sandbox, or sandbox.terminated (with how it ended) / sandbox.not_found."""
        live = self.live.get(sandbox_id)
        if live is not None and live.record["account"] == account and live.record["status"] == "running":
            return live
        record = await self.record(account, sandbox_id)
        raise SandboxTerminatedError(f"sandbox {sandbox_id} has ended ({_ending(record)})")

    async def find(self, account: str, app_name: str, name: str | None) -> list[dict[str, Any]]:
        rows = {r["id"]: r for r in await self.store.find(account, app_name, name)}
        for live in self.live.values():  # the memory copy is the newer one
            r = live.record
            if r["account"] == account and r["app_name"] == app_name and (name is None or r["name"] == name):
                rows[r["id"]] = r
        return sorted(rows.values(), key=lambda r: r["created_at"], reverse=True)

    # ---- lifecycle ---------------------------------------------------------------------------
    async def create(self, account: str, spec: dict[str, Any]) -> dict[str, Any]:
        name = spec.get("name")
        self._check_name(account, spec["app_name"], name)
        worker = await self._place(spec)
        # Checked again with no await between the check and the insert below: of two creates
        # racing for one name, exactly one gets it.
        self._check_name(account, spec["app_name"], name)
        now = time.time()
        record = {"id": _ids.new_id("sandbox"), "account": account, "name": name, "app_name": spec["app_name"],
                  "app_id": spec.get("app_id"), "worker": worker.id, "status": "starting", "isolation": None,
                  "created_at": now, "timeout": spec["timeout"], "returncode": None, "ended_at": None,
                  "reason": None}
        live = _Live(record=record, worker=worker)
        if spec.get("cmd"):
            live.procs["main"] = _Process("main")
        self.live[record["id"]] = live
        try:
            await self.store.save(record)
            header, _ = await self._ask(live, {"t": "sb_create", "sandbox": record["id"], "cmd": spec.get("cmd"),
                                               "workdir": spec.get("workdir"), "env": spec.get("env") or {}})
        except Error as e:
            await self._end(live, "failed", reason=e.message, tell_agent=True)
            raise
        record["isolation"] = header.get("isolation")
        if record["status"] == "starting":  # its command may already have exited
            record["status"] = "running"
            await self.store.update(record["id"], {"status": "running", "isolation": record["isolation"]})
            live.timer = asyncio.get_running_loop().call_later(
                record["timeout"], lambda: self._spawn(self._end(live, "timed_out", tell_agent=True,
                                                                 reason=f"its {record['timeout']:g} s timeout passed")))
        return record

    def _check_name(self, account: str, app_name: str, name: str | None) -> None:
        if name is None:
            return
        for live in self.live.values():
            r = live.record
            if live.running and r["account"] == account and r["app_name"] == app_name and r["name"] == name:
                raise ConflictError(f"app {app_name!r} already has a running sandbox named {name!r} ({r['id']})",
                                    code="sandbox.name_taken")

    async def _place(self, spec: dict[str, Any]) -> WorkerHandle:
        """The connected worker with the fewest sandboxes whose offer row passes the sandbox's
        compiled requirements (cpu, memory, gpu and offer filters: the language functions use);
        waits a while for one to connect (the local provider starts agents on demand). Sandboxes
        run on connected workers only: renting a host for one is not done (yet)."""
        options = {"cpu": spec.get("cpu"), "memory": spec.get("memory"), "placements": spec.get("placements")}
        key = BY_OPTIONS + orjson.dumps(options, option=orjson.OPT_SORT_KEYS).decode()
        deadline = time.monotonic() + _WORKER_WAIT_S
        while True:
            workers = self._workers()
            counts = dict.fromkeys(workers, 0)
            for live in self.live.values():
                if live.running and live.worker.id in counts:
                    counts[live.worker.id] += 1
            fit = self._placer.candidates_for(key, options, workers, load=counts)
            if fit:
                return fit[0]
            if workers:
                nearest = "; ".join(self._placer.nearest_for(key, options, workers))
                raise Error(f"no connected worker offers {self._placer.describe_for(key, options)} "
                            f"(sandboxes run on connected workers). Nearest: {nearest}", code="placement.no_match")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no worker connected within {_WORKER_WAIT_S:g} s to run the sandbox",
                                   code="sandbox.no_worker")
            self._want_capacity()
            await asyncio.sleep(0.1)

    async def terminate(self, account: str, sandbox_id: str) -> dict[str, Any]:
        live = self.live.get(sandbox_id)
        if live is not None and live.record["account"] == account:
            await self._end(live, "terminated", reason="terminate() was called", tell_agent=True)
            return live.record
        return await self.record(account, sandbox_id)  # already ended, or not found

    async def wait(self, account: str, sandbox_id: str, timeout: float) -> dict[str, Any]:
        live = self.live.get(sandbox_id)
        if live is not None and live.record["account"] == account:
            with contextlib.suppress(builtins.TimeoutError):
                await asyncio.wait_for(live.ended.wait(), timeout)
            return live.record
        return await self.record(account, sandbox_id)

    async def _end(self, live: _Live, status: str, *, reason: str | None = None, returncode: int | None = None,
                   tell_agent: bool) -> None:
        record = live.record
        if record["status"] in TERMINAL:
            return
        record.update(status=status, reason=reason, returncode=returncode, ended_at=time.time())
        if live.timer is not None:
            live.timer.cancel()
        for proc in live.procs.values():
            proc.changed.set()
        if tell_agent:
            live.worker.send({"t": "sb_terminate", "req": None, "sandbox": record["id"]}, b"")
        for fut in [f for sandbox_id, f in self._requests.values() if sandbox_id == record["id"]]:
            if not fut.done():
                fut.set_exception(SandboxTerminatedError(f"sandbox {record['id']} ended ({_ending(record)})"))
        try:
            await self.store.update(record["id"], {k: record[k] for k in ("status", "reason", "returncode",
                                                                           "ended_at")})
        finally:
            live.ended.set()
            live.forget = asyncio.get_running_loop().call_later(_RETAIN_S, self.live.pop, record["id"], None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- requests to the agent ---------------------------------------------------------------
    async def _ask(self, live: _Live, header: dict[str, Any], payload: bytes = b"",
                   timeout: float = _REQUEST_TIMEOUT_S) -> tuple[dict[str, Any], bytes]:
        req = next(self._request_ids)
        future: asyncio.Future[tuple[dict[str, Any], bytes]] = asyncio.get_running_loop().create_future()
        self._requests[req] = (live.record["id"], future)
        try:
            live.worker.send(header | {"req": req}, payload)
            try:
                reply, body = await asyncio.wait_for(future, timeout)
            except builtins.TimeoutError:
                raise Error(f"worker {live.worker.id} did not answer within {timeout:g} s",
                            code="sandbox.terminated") from None
        finally:
            self._requests.pop(req, None)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise error_for(error.get("code", "internal"), error.get("message", "the sandbox request failed"))
        return reply, body

    # ---- processes ---------------------------------------------------------------------------
    async def exec(self, account: str, sandbox_id: str, args: list[str], workdir: str | None,
                   env: dict[str, str], timeout: float | None) -> str:
        live = await self._running(account, sandbox_id)
        proc_id = f"p{next(live.proc_ids)}"
        live.procs[proc_id] = _Process(proc_id)
        try:
            await self._ask(live, {"t": "sb_exec", "sandbox": sandbox_id, "proc": proc_id, "args": args,
                                   "workdir": workdir, "env": env, "timeout": timeout})
        except Exception:
            live.procs.pop(proc_id, None)
            raise
        return proc_id

    async def _process(self, account: str, sandbox_id: str, proc_id: str) -> tuple[_Live, _Process]:
        live = self.live.get(sandbox_id)
        if live is None or live.record["account"] != account:
            record = await self.record(account, sandbox_id)  # sandbox.not_found, else it ended long ago
            raise SandboxTerminatedError(f"sandbox {sandbox_id} has ended ({_ending(record)}) and its "
                                         "processes' output is no longer kept")
        proc = live.procs.get(proc_id)
        if proc is None:
            raise NotFoundError(f"sandbox {sandbox_id} has no process {proc_id}", code="sandbox.process_not_found")
        return live, proc

    async def read(self, account: str, sandbox_id: str, proc_id: str, fd: int, offset: int,
                   wait: float, min_bytes: int = 1) -> tuple[int, bool, bytes]:
        """Output of a process's stream from `offset`: (offset of the data, eof, data). Waits up
        to `wait` seconds for `min_bytes` (or the end). Reading from `offset` acknowledges
        everything before it. A reader that wants everything asks for a lot at once: one round
        trip per 64 KiB pipe read capped output at 14 MB/s."""
        live, proc = await self._process(account, sandbox_id, proc_id)
        pipe = proc.pipes[fd]
        self._consume(live, proc, fd, offset)
        min_bytes = min(max(1, min_bytes), MAX_READ_BYTES)
        await _until(proc, wait, lambda: len(pipe.data) >= min_bytes or pipe.eof or not live.running)
        # A sandbox that ended took its processes with it: their streams end there.
        eof = pipe.eof or (not live.running and not len(pipe.data))
        return pipe.start, eof, bytes(pipe.data[:MAX_READ_BYTES])

    def _consume(self, live: _Live, proc: _Process, fd: int, offset: int) -> None:
        pipe = proc.pipes[fd]
        drop = min(max(0, offset - pipe.start), len(pipe.data))
        if drop:
            pipe.drop(drop)  # past the read-ahead, this read is what lets the agent send more

    async def write_stdin(self, account: str, sandbox_id: str, proc_id: str, data: bytes, eof: bool) -> None:
        """Sends data down the process's fd 1 stream; returns once the stream has taken it, so a
        process that reads no stdin holds back its writer. eof closes the process's stdin."""
        live, proc = await self._process(account, sandbox_id, proc_id)
        if not live.running:
            raise SandboxTerminatedError(f"sandbox {sandbox_id} has ended ({_ending(live.record)})")
        async with proc.stdin_lock:
            stream = await self._stdin_stream(live, proc)
            if stream is None or proc.stdin_closed:
                return  # the process has exited: like writing to a closed pipe, its data has no reader
            try:
                if data:
                    stream.write(data)
                    await stream.drain()
                if eof:
                    self._close_stdin(proc)
            except Error:
                if not live.running:
                    raise SandboxTerminatedError(f"sandbox {sandbox_id} has ended ({_ending(live.record)})") from None
                # Otherwise the process is gone and its stream with it: the data has no reader.

    async def _stdin_stream(self, live: _Live, proc: _Process) -> SessionStream | None:
        """The process's fd 1 stream; the agent opens it before it answers the exec, but the
        stream's opening and the answer travel apart, so it may arrive just after."""
        if not await _until(proc, _REQUEST_TIMEOUT_S, lambda: proc.pipes[1].stream is not None or not live.running
                            or proc.returncode is not None):
            raise Error(f"worker {live.worker.id} opened no stream for process {proc.id} within "
                        f"{_REQUEST_TIMEOUT_S:g} s", code="sandbox.terminated")
        return proc.pipes[1].stream

    @staticmethod
    def _close_stdin(proc: _Process) -> None:
        if not proc.stdin_closed:
            proc.stdin_closed = True
            stream = proc.pipes[1].stream
            if stream is not None:
                stream.close()

    async def wait_process(self, account: str, sandbox_id: str, proc_id: str, wait: float) -> dict[str, Any]:
        live, proc = await self._process(account, sandbox_id, proc_id)
        await _until(proc, wait, lambda: proc.returncode is not None or not live.running)
        if proc.returncode is None and not live.running:
            raise SandboxTerminatedError(f"sandbox {sandbox_id} ended before process {proc_id} did "
                                         f"({_ending(live.record)})")
        return {"returncode": proc.returncode, "timed_out": proc.timed_out}

    # ---- filesystem and sessions -------------------------------------------------------------
    async def filesystem(self, account: str, sandbox_id: str, request: dict[str, Any],
                         payload: bytes) -> tuple[Any, bytes]:
        live = await self._running(account, sandbox_id)
        reply, body = await self._ask(live, {**request, "t": "sb_fs", "sandbox": sandbox_id}, payload)
        return reply.get("result"), body

    async def session(self, account: str, sandbox_id: str, name: str, *, op: str, cmd: str | None,
                      timeout: float | None, create: bool) -> dict[str, Any]:
        live = await self._running(account, sandbox_id)
        # A command without a timeout may run as long as the sandbox does: the sandbox's end
        # fails this request, so the only deadline here is the sandbox's longest life.
        wait = MAX_TIMEOUT_S if timeout is None else timeout + _REQUEST_TIMEOUT_S
        reply, _ = await self._ask(live, {"t": "sb_session", "sandbox": sandbox_id, "session": name, "op": op,
                                          "cmd": cmd, "timeout": timeout, "create": create}, timeout=wait)
        return {k: reply.get(k) for k in ("session", "stdout", "stderr", "returncode", "session_ended")}

    # ---- frames from agents ------------------------------------------------------------------
    def on_frame(self, worker: WorkerHandle, header: dict[str, Any], payload: bytes) -> None:
        kind = header["t"]
        if kind == "sb_reply":
            pending = self._requests.get(header.get("req"))  # type: ignore[arg-type]
            if pending is not None and not pending[1].done():
                pending[1].set_result((header, payload))
            return
        live = self.live.get(header.get("sandbox", ""))
        if live is None or live.worker.id != worker.id:
            return  # a sandbox that already ended here: its last frames have no reader
        proc = live.procs.get(header.get("proc", ""))
        if proc is None:
            return
        if kind == "sb_exit":
            self._spawn(self._exited(live, proc, header))
        else:
            log.warning("worker %s sent an unknown sandbox frame %r", worker.id, kind)

    async def _exited(self, live: _Live, proc: _Process, header: dict[str, Any]) -> None:
        """Takes a process's exit as final once its output streams have ended: the exit rides
        the control stream and the output its own streams, so the exit may arrive first, and a
        reader that waited for the exit must then find all of the output. A stream whose last
        bytes wait for a reader (a killed process with unread output) is waited for only a while."""
        await _until(proc, _EXIT_GRACE_S, lambda: all(p.eof for p in proc.pipes.values()) or not live.running)
        proc.returncode = header.get("returncode")
        proc.timed_out = bool(header.get("timed_out"))
        proc.changed.set()
        self._close_stdin(proc)  # nothing reads it any more; the stream can then finish both ways
        if proc.id == "main":
            # Its command has finished: so has the sandbox, as under Modal.
            await self._end(live, "exited", returncode=proc.returncode, tell_agent=True,
                            reason=f"its command exited with code {proc.returncode}")

    def on_stream(self, worker: WorkerHandle, stream: SessionStream) -> None:
        """A stream the agent opened for one process's pipe: its output is kept here as it
        arrives, and credited back as the SDK reads it (`_consume`)."""
        try:
            sandbox_id, proc_id, fd_text = stream.headers[len(SANDBOX_HEADERS):].decode().split(" ")
            fd = int(fd_text)
        except ValueError:
            stream.reset(REFUSED)
            return
        live = self.live.get(sandbox_id)
        proc = live.procs.get(proc_id) if live is not None and live.worker.id == worker.id else None
        pipe = proc.pipes.get(fd) if proc is not None else None
        if live is None or not live.running or proc is None or pipe is None or pipe.stream is not None:
            stream.reset(REFUSED)  # a sandbox that already ended here: its output has no reader
            return
        pipe.stream = stream

        def on_chunk(chunk: bytes) -> None:
            pipe.data.extend(chunk)
            pipe.owed += len(chunk)
            pipe.credit()
            proc.changed.set()

        def on_end(error: Error | None) -> None:
            # Reset (the sandbox was terminated) or lost with the session: what arrived stays readable.
            pipe.eof = True
            proc.changed.set()

        stream.listen(on_chunk, on_end)
        if fd == 2 or proc.stdin_closed:
            stream.close()  # nothing goes down this one
        proc.changed.set()  # a stdin writer may be waiting for it

    def worker_disconnected(self, worker_id: str) -> None:
        for live in [v for v in self.live.values() if v.running and v.worker.id == worker_id]:
            self._spawn(self._end(live, "worker_lost", tell_agent=False,
                                  reason=f"its worker {worker_id} disconnected"))




async def _until(proc: _Process, timeout: float, done: Callable[[], bool]) -> bool:
    """Waits until `done()` holds, looking again each time the process changes, for at most
    `timeout` seconds; whether it held."""
    deadline = time.monotonic() + timeout
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        proc.changed.clear()
        with contextlib.suppress(builtins.TimeoutError):
            await asyncio.wait_for(proc.changed.wait(), left)
    return True


def _ending(record: dict[str, Any]) -> str:
    status = record.get("status")
    reason = record.get("reason")
    return f"{status}: {reason}" if reason else str(status)
