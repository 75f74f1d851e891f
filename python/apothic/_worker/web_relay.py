"""The agent's part in web services: each proxied request or websocket is one stream of the
worker session, opened by the control plane with the container named in its headers; the agent
relays its frames (`http_*`, `ws_*`) to and from that container's link.

Backpressure runs end to end. Towards the container, the agent takes the next frame from the
session stream only once the container link has taken the last one (`await drain()`), so a
container that reads slowly stops the control plane's writer of that stream. Towards the
control plane, a stream whose reader is slow (an HTTP client that stopped reading) fills its
window, and once a bounded amount waits in the agent the agent stops reading that container's
link until it drains: the container link is one socket with its own framing, so other streams
of that same container wait too, but no other container, call or stream of the session does.

The container link batches the frames of one loop turn into one `http_batch` frame (payload:
`u32 length | frame`, ...); the agent unpacks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import orjson

from apothic import _wire
from apothic._bridge.session import WEB_HEADERS, SessionStream
from apothic.exception import Error

log = logging.getLogger("apothic.agent")

WEB_FRAMES = ("http_", "ws_")
BATCH = "http_batch"
# Frames after which the container says nothing more on a stream.
_FINAL = frozenset({"http_reset", "ws_close"})
# How much of one stream's response may wait in the agent for window before the agent stops
# reading the container's link.
_HIGH_WATER = 1024 * 1024


class _Container(Protocol):
    proc: Any
    writer: asyncio.StreamWriter

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None: ...

    def send_raw(self, data: bytes) -> None: ...

    def backlogged(self) -> bool: ...


class WebRelay:
    """The web streams of one session, by stream id (which is also the id the container link
    uses). Streams are relayed in the session's callback mode: no task per request."""

    def __init__(self, containers: dict[str, Any]) -> None:
        self.containers = containers
        self.streams: dict[int, tuple[SessionStream, _Container]] = {}
        self.owed: dict[int, int] = {}  # stream id -> credit held until its container catches up
        self.tasks: set[asyncio.Task[None]] = set()

    def accept(self, stream: SessionStream) -> None:
        container_id = stream.headers[len(WEB_HEADERS):].decode()
        ct: _Container | None = self.containers.get(container_id)
        if ct is None or ct.proc.returncode is not None:
            _refuse(stream, f"container {container_id} is no longer running")
            return
        sid = stream.id
        self.streams[sid] = (stream, ct)
        buffer = bytearray()

        def on_chunk(chunk: bytes) -> None:
            nonlocal buffer
            data = bytes(buffer) + chunk if buffer else chunk
            # The stream carries `u32 length | frame`, the container link's own framing, and the
            # control plane names the stream id in each header: whole frames pass through as
            # they are, never unpacked here.
            offset, end = 0, len(data)
            while end - offset >= 4:
                size = int.from_bytes(data[offset : offset + 4], "big")
                if end - offset - 4 < size:
                    break
                offset += 4 + size
            buffer = bytearray(data[offset:])
            if offset and ct.proc.returncode is None:
                ct.send_raw(data[:offset] if offset < end else data)
            # Credit for these bytes goes back only once the container has taken what waits for
            # it: a container that reads slowly holds back the control plane's writer.
            if ct.backlogged():
                self._credit_after_drain(stream, ct, len(chunk))
            else:
                stream.consumed(len(chunk))

        def on_end(error: Error | None) -> None:
            # RESET by the control plane (client gone, timeout) or the session ended: a request
            # still running in the container is told to stop.
            if error is not None and sid in self.streams and ct.proc.returncode is None:
                ct.send({"t": "http_reset", "sid": sid})
            self.streams.pop(sid, None)

        stream.listen(on_chunk, on_end)

    def _credit_after_drain(self, stream: SessionStream, ct: _Container, n: int) -> None:
        waiting = stream.id in self.owed
        self.owed[stream.id] = self.owed.get(stream.id, 0) + n
        if waiting:
            return

        async def drain_then_credit() -> None:
            with contextlib.suppress(Exception):  # a container that died answers through its exit
                await ct.writer.drain()
            owed = self.owed.pop(stream.id, 0)
            with contextlib.suppress(Error):
                stream.consumed(owed)

        task = asyncio.create_task(drain_then_credit())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def close(self) -> None:
        """The session ended: its streams are gone with it; the containers hear it below."""
        for task in list(self.tasks):
            task.cancel()
        for sid, (_, ct) in list(self.streams.items()):
            if ct.proc.returncode is None:
                ct.send({"t": "http_reset", "sid": sid})
        self.streams.clear()
        self.owed.clear()

    def from_container(self, ct: _Container, header: dict[str, Any], payload: bytes) -> SessionStream | None:
        """Puts a frame (or a batch) from a container on its stream. Returns a stream the caller
        must `await drain()` before reading more from the container, else None."""
        if header["t"] == BATCH:
            slow = None
            for frame in _wire.split_frames(payload):
                # Only the header is read; the frame goes on its stream as it is.
                size = int.from_bytes(frame[:4], "big")
                slow = self._one(ct, orjson.loads(frame[4 : 4 + size]), frame) or slow
            return slow
        return self._one(ct, header, _wire.pack(header, payload))

    def _one(self, ct: _Container, header: dict[str, Any], frame: bytes) -> SessionStream | None:
        sid = header.get("sid", 0)
        entry = self.streams.get(sid)
        if entry is None or entry[1] is not ct:  # ended, or not this container's to answer
            return None
        stream = entry[0]
        kind = header["t"]
        try:
            stream.write(len(frame).to_bytes(4, "big") + frame)
            if kind in _FINAL or (header.get("end") and kind in ("http_start", "http_data")):
                del self.streams[sid]
                stream.close()
                return None
        except Error:
            self.streams.pop(sid, None)  # reset meanwhile: the reader tells the container
            return None
        return stream if stream.queued > _HIGH_WATER else None

    def container_gone(self, ct: _Container, why: str) -> None:
        """A container exited: its streams end with the reason."""
        for sid, (stream, owner) in list(self.streams.items()):
            if owner is ct:
                del self.streams[sid]
                with contextlib.suppress(Error):
                    stream.write_frame({"t": "http_reset", "message": why})
                    stream.close()


def _refuse(stream: SessionStream, why: str) -> None:
    """Answers a stream for a container that is gone, so the request need not wait for its timeout."""
    stream.listen(lambda chunk: stream.consumed(len(chunk)), lambda error: None)  # take and drop its frames
    with contextlib.suppress(Error):
        stream.write_frame({"t": "http_reset", "message": why})
        stream.close()
