"""Durable records of rented capacity: rentals, one-time join tokens and per-worker keys.

Every write goes through the journal (db.py), so a rental is on disk before the provider is
asked to create it and survives a control-plane restart; `reconcile` then matches what the
providers still run against these records.
"""

from __future__ import annotations

from typing import Any

from apothic.control.store._rows import plain_rows
from apothic.control.store.db import Database

_SCHEMA = """
DEFINE INDEX IF NOT EXISTS rental_worker ON rental FIELDS worker;
DEFINE INDEX IF NOT EXISTS join_token_rental ON join_token FIELDS rental;
DEFINE INDEX IF NOT EXISTS worker_key_rental ON worker_key FIELDS rental;
"""


class CapacityStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        await self.db.query(_SCHEMA)

    # ---- rentals -------------------------------------------------------------------------
    async def rentals(self) -> list[dict[str, Any]]:
        return plain_rows((await self.db.query("SELECT * FROM rental ORDER BY created_at"))[0])

    async def save_rental(self, record: dict[str, Any]) -> None:
        await self.db.write("UPSERT type::thing('rental', $r.id) CONTENT $r RETURN NONE", {"r": record})

    async def update_rental(self, rental_id: str, fields: dict[str, Any]) -> None:
        await self.db.write("UPDATE type::thing('rental', $id) MERGE $f RETURN NONE", {"id": rental_id, "f": fields})

    async def forget_rental(self, rental_id: str) -> list[str]:
        """Drops a rental with every credential it issued, in one commit: a destroyed host's
        agent, should it still be running somewhere, can no longer join. Returns the hashes of
        the worker keys revoked, for the caller's caches."""
        hashes = await self.worker_key_hashes(rental_id)
        await self.db.write(
            "FOR $h IN $hashes { DELETE type::thing('api_key', $h); DELETE type::thing('worker_key', $h) };"
            "DELETE join_token WHERE rental = $id; DELETE type::thing('rental', $id);",
            {"id": rental_id, "hashes": hashes},
        )
        return hashes

    # ---- join tokens and worker keys -------------------------------------------------------
    async def put_join_token(self, token_hash: str, record: dict[str, Any]) -> None:
        await self.db.write("CREATE type::thing('join_token', $h) CONTENT $r RETURN NONE",
                            {"h": token_hash, "r": record})

    async def join_token(self, token_hash: str) -> dict[str, Any] | None:
        rows = plain_rows((await self.db.query("SELECT * FROM type::thing('join_token', $h)", {"h": token_hash}))[0])
        return rows[0] if rows else None

    async def worker_key(self, key_hash: str) -> dict[str, Any] | None:
        rows = plain_rows((await self.db.query("SELECT * FROM type::thing('worker_key', $h)", {"h": key_hash}))[0])
        return rows[0] if rows else None

    async def worker_key_hashes(self, rental_id: str) -> list[str]:
        rows = plain_rows((await self.db.query("SELECT id FROM worker_key WHERE rental = $id", {"id": rental_id}))[0])
        return [r["id"] for r in rows]

    async def exchange(self, token_hash: str, key_hash: str, key: dict[str, Any], api_key: dict[str, Any]) -> None:
        """Consumes a join token and creates the worker key it is exchanged for, in one commit:
        the token can never be used twice, and the key exists whenever the token is gone."""
        await self.db.write(
            "DELETE type::thing('join_token', $t);"
            "CREATE type::thing('worker_key', $k) CONTENT $key RETURN NONE;"
            "UPSERT type::thing('api_key', $k) CONTENT $api RETURN NONE;",
            {"t": token_hash, "k": key_hash, "key": key, "api": api_key},
        )
