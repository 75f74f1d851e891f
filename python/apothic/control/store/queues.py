"""Durable records of named queues and their items."""

from __future__ import annotations

import time
from typing import Any

from apothic.control.store._rows import plain_rows
from apothic.control.store.db import Database, RowOp

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

    # Item writes are row operations: an item put and acked before its checkpoint never
    # reaches SurrealDB at all (see Database.write_rows).
    async def delete_items(self, keys: list[str]) -> None:
        await self.db.write_rows(delete_rows(keys))

    async def count_deliveries(self, deliveries: dict[str, int]) -> None:
        await self.db.write_rows(delivery_rows(deliveries))

    def note_history_nowait(self, key: str, history: list[dict[str, Any]]) -> None:
        """Saves an item's attempt history (the whole list: the service holds it)."""
        self.db.write_rows_nowait([("merge", "queue_item", key, {"history": list(history)})])

    async def move_items(self, moves: list[dict[str, Any]]) -> None:
        """Moves items between queues (dead-lettering, redrive) in one transaction: an item is
        never in both queues and never in neither."""
        await self.db.write_rows([("merge", "queue_item", m["key"], m["fields"]) for m in moves])

    def save_revision_nowait(self, queue_id: str, revision: int) -> None:
        self.db.write_nowait("UPDATE type::thing('queue', $id) SET revision = $rev RETURN NONE",
                             {"id": queue_id, "rev": revision})

    async def clear(self, queue_id: str, partition: str | None) -> None:
        if partition is None:
            await self.db.write("DELETE queue_item WHERE queue = $id", {"id": queue_id})
        else:
            await self.db.write("DELETE queue_item WHERE queue = $id AND partition = $p",
                                {"id": queue_id, "p": partition})


def put_rows(rows: list[dict[str, Any]]) -> list[RowOp]:
    return [("insert", "queue_item", row["id"], row) for row in rows]


def delete_rows(keys: list[str]) -> list[RowOp]:
    return [("delete", "queue_item", key, None) for key in keys]


def delivery_rows(deliveries: dict[str, int]) -> list[RowOp]:
    """Delivery counts, so that max_deliveries still holds after a restart."""
    return [("merge", "queue_item", k, {"deliveries": n}) for k, n in deliveries.items()]


def now() -> float:
    return time.time()
