"""The SurrealDB connection behind a journal and a group-committing writer.

A write is acknowledged once it is in the journal (journal.py), synced to disk; everything that
arrives while one append is in flight goes into the next, so durability costs one fdatasync per
tick, not one per write. A checkpoint task then applies journaled writes to SurrealDB in order,
many to a `BEGIN ... COMMIT`, together with the journal position they reach. Reads wait for the
checkpoint to catch up with every write acknowledged before them, so a reader always sees its
own and everyone's acknowledged writes.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from surrealdb import AsyncSurreal

from apothic.control.store.journal import Journal, Record

log = logging.getLogger("apothic.store")

_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_MAX_BATCH = 512
_LAZY_FLUSH_S = 0.02
_JOURNAL_RESET_BYTES = 16 * 1024 * 1024
_CHECKPOINT_SQL = "UPSERT meta:journal SET seq = $seq RETURN NONE"


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
    def __init__(self, url: str, journal_path: Path, namespace: str = "apothic", database: str = "main") -> None:
        self.url = url
        self._journal = Journal(journal_path)
        self._namespace = namespace
        self._database = database
        self._db: Any = None
        self._pending: asyncio.Queue[_Write] = asyncio.Queue()
        self._to_apply: asyncio.Queue[list[Record]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._lazy: list[_Write] = []
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._request_id = 0
        self._seq = 0  # last sequence number journaled
        self._applied = 0  # last sequence number SurrealDB holds
        self._applied_changed = asyncio.Event()

    async def open(self) -> None:
        self._db = AsyncSurreal(self.url)
        await self._db.connect()
        await self._db.use(self._namespace, self._database)
        await self._recover()
        self._tasks = [asyncio.create_task(self._write_loop(), name="store-journal"),
                       asyncio.create_task(self._apply_loop(), name="store-checkpoint")]

    async def _recover(self) -> None:
        """Replays into SurrealDB every journaled write past its checkpoint, then empties the journal."""
        rows = _check(await self._db.query_raw("SELECT VALUE seq FROM meta:journal", {}), "recover")[0]
        self._applied = int(rows[0]) if rows else 0
        records = [r for r in self._journal.read_all() if r[0] > self._applied]
        if self.url.startswith("mem://"):
            records = []  # a fresh in-memory store: an earlier run's journal belongs to no one
        for start in range(0, len(records), _MAX_BATCH):
            await self._apply(records[start : start + _MAX_BATCH])
        if records:
            log.info("replayed %d journaled writes into the store", len(records))
        self._seq = self._applied
        self._journal.reset()

    async def close(self) -> None:
        if self._tasks:
            # Let writes already accepted reach the journal and the store before closing.
            self._flush_lazy()
            await self._pending.join()
            await self._caught_up(self._seq)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._db is not None:
            await self._db.close()
        self._journal.close()

    async def _caught_up(self, seq: int) -> None:
        while self._applied < seq:
            self._applied_changed.clear()
            await self._applied_changed.wait()

    async def query(self, sql: str, variables: dict[str, Any] | None = None) -> list[Any]:
        """Runs a read once the store holds every write acknowledged so far."""
        await self._caught_up(self._seq)
        response = await self._db.query_raw(sql, variables or {})
        return _check(response, "query")

    async def write(self, sql: str, variables: dict[str, Any] | None = None) -> None:
        """Makes a mutation durable; returns once it is synced to the journal."""
        done = asyncio.get_running_loop().create_future()
        self._flush_lazy()  # earlier unawaited writes keep their place ahead of this one
        self._pending.put_nowait(_Write(sql, variables or {}, done))
        await done

    async def sync(self) -> None:
        """Returns once every write queued so far, awaited or not, is durable."""
        await self.write("RETURN NONE")

    def write_nowait(self, sql: str, variables: dict[str, Any] | None = None) -> None:
        """Queues a mutation that nobody waits for (logs, intermediate events); order is kept.

        It rides along with the next awaited write, or goes alone after a short delay, so a call
        that finishes quickly costs one sync for all its events instead of one each.
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
            if self._applied == self._seq and self._journal.size > _JOURNAL_RESET_BYTES:
                self._journal.reset()
            batch = [await self._pending.get()]
            while len(batch) < _MAX_BATCH and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            records: list[Record] = []
            for w in batch:
                self._seq += 1
                records.append((self._seq, w.sql, w.vars))
            try:
                # Inline on purpose: handing the append to a thread cost more than the 0.3 ms
                # sync itself, because the thread then waited up to 5 ms for the GIL.
                self._journal.append([Journal.encode(r) for r in records])
                error: BaseException | None = None
            except Exception as e:  # unpicklable vars or a failing disk: nothing was acknowledged
                log.exception("journal append failed")
                error = e
                self._seq -= len(records)
            for w in batch:
                if w.done is not None and not w.done.done():
                    if error is None:
                        w.done.set_result(None)
                    else:
                        w.done.set_exception(StoreError(f"write not durable: {error}"))
                self._pending.task_done()
            if error is None:
                self._to_apply.put_nowait(records)

    async def _apply_loop(self) -> None:
        while True:
            records = await self._to_apply.get()
            while len(records) < _MAX_BATCH and not self._to_apply.empty():
                records.extend(self._to_apply.get_nowait())
            await self._apply(records)
            self._applied = records[-1][0]
            self._applied_changed.set()

    async def _apply(self, records: list[Record]) -> None:
        """Commits journaled writes to SurrealDB with the position they reach, in one transaction.
        A statement SurrealDB refuses is a bug of ours: it is logged and skipped, never retried
        forever, so one bad write cannot wedge every later one."""
        try:
            await self._commit(records)
        except Exception:
            log.exception("checkpoint batch failed; applying its writes one by one")
            for record in records:
                try:
                    await self._commit([record])
                except Exception:
                    log.exception("store refused journaled write %d: %s", record[0], record[1][:200])
                    await self._commit([(record[0], "RETURN NONE", {})])

    async def _commit(self, records: list[Record]) -> None:
        parts = ["BEGIN TRANSACTION;"]
        variables: dict[str, Any] = {"seq": records[-1][0]}
        for i, (_, sql, record_vars) in enumerate(records):
            renamed_sql, renamed = _rename_vars(sql, record_vars, f"w{i}_")
            parts.append(renamed_sql.rstrip().rstrip(";") + ";")
            variables.update(renamed)
        parts.append(_CHECKPOINT_SQL + ";")
        parts.append("COMMIT TRANSACTION;")
        _check(await self._execute("\n".join(parts), variables), "checkpoint")

    async def _execute(self, sql: str, variables: dict[str, Any]) -> dict[str, Any]:
        """A write query. With the embedded engine, the request is CBOR-encoded by cbor2's C
        encoder and handed to the engine directly: the SDK's pure-Python encoder was the largest
        cost of a checkpoint (measured ten times slower). Our write variables hold only plain
        values, which both encoders write alike, except None: cbor2 writes CBOR null where the
        SDK writes NONE, so a None field is stored as NULL, and it reads back as None either way."""
        engine = getattr(self._db, "_db", None)
        if engine is None or not hasattr(engine, "execute"):
            return await self._db.query_raw(sql, variables)  # a remote SurrealDB server
        self._request_id += 1
        request = cbor2.dumps({"id": str(self._request_id), "method": "query", "params": [sql, variables]})
        response = cbor2.loads(await engine.execute(request))
        return response if isinstance(response, dict) else {}
