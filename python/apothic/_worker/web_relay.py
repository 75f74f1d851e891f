"""The agent's part in web services: `http_*`/`ws_*` frames pass between the session and the
container named in each frame. The agent keeps no per-stream state: a container that dies is
reported by its exit, and the control plane ends that container's streams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

WEB_FRAMES = ("http_", "ws_")


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
    elif header["t"] in ("http_open", "ws_open"):
        reply({"t": "http_reset" if header["t"] == "http_open" else "ws_close", "sid": header["sid"],
               "container": container_id, "code": 1011, "message": "the container is no longer running"}, b"")
