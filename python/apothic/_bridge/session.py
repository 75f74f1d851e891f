"""Python twin of `crates/apothic-py/src/session.rs`: the multiplexed session, and an asyncio
channel that runs it over an aiohttp websocket.

`Session` is sans-IO: bytes in (`receive`), events out; stream operations in, bytes out
(`outgoing`); `tick(now_ms)` for heartbeats. `SessionChannel` owns the I/O: each binary
websocket message carries session bytes, one writer task flushes `outgoing()`, one ticker
task drives heartbeats, and each stream gets an asyncio handle (`await read()`, `write()`,
`await drain()`, `close()`). Streams have their own flow-control windows, so a stream whose
reader stalls holds back only its own writer.

The dialer opens a control stream first (headers `CONTROL_HEADERS`, stream id 1); both sides
get it from `await channel.control()`, and it carries `apothic._wire` frames, each behind a
u32 length (`write_frame` / `read_frame`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiohttp import ClientWebSocketResponse, WSMsgType, web

from apothic import _core, _wire
from apothic._bridge.errors import translated
from apothic.exception import ConnectionError, Error, InvalidError, MalformedRequestError

STREAM_WINDOW: int = _core.SESSION_STREAM_WINDOW
CONNECTION_WINDOW: int = _core.SESSION_CONNECTION_WINDOW
CONTROL_HEADERS = b"apothic.control"
# The worker session's other streams: the agent opens one for logs (so that an output flood
# cannot delay results on the control stream); the control plane opens one per proxied request,
# its headers naming the container.
LOGS_HEADERS = b"apothic.logs"
WEB_HEADERS = b"apothic.web "
# The agent opens one stream per sandbox process and output pipe, its headers naming
# "<sandbox> <process> <fd>": fd 1 carries stdout one way and stdin the other, fd 2 stderr.
SANDBOX_HEADERS = b"apothic.sandbox "

# RESET / GOAWAY codes the session itself gives a meaning to (see codes in session.rs).
NO_ERROR = 0
PROTOCOL_ERROR = 1
REFUSED = 3
CANCEL = 8

# `drain()` returns once a stream holds at most this many bytes its window has not let out.
DRAIN_LOW_WATER = 64 * 1024
# About how many bytes one websocket message carries.
WRITE_BATCH = 256 * 1024


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Mirrors `SessionConfig` in session.rs. The windows are protocol constants, not settings:
    both sides must agree on them."""

    max_frame_payload: int = 16 * 1024
    max_buffered_bytes: int = 64 * 1024 * 1024
    max_streams: int = 4096
    ping_interval_ms: int = 5_000
    dead_timeout_ms: int = 15_000


class SessionEvent(NamedTuple):
    """kind is one of opened, data, closed, reset, window_opened, goaway, dead. data is the
    payload for opened (headers) and data, the code for reset and goaway, else None. For
    goaway, stream_id is the last stream id the peer processed."""

    kind: str
    stream_id: int
    data: bytes | int | None

    @property
    def payload(self) -> bytes:
        return self.data if isinstance(self.data, bytes) else b""

    @property
    def code(self) -> int | None:
        return self.data if isinstance(self.data, int) else None


