"""Decisions that must take effect whether or not their caller is still there.

A request served off the hot path (a long-polling claim, a CAS, a lock) may be cancelled at any
await: its rpc session closed, or its HTTP client went away. Cancelled while it waits for an
item or a lock, nothing is lost. Cancelled after the engine has decided, while the decision is
on its way to the journal, the write still lands (it was queued), but what should follow it in
memory would not: the watchers' event, a dead-lettered item's place in its new queue. So the
part from the decision on runs as a task of its own that the caller's cancellation does not
reach (`carried_through`). Where a task per request would cost too much (a CAS, a spawn: a
task and a shield added 13.5 us a step on the loop, and CAS/s fell by about a tenth), the step
instead catches its cancellation at the journal write and has the rest run once the journal
holds the write (`finish_when_durable`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from apothic.control.store.db import Database

log = logging.getLogger("apothic.control")

T = TypeVar("T")


async def carried_through(step: Coroutine[Any, Any, T]) -> T:
    """Awaits `step`, which runs to its end even if this await is cancelled."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        _hold(task)  # the caller is gone: the step goes on alone
        raise


def finish_when_durable(db: Database, then: Callable[[bool], None]) -> None:
    """For a step cancelled while its write was queued for the journal (where it lands or fails
    with the writes queued before it): runs `then(durable)` once every write queued so far has."""

    async def wait() -> None:
        try:
            await db.sync()
        except Exception:
            then(False)
            return
        then(True)

    carry_on(wait())


_carried: set[asyncio.Task[Any]] = set()  # the loop holds tasks weakly: these are held here


def carry_on(step: Coroutine[Any, Any, Any]) -> None:
    """Runs `step` in the background, to its end (its failure is logged)."""
    _hold(asyncio.ensure_future(step))


def _hold(task: asyncio.Task[Any]) -> None:
    _carried.add(task)
    task.add_done_callback(_carried.discard)
    task.add_done_callback(_report)


def _report(task: asyncio.Task[Any]) -> None:
    """Logs the failure of a step nobody awaits any more (nobody else would see it)."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("a decided step failed after its caller went away", exc_info=error)
