"""Durable records of class variants and named instances.

Each is a `func` row like any function's (so the scheduler's restore brings it back with its
app), carrying its class facts, among them a named instance's name and status.
"""

from __future__ import annotations

from typing import Any

from apothic.control.store._rows import plain_rows
from apothic.control.store.db import Database


class InstanceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save_variant(self, record: dict[str, Any]) -> None:
        await self.db.write("UPSERT type::thing('func', $f.id) CONTENT $f RETURN NONE", {"f": record})

    async def set_status(self, function_id: str, status: str) -> None:
        await self.db.write("UPDATE type::thing('func', $id) SET cls.status = $status RETURN NONE",
                            {"id": function_id, "status": status})

    async def get_variant(self, function_id: str) -> dict[str, Any] | None:
        rows = plain_rows((await self.db.query("SELECT * FROM type::thing('func', $id)", {"id": function_id}))[0])
        return rows[0] if rows else None

    async def find_variant(self, base_id: str, key: str) -> dict[str, Any] | None:
        """The anonymous variant of class `base_id` with these parameters and options."""
        rows = plain_rows((await self.db.query(
            "SELECT * FROM func WHERE cls.base = $base AND cls.key = $key LIMIT 1",
            {"base": base_id, "key": key}))[0])
        return rows[0] if rows else None
