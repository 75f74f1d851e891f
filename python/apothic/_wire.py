"""Frames shared by the control plane, the worker agent and containers.

A frame is a JSON header plus opaque payload bytes (pickled arguments or results, which the
control plane never unpickles): `u32 header length | orjson header | payload`.
"""

from __future__ import annotations

from typing import Any

import orjson


def pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    head = orjson.dumps(header)
    return len(head).to_bytes(4, "big") + head + payload


def unpack(frame: bytes) -> tuple[dict[str, Any], bytes]:
    size = int.from_bytes(frame[:4], "big")
    return orjson.loads(frame[4 : 4 + size]), bytes(frame[4 + size :])
