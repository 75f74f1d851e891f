"""Job records: a job's events ride in its row, read back after a restart, and the hub's
revision resumes past every one of them (and past events of jobs written before the move)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from apothic.control.store.db import Database
from apothic.control.store.records import Store


def _store(tmp_path: Path) -> Store:
    return Store(Database(f"surrealkv://{tmp_path / 'state'}", tmp_path / "journal.log"))


def _event(job: str, revision: int, kind: str) -> dict[str, Any]:
    return {"job": job, "app": "ap-1", "type": kind, "revision": revision, "time": 1.0, "attempt": 1,
            "worker": None, "detail": None}


def test_a_jobs_events_ride_in_its_row_and_survive_a_restart(tmp_path: Path) -> None:
    async def first_run() -> None:
        store = _store(tmp_path)
        await store.open()
        try:
            queued = _event("fc-a", 5, "queued")
            await store.create_jobs([{"id": "fc-a", "status": "queued", "events": [queued]}])
            assigned = _event("fc-a", 6, "assigned")
            store.record_event_nowait("fc-a", [queued, assigned], {"status": "running"})
            await store.record_event("fc-a", [queued, assigned, _event("fc-a", 9, "succeeded")],
                                     {"status": "succeeded"})
            # A job from before events moved into the row: its events are rows of their own.
            await store.db.write("INSERT INTO job_event $e RETURN NONE",
                                 {"e": [{"id": "fc-old-3", **_event("fc-old", 3, "succeeded")}]})
            await store.db.write("INSERT INTO job $j RETURN NONE", {"j": [{"id": "fc-old", "status": "succeeded"}]})
        finally:
            await store.close()

    async def second_run() -> tuple[list[str], list[str], list[str], int, str]:
        store = _store(tmp_path)
        await store.open()
        try:
            every = [e["type"] for e in await store.job_events("fc-a")]
            after = [e["type"] for e in await store.job_events("fc-a", after=5)]
            old = [e["type"] for e in await store.job_events("fc-old")]
            job = await store.get_job("fc-a")
            assert job is not None
            return every, after, old, await store.max_revision(), job["status"]
        finally:
            await store.close()

    asyncio.run(first_run())
    every, after, old, revision, status = asyncio.run(second_run())
    assert every == ["queued", "assigned", "succeeded"]
    assert after == ["assigned", "succeeded"]
    assert old == ["succeeded"]
    assert revision == 9  # from fc-a's row, past the older table's 3
    assert status == "succeeded"


def test_the_revision_of_an_empty_store_is_zero(tmp_path: Path) -> None:
    async def run() -> int:
        store = _store(tmp_path)
        await store.open()
        try:
            return await store.max_revision()
        finally:
            await store.close()

    assert asyncio.run(run()) == 0
