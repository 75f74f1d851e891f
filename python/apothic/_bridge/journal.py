"""Python side of `crates/apothic-py/src/journal.rs`: the journal's append-and-sync thread."""

from __future__ import annotations

from pathlib import Path

from apothic import _core


class JournalSync:
    """Appends and syncs on a thread that never takes the GIL; `fileno()` turns readable as
    appends finish, and `take()` gives their outcomes in order (None: durable; else the error)."""

    def __init__(self) -> None:
        self._ref = _core.JournalSyncRef()

    def fileno(self) -> int:
        return int(self._ref.fileno())

    def append(self, path: Path, generation: int, offset: int, data: bytes) -> None:
        self._ref.append(str(path), generation, offset, data)

    def take(self) -> list[str | None]:
        return list(self._ref.take())

    def close(self) -> None:
        self._ref.close()
