from __future__ import annotations

from typing import Any


def plain(record: dict[str, Any]) -> dict[str, Any]:
    """A record with SurrealDB's RecordID replaced by our own id string."""
    out = dict(record)
    rid = out.get("id")
    if rid is not None and not isinstance(rid, str):
        out["id"] = str(rid.id)
    return out


def plain_rows(rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [plain(r) for r in rows or []]
