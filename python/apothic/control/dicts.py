"""Named dicts: the dict actor over the Rust dict engine, with every change made durable.

The engine (`apothic-dict`) decides every write, CAS, lease expiry, lock grant and fence
check. Each mutation's changes are written (journal first, then SurrealDB) before the caller
hears back, in the order the engine made them. A read waits until every mutation the engine
has applied is durable, so no reader ever sees a value that a crash could still take back.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apothic import _ids, exception
from apothic._bridge.dict import DictEngine, Entry, Mutation
from apothic.control.decided import carried_through, carry_on, finish_when_durable
from apothic.control.hub import Hub
from apothic.control.plans import Answer, Plan, json_answer
from apothic.control.store.dicts import DictStore
from apothic.exception import InvalidError, NotFoundError

MAX_VALUE_BYTES = 1024 * 1024
SYSTEM_PREFIX = b"\0apothic\0"  # lock and election keys: never shown to watchers


def wire_entry(e: Entry | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"value": base64.b64encode(e.value).decode(), "version": e.version, "create_revision": e.create_revision,
            "mod_revision": e.mod_revision, "lease": e.lease}


def watch_event(revision: int, key: bytes, entry: Entry | None, **extra: Any) -> dict[str, Any]:
    return {"revision": revision, "type": "put" if entry is not None else "delete",
            "key": base64.b64encode(key).decode(), "entry": wire_entry(entry), **extra}
MAX_TTL_S = 24 * 3600


@dataclass
class NamedDict:
    id: str
    account: str
    name: str
    created_at: float
    engine: DictEngine
    durable_revision: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set on every durable change

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "len": len(self.engine), "revision": self.engine.revision(),
                "created_at": self.created_at}


class DictService:
    def __init__(self, store: DictStore, hub: Hub) -> None:
        self.store = store
        self.hub = hub
        self.dicts: dict[tuple[str, str], NamedDict] = {}
        self._persisting: set[asyncio.Task[None]] = set()
        self._creating = asyncio.Lock()

    async def restore(self) -> None:
        await self.store.open()
        entries: dict[str, list[tuple]] = {}
        for row in await self.store.entries():
            entries.setdefault(row["dict"], []).append((
                row["key"], row["value"], int(row["version"]), int(row["create_revision"]),
                int(row["mod_revision"]), row.get("lease")))
        leases: dict[str, list[tuple[int, int]]] = {}
        for row in await self.store.leases():
            leases.setdefault(row["dict"], []).append((int(row["lease"]), int(row["ttl_ms"])))
        for row in await self.store.dicts():
            # Never below what its entries and leases carry: a store written before checkpoints
            # kept each record to one write a transaction can hold a revision older than its
            # entries (see db._transactions), which the engine would refuse to restore.
            own_entries, own_leases = entries.get(row["id"], []), leases.get(row["id"], [])
            revision = max([int(row.get("revision") or 0)] + [e[4] for e in own_entries]
                           + [lease for lease, _ in own_leases])
            engine = DictEngine.restore(revision, own_entries, own_leases)
            d = NamedDict(id=row["id"], account=row["account"], name=row["name"],
                          created_at=float(row.get("created_at") or 0), engine=engine, durable_revision=revision)
            self.dicts[(d.account, d.name)] = d

    # ---- dicts -------------------------------------------------------------------------
    def find(self, account: str, name: str) -> NamedDict:
        d = self.dicts.get((account, name))
        if d is None:
            raise NotFoundError(f"no dict named {name!r}", code="dict.not_found")
        return d

    async def ensure(self, account: str, name: str, *, create: bool) -> NamedDict:
        d = self.dicts.get((account, name))
        if d is not None:
            return d
        if not create:
            raise NotFoundError(f"no dict named {name!r} (pass create_if_missing=True to make it)",
                                code="dict.not_found")
        if not name or len(name) > 128:
            raise InvalidError("a dict name is 1 to 128 characters")
        # Clients that all create the same missing dict at once (32 tasks each hydrating on first
        # use) must get one dict: without the lock each made its own, and all but one vanished at
        # the next restart with the writes made through them.
        async with self._creating:
            d = self.dicts.get((account, name))
            if d is not None:
                return d
            d = NamedDict(id=_ids.new_id("dict"), account=account, name=name, created_at=time.time(),
                          engine=DictEngine())
            await carried_through(self._created(d))
        return d

    async def _created(self, d: NamedDict) -> None:
        await self.store.create({"id": d.id, "account": d.account, "name": d.name, "revision": 0,
                                 "created_at": d.created_at})
        self.dicts[(d.account, d.name)] = d

    async def delete(self, account: str, name: str) -> None:
        await carried_through(self._delete(self.find(account, name)))

    async def _delete(self, d: NamedDict) -> None:
        await self.store.delete(d.id)
        if self.dicts.get((d.account, d.name)) is d:
            del self.dicts[(d.account, d.name)]
        d.changed.set()

    def list(self, account: str) -> list[dict[str, Any]]:
        return [d.summary() for (acct, _), d in sorted(self.dicts.items()) if acct == account]

    # ---- durability --------------------------------------------------------------------
    async def _commit(self, d: NamedDict, m: Mutation) -> Mutation:
        """Makes a mutation durable before anyone hears of it. A caller cancelled meanwhile
        (decided.py) leaves the settling to when the journal has the write, so that readers
        and watchers still hear of it."""
        if m.changes:
            try:
                await self.store.persist(d.id, m.revision, m.changes)
            except asyncio.CancelledError:
                finish_when_durable(self.store.db, lambda durable: self._settle(d, m, durable=durable))
                raise
            except BaseException:
                self._settle(d, m, durable=False)
                raise
            self._settle(d, m, durable=True)
        return m

    def plan(self, d: NamedDict, m: Mutation, answer: Callable[[], Any]) -> Plan:
        """A decided mutation as a plan (see plans.py): its rows, then what _commit does after."""
        if not m.changes:
            return Plan([], lambda: json_answer(answer()))

        def finish() -> Answer:
            self._settle(d, m, durable=True)
            return json_answer(answer())

        return Plan(self.store.rows(d.id, m.revision, m.changes), finish, lambda: self._settle(d, m, durable=False))

    def _settle(self, d: NamedDict, m: Mutation, *, durable: bool) -> None:
        # After a failed write (a failing disk) too: readers must not wait forever.
        d.durable_revision = max(d.durable_revision, m.revision)
        d.changed.set()
        d.changed = asyncio.Event()
        if durable:  # watchers hear of a change only once it is durable
            for change in m.changes:
                if change.kind == "kv" and change.key is not None and not change.key.startswith(SYSTEM_PREFIX):
                    self.hub.publish(f"dict:{d.id}", watch_event(change.revision, change.key, change.entry))

    def is_settled(self, d: NamedDict) -> bool:
        return d.durable_revision >= d.engine.revision()

    async def settled(self, d: NamedDict) -> None:
        """Waits until everything the engine has applied is durable (no dirty reads)."""
        while not self.is_settled(d):
            await d.changed.wait()

    # ---- reads -------------------------------------------------------------------------
    async def get(self, d: NamedDict, key: bytes) -> Entry | None:
        await self.settled(d)
        return d.engine.get(key)

    async def range(self, d: NamedDict, prefix: bytes) -> list[tuple[bytes, Entry]]:
        await self.settled(d)
        return d.engine.range(prefix)

    # ---- writes ------------------------------------------------------------------------
    async def put(self, d: NamedDict, key: bytes, value: bytes, *, lease: int | None = None,
                  skip_if_exists: bool = False, fence: tuple[bytes, int] | None = None) -> Mutation:
        return await self._commit(d, self.decide_put(d, key, value, lease=lease, skip_if_exists=skip_if_exists,
                                                     fence=fence))

    def decide_put(self, d: NamedDict, key: bytes, value: bytes, *, lease: int | None = None,
                   skip_if_exists: bool = False, fence: tuple[bytes, int] | None = None) -> Mutation:
        """The engine's put, applied but not yet durable (see _commit and plan)."""
        if len(value) > MAX_VALUE_BYTES:
            raise InvalidError("a dict value is at most 1 MiB pickled")
        if fence is not None:
            return d.engine.put_fenced(key, value, fence[0], fence[1], lease)
        return d.engine.put(key, value, lease, skip_if_exists)

    async def put_many(self, d: NamedDict, items: list[tuple[bytes, bytes]]) -> int:
        mutations = [d.engine.put(k, v) for k, v in items]
        changes = [c for m in mutations for c in m.changes]
        if mutations:
            await self._commit(d, Mutation(None, mutations[-1].revision, changes))
        return len(mutations)

    async def delete_key(self, d: NamedDict, key: bytes) -> Entry | None:
        m = await self._commit(d, d.engine.delete(key))
        return m.value or None

    async def cas(self, d: NamedDict, key: bytes, value: bytes, **expect: Any) -> tuple[bool, Entry | None]:
        if len(value) > MAX_VALUE_BYTES:
            raise InvalidError("a dict value is at most 1 MiB pickled")
        if not expect.get("expected_mod_revision") and expect.get("expected_value") is None \
                and expect.get("expected_version") is None:
            raise InvalidError("cas needs expected_value or expected_version")
        m = await self._commit(d, d.engine.cas(key, value, **expect))
        if not m.value[0]:
            await self.settled(d)  # a conflict answer shows an entry that is durable
        return m.value

    async def clear(self, d: NamedDict) -> int:
        return (await self._commit(d, d.engine.clear())).value

    # ---- leases and locks ----------------------------------------------------------------
    async def grant(self, d: NamedDict, ttl_s: float) -> int:
        if not 0 < ttl_s <= MAX_TTL_S:
            raise InvalidError(f"a lease TTL is between 0 and {MAX_TTL_S} seconds")
        return (await self._commit(d, d.engine.grant(max(1, int(ttl_s * 1000))))).value

    def keepalive(self, d: NamedDict, lease: int) -> float:
        return d.engine.keepalive(lease) / 1000

    async def revoke(self, d: NamedDict, lease: int) -> int:
        return (await self._commit(d, d.engine.revoke(lease))).value

    async def acquire(self, d: NamedDict, name: bytes, owner: bytes, ttl_s: float,
                      timeout: float) -> tuple[int, int]:
        """Queues for lock `name` and waits (up to timeout) to hold it; returns (fence, lease).
        While the caller waits here its request's lease is kept alive for it."""
        if not 0 < ttl_s <= MAX_TTL_S:
            raise InvalidError(f"a lock TTL is between 0 and {MAX_TTL_S} seconds")
        fence, lease, acquired, _ = (await self._commit(d, d.engine.lock(name, owner, int(ttl_s * 1000)))).value
        if not acquired and not await self._wait_first(d, lease, ttl_s, timeout,
                                                       lambda: d.engine.lock_standing(name, fence)[0],
                                                       given_up=lambda: d.engine.unlock(name, fence)):
            await self._commit(d, d.engine.unlock(name, fence))
            shown = name.decode(errors="replace")
            raise exception.TimeoutError(f"lock {shown!r} was not free within {timeout:g} s", code="lock.timeout")
        return fence, lease

    async def _wait_first(self, d: NamedDict, lease: int, ttl_s: float, timeout: float,
                          first: Callable[[], bool], given_up: Callable[[], Mutation]) -> bool:
        """Waits until `first()` (this request heads its line), re-checking after every change
        and keeping the waiting request's lease alive; False when the timeout passes first. A
        waiter cancelled (its caller gone) leaves the line at once through `given_up`, instead
        of standing in it until its lease runs out."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                changed = d.changed
                try:
                    await asyncio.wait_for(changed.wait(), min(left, ttl_s / 3))
                except TimeoutError:
                    pass
                d.engine.keepalive(lease)
                if first():
                    return True
        except asyncio.CancelledError:
            try:
                carry_on(self._commit(d, given_up()))
            except Exception:  # already out of line (its lease ran out): nothing to undo
                pass
            raise

    async def campaign(self, d: NamedDict, name: bytes, candidate: bytes, value: bytes, ttl_s: float,
                       timeout: float) -> tuple[int, int]:
        """Enters the election under a new lease and waits (up to timeout) to lead; returns
        (candidacy revision, lease). While the caller waits here its lease is kept alive."""
        lease = await self.grant(d, ttl_s)
        revision, leading, _ = (await self._commit(d, d.engine.campaign(name, candidate, value, lease))).value
        if not leading and not await self._wait_first(d, lease, ttl_s, timeout,
                                                      lambda: d.engine.candidacy_standing(name, revision)[0],
                                                      given_up=lambda: d.engine.revoke(lease)):
            await self._commit(d, d.engine.revoke(lease))
            raise exception.TimeoutError(f"did not win election {name.decode(errors='replace')!r} "
                                         f"within {timeout:g} s", code="election.timeout")
        return revision, lease

    async def proclaim(self, d: NamedDict, name: bytes, revision: int, value: bytes) -> None:
        await self._commit(d, d.engine.proclaim(name, revision, value))

    async def resign(self, d: NamedDict, name: bytes, revision: int) -> None:
        await self._commit(d, d.engine.resign(name, revision))

    async def leader(self, d: NamedDict, name: bytes, *, seen: tuple[int, int] | None = None,
                     timeout: float = 0) -> tuple[bytes, bytes, int, int] | None:
        """The leader; with `seen` (the candidacy and value revisions last seen), waits up to
        timeout for a different leader or value (observe)."""
        await self.settled(d)
        deadline = time.monotonic() + timeout
        while True:
            current = d.engine.leader(name)
            left = deadline - time.monotonic()
            if (current is not None and (current[2], current[3]) != seen) or left <= 0:
                return current
            changed = d.changed
            try:
                await asyncio.wait_for(changed.wait(), left)
            except TimeoutError:
                pass

    async def release(self, d: NamedDict, name: bytes, fence: int) -> None:
        await self._commit(d, d.engine.unlock(name, fence))

    def tick(self) -> None:
        """Ends overdue leases (deleting their keys) and makes that durable."""
        for d in list(self.dicts.values()):
            due = d.engine.next_deadline_in_ms()
            if due is None or due > 0:
                continue
            m = d.engine.expire()
            if m.changes:
                task = asyncio.get_running_loop().create_task(self._commit(d, m))
                self._persisting.add(task)
                task.add_done_callback(self._persisting.discard)
