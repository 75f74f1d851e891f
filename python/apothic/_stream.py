"""Reading an NDJSON stream (job events, watches) from blocking code, line by line."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson

from apothic import _loop


async def _close(response: Any) -> None:
    response.close()


def follow(open_stream: Callable[[], Awaitable[Any]]) -> Iterator[dict[str, Any]]:
    """Each JSON line of the stream `open_stream()` opens, until it ends or the caller stops
    iterating; the connection is closed either way."""
    response = _loop.run(open_stream())  # type: ignore[arg-type]
    try:
        while True:
            line = _loop.run(response.content.readline())
            if not line:
                return
            if line.strip():
                yield orjson.loads(line)
    finally:
        if not sys.is_finalizing():  # at exit the process closes the connection anyway
            _loop.run(_close(response))


def watch_params(snapshot: bool, start_revision: int | None, **extra: str) -> dict[str, str]:
    """The query of a watch: a snapshot first, or a replay from a revision."""
    params = dict(extra)
    if snapshot:
        params["snapshot"] = "1"
    if start_revision is not None:
        params["start_revision"] = str(start_revision)
    return params
