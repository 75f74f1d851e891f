"""A request cancelled after its decision (its session closed while the write was on its way
to the journal) still has every effect the decision promised: watchers hear of a dict change,
items moved between queues arrive, a spawned call is queued to run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from apothic.control import plans
from apothic.control.dicts import DictService
from apothic.control.hub import Hub
from apothic.control.model import FunctionSpec
from apothic.control.queues import QueueService
from apothic.control.scheduler import Scheduler
from apothic.control.store import Store
from apothic.control.store.db import Database
from apothic.control.store.dicts import DictStore
from apothic.control.store.queues import QueueStore


def _db(tmp_path: Path) -> Database:
    return Database(f"surrealkv://{tmp_path / 'state'}", tmp_path / "journal.log")


def _occupy_the_journal(db: Database) -> None:
    """Queues two writes: the writer takes them as one batch to its sync thread and awaits it,
    so a write made next waits in line (never written through in place, without a pause)."""
    db.enqueue("RETURN NONE")
    db.enqueue("RETURN NONE")


async def _cancel_at_its_write(db: Database, step: asyncio.Future[object] | asyncio.Task[object]) -> None:
    """Lets `step` run to its journal write, then cancels it there."""
    await asyncio.sleep(0)
    assert not step.done()  # waiting for its write, in line behind _occupy_the_journal's
    step.cancel()
    assert (await asyncio.gather(step, return_exceptions=True))[0].__class__ is asyncio.CancelledError


def test_a_cancelled_cas_still_reaches_watchers_and_disk(tmp_path: Path) -> None:
    async def run() -> tuple[dict, bool, bytes | None]:
        db = _db(tmp_path)
        await db.open()
        hub = Hub()
        svc = DictService(DictStore(db), hub)
        await svc.restore()
        d = await svc.ensure("ac-1", "d", create=True)
        events = hub.subscribe(f"dict:{d.id}")
        _occupy_the_journal(db)
        await _cancel_at_its_write(db, asyncio.ensure_future(svc.cas(d, b"k", b"v", expected_version=0)))
        event = await asyncio.wait_for(events.get(), 5)
        settled = svc.is_settled(d)
        await db.close()

        again = Database(f"surrealkv://{tmp_path / 'state'}", tmp_path / "journal.log")
        await again.open()
        svc = DictService(DictStore(again), Hub())
        await svc.restore()
        entry = svc.find("ac-1", "d").engine.get(b"k")
        await again.close()
        return event, settled, None if entry is None else entry.value

    event, settled, value = asyncio.run(run())
    assert event["type"] == "put"
    assert settled
    assert value == b"v"


def test_a_cancelled_redrive_still_moves_every_item(tmp_path: Path) -> None:
    async def run() -> tuple[int, int]:
        db = _db(tmp_path)
        await db.open()
        svc = QueueService(QueueStore(db), Hub())
        await svc.restore()
        dead = await svc.ensure("ac-1", "work.dlq", create=True)
        work = await svc.ensure("ac-1", "work", create=True)
        await plans.commit(db, [svc.plan_put(dead, "", [b"a", b"b", b"c"])])
        _occupy_the_journal(db)
        await _cancel_at_its_write(db, asyncio.ensure_future(svc.redrive(dead, "work")))
        for _ in range(100):  # the move finishes in the background
            if svc.length(work, None) == 3:
                break
            await asyncio.sleep(0.01)
        lengths = svc.length(work, None), svc.length(dead, None)
        await db.close()
        return lengths

    assert asyncio.run(run()) == (3, 0)


def test_a_cancelled_lock_waiter_leaves_the_line(tmp_path: Path) -> None:
    """Cancelled while queued for a lock, a request leaves the line at once: the lock passes to
    the next live waiter, not to a request nobody is there for (until its TTL ran out)."""
    async def run() -> int:
        db = _db(tmp_path)
        await db.open()
        svc = DictService(DictStore(db), Hub())
        await svc.restore()
        d = await svc.ensure("ac-1", "locks", create=True)
        held_fence, _ = await svc.acquire(d, b"L", b"first", ttl_s=30, timeout=1)
        gone = asyncio.ensure_future(svc.acquire(d, b"L", b"gone", ttl_s=30, timeout=30))
        await asyncio.sleep(0.05)  # queued behind the holder
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        await asyncio.sleep(0.05)  # its leaving is written in the background
        await svc.release(d, b"L", held_fence)
        fence, _ = await svc.acquire(d, b"L", b"next", ttl_s=30, timeout=1)
        await db.close()
        return fence

    assert asyncio.run(run()) > 0  # without leaving, "next" waited 1 s behind "gone" and timed out


def test_a_call_cancelled_on_its_way_to_the_journal_is_queued_to_run(tmp_path: Path) -> None:
    """A spawn whose caller went away while its record was being written still runs: the record
    lands, and a call on record that only ran after a restart would surprise everyone."""
    async def run() -> tuple[int, int]:
        db = _db(tmp_path)
        store = Store(db)
        await store.open()
        sched = Scheduler(store, Hub(), lease_ms=30_000)
        spec = FunctionSpec(id="fu-1", app_id="ap-1", account="ac-1", name="f", module="m", qualname="f",
                            bundle_hash="", options={})
        await sched.register_app({"id": "ap-1", "account": "ac-1", "name": "a", "mode": "ephemeral"}, [spec])
        _occupy_the_journal(db)
        await _cancel_at_its_write(db, asyncio.ensure_future(sched.submit("fu-1", "ac-1", [b"args"])))
        for _ in range(100):  # queued once its record is in the journal
            if sched.jobs:
                break
            await asyncio.sleep(0.01)
        queued = len(sched.jobs), len(sched.functions["fu-1"].queue)
        await store.close()
        return queued

    assert asyncio.run(run()) == (1, 1)
