"""Requests decided at once and made durable in batches: the hot Queue and Dict routes.

A planned route is a plain function, not a coroutine. It reads the request, has the Rust
engine make its decision there and then, and returns a `Plan`: the row operations that must be
durable before anyone hears of the decision, and what to do once they are (publish to
watchers, wake getters) together with the answer. It returns None when it cannot decide
without waiting (a claim on an empty queue, a read of a change not yet durable); the route's
`slow` coroutine then serves the request as any other (routes/_planned.py).

Over HTTP a plan is committed alone. Over the rpc websocket (routes/rpc.py) the planned frames
of a message are decided in turn, and the rows of every 16 go to the journal as one write, in
place when the journal writer is idle (`start_in_place`), else queued for it (`start`): a
task, a future, a store write and a response object per request had cost the control plane
more than the decisions and the durability together. Measured here with 32 clients writing
dict keys (a prototype, scratch runs in one sitting), the server's main thread went from 133
to 51-59 us a write, and writes/s from 5,856 to 9,180-9,793; bench/coordination_bench.py has
the official figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from apothic.control.store.db import ROWS, Database, RowOp

JSON = "application/json"
OCTETS = "application/octet-stream"
Answer = tuple[bytes, str]  # body and content type of a 200 answer


@dataclass(slots=True)
class Plan:
    ops: list[RowOp]  # made durable before `finish` runs
    finish: Callable[[], Answer]  # the decision takes effect; its answer
    failed: Callable[[], None] | None = None  # runs instead of finish when the write failed


# (app, account, path variables, query, body) -> a plan, or None to leave it to the slow path
PlanFn = Callable[[web.Application, str, Mapping[str, str], Mapping[str, str], bytes], "Plan | None"]


def json_answer(data: Any) -> Answer:
    return orjson.dumps(data), JSON


def answered(data: Any) -> Plan:
    """A plan with nothing to write: a read, or a repeated ack."""
    return Plan([], lambda: json_answer(data))


def start(db: Database, plans: list[Plan]) -> asyncio.Future[None] | None:
    """Queues the plans' rows for the journal as one write, at once: rows reach the journal in
    the order the engine decided, which the checkpoint's folding relies on (the last write of a
    row wins). None when there is nothing to write."""
    ops = [op for plan in plans for op in plan.ops]
    return db.enqueue(ROWS, {"ops": ops}) if ops else None


def start_in_place(db: Database, plans: list[Plan]) -> list[Answer | BaseException] | None:
    """The plans' outcomes when their rows could be journaled in place, now (the write loop idle):
    no future, no task, no loop turn between the decision and its answer. None when they must be
    queued with `start` instead."""
    ops = [op for plan in plans for op in plan.ops]
    try:
        if ops and not db.write_now(ROWS, {"ops": ops}):
            return None
    except Exception as e:  # a failing disk: nothing of this batch was acknowledged
        return settle(plans, e)
    return settle(plans, None)


async def finish(durable: asyncio.Future[None] | None, plans: list[Plan]) -> list[Answer | BaseException]:
    """Once the rows are durable, finishes each plan in order: its answer, or the error its
    request gets."""
    error: BaseException | None = None
    if durable is not None:
        try:
            await durable
        except Exception as e:  # a failing disk: nothing of this batch was acknowledged
            error = e
    return settle(plans, error)


def settle(plans: list[Plan], error: BaseException | None) -> list[Answer | BaseException]:
    """Each plan's answer, or the error its request gets (`error`: the write failed)."""
    outcomes: list[Answer | BaseException] = []
    for plan in plans:
        try:
            if error is not None and plan.ops:
                if plan.failed is not None:
                    plan.failed()
                outcomes.append(error)
            else:
                outcomes.append(plan.finish())
        except Exception as e:
            outcomes.append(e)
    return outcomes


async def commit(db: Database, plans: list[Plan]) -> list[Answer | BaseException]:
    return await finish(start(db, plans), plans)
