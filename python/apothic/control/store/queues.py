"""Durable records of named queues and their items."""

from __future__ import annotations

import time
from typing import Any

from apothic.control.store._rows import plain_rows
from apothic.control.store.db import Database

_SCHEMA = """
DEFINE INDEX IF NOT EXISTS queue_name ON queue FIELDS account, name UNIQUE;
DEFINE INDEX IF NOT EXISTS queue_item_queue ON queue_item FIELDS queue;
"""



class QueueStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        await self.db.query(_SCHEMA)

    async def queues(self) -> list[dict[str, Any]]:
        return plain_rows((await self.db.query("SELECT * FROM queue"))[0])

    async def items(self) -> list[dict[str, Any]]:
        return plain_rows((await self.db.query("SELECT * FROM queue_item ORDER BY seq"))[0])

    async def create_queue(self, record: dict[str, Any]) -> None:
        await self.db.write("CREATE type::thing('queue', $q.id) CONTENT $q RETURN NONE", {"q": record})

    async def delete_queue(self, queue_id: str) -> None:
        await self.db.write(
            "DELETE queue_item WHERE queue = $id; DELETE type::thing('queue', $id);", {"id": queue_id}
        )

    async def put_items(self, rows: list[dict[str, Any]]) -> None:
        await self.db.write("INSERT INTO queue_item $rows RETURN NONE", {"rows": rows})

    async def delete_items(self, keys: list[str]) -> None:
        await self.db.write("FOR $k IN $keys { DELETE type::thing('queue_item', $k) };", {"keys": keys})

    async def count_deliveries(self, deliveries: dict[str, int]) -> None:
        """Records delivery counts so that max_deliveries still holds after a restart."""
        await self.db.write(
            "FOR $d IN $ds { UPDATE type::thing('queue_item', $d.key) SET deliveries = $d.n RETURN NONE };",
            {"ds": [{"key": k, "n": n} for k, n in deliveries.items()]},
        )

    def note_attempt_nowait(self, key: str, attempt: dict[str, Any]) -> None:
        self.db.write_nowait(
            "UPDATE type::thing('queue_item', $k) SET history += $a RETURN NONE", {"k": key, "a": attempt}
        )

    async def move_items(self, moves: list[dict[str, Any]]) -> None:
        """Moves items between queues (dead-lettering, redrive) in one transaction: an item is
        never in both queues and never in neither."""
        await self.db.write(
            "FOR $m IN $moves { UPDATE type::thing('queue_item', $m.key) MERGE $m.fields RETURN NONE };",
            {"moves": moves},
        )

    def save_revision_nowait(self, queue_id: str, revision: int) -> None:
        self.db.write_nowait("UPDATE type::thing('queue', $id) SET revision = $rev RETURN NONE",
                             {"id": queue_id, "rev": revision})

    async def clear(self, queue_id: str, partition: str | None) -> None:
        if partition is None:
            await self.db.write("DELETE queue_item WHERE queue = $id", {"id": queue_id})
        else:
            await self.db.write("DELETE queue_item WHERE queue = $id AND partition = $p",
                                {"id": queue_id, "p": partition})


def now() -> float:
    return time.time()
