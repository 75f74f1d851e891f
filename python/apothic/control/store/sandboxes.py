"""Durable records of sandboxes: id, name, app, worker, status, created, timeout, how it ended."""

from __future__ import annotations

from typing import Any

from apothic.control.store._rows import plain_rows
from apothic.control.store.db import Database

_SCHEMA = """
DEFINE INDEX IF NOT EXISTS sandbox_name ON sandbox FIELDS account, app_name, name;
DEFINE INDEX IF NOT EXISTS sandbox_status ON sandbox FIELDS status;
"""


class SandboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        await self.db.query(_SCHEMA)

    async def save(self, record: dict[str, Any]) -> None:
        """Creates or replaces a sandbox's record; returns once it is durable."""
        await self.db.write("UPSERT type::thing('sandbox', $r.id) CONTENT $r RETURN NONE", {"r": record})

    async def update(self, sandbox_id: str, fields: dict[str, Any]) -> None:
        await self.db.write("UPDATE type::thing('sandbox', $id) MERGE $f RETURN NONE", {"id": sandbox_id, "f": fields})

    async def get(self, sandbox_id: str) -> dict[str, Any] | None:
        rows = plain_rows((await self.db.query("SELECT * FROM type::thing('sandbox', $id)", {"id": sandbox_id}))[0])
        return rows[0] if rows else None

    async def find(self, account: str, app_name: str, name: str | None) -> list[dict[str, Any]]:
        """Newest first: a name belongs to one live sandbox at a time, but ended ones keep theirs."""
        sql = "SELECT * FROM sandbox WHERE account = $a AND app_name = $app"
        variables: dict[str, Any] = {"a": account, "app": app_name}
        if name is not None:
            sql += " AND name = $n"
            variables["n"] = name
        return plain_rows((await self.db.query(sql + " ORDER BY created_at DESC", variables))[0])

    async def unfinished(self) -> list[dict[str, Any]]:
        return plain_rows((await self.db.query(
            "SELECT * FROM sandbox WHERE status IN ['starting', 'running']"))[0])
