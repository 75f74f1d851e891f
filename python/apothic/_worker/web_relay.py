"""The agent's part in web services: `http_*`/`ws_*` frames pass between the session and the
container named in each frame. The agent keeps no per-stream state: a container that dies is
reported by its exit, and the control plane ends that container's streams.

Under load many streams of one container have a frame to send in the same turn of the event
loop; both ends then send them as one `http_batch` frame (payload: `u32 length | frame`, ...),
which the agent relays whole. That halves the session messages per request at 32 in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

WEB_FRAMES = ("http_", "ws_")
BATCH = "http_batch"


def pack_batch(frames: list[bytes]) -> bytes:
    return b"".join(len(f).to_bytes(4, "big") + f for f in frames)


def unpack_batch(payload: bytes) -> Iterator[bytes]:
    offset = 0
    view = memoryview(payload)
    while offset < len(payload):
        size = int.from_bytes(view[offset : offset + 4], "big")
        yield bytes(view[offset + 4 : offset + 4 + size])
        offset += 4 + size


class _Container(Protocol):
    proc: Any

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None: ...


def to_container(containers: dict[str, Any], reply: Callable[[dict[str, Any], bytes], None],
                 header: dict[str, Any], payload: bytes) -> None:
    """Hands a frame from the control plane to its container, or answers that it is gone."""
    container_id = header.pop("container", "")
    ct: _Container | None = containers.get(container_id)
    if ct is not None and ct.proc.returncode is None:
        ct.send(header, payload)
        return
    from apothic import _wire

    frames = [_wire.unpack(f) for f in unpack_batch(payload)] if header["t"] == BATCH else [(header, payload)]
    for inner, _ in frames:
        if inner["t"] in ("http_open", "ws_open"):  # its requests must not wait for their timeout
            reply({"t": "http_reset" if inner["t"] == "http_open" else "ws_close", "sid": inner["sid"],
                   "container": container_id, "code": 1011, "message": "the container is no longer running"}, b"")
