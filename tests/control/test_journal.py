"""The store's journal: acknowledged writes survive a crash before their checkpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

from apothic.control.store.db import Database
from apothic.control.store.journal import Journal


def _db(tmp_path: Path) -> Database:
    return Database(f"surrealkv://{tmp_path / 'state'}", tmp_path / "journal.log")


async def _values(db: Database) -> list[int]:
    rows = (await db.query("SELECT VALUE v FROM t ORDER BY v"))[0]
    return list(rows)


def test_journaled_writes_past_the_checkpoint_are_replayed(tmp_path: Path) -> None:
    async def first_run() -> int:
        db = _db(tmp_path)
        await db.open()
        for v in range(3):
            await db.write("CREATE t CONTENT {v: $v}", {"v": v})
        assert await _values(db) == [0, 1, 2]  # reads see acknowledged writes
        seq = db._seq
        await db.close()
        return seq

    seq = asyncio.run(first_run())
    # A crash after the journal sync but before the checkpoint: records only in the journal,
    # followed by a record torn mid-append.
    journal = Journal(tmp_path / "journal.log")
    journal.read_all()
    journal.append([Journal.encode((seq + 1, "CREATE t CONTENT {v: $v}", {"v": 3})),
                    Journal.encode((seq + 2, "CREATE t CONTENT {v: $v}", {"v": 4}))])
    torn = Journal.encode((seq + 3, "CREATE t CONTENT {v: $v}", {"v": 5}))
    journal.append([torn[: len(torn) // 2]])
    journal.close()

    async def second_run() -> list[int]:
        db = _db(tmp_path)
        await db.open()
        try:
            await db.write("CREATE t CONTENT {v: $v}", {"v": 6})
            return await _values(db)
        finally:
            await db.close()

    assert asyncio.run(second_run()) == [0, 1, 2, 3, 4, 6]


def test_a_bad_statement_is_skipped_not_wedging_later_writes(tmp_path: Path) -> None:
    async def run() -> list[int]:
        db = _db(tmp_path)
        await db.open()
        try:
            await db.write("CREATE t CONTENT {v: $v}", {"v": 1})
            await db.write("THIS IS NOT SURREALQL")
            await db.write("CREATE t CONTENT {v: $v}", {"v": 2})
            return await _values(db)
        finally:
            await db.close()

    assert asyncio.run(run()) == [1, 2]


def _create(seq: int, v: int) -> bytes:
    return Journal.encode((seq, "CREATE t CONTENT {v: $v}", {"v": v}))


async def _write_one_and_close(tmp_path: Path) -> int:
    """A store holding v=0; returns the journal position it reached."""
    db = _db(tmp_path)
    await db.open()
    await db.write("CREATE t CONTENT {v: $v}", {"v": 0})
    seq = db._seq
    await db.close()
    return seq


async def _reopened_values(tmp_path: Path) -> list[int]:
    db = _db(tmp_path)
    await db.open()
    try:
        return await _values(db)
    finally:
        await db.close()


def test_records_in_sealed_segments_are_replayed_in_order_after_a_crash(tmp_path: Path) -> None:
    seq = asyncio.run(_write_one_and_close(tmp_path))
    # A crash with three segments on disk, none checkpointed: two sealed, the last torn.
    journal = Journal(tmp_path / "journal.log")
    journal.read_all()
    journal.append([_create(seq + 1, 1), _create(seq + 2, 2)])
    journal.seal(seq + 2)
    journal.append([_create(seq + 3, 3)])
    journal.seal(seq + 3)
    torn = _create(seq + 5, 5)
    journal.append([_create(seq + 4, 4), torn[: len(torn) // 2]])
    journal.close()
    assert sorted(p.name for p in tmp_path.glob("journal*.log")) == ["journal.1.log", "journal.2.log", "journal.log"]

    assert asyncio.run(_reopened_values(tmp_path)) == [0, 1, 2, 3, 4]
    assert [p.name for p in tmp_path.glob("journal*.log")] == ["journal.log"]  # replayed, then emptied


def test_the_journal_shrinks_under_steady_writes(tmp_path: Path) -> None:
    """Segments are sealed as they fill and deleted once checkpointed, though the checkpoint
    never catches up with the writes at any one moment (the journal used to shrink only then)."""
    async def run() -> tuple[int, int, list[int]]:
        db = _db(tmp_path)
        db._journal.segment_bytes = 2048
        await db.open()
        try:
            for v in range(400):
                db.write_nowait("CREATE t CONTENT {v: $v}", {"v": v})
                if v % 40 == 39:
                    await db.sync()
            sealed = db._journal._number  # segments started so far
            await db._caught_up(db._seq)
            segments = [p for p in tmp_path.glob("journal*.log") if p.name != "journal.next.log"]
            return sealed, len(segments), await _values(db)
        finally:
            await db.close()

    sealed, left, values = asyncio.run(run())
    assert values == list(range(400))
    assert sealed >= 4 and left == 1  # about 36 KB of records went through 2 KiB segments (a batch may overfill one)


def test_writes_through_the_sync_thread_are_durable_and_in_order(tmp_path: Path, monkeypatch) -> None:
    """A slow disk's path: every batch appended and synced by the Rust thread, across sealed
    segments, then replayed after a crash (the checkpoint never ran)."""
    from apothic.control.store import db as db_module

    monkeypatch.setattr(db_module, "_INLINE_SYNC_S", 0.0)  # never in place

    async def first_run() -> int:
        db = _db(tmp_path)
        db._journal.segment_bytes = 1024
        db._apply_loop = asyncio.Event().wait  # type: ignore[method-assign]  # a crash before any checkpoint
        await db.open()
        for v in range(100):  # a batch each: about 9 KB through 1 KiB segments
            await db.write("CREATE t CONTENT {v: $v}", {"v": v})
        sealed = db._journal._number
        for task in db._tasks:
            task.cancel()
        db._syncer.stop()  # type: ignore[union-attr]
        return sealed

    assert asyncio.run(first_run()) >= 3

    assert asyncio.run(_reopened_values(tmp_path)) == list(range(100))


def test_segments_are_zeroed_ahead_and_their_zeros_end_the_records(tmp_path: Path) -> None:
    """The next segment is zeroed on a thread and takes over at the next seal (early, when the
    current one was not zeroed); replay stops at the zeros after the last record."""
    journal = Journal(tmp_path / "journal.log", segment_bytes=4096)
    journal.read_all()
    journal.reset()  # as a start does: a plain segment 0, the next one being zeroed
    journal.append([_create(1, 1)])
    journal._next[0].join()  # type: ignore[index]
    assert journal.should_seal()
    journal.seal(1)
    assert not journal.should_seal()  # the zeroed segment took over
    assert (tmp_path / "journal.1.log").stat().st_size == 4096
    journal.append([_create(2, 2), _create(3, 3)])
    journal.close()
    assert not (tmp_path / "journal.next.log").exists()
    reopened = Journal(tmp_path / "journal.log", segment_bytes=4096)
    assert [r[0] for r in reopened.read_all()] == [1, 2, 3]
    reopened.close()
