"""The scheduler keeps recently ended jobs in memory, bounded by count and by result bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from apothic.control import scheduler as scheduler_module
from apothic.control.hub import Hub
from apothic.control.model import Job
from apothic.control.scheduler import Scheduler
from apothic.control.store import Store
from apothic.control.store.db import Database


def _job(job_id: str, result: bytes) -> Job:
    return Job(id=job_id, function_id="fu-1", app_id="ap-1", account="ac-1", status="succeeded", attempts=1,
               created_at=0.0, args=b"pickled args", result=result)


def test_ended_jobs_are_kept_oldest_out_within_both_bounds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(scheduler_module, "_ENDED_KEPT", 3)
    monkeypatch.setattr(scheduler_module, "_ENDED_BYTES", 10)
    store = Store(Database(f"surrealkv://{tmp_path / 'state'}", tmp_path / "journal.log"))  # never opened
    sched = Scheduler(store, Hub(0), lease_ms=1000)
    for i in range(4):
        sched._remember(_job(f"fc-{i}", b"x"))
    assert list(sched.ended) == ["fc-1", "fc-2", "fc-3"]  # the count bound dropped the oldest
    assert sched._known("fc-3") is not None and sched._known("fc-0") is None
    assert sched.ended["fc-3"].args == b""  # an ended job never runs again: its arguments go
    sched._remember(_job("fc-big", b"y" * 9))
    assert list(sched.ended) == ["fc-3", "fc-big"]  # 1 + 9 bytes: within the byte bound
    sched._remember(_job("fc-huge", b"z" * 11))
    assert list(sched.ended) == []  # a result over the bound is not kept at all
    assert sched._ended_bytes == 0
