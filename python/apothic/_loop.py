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
    # One handle over and a bare lock back, instead of run_coroutine_threadsafe's
    # concurrent.futures.Future (its Condition) and the callbacks chaining it to the task: half
    # the cost of the thread hop every blocking call pays (measured 40-60 us instead of 90-140).
    finished = threading.Lock()
    finished.acquire()
    started: list[asyncio.Task[T]] = []

    def start() -> None:
        task = target.create_task(coro)
        started.append(task)
        task.add_done_callback(lambda _: finished.release())

    target.call_soon_threadsafe(start)
    try:
        finished.acquire()
    except KeyboardInterrupt:
        # As before: an interrupted caller cancels the work on the SDK loop (after start() ran).
        target.call_soon_threadsafe(lambda: started[0].cancel())
        raise
    task = started[0]
    if task.cancelled():
        raise concurrent.futures.CancelledError()
    return task.result()


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine on the background loop and awaits it from the caller's loop."""
    # One handle each way instead of run_coroutine_threadsafe + wrap_future: no
    # concurrent.futures.Future (its Condition and lock) and no chained callbacks per call; that
    # halved the client's CPU per queue/dict operation.
    caller = asyncio.get_running_loop()
    target = loop()
    if caller is target:
        return await coro
    done: asyncio.Future[T] = caller.create_future()
    started: list[asyncio.Task[T]] = []

    def finished(task: asyncio.Task[T]) -> None:
        caller.call_soon_threadsafe(_copy_outcome, task, done)

    def start() -> None:
        task = target.create_task(coro)
        started.append(task)
        task.add_done_callback(finished)

    target.call_soon_threadsafe(start)
    try:
        return await done
    except asyncio.CancelledError:
        # Cancelling the caller cancels the work on the SDK loop, as wrap_future did; this
        # handle runs after start(), so the task is there.
        target.call_soon_threadsafe(lambda: started[0].cancel())
        raise


def _copy_outcome(task: asyncio.Task[Any], done: asyncio.Future[Any]) -> None:
    if done.cancelled():
        return
    if task.cancelled():
        done.cancel()
    elif (error := task.exception()) is not None:
        done.set_exception(error)
    else:
        done.set_result(task.result())
