"""NDJSON streams: history from the store after a revision, then live events from the hub.

Subscribing before reading history and skipping revisions already sent closes the window in
which an event could fall between the two: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from apothic.control import keys
from apothic.control.routes._body import float_param

_KEEPALIVE_S = 15.0


async def follow(
    request: web.Request,
    topic: str,
    history: Callable[[int], Awaitable[list[dict[str, Any]]]],
    ends: Callable[[dict[str, Any]], bool],
) -> web.StreamResponse:
    hub = request.app[keys.HUB]
    after = int(float_param(request, "after", 0))
    live = request.query.get("follow", "1") not in ("0", "false")
    queue = hub.subscribe(topic)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    try:
        last = after
        for item in await history(after):
            await response.write(orjson.dumps(item) + b"\n")
            last = max(last, item["revision"])
            if ends(item):
                return response
        if not live:
            return response
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), _KEEPALIVE_S)
            except TimeoutError:
                await response.write(b"\n")  # keeps proxies and dead-peer detection honest
                continue
            if item["revision"] <= last:
                continue
            last = item["revision"]
            await response.write(orjson.dumps(item) + b"\n")
            if ends(item):
                return response
    except (ConnectionResetError, asyncio.CancelledError):
        return response
    finally:
        hub.unsubscribe(topic, queue)


async def replay_then_follow(
    request: web.Request,
    live: asyncio.Queue[dict[str, Any]],
    first: list[dict[str, Any]],
    last: int,
    keep: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> web.StreamResponse:
    """Writes `first` (a snapshot or the history asked for), then every live event above
    revision `last` that `keep` accepts. The caller subscribed `live` before it read `first`,
    so nothing falls between the two."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    try:
        for event in first:
            await response.write(orjson.dumps(event) + b"\n")
        while True:
            try:
                event = await asyncio.wait_for(live.get(), _KEEPALIVE_S)
            except TimeoutError:
                await response.write(b"\n")
                continue
            if event["revision"] <= last or not keep(event):
                continue
            last = event["revision"]
            await response.write(orjson.dumps(event) + b"\n")
    except (ConnectionResetError, asyncio.CancelledError):
        return response
