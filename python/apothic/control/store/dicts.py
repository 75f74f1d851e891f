"""Durable records of named dicts: their entries, leases and revision."""

from __future__ import annotations

from typing import Any

from apothic._bridge.dict import Change
from apothic.control.store._rows import plain_rows
from apothic.control.store.db import Database, RowOp

_SCHEMA = """
DEFINE INDEX IF NOT EXISTS dict_name ON dict FIELDS account, name UNIQUE;
DEFINE INDEX IF NOT EXISTS dict_entry_dict ON dict_entry FIELDS dict;
DEFINE INDEX IF NOT EXISTS dict_lease_dict ON dict_lease FIELDS dict;
"""



class DictStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        await self.db.query(_SCHEMA)

    async def dicts(self) -> list[dict[str, Any]]:
        return plain_rows((await self.db.query("SELECT * FROM dict"))[0])

    async def entries(self) -> list[dict[str, Any]]:
        return plain_rows((await self.db.query("SELECT * FROM dict_entry"))[0])

    async def leases(self) -> list[dict[str, Any]]:
        return plain_rows((await self.db.query("SELECT * FROM dict_lease"))[0])

    async def create(self, record: dict[str, Any]) -> None:
        await self.db.write("CREATE type::thing('dict', $d.id) CONTENT $d RETURN NONE", {"d": record})

    async def delete(self, dict_id: str) -> None:
        await self.db.write("DELETE dict_entry WHERE dict = $id; DELETE dict_lease WHERE dict = $id; "
                            "DELETE type::thing('dict', $id);", {"id": dict_id})

    async def persist(self, dict_id: str, revision: int, changes: list[Change]) -> None:
        """Writes one mutation's changes, with the revision they reach, in one commit."""
        await self.db.write_rows(self.rows(dict_id, revision, changes))

    def rows(self, dict_id: str, revision: int, changes: list[Change]) -> list[RowOp]:
        final: dict[bytes, Any] = {}  # key -> its last state in this batch
        granted: dict[int, int] = {}
        revoked: list[int] = []
        for change in changes:
            if change.kind == "kv" and change.key is not None:
                final[change.key] = change.entry
            elif change.kind == "lease_granted" and change.lease is not None:
                granted[change.lease] = change.ttl_ms
            elif change.lease is not None:
                granted.pop(change.lease, None)
                revoked.append(change.lease)
        puts = [{"id": f"{dict_id}:{key.hex()}", "dict": dict_id, "key": key, "value": e.value,
                 "version": e.version, "create_revision": e.create_revision, "mod_revision": e.mod_revision,
                 "lease": e.lease} for key, e in final.items() if e is not None]
        deletes = [f"{dict_id}:{key.hex()}" for key, e in final.items() if e is None]
        leases = [{"id": f"{dict_id}:{lease}", "dict": dict_id, "lease": lease, "ttl_ms": ttl}
                  for lease, ttl in granted.items()]
        ops: list[RowOp] = [("upsert", "dict_entry", row["id"], row) for row in puts]
        ops += [("delete", "dict_entry", key, None) for key in deletes]
        ops += [("upsert", "dict_lease", row["id"], row) for row in leases]
        ops += [("delete", "dict_lease", f"{dict_id}:{lease}", None) for lease in revoked]
        ops.append(("merge", "dict", dict_id, {"revision": revision}))
        return ops
