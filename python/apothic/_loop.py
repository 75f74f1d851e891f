"""The SDK's one background event loop.

Every I/O method is written once, as a coroutine that runs on this loop. The blocking form
waits for it from the caller's thread; the `.aio` form awaits it from the caller's own loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # about twice as fast per request/response as asyncio's own loop here
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            new_loop = _new_loop()
            thread = threading.Thread(target=new_loop.run_forever, name="apothic-client", daemon=True)
            thread.start()
            _loop = new_loop
        return _loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine on the background loop and blocks until it finishes."""
    target = loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is target:
        coro.close()
        raise RuntimeError("a blocking Apothic call was made on the SDK's own loop; use the .aio form")
    future = asyncio.run_coroutine_threadsafe(coro, target)
    try:
        return future.result()
    except (KeyboardInterrupt, concurrent.futures.CancelledError):
        future.cancel()
        raise


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine on the background loop and awaits it from the caller's loop."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop()))
