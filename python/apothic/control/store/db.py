"""The SurrealDB connection and its group-commit writer.

Measured here (shared/reference/measured-here.md): a point write through the SDK costs about
1 ms, but 1,000 rows in one query go in at 5-11k rows/s. So every mutation goes through one
writer task that drains whatever arrived while the previous batch was committing and commits it
as one `BEGIN ... COMMIT` query: durability costs one round trip per tick, not one per write.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from surrealdb import AsyncSurreal

log = logging.getLogger("apothic.store")

_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_MAX_BATCH = 512
_LAZY_FLUSH_S = 0.02


class StoreError(RuntimeError):
    pass


@dataclass(slots=True)
class _Write:
    sql: str
    vars: dict[str, Any]
    done: asyncio.Future[None] | None = field(default=None)


def _rename_vars(sql: str, variables: dict[str, Any], prefix: str) -> tuple[str, dict[str, Any]]:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        return f"${prefix}{name}" if name in variables else m.group(0)

    return _VAR.sub(sub, sql), {f"{prefix}{k}": v for k, v in variables.items()}


def _check(response: dict[str, Any], what: str) -> list[Any]:
    if "error" in response:
        raise StoreError(f"{what}: {response['error']}")
    results = response.get("result") or []
    for statement in results:
        if statement.get("status") != "OK":
            raise StoreError(f"{what}: {statement.get('result')}")
    return [statement.get("result") for statement in results]


class Database:
    def __init__(self, url: str, namespace: str = "apothic", database: str = "main") -> None:
        self.url = url
        self._namespace = namespace
        self._database = database
        self._db: Any = None
        self._pending: asyncio.Queue[_Write] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._lazy: list[_Write] = []
        self._lazy_timer: asyncio.TimerHandle | None = None

    async def open(self) -> None:
        self._db = AsyncSurreal(self.url)
        await self._db.connect()
        await self._db.use(self._namespace, self._database)
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")

    async def close(self) -> None:
        if self._writer is not None:
            # Let writes already accepted finish before the connection goes.
            self._flush_lazy()
            await self._pending.join()
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._db is not None:
            await self._db.close()

    async def query(self, sql: str, variables: dict[str, Any] | None = None) -> list[Any]:
        """Runs a read (or a schema statement) now; returns each statement's result."""
        response = await self._db.query_raw(sql, variables or {})
        return _check(response, "query")

    async def write(self, sql: str, variables: dict[str, Any] | None = None) -> None:
        """Commits a mutation; returns once it is on disk."""
        done = asyncio.get_running_loop().create_future()
        self._flush_lazy()  # earlier unawaited writes keep their place ahead of this one
        self._pending.put_nowait(_Write(sql, variables or {}, done))
        await done

    def write_nowait(self, sql: str, variables: dict[str, Any] | None = None) -> None:
        """Queues a mutation that nobody waits for (logs, intermediate events); order is kept.

        It rides along with the next awaited write, or goes alone after a short delay: a call
        that finishes quickly then costs one commit for all its events instead of one each.
        """
        self._lazy.append(_Write(sql, variables or {}))
        if self._lazy_timer is None:
            self._lazy_timer = asyncio.get_running_loop().call_later(_LAZY_FLUSH_S, self._flush_lazy)

    def _flush_lazy(self) -> None:
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        for w in self._lazy:
            self._pending.put_nowait(w)
        self._lazy.clear()

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._pending.get()]
            while len(batch) < _MAX_BATCH and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            try:
                await self._commit(batch)
                error: BaseException | None = None
            except StoreError as e:
                error = e
            except Exception as e:  # the engine itself failed: report it to every waiter
                log.exception("store commit failed")
                error = e
            if error is not None and len(batch) > 1:
                # One bad statement fails its transaction: retry one by one so only it fails.
                for w in batch:
                    try:
                        await self._commit([w])
                        self._settle(w, None)
                    except Exception as e:
                        self._settle(w, e)
            else:
                for w in batch:
                    self._settle(w, error)
            for _ in batch:
                self._pending.task_done()

    @staticmethod
    def _settle(w: _Write, error: BaseException | None) -> None:
        if error is not None and w.done is None:
            log.error("background write failed: %s", error)
        if w.done is None or w.done.done():
            return
        if error is None:
            w.done.set_result(None)
        else:
            w.done.set_exception(error)

    async def _commit(self, batch: list[_Write]) -> None:
        if len(batch) == 1:
            w = batch[0]
            _check(await self._db.query_raw(w.sql, w.vars), "write")
            return
        parts = ["BEGIN TRANSACTION;"]
        variables: dict[str, Any] = {}
        for i, w in enumerate(batch):
            sql, renamed = _rename_vars(w.sql, w.vars, f"w{i}_")
            parts.append(sql.rstrip().rstrip(";") + ";")
            variables.update(renamed)
        parts.append("COMMIT TRANSACTION;")
        _check(await self._db.query_raw("\n".join(parts), variables), "write batch")
