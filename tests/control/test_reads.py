"""Reads decoded by cbor2 with the SDK's tag decoder give what the SDK's own decoder gives."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from surrealdb import RecordID

from apothic.control.store.db import Database


def test_fast_reads_answer_as_the_sdk_does(tmp_path: Path) -> None:
    async def run() -> list[tuple[str, Any, Any]]:
        db = Database(f"surrealkv://{tmp_path / 'state'}", tmp_path / "journal.log")
        await db.open()
        try:
            await db.write("CREATE type::thing('job', 'j1') CONTENT $r",
                           {"r": {"status": "ok", "result": b"\x00\x01", "n": 1.5, "nested": {"a": [1, "x", None]}}})
            await db.write_rows([("insert", "job", "j2", {"id": "j2", "status": "queued", "worker": None})])
            await db.write("UPSERT meta:x SET at = time::now(), d = 1d, u = rand::uuid(), dec = 1.5dec, n = NONE")
            reads = [("SELECT * FROM $ids", {"ids": [RecordID("job", "j1"), RecordID("job", "j2")]}),
                     ("SELECT * FROM job WHERE status NOTINSIDE $t ORDER BY id", {"t": ["x"]}),
                     ("SELECT * FROM meta", {}),
                     ("SELECT VALUE id FROM job", {}),
                     ("SELECT * FROM job WHERE worker = $w", {"w": None}),  # None: through the SDK
                     ("SELECT * FROM type::thing('job', $id)", {"id": "j1"})]
            out = []
            for sql, variables in reads:
                fast = await db.query(sql, variables)
                slow = [statement["result"] for statement in (await db._db.query_raw(sql, variables))["result"]]
                out.append((sql, fast, slow))
            return out
        finally:
            await db.close()

    for sql, fast, slow in asyncio.run(run()):
        assert fast == slow, sql
        assert fast[0], sql  # every read found something
