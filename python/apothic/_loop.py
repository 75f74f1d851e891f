"""The SDK's one background event loop.

Every I/O method is written once, as a coroutine that runs on this loop. The blocking form
waits for it from the caller's thread; the `.aio` form awaits it from the caller's own loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


class _Mailbox:
    """Handles for one loop from other threads, handed over in bulk.

    `call_soon_threadsafe` wakes the loop through its self-pipe on every call: a write, a wakeup
    and a read each time, the largest single cost of an `.aio` call when many are in flight (32
    concurrent queue clients spent 12% of their CPU in that write alone). Everything posted before
    the loop gets round to it is run by one handle, after one wakeup, in the order posted.
    """

    __slots__ = ("__weakref__", "_items", "_lock", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._items.append((fn, args))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nothing will run what was posted
            with self._lock:
                self._items.clear()
                self._scheduled = False
            raise

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, deque()
            self._scheduled = False
        for fn, args in items:
            fn(*args)


_mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = weakref.WeakKeyDictionary()


def _mailbox(target: asyncio.AbstractEventLoop) -> _Mailbox:
    box = _mailboxes.get(target)
    if box is None:
        with _lock:
            box = _mailboxes.setdefault(target, _Mailbox(target))
    return box


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
    if sys.is_finalizing():
        # The loop's thread no longer runs once the interpreter is shutting down: a wait here (a
        # watch left open, its generator closed at exit) would never end.
        coro.close()
        raise RuntimeError("the interpreter is shutting down; the Apothic SDK's loop has stopped")
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
    back = _mailbox(caller)
    there = _mailbox(target)

    def finished(task: asyncio.Task[T]) -> None:
        back.post(_copy_outcome, task, done)

    def start() -> None:
        task = target.create_task(coro)
        started.append(task)
        task.add_done_callback(finished)

    there.post(start)
    try:
        return await done
    except asyncio.CancelledError:
        # Cancelling the caller cancels the work on the SDK loop, as wrap_future did; this
        # handle runs after start(), so the task is there.
        there.post(lambda: started[0].cancel())
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
