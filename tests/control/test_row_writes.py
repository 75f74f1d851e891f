"""Row-operation writes: the checkpoint folds a row's operations into its net effect, keeps
their order against plain SQL writes, and a crash before the checkpoint replays them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from apothic.control.store.db import ROWS, Database, _emit_rows, _fold
from apothic.control.store.journal import Journal


def _db(tmp_path: Path) -> Database:
    return Database(f"surrealkv://{tmp_path / 'state'}", tmp_path / "journal.log")


async def _rows(db: Database) -> dict[str, dict[str, Any]]:
    rows = (await db.query("SELECT * FROM item"))[0]
    return {str(r["id"].id): {k: v for k, v in r.items() if k != "id"} for r in rows}


def test_folding_gives_each_row_its_net_effect() -> None:
    folded: dict[tuple[str, str], list[Any]] = {}
    for op in [("insert", "item", "a", {"id": "a", "v": 1}), ("merge", "item", "a", {"n": 1}),
               ("delete", "item", "a", None),  # put, claimed, acked: SurrealDB never hears of it
               ("insert", "item", "b", {"id": "b", "v": 2}), ("merge", "item", "b", {"n": 2}),
               ("merge", "item", "c", {"n": 1}), ("merge", "item", "c", {"m": 2}),
               ("delete", "item", "d", None), ("upsert", "item", "d", {"id": "d", "v": 4}),
               ("upsert", "item", "e", {"id": "e", "v": 5}), ("delete", "item", "e", None),
               ("merge", "item", "f", {"n": 1}), ("delete", "item", "f", None), ("merge", "item", "f", {"n": 2})]:
        _fold(folded, op)
    assert folded == {
        ("item", "a"): ["gone", None],
        ("item", "b"): ["insert", {"id": "b", "v": 2, "n": 2}],
        ("item", "c"): ["merge", {"n": 1, "m": 2}],
        ("item", "d"): ["upsert", {"id": "d", "v": 4}],
        ("item", "e"): ["delete", None],
        ("item", "f"): ["delete", None],
    }
    parts: list[str] = []
    variables: dict[str, Any] = {}
    _emit_rows(folded, parts, variables)
    assert folded == {}
    assert len(parts) == 4  # one statement per (kind, table); the gone row is in none of them
    assert "a" not in str(variables)


def test_row_writes_reach_the_store_folded_and_in_order(tmp_path: Path) -> None:
    async def run() -> dict[str, dict[str, Any]]:
        db = _db(tmp_path)
        await db.open()
        try:
            await asyncio.gather(
                db.write_rows([("insert", "item", "a", {"id": "a", "v": 1})]),
                db.write_rows([("insert", "item", "b", {"id": "b", "v": 2})]),
            )
            await db.write_rows([("merge", "item", "a", {"n": 1}), ("delete", "item", "b", None)])
            # Plain SQL between row writes sees the rows written before it, and not those after.
            await db.write("UPDATE item SET seen = true RETURN NONE")
            await db.write_rows([("insert", "item", "c", {"id": "c", "v": 3})])
            return await _rows(db)
        finally:
            await db.close()

    assert asyncio.run(run()) == {"a": {"v": 1, "n": 1, "seen": True}, "c": {"v": 3}}


def test_journaled_row_writes_are_replayed_after_a_crash(tmp_path: Path) -> None:
    async def first_run() -> int:
        db = _db(tmp_path)
        await db.open()
        await db.write_rows([("insert", "item", "a", {"id": "a", "v": 1})])
        seq = db._seq
        await db.close()
        return seq

    seq = asyncio.run(first_run())
    # Acknowledged (journaled and synced) but never checkpointed: the process died first.
    journal = Journal(tmp_path / "journal.log")
    journal.read_all()
    journal.append([Journal.encode((seq + 1, ROWS, {"ops": [("insert", "item", "b", {"id": "b", "v": 2}),
                                                            ("merge", "item", "a", {"n": 7})]})),
                    Journal.encode((seq + 2, ROWS, {"ops": [("delete", "item", "b", None),
                                                            ("insert", "item", "c", {"id": "c", "v": 3})]}))])
    journal.close()

    async def second_run() -> dict[str, dict[str, Any]]:
        db = _db(tmp_path)
        await db.open()
        try:
            return await _rows(db)
        finally:
            await db.close()

    assert asyncio.run(second_run()) == {"a": {"v": 1, "n": 7}, "c": {"v": 3}}


def test_a_row_written_by_sql_and_by_row_operations_in_one_checkpoint_survives_a_restart(tmp_path: Path) -> None:
    """surrealkv, reopened, brought back the first of two writes of one record made in one
    transaction: a dict created and then given its revision in one checkpoint read back as
    revision 0 after a restart, and the next start refused its entries. Each write of a record
    must land in a transaction of its own."""
    async def first_run() -> None:
        db = _db(tmp_path)
        await db.open()
        try:
            # Unawaited writes queue together, so all three reach SurrealDB in one checkpoint.
            db.write_nowait("CREATE type::thing('item', $r.id) CONTENT $r RETURN NONE", {"r": {"id": "d", "rev": 0}})
            db.write_rows_nowait([("upsert", "entry", "d:k", {"id": "d:k", "v": 1})])
            await db.write_rows([("merge", "item", "d", {"rev": 3})])
        finally:
            await db.close()

    async def second_run() -> tuple[dict[str, dict[str, Any]], list[Any]]:
        db = _db(tmp_path)
        await db.open()
        try:
            return await _rows(db), (await db.query("SELECT VALUE v FROM entry"))[0]
        finally:
            await db.close()

    asyncio.run(first_run())
    assert asyncio.run(second_run()) == ({"d": {"rev": 3}}, [1])


def test_the_checkpoint_folds_rewrites_over_its_lag_and_starts_early_on_a_backlog(
        tmp_path: Path, monkeypatch: Any) -> None:
    """Rewrites of one row within the lag reach SurrealDB as one write; a backlog of
    `_CHECKPOINT_EARLY` records starts the checkpoint without waiting for the lag."""
    from apothic.control.store import db as db_module

    monkeypatch.setattr(db_module, "_CHECKPOINT_LAG_S", 30.0)
    monkeypatch.setattr(db_module, "_CHECKPOINT_EARLY", 50)
    statements: list[str] = []

    async def run() -> int:
        db = _db(tmp_path)
        await db.open()
        execute = db._execute

        async def counting(sql: str, variables: dict[str, Any], *, read: bool = False) -> dict[str, Any]:
            if not read:
                statements.append(sql)
            return await execute(sql, variables, read=read)

        db._execute = counting  # type: ignore[method-assign]
        try:
            for v in range(49):  # under the backlog: nothing is checkpointed within the 30 s lag
                await db.write_rows([("upsert", "item", "a", {"id": "a", "v": v})])
            await asyncio.sleep(0.3)
            assert statements == []
            await db.write_rows([("upsert", "item", "a", {"id": "a", "v": 49})])  # the 50th record
            for _ in range(100):
                if statements:
                    break
                await asyncio.sleep(0.02)
            assert len(statements) == 1 and statements[0].count("UPSERT type::thing('item'") == 1
            return (await _rows(db))["a"]["v"]
        finally:
            await db.close()

    assert asyncio.run(run()) == 49


def test_plans_journal_in_place_only_when_the_writer_is_idle_and_fail_whole_when_it_refuses(
        tmp_path: Path, monkeypatch) -> None:
    from apothic.control import plans
    from apothic.control.plans import Plan

    def plan(row: str, seen: list[str]) -> Plan:
        return Plan([("insert", "item", row, {"id": row})], lambda: (seen.append(row), (b"ok", "text/plain"))[1],
                    failed=lambda: seen.append(f"failed {row}"))

    async def run() -> tuple[list[Any], list[Any], list[str], dict[str, dict[str, Any]]]:
        db = _db(tmp_path)
        await db.open()
        try:
            seen: list[str] = []
            await asyncio.sleep(0.01)  # the writer waits for work
            in_place = plans.start_in_place(db, [plan("a", seen)])  # durable on return
            # A write queued and not yet taken: the next batch must queue behind it, not pass it.
            queued = db.enqueue("UPDATE item SET seen = true RETURN NONE")
            behind = plans.start_in_place(db, [plan("b", seen)])
            await queued
            await plans.commit(db, [plan("b", seen)])

            def refuse(self: Journal, frames: list[bytes]) -> None:
                raise OSError("disk on fire")

            monkeypatch.setattr(Journal, "append", refuse)
            await asyncio.sleep(0.01)
            refused = plans.start_in_place(db, [plan("c", seen), plan("d", seen)])
            monkeypatch.undo()
            return [in_place, behind], refused or [], seen, await _rows(db)
        finally:
            await db.close()

    (in_place, behind), refused, seen, rows = asyncio.run(run())
    assert in_place == [(b"ok", "text/plain")] and behind is None
    assert [type(e).__name__ for e in refused] == ["StoreError", "StoreError"]
    assert seen == ["a", "b", "failed c", "failed d"]
    assert rows == {"a": {"seen": True}, "b": {}}  # "a" before the queued UPDATE, "b" after it