def config_from_env() -> SessionConfig:
    """The defaults, or a shorter dead-peer timeout from APOTHIC_SESSION_DEAD_S (tests use it
    to see a silent peer declared dead in a few seconds); pings go three times per timeout."""
    raw = os.environ.get("APOTHIC_SESSION_DEAD_S")
    if not raw:
        return SessionConfig()
    try:
        dead_ms = int(float(raw) * 1000)
    except ValueError:
        raise InvalidError(f"APOTHIC_SESSION_DEAD_S must be a number of seconds, not {raw!r}") from None
    if dead_ms < 300:
        raise InvalidError(f"APOTHIC_SESSION_DEAD_S must be at least 0.3, not {raw!r}")
    return SessionConfig(ping_interval_ms=dead_ms // 3, dead_timeout_ms=dead_ms)


def now_ms() -> int:
    return int(time.monotonic() * 1000)


class Session:
    """One multiplexed connection's state. Errors carry `session.*` codes; a peer's protocol
    violation raises `MalformedRequestError` with code `session.protocol` and ends the
    session (its GOAWAY, explaining why, is left in `outgoing()`)."""

    __slots__ = ("_ref",)

    @translated
    def __init__(self, *, dialer: bool, config: SessionConfig | None = None) -> None:
        self._ref = _core.SessionRef(dialer, config or SessionConfig())

    @translated
    def receive(self, data: bytes) -> list[SessionEvent]:
        return [SessionEvent(*e) for e in self._ref.receive(data)]

    @translated
    def receive_raw(self, data: bytes) -> list[tuple[str, int, bytes | int | None]]:
        """`receive` without wrapping each event: the channel's hot path."""
        return self._ref.receive(data)

    def events(self) -> list[SessionEvent]:
        """Events raised outside `receive` (a dead peer noticed by `tick`)."""
        return [SessionEvent(*e) for e in self._ref.events()]

    @translated
    def open_stream(self, headers: bytes = b"") -> int:
        return self._ref.open_stream(headers)

    @translated
    def send(self, stream_id: int, data: bytes) -> None:
        self._ref.send(stream_id, data)

    @translated
    def close(self, stream_id: int) -> None:
        self._ref.close(stream_id)

    @translated
    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        self._ref.reset(stream_id, code)

    @translated
    def consumed(self, stream_id: int, n: int) -> bool:
        """Grants the peer credit for n processed bytes; True if that queued a WINDOW_UPDATE."""
        return self._ref.consumed(stream_id, n)

    def outgoing(self, max_bytes: int | None = None) -> bytes:
        return self._ref.outgoing(max_bytes)

    def tick(self, now: int | None = None) -> bool:
        """Sends heartbeats and detects a dead peer; returns whether the session is alive."""
        return self._ref.tick(now_ms() if now is None else now)

    def go_away(self, code: int = NO_ERROR) -> None:
        self._ref.go_away(code)

    def queued(self, stream_id: int) -> int:
        return self._ref.queued(stream_id)

    def buffered(self) -> int:
        return self._ref.buffered()

    def send_window(self, stream_id: int) -> int | None:
        return self._ref.send_window(stream_id)

    def has_outgoing(self) -> bool:
        return self._ref.has_outgoing()

    def is_alive(self) -> bool:
        return self._ref.is_alive()

    def is_finished(self) -> bool:
        return self._ref.is_finished()

    def stream_count(self) -> int:
        return self._ref.stream_count()

    def rtt_ms(self) -> int | None:
        return self._ref.rtt_ms()


WebSocket = ClientWebSocketResponse | web.WebSocketResponse


class SessionStream:
    """One stream of a `SessionChannel`. One task reads while others write."""

    def __init__(self, channel: SessionChannel, stream_id: int, headers: bytes) -> None:
        self._channel = channel
        self.id = stream_id
        self.headers = headers
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buf = bytearray()  # bytes read_frame pulled in beyond the frame it returned
        self._eof = False
        self._closed = False
        self._error: Error | None = None
        self._reader: asyncio.Future[None] | None = None
        self._drainer: asyncio.Future[None] | None = None
        # Callback mode (`listen`): chunks go to the sink as they arrive, the end to on_end.
        self._sink: Callable[[bytes], None] | None = None
        self._on_end: Callable[[Error | None], None] | None = None

    def __repr__(self) -> str:
        return f"<SessionStream {self.id} headers={self.headers!r}>"

    # ---- reading ----------------------------------------------------------------------
    async def read(self) -> bytes:
        """The next chunk of data; b"" once the peer has closed its side."""
        if self._buf:  # left over from read_frame
            chunk = bytes(self._buf)
            self._buf.clear()
            return chunk
        return await self._next_chunk()

    async def read_frame(self, timeout: float | None = None) -> tuple[dict[str, Any], bytes] | None:
        """The next `_wire` frame written by `write_frame`; None at the end of the stream.
        With `timeout` (seconds), TimeoutError if no whole frame came within it: cheaper than
        `asyncio.timeout`, which showed per proxied request in the profile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._buf) < 4 or len(self._buf) < 4 + int.from_bytes(self._buf[:4], "big"):
            chunk = await self._next_chunk(deadline)
            if not chunk:
                if self._buf:
                    raise MalformedRequestError(f"stream {self.id} ended inside a frame", code="session.protocol")
                return None
            self._buf += chunk
        size = int.from_bytes(self._buf[:4], "big")
        frame = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        return _wire.unpack(frame)

    async def _next_chunk(self, deadline: float | None = None) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            if self._error is not None:
                raise self._error
            loop = asyncio.get_running_loop()
            self._reader = reader = loop.create_future()
            expiry = None if deadline is None else loop.call_later(max(0.0, deadline - time.monotonic()),
                                                                   _expire, reader)
            try:
                await reader
            finally:
                self._reader = None
                if expiry is not None:
                    expiry.cancel()
        chunk = self._chunks.popleft()
        # Credit goes back as the application takes data, not as it arrives: that is what
        # holds back the writer of a stream nobody reads.
        self._channel._consumed(self.id, len(chunk))
        return chunk

    def listen(self, on_chunk: Callable[[bytes], None], on_end: Callable[[Error | None], None]) -> None:
        """Callback mode, for relays that would otherwise spend a task per stream: each chunk goes
        to `on_chunk` as it arrives, in place of `read()`, and the stream's end to `on_end`
        (None at the peer's close, else why it failed), once. The listener grants credit
        itself with `consumed(n)` once it has passed a chunk on; credit it holds back holds
        back the peer's writer."""
        self._sink, self._on_end = on_chunk, on_end
        while self._chunks:  # what arrived before
            on_chunk(self._chunks.popleft())
        if self._error is not None:
            self._end(self._error)
        elif self._eof:
            self._end(None)

    def consumed(self, n: int) -> None:
        """In callback mode: n bytes handed to `on_chunk` have been dealt with."""
        self._channel._consumed(self.id, n)

    def _end(self, error: Error | None) -> None:
        on_end, self._on_end, self._sink = self._on_end, None, None
        if on_end is not None:
            on_end(error)

    # ---- writing ----------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Bytes written to this stream that its window has not let out yet."""
        return self._channel._session.queued(self.id)

    def write(self, data: bytes) -> None:
        """Queues data. Call `await drain()` to wait while the stream's window is full; a writer
        that never drains gets `ConflictError` (session.buffer_full) at the session's limit."""
        if self._error is not None:
            raise self._error
        self._channel._session.send(self.id, data)
        self._channel._kick()

    def write_frame(self, header: dict[str, Any], payload: bytes = b"") -> None:
        frame = _wire.pack(header, payload)
        self.write(len(frame).to_bytes(4, "big") + frame)

    async def drain(self) -> None:
        """Waits until the stream holds at most DRAIN_LOW_WATER bytes not yet sent."""
        while self._channel._session.queued(self.id) > DRAIN_LOW_WATER:
            if self._error is not None:
                raise self._error
            self._drainer = asyncio.get_running_loop().create_future()
            self._channel._draining.add(self)
            try:
                await self._drainer
            finally:
                self._drainer = None
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Half-closes: the peer reads b"" after everything already written."""
        if self._error is None and not self._closed:
            self._closed = True
            self._channel._session.close(self.id)
            self._channel._kick()
            self._forget_if_done()

    def reset(self, code: int = CANCEL) -> None:
        """Aborts the stream both ways; queued data is dropped."""
        if self._error is None:
            self._channel._session.reset(self.id, code)
            self._channel._kick()
            self._fail(ConnectionError(f"stream {self.id} was reset here (code {code})", code="session.stream_reset"),
                       drop=True)

    # ---- fed by the channel -----------------------------------------------------------
    def _feed(self, chunk: bytes) -> None:
        if self._sink is not None:
            self._sink(chunk)
            return
        self._chunks.append(chunk)
        self._wake_reader()

    def _feed_eof(self) -> None:
        self._eof = True
        if self._on_end is not None:
            self._end(None)
        self._wake_reader()
        self._forget_if_done()

    def _forget_if_done(self) -> None:
        # Finished both ways: the channel need not route anything to it any more (the
        # application may still hold it and read what is buffered).
        if self._eof and self._closed:
            self._channel._streams.pop(self.id, None)

    def _fail(self, error: Error, *, drop: bool = False) -> None:
        # A reset drops what was not read yet; a session that ended still lets the
        # application read what had arrived before.
        if self._error is None:
            self._error = error
        if drop:
            self._chunks.clear()
        if self._on_end is not None:
            self._end(error)
        self._wake_reader()
        self._wake_drainer()

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def _wake_drainer(self) -> None:
        if self._drainer is not None and not self._drainer.done():
            self._drainer.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class SessionChannel:
    """Runs a `Session` over an aiohttp websocket (client or server side).

    Use as `async with SessionChannel(ws, dialer=True) as channel:`; leaving the block sends a
    GOAWAY, flushes, and closes the websocket. The websocket's own heartbeat is redundant with
    the session's and may be left off."""

    def __init__(self, ws: WebSocket, *, dialer: bool, config: SessionConfig | None = None) -> None:
        self._ws = ws
        self._dialer = dialer
        self._config = config or SessionConfig()
        self._session = Session(dialer=dialer, config=self._config)
        self._streams: dict[int, SessionStream] = {}
        self._incoming: collections.deque[SessionStream] = collections.deque()
        self._accepter: asyncio.Future[None] | None = None
        self._draining: set[SessionStream] = set()
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reason: Error | None = None
        self._closed = asyncio.Event()
        self._control: asyncio.Future[SessionStream] | None = None
        self._peer_going_away = False
        # When set, streams the peer opens go to it as they open, in place of `accept()`.
        self.on_open: Callable[[SessionStream], None] | None = None

    async def __aenter__(self) -> SessionChannel:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> Session:
        return self._session

    @property
    def closed(self) -> bool:
        return self._reason is not None

    def start(self) -> None:
        self._control = asyncio.get_running_loop().create_future()
        if self._dialer:
            self._control.set_result(self.open(CONTROL_HEADERS))
        self._tasks = [asyncio.create_task(t) for t in (self._read(), self._write(), self._tick())]

    def open(self, headers: bytes = b"") -> SessionStream:
        if self._reason is not None:
            raise self._reason
        stream_id = self._session.open_stream(headers)
        stream = self._streams[stream_id] = SessionStream(self, stream_id, headers)
        self._kick()
        return stream

    async def accept(self) -> SessionStream:
        """The next stream the peer opened (not the control stream)."""
        while not self._incoming:
            if self._reason is not None:
                raise self._reason
            if self._peer_going_away:
                raise ConnectionError("the peer is going away and opens no new streams", code="session.closed")
            self._accepter = asyncio.get_running_loop().create_future()
            try:
                await self._accepter
            finally:
                self._accepter = None
        return self._incoming.popleft()

    async def control(self) -> SessionStream:
        assert self._control is not None, "start() the channel first"
        closed = asyncio.create_task(self._closed.wait())
        try:
            await asyncio.wait({self._control, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not self._control.done():
            assert self._reason is not None
            raise self._reason
        return self._control.result()

    async def wait_closed(self) -> Error:
        """Waits until the session ends; returns why."""
        await self._closed.wait()
        assert self._reason is not None
        return self._reason

    async def close(self, code: int = NO_ERROR) -> None:
        if self._reason is None:
            self._session.go_away(code)
            self._kick()
            # Give the writer a moment to put the GOAWAY and any queued data on the wire.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    while self._session.has_outgoing() and self._reason is None:
                        await asyncio.sleep(0.01)
            await self._shutdown(ConnectionError("the session was closed", code="session.closed"), flush=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._ws.close()

    # ---- internals ------------------------------------------------------------------------
    def _kick(self) -> None:
        self._dirty.set()

    def _consumed(self, stream_id: int, n: int) -> None:
        if self._reason is None and self._session.consumed(stream_id, n):
            self._kick()

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type != WSMsgType.BINARY:
                    raise MalformedRequestError(f"the session's websocket carried a {msg.type.name} message",
                                                code="session.protocol")
                self._dispatch(self._session.receive_raw(msg.data))
            reason: Error = ConnectionError("the peer closed the session's websocket", code="session.closed")
        except Error as e:
            reason = e
        except Exception as e:  # the transport failed under us
            reason = ConnectionError(f"the session's websocket failed: {e}", code="session.closed")
        await self._shutdown(reason, flush=True)

    def _dispatch(self, events: list[tuple[str, int, bytes | int | None]]) -> None:
        for kind, stream_id, data in events:
            stream = self._streams.get(stream_id)
            if kind == "data":
                assert isinstance(data, bytes)
                if stream is None:  # nobody holds it any more: give the credit straight back
                    self._consumed(stream_id, len(data))
                else:
                    stream._feed(data)
            elif kind == "opened":
                assert isinstance(data, bytes)
                stream = self._streams[stream_id] = SessionStream(self, stream_id, data)
                if data == CONTROL_HEADERS and self._control is not None and not self._control.done():
                    self._control.set_result(stream)
                else:
                    if self.on_open is not None:
                        self.on_open(stream)
                        continue
                    self._incoming.append(stream)
                    self._wake_accepter()
            elif kind == "closed" and stream is not None:
                stream._feed_eof()
            elif kind == "reset" and stream is not None:
                stream._fail(ConnectionError(f"stream {stream_id} was reset by the peer (code {data})",
                                             code="session.stream_reset"), drop=True)
                self._streams.pop(stream_id, None)
            elif kind == "goaway":
                self._peer_going_away = True
                self._wake_accepter()
        if self._session.has_outgoing():
            self._kick()

    async def _write(self) -> None:
        try:
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                while data := self._session.outgoing(WRITE_BATCH):
                    self._wake_drainers()
                    await self._ws.send_bytes(data)
                self._wake_drainers()
        except Exception as e:  # the transport failed under us
            reason = ConnectionError(f"writing to the session's websocket failed: {e}", code="session.closed")
            await self._shutdown(reason, flush=False)

    def _wake_drainers(self) -> None:
        for stream in list(self._draining):
            if self._session.queued(stream.id) <= DRAIN_LOW_WATER:
                self._draining.discard(stream)
                stream._wake_drainer()

    async def _tick(self) -> None:
        interval = self._config.ping_interval_ms / 2000
        while True:
            await asyncio.sleep(interval)
            if not self._session.tick():
                self._session.events()  # the "dead" event: this task is its reader
                reason = ConnectionError(f"the peer sent nothing for {self._config.dead_timeout_ms} ms; "
                                         "the session is dead", code="session.dead")
                await self._shutdown(reason, flush=False)
                return
            if self._session.has_outgoing():
                self._kick()

    async def _shutdown(self, reason: Error, *, flush: bool) -> None:
        if self._reason is not None:
            return
        self._reason = reason
        for stream in self._streams.values():
            stream._fail(reason)
        for stream in self._incoming:
            stream._fail(reason)
        self._wake_accepter()
        self._closed.set()
        if flush:  # a GOAWAY may be waiting to say why
            with contextlib.suppress(Exception):
                if data := self._session.outgoing(WRITE_BATCH):
                    await self._ws.send_bytes(data)
        # Stop the other tasks before closing the websocket: aiohttp must not see a close
        # while another task is still inside receive().
        others = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._ws.close()

    def _wake_accepter(self) -> None:
        if self._accepter is not None and not self._accepter.done():
            self._accepter.set_result(None)
