"""The worker agent: dials out to the control plane, keeps one multiplexed session
(apothic-session over a websocket), and runs containers as child processes.

The session's control stream carries `_wire` frames (calls, results, heartbeats, container
lifecycle, sandbox requests); output goes on a log stream of its own, so a flood of it cannot
delay a result; each proxied request is a stream the control plane opens (see web_relay). The
session pings, and a control plane that goes silent is declared dead: the agent reconnects.

It holds one blank container ready ahead of need, so a cold call costs a module import, not an
interpreter start; it forwards output, results and exits, and heartbeats the calls it runs so
that their leases stay held. If this process dies, the heartbeats stop, the leases expire and
the control plane runs the calls elsewhere.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import logging
import os
import signal
import socket
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from apothic import _wire
from apothic._bridge.session import LOGS_HEADERS, REFUSED, WEB_HEADERS, SessionChannel, SessionStream, config_from_env
from apothic._worker import web_relay
from apothic._worker.capacity import capacity
from apothic._worker.sandbox_host import SandboxHost
from apothic.exception import Error

log = logging.getLogger("apothic.agent")
# How long a container stopped gracefully has for its @exit hooks before SIGKILL. Below the 5 s
# the local provider gives an agent after SIGTERM, so hooks still run at server shutdown.
EXIT_GRACE_S = 3.0
# How much output may wait in the agent for the log stream's window before a container's output
# is read no further.
LOG_HIGH_WATER = 1024 * 1024
# How much may wait unread in a container's link before the agent stops feeding it.
LINK_HIGH_WATER = 256 * 1024


@dataclass(eq=False)
class ContainerProc:
    proc: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    id: str = ""
    app: str | None = None
    job: str | None = None
    claim: int | None = None
    # Calls handed over while another runs: (job, claim, arguments), started in order.
    waiting: collections.deque[tuple[str, int, bytes]] = field(default_factory=collections.deque)
    stopping: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    # Proxied frames of one loop turn, written to the link as one write at its end: under load
    # many streams have a frame in the same turn, and one syscall each was a sixth of the
    # agent's CPU. Calls (`send`) go out at once, after whatever is pending.
    pending: list[bytes] = field(default_factory=list)

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        if self.pending:
            self._flush()
        frame = _wire.pack(header, payload)
        self.writer.write(len(frame).to_bytes(4, "big") + frame)

    def send_raw(self, data: bytes) -> None:
        """Whole framed frames (`u32 length | frame`, ...), written at the end of this loop turn
        with any others."""
        if not self.pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self.pending.append(data)

    def _flush(self) -> None:
        data, self.pending = b"".join(self.pending), []
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def backlogged(self) -> bool:
        """Whether the container is behind in reading its link: wait for `writer.drain()`."""
        return self.writer.transport.get_write_buffer_size() > LINK_HIGH_WATER

    async def recv(self) -> tuple[dict[str, Any], bytes] | None:
        try:
            size = int.from_bytes(await self.reader.readexactly(4), "big")
            return _wire.unpack(await self.reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    def kill(self) -> None:
        self.stopping = True
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def terminate(self, grace_s: float) -> None:
        """SIGTERM, so the container runs its @exit hooks; SIGKILL if it is still there after `grace_s`."""
        self.stopping = True
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                self.kill()


class Agent:
    def __init__(self, server: str, token: str, *, home: Path, provider: str, exit_with_parent: bool) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.home = home
        self.provider = provider
        self.exit_with_parent = exit_with_parent
        self.worker_id: str | None = None
        self.containers: dict[str, ContainerProc] = {}
        self.spare: asyncio.Task[ContainerProc] | None = None
        self.control: SessionStream | None = None
        self.logs: SessionStream | None = None
        self.web = web_relay.WebRelay(self.containers)
        self.http: aiohttp.ClientSession | None = None
        self.stop = asyncio.Event()
        self.starting: set[asyncio.Task[None]] = set()
        self.exiting: set[asyncio.Task[None]] = set()  # containers running their @exit hooks
        self.heartbeat_s = float(os.environ.get("APOTHIC_HEARTBEAT_S", "1.0"))
        self.channel: SessionChannel | None = None
        self.sandboxes = SandboxHost(home, self.send, self.open_stream)

    # ---- the session -------------------------------------------------------------------
    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        """A frame on the control stream, in order. Frames to a session that has ended are
        dropped: the control plane forgets that session's containers and calls."""
        if self.control is not None:
            with contextlib.suppress(Error):
                self.control.write_frame(header, payload)

    def open_stream(self, headers: bytes) -> SessionStream:
        """A new stream on the session (sandbox output); session.closed when there is none."""
        if self.channel is None:
            raise Error("the agent has no session with the control plane", code="session.closed")
        return self.channel.open(headers)

    def _log(self, header: dict[str, Any], payload: bytes) -> SessionStream | None:
        """A frame on the log stream; returns the stream when the caller should drain it."""
        if self.logs is None:
            return None
        try:
            self.logs.write_frame(header, payload)
        except Error:
            return None
        return self.logs if self.logs.queued > LOG_HIGH_WATER else None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        watchers = [asyncio.create_task(self._heartbeats())]
        if self.exit_with_parent:
            # The parent's pid comes from the environment: if it died while this agent was still
            # importing, getppid() would already name init and the watch would never fire.
            parent = int(os.environ.get("APOTHIC_PARENT_PID") or os.getppid())
            watchers.append(asyncio.create_task(self._watch_parent(parent)))
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})
        self.spare = asyncio.create_task(self._spawn())
        delay = 0.1
        try:
            while not self.stop.is_set():
                try:
                    await self._session()
                    delay = 0.1
                except aiohttp.WSServerHandshakeError as e:
                    if e.status in (401, 403):
                        log.error("the control plane refused this worker's token; exiting")
                        return
                    log.warning("session handshake failed: %s", e)
                except (aiohttp.ClientError, OSError) as e:
                    log.warning("control plane unreachable: %s", e)
                self._kill_all()  # the control plane forgets a lost session's containers
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                delay = min(delay * 2, 5.0)
        finally:
            for w in watchers:
                w.cancel()
            self._kill_all()
            await asyncio.gather(*self.exiting, return_exceptions=True)
            if self.spare is not None:
                spare = await self.spare
                spare.kill()
            await self.http.close()

    async def _session(self) -> None:
        assert self.http is not None
        # No websocket heartbeat: the session pings and detects a dead peer itself.
        async with self.http.ws_connect(f"{self.server}/v1/workers/session", heartbeat=None, max_msg_size=0,
                                        compress=0) as ws:  # small frames: deflate costs more than it saves
            channel = SessionChannel(ws, dialer=True, config=config_from_env())
            channel.start()
            stopper = asyncio.create_task(self.stop.wait())
            # Stopping closes the session, which ends the loop below: no task and wait per frame.
            stopper.add_done_callback(lambda t: t.cancelled() or asyncio.ensure_future(channel.close()))
            channel.on_open = self._opened  # proxied requests: relayed without a task each
            try:
                control = await channel.control()
                self.logs = channel.open(LOGS_HEADERS)
                self.control, self.channel = control, channel
                self.send({"t": "hello", "worker": self.worker_id, "pid": os.getpid(), "provider": self.provider,
                           "capacity": capacity(self.home)})
                ended = await self._listen(control)
                log.warning("session ended: %s", ended.message if ended else "the control plane closed it")
            except Error as e:  # the session ended before it began
                log.warning("session ended: %s", e.message)
            finally:
                self.control = self.logs = self.channel = None
                stopper.cancel()
                self.web.close()
                await channel.close()

    async def _listen(self, control: SessionStream) -> Error | None:
        """Handles the control stream's frames as they arrive, in the session's callback mode
        (no task switch per frame); returns when the stream ends, with why."""
        ended: asyncio.Future[Error | None] = asyncio.get_running_loop().create_future()
        buffer = b""

        def on_chunk(chunk: bytes) -> None:
            nonlocal buffer
            data = buffer + chunk if buffer else chunk
            offset, end = 0, len(data)
            try:
                while end - offset >= 4:
                    size = int.from_bytes(data[offset : offset + 4], "big")
                    if end - offset - 4 < size:
                        break
                    header, payload = _wire.unpack(data[offset + 4 : offset + 4 + size])
                    offset += 4 + size
                    self._handle(header, payload)
            finally:
                buffer = data[offset:]
                control.consumed(len(chunk))

        def on_end(error: Error | None) -> None:
            if not ended.done():
                ended.set_result(error)

        control.listen(on_chunk, on_end)
        return await ended

    def _opened(self, stream: SessionStream) -> None:
        """A stream the control plane opened: one per proxied request."""
        if stream.headers.startswith(WEB_HEADERS):
            self.web.accept(stream)
        else:
            stream.reset(REFUSED)

    def _handle(self, header: dict[str, Any], payload: bytes) -> None:
        kind = header["t"]
        if kind == "welcome":
            self.worker_id = header["worker"]
            if header.get("key"):
                # A one-time join token was exchanged for this worker's own key: reconnects and
                # bundle fetches present the key, since the token is spent.
                self.token = header["key"]
                if self.http is not None:
                    self.http.headers["Authorization"] = f"Bearer {self.token}"
            log.info("connected as %s", self.worker_id)
        elif kind == "start_container":
            task = asyncio.create_task(self._start_container(header))
            self.starting.add(task)
            task.add_done_callback(self.starting.discard)
        elif kind == "run":
            ct = self.containers.get(header["container"])
            if ct is None or ct.proc.returncode is not None:
                self.send({"t": "container_exited", "container": header["container"], "returncode": None})
                return
            ct.waiting.append((header["job"], header["claim"], payload))
            if ct.job is None:
                self._run_next(ct)
        elif kind == "drop":
            ct = self.containers.get(header["container"])
            if ct is not None:
                ct.waiting = collections.deque(w for w in ct.waiting if w[0] != header["job"])
        elif kind.startswith("sb_"):
            self.sandboxes.handle(header, payload)
        elif kind == "stop_container":
            ct = self.containers.pop(header["container"], None)
            if ct is not None:
                if header.get("graceful"):
                    self._terminate(ct)
                else:
                    ct.kill()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            running = [[c.job, c.claim] for c in self.containers.values() if c.job is not None]
            running += [[job, claim] for c in self.containers.values() for job, claim, _ in c.waiting]
            self.send({"t": "heartbeat", "running": running})

    async def _watch_parent(self, parent: int) -> None:
        while os.getppid() == parent:
            await asyncio.sleep(0.5)
        log.warning("the process that started this agent is gone; exiting")
        self.stop.set()

    def _kill_all(self) -> None:
        self.sandboxes.kill_all()  # the control plane ends a lost session's sandboxes too
        for ct in self.containers.values():
            self._terminate(ct)
        self.containers.clear()

    def _terminate(self, ct: ContainerProc) -> None:
        task = asyncio.create_task(ct.terminate(EXIT_GRACE_S))
        self.exiting.add(task)
        task.add_done_callback(self.exiting.discard)

    # ---- containers --------------------------------------------------------------------
    async def _spawn(self) -> ContainerProc:
        parent, child = socket.socketpair()
        env = os.environ | {"APOTHIC_CONTAINER_FD": str(child.fileno()), "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "apothic._worker.container",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            pass_fds=(child.fileno(),), env=env, start_new_session=True,
        )
        child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        return ContainerProc(proc=proc, reader=reader, writer=writer)

    async def _take_spare(self) -> ContainerProc:
        spare = self.spare
        self.spare = asyncio.create_task(self._spawn())
        ct = await spare if spare is not None else await self._spawn()
        if ct.proc.returncode is not None:
            ct = await self._spawn()
        return ct

    async def _start_container(self, header: dict[str, Any]) -> None:
        container_id = header["container"]
        try:
            bundle_dir = await self._bundle(header["bundle"])
        except Exception as e:
            self.send({"t": "container_failed", "container": container_id, "error": f"bundle fetch failed: {e}"})
            return
        ct = await self._take_spare()
        ct.id, ct.app = container_id, header.get("app")
        self.containers[container_id] = ct
        ct.tasks = [
            asyncio.create_task(self._pump_frames(ct)),
            asyncio.create_task(self._pump_pipe(ct, ct.proc.stdout, "stdout")),
            asyncio.create_task(self._pump_pipe(ct, ct.proc.stderr, "stderr")),
            asyncio.create_task(self._watch_exit(ct)),
        ]
        ct.send({"t": "load", "bundle_dir": str(bundle_dir), "module": header["module"],
                 "qualname": header["qualname"], "cls": header.get("cls")})

    async def _pump_frames(self, ct: ContainerProc) -> None:
        while (message := await ct.recv()) is not None:
            header, payload = message
            kind = header["t"]
            if kind.startswith(web_relay.WEB_FRAMES):  # a container answers only its own streams
                if (slow := self.web.from_container(ct, header, payload)) is not None:
                    await _drained(slow)  # its client reads slowly: stop reading this container
            elif kind == "ready":
                self.send({"t": "container_ready", "container": ct.id})
            elif kind == "load_failed":
                ct.stopping = True
                self.containers.pop(ct.id, None)
                self.send({"t": "container_failed", "container": ct.id, "error": header.get("error", "")})
            elif kind == "output":
                if (slow := self._log({"t": "log", "job": header.get("job"), "app": ct.app, "container": ct.id,
                                       "stream": header["stream"]}, payload)) is not None:
                    await _drained(slow)
            elif kind == "result" and ct.stopping:
                pass  # stopped by the control plane, which has already settled the call
            elif kind == "result":
                job, claim = ct.job, ct.claim
                ct.job = ct.claim = None
                # The next call goes in before the result goes out: the container never waits.
                self._run_next(ct)
                self.send({"t": "result", "job": job, "claim": claim, "container": ct.id, "ok": header["ok"],
                           "error": header.get("error")}, payload)

    def _run_next(self, ct: ContainerProc) -> None:
        if not ct.waiting:
            return
        ct.job, ct.claim, payload = ct.waiting.popleft()
        ct.send({"t": "run", "job": ct.job}, payload)
        self.send({"t": "started", "job": ct.job, "container": ct.id})

    async def _pump_pipe(self, ct: ContainerProc, pipe: asyncio.StreamReader | None, stream: str) -> None:
        if pipe is None:
            return
        while line := await pipe.readline():
            if (slow := self._log({"t": "log", "job": ct.job, "app": ct.app, "container": ct.id, "stream": stream},
                                  line)) is not None:
                await _drained(slow)  # a flood of output waits for the control plane, not in memory

    async def _watch_exit(self, ct: ContainerProc) -> None:
        code = await ct.proc.wait()
        self.web.container_gone(ct, f"container {ct.id} exited with code {code}")
        if not ct.stopping:
            self.containers.pop(ct.id, None)
            self.send({"t": "container_exited", "container": ct.id, "returncode": code})

    async def _bundle(self, digest: str) -> Path:
        """The extracted code bundle, fetched once per host and cached by content hash."""
        target = self.home / "worker" / "bundles" / digest
        if target.exists():
            return target
        assert self.http is not None
        async with self.http.get(f"{self.server}/v1/blobs/{digest}", headers={"X-Apothic-Worker": "1"}) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
            data = await r.read()
        tmp = target.with_name(f"{digest}.tmp{os.getpid()}")
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            archive.extractall(tmp)
        with contextlib.suppress(OSError):
            os.replace(tmp, target)
        return target


async def _drained(stream: SessionStream) -> None:
    with contextlib.suppress(Error):  # an ended stream or session needs no waiting for
        await stream.drain()


def run_agent(server: str, token: str, *, home: Path, provider: str, exit_with_parent: bool) -> None:
    import uvloop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(Agent(server, token, home=home, provider=provider, exit_with_parent=exit_with_parent).run())
