"""Named queues: the queue actor over the Rust queue engine, with durable items.

Every item lives in SurrealDB (through the store's journal) from the moment its put is
acknowledged until its ack; the engine (`apothic-queue`) holds the hot state of each partition
and makes every claim, lease-expiry and redelivery decision. Leases are not durable: after a
restart every unacknowledged item is visible again, with its delivery count kept, so delivery
stays at least once and max_deliveries still holds.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apothic import _ids
from apothic._bridge.queue import QueueEngine
from apothic.control.decided import carried_through, carry_on
from apothic.control.hub import Hub
from apothic.control.plans import Answer, Plan, answered, json_answer
from apothic.control.queue_events import RESTART_GAP, EventLog
from apothic.control.store.queues import QueueStore, delete_rows, delivery_rows, put_rows
from apothic.exception import InvalidError, LeaseLostError, NotFoundError, QueueEmptyError

DEFAULT_PARTITION = ""
MAX_ITEM_BYTES = 1024 * 1024
MAX_LEASE_S = 12 * 3600  # SQS's cap on a visibility timeout
_RECENT_ACKS = 10_000


@dataclass(slots=True)
class Item:
    key: str
    queue: str
    partition: str
    payload: bytes
    seq: int
    put_at: float
    deliveries: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Partition:
    engine: QueueEngine
    items: dict[int, Item] = field(default_factory=dict)  # engine item id -> item
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)

    def wake(self, n: int = 1) -> None:
        """Wakes waiting getters in arrival order (fairness: Q4)."""
        while n > 0 and self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1


@dataclass(slots=True)
class Held:
    """One live claim: the public claim id names this delivery attempt and no other."""

    partition: str
    engine_claim: int
    item_id: int
    item: Item
    claimed_at: float
    consumer: str | None


@dataclass
class NamedQueue:
    id: str
    account: str
    name: str
    max_deliveries: int
    dead_letter: str | None
    created_at: float
    events: EventLog
    partitions: dict[str, Partition] = field(default_factory=dict)
    held: dict[int, Held] = field(default_factory=dict)
    settled: OrderedDict[int, str] = field(default_factory=OrderedDict)  # claim id -> how it ended
    next_claim: int = 1

    def partition(self, name: str) -> Partition:
        part = self.partitions.get(name)
        if part is None:
            # The engine dead-letters on lease expiry once max_deliveries is reached.
            part = self.partitions[name] = Partition(QueueEngine(self.max_deliveries))
        return part

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "max_deliveries": self.max_deliveries,
                "dead_letter": self.dead_letter, "created_at": self.created_at,
                "len": sum(len(p.items) for p in self.partitions.values()),
                "in_flight": len(self.held)}

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "account": self.account, "name": self.name, "max_deliveries": self.max_deliveries,
                "dead_letter": self.dead_letter, "created_at": self.created_at}


class QueueService:
    def __init__(self, store: QueueStore, hub: Hub) -> None:
        self.store = store
        self.hub = hub
        self.queues: dict[tuple[str, str], NamedQueue] = {}  # (account, name) -> queue
        self._seq = 0
        self._creating = asyncio.Lock()

    async def restore(self) -> None:
        await self.store.open()
        by_id: dict[str, NamedQueue] = {}
        for row in await self.store.queues():
            saved = int(row.get("revision") or 0)
            q = NamedQueue(id=row["id"], account=row["account"], name=row["name"],
                           max_deliveries=int(row.get("max_deliveries") or 0), dead_letter=row.get("dead_letter"),
                           created_at=float(row.get("created_at") or 0),
                           events=EventLog(self.hub, f"queue:{row['id']}", saved + RESTART_GAP if saved else 0))
            self.queues[(q.account, q.name)] = q
            by_id[q.id] = q
        for row in await self.store.items():
            q = by_id.get(row["queue"])
            if q is None:
                continue
            item = Item(key=row["id"], queue=q.id, partition=row.get("partition") or DEFAULT_PARTITION,
                        payload=row["payload"], seq=int(row["seq"]), put_at=float(row["put_at"]),
                        deliveries=int(row.get("deliveries") or 0), history=list(row.get("history") or []))
            self._seq = max(self._seq, item.seq)
            part = q.partition(item.partition)
            part.items[part.engine.restore(item.key.encode(), item.deliveries)] = item

    # ---- queues ------------------------------------------------------------------------
    def find(self, account: str, name: str) -> NamedQueue:
        q = self.queues.get((account, name))
        if q is None:
            raise NotFoundError(f"no queue named {name!r}", code="queue.not_found")
        return q

    async def ensure(self, account: str, name: str, *, create: bool, max_deliveries: int = 0,
                     dead_letter: str | None = None) -> NamedQueue:
        q = self.queues.get((account, name))
        if q is not None:
            return q
        if not create:
            raise NotFoundError(f"no queue named {name!r} (pass create_if_missing=True to make it)",
                                code="queue.not_found")
        if not name or len(name) > 128:
            raise InvalidError("a queue name is 1 to 128 characters")
        if max_deliveries < 0:
            raise InvalidError("max_deliveries must be >= 0 (0: never dead-letter)")
        if max_deliveries and dead_letter is None:
            dead_letter = f"{name}.dlq"
        # One queue for clients that create the same missing name at once (see DictService.ensure).
        async with self._creating:
            q = self.queues.get((account, name))
            if q is not None:
                return q
            queue_id = _ids.new_id("queue")
            q = NamedQueue(id=queue_id, account=account, name=name, max_deliveries=max_deliveries,
                           dead_letter=dead_letter, created_at=time.time(),
                           events=EventLog(self.hub, f"queue:{queue_id}"))
            await carried_through(self._created(q))
        return q

    async def _created(self, q: NamedQueue) -> None:
        await self.store.create_queue(q.record())
        self.queues[(q.account, q.name)] = q

    async def delete(self, account: str, name: str) -> None:
        await carried_through(self._delete(self.find(account, name)))

    async def _delete(self, q: NamedQueue) -> None:
        await self.store.delete_queue(q.id)
        if self.queues.get((q.account, q.name)) is q:
            del self.queues[(q.account, q.name)]
        for part in q.partitions.values():
            part.wake(len(part.waiters))

    def list(self, account: str) -> list[dict[str, Any]]:
        return [q.summary() for (acct, _), q in sorted(self.queues.items()) if acct == account]

    # ---- put ---------------------------------------------------------------------------
    def plan_put(self, q: NamedQueue, partition: str, payloads: list[bytes]) -> Plan:
        """Items durable before they are visible or acknowledged (Q1)."""
        items = self._new_items(q, partition, payloads)
        return Plan(put_rows([_row(i) for i in items]), lambda: json_answer({"ids": self._added(q, partition, items)}))

    def _new_items(self, q: NamedQueue, partition: str, payloads: list[bytes]) -> list[Item]:
        if any(len(p) > MAX_ITEM_BYTES for p in payloads):
            raise InvalidError("a queue item is at most 1 MiB pickled")
        now = time.time()
        items = []
        for payload in payloads:
            self._seq += 1
            items.append(Item(key=_ids.new_id("queue_item"), queue=q.id, partition=partition, payload=payload,
                              seq=self._seq, put_at=now))
        return items

    def _added(self, q: NamedQueue, partition: str, items: list[Item]) -> list[str]:
        """Durable items become visible."""
        part = q.partition(partition)
        for item in items:
            part.items[part.engine.put(item.key.encode())] = item
            q.events.emit("put", item.key, partition, 0, item.payload)
        part.wake(len(items))
        return [i.key for i in items]

    # ---- claims ------------------------------------------------------------------------
    async def claim(self, q: NamedQueue, partition: str, *, n: int, lease_s: float, timeout: float,
                    consumer: str | None) -> list[tuple[int, Item, float]]:
        """Up to n visible items, each held for lease_s; waits up to timeout for the first."""
        _check_lease(lease_s)
        part = q.partition(partition)
        deadline = time.monotonic() + timeout
        while True:
            taken = self._take(q, part, partition, n, lease_s, consumer)
            if taken:
                return await carried_through(self._claimed_durably(q, partition, taken, consumer))
            await self._wait_visible(q, part, deadline, timeout)

    async def _claimed_durably(self, q: NamedQueue, partition: str, taken: list[tuple[int, Item, float]],
                               consumer: str | None) -> list[tuple[int, Item, float]]:
        await self.store.count_deliveries({item.key: item.deliveries for _, item, _ in taken})
        return self._claimed(q, partition, taken, consumer)

    def plan_claim(self, q: NamedQueue, partition: str, *, n: int, lease_s: float, consumer: str | None,
                   answer: Callable[[list[tuple[int, Item, float]]], Answer]) -> Plan | None:
        """Claims visible items at once; None when there are none (claim then waits for one)."""
        _check_lease(lease_s)
        taken = self._take(q, q.partition(partition), partition, n, lease_s, consumer)
        if not taken:
            return None
        return Plan(delivery_rows({item.key: item.deliveries for _, item, _ in taken}),
                    lambda: answer(self._claimed(q, partition, taken, consumer)))

    def _claimed(self, q: NamedQueue, partition: str, taken: list[tuple[int, Item, float]],
                 consumer: str | None) -> list[tuple[int, Item, float]]:
        for claim_id, item, expires in taken:
            q.events.emit("claimed", item.key, partition, item.deliveries, claim_id=claim_id,
                          lease_expires_at=expires, consumer=consumer)
        return taken

    async def _wait_visible(self, q: NamedQueue, part: Partition, deadline: float, timeout: float) -> None:
        """Waits for a put (getters are woken in arrival order), or until a delayed or leased
        item may have become visible; queue.Empty once the deadline passes."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise QueueEmptyError(f"queue {q.name!r} had no visible item within {timeout:g} s")
        waiter = asyncio.get_running_loop().create_future()
        part.waiters.append(waiter)
        next_due = part.engine.next_deadline_in_ms()
        try:
            await asyncio.wait_for(waiter, left if next_due is None else min(left, next_due / 1000 + 0.001))
        except TimeoutError:
            pass
        if (q.account, q.name) not in self.queues:
            raise NotFoundError(f"queue {q.name!r} was deleted", code="queue.not_found")

    def _pop_visible(self, q: NamedQueue, part: Partition, n: int) -> list[Item]:
        """Removes up to n visible items, in order (a claim and an ack in one step each)."""
        items = []
        while len(items) < n:
            claim, expired = part.engine.claim(60_000)
            self._expired(q, part, expired)
            if claim is None:
                break
            part.engine.ack(claim.claim_id)
            items.append(part.items.pop(claim.item_id))
        return items

    def _take(self, q: NamedQueue, part: Partition, partition: str, n: int, lease_s: float,
              consumer: str | None) -> list[tuple[int, Item, float]]:
        taken = []
        for _ in range(n):
            claim, expired = part.engine.claim(int(lease_s * 1000))
            self._expired(q, part, expired)
            if claim is None:
                break
            item = part.items[claim.item_id]
            item.deliveries = claim.delivery_count
            claim_id = q.next_claim
            q.next_claim += 1
            q.held[claim_id] = Held(partition, claim.claim_id, claim.item_id, item, time.time(), consumer)
            taken.append((claim_id, item, time.time() + lease_s))
        return taken

    def _held(self, q: NamedQueue, claim_id: int) -> Held:
        held = q.held.get(claim_id)
        if held is None:
            ended = q.settled.get(claim_id)
            raise LeaseLostError(f"claim {claim_id} is not held" + (f": it was {ended}" if ended else ""))
        return held

    def _settle(self, q: NamedQueue, claim_id: int, how: str) -> None:
        q.held.pop(claim_id, None)
        q.settled[claim_id] = how
        while len(q.settled) > _RECENT_ACKS:
            q.settled.popitem(last=False)

    def _attempt(self, held: Held, claim_id: int, outcome: str, error: str | None = None) -> dict[str, Any]:
        return {"claim_id": claim_id, "consumer": held.consumer, "claimed_at": held.claimed_at,
                "ended_at": time.time(), "outcome": outcome, "error": error}

    def _remove_held(self, q: NamedQueue, claim_id: int, how: str) -> Held:
        """Takes a claimed item out of its partition for good (ack, reject); LeaseLost if the
        claim expired first."""
        held = self._held(q, claim_id)
        part = q.partition(held.partition)
        try:
            part.engine.ack(held.engine_claim)
        except LeaseLostError:
            self._settle(q, claim_id, "expired")
            raise LeaseLostError(f"claim {claim_id} expired before it was {how}") from None
        part.items.pop(held.item_id, None)
        self._settle(q, claim_id, how)
        return held

    def plan_ack(self, q: NamedQueue, claim_id: int) -> Plan:
        if q.settled.get(claim_id) == "acked":
            return answered({"acked": True})  # a repeated ack of the same claim is fine (Q7)
        held = self._remove_held(q, claim_id, "acked")

        def finish() -> Answer:
            q.events.emit("acked", held.item.key, held.partition, held.item.deliveries, claim_id=claim_id)
            return json_answer({"acked": True})

        return Plan(delete_rows([held.item.key]), finish)

    async def take(self, q: NamedQueue, partition: str, *, n: int, timeout: float) -> list[Item]:
        """Claim and ack in one step (Modal's get)."""
        part = q.partition(partition)
        deadline = time.monotonic() + timeout
        while True:
            items = self._pop_visible(q, part, n)
            if items:
                return await carried_through(self._taken_durably(q, partition, items))
            await self._wait_visible(q, part, deadline, timeout)

    async def _taken_durably(self, q: NamedQueue, partition: str, items: list[Item]) -> list[Item]:
        await self.store.delete_items([i.key for i in items])
        return self._taken(q, partition, items)

    def plan_take(self, q: NamedQueue, partition: str, *, n: int,
                  answer: Callable[[list[Item]], Answer]) -> Plan | None:
        """Takes visible items at once; None when there are none (take then waits for one)."""
        items = self._pop_visible(q, q.partition(partition), n)
        if not items:
            return None
        return Plan(delete_rows([i.key for i in items]), lambda: answer(self._taken(q, partition, items)))

    def _taken(self, q: NamedQueue, partition: str, items: list[Item]) -> list[Item]:
        for item in items:
            q.events.emit("taken", item.key, partition, item.deliveries)
        return items

    def renew(self, q: NamedQueue, claim_id: int, lease_s: float) -> float:
        _check_lease(lease_s)
        held = self._held(q, claim_id)
        try:
            q.partition(held.partition).engine.renew(held.engine_claim, int(lease_s * 1000))
        except LeaseLostError:
            self._settle(q, claim_id, "expired")
            raise LeaseLostError(f"claim {claim_id} expired before its renewal") from None
        return time.time() + lease_s

    async def release(self, q: NamedQueue, claim_id: int, *, delay_s: float, outcome: str,
                      error: str | None = None) -> str:
        """Ends an attempt without success (release, fail): visible again after delay, or
        dead-lettered when it has used its deliveries (Q9, Q11). Returns where it went."""
        held = self._held(q, claim_id)
        part = q.partition(held.partition)
        attempt = self._attempt(held, claim_id, outcome, error)
        if q.max_deliveries and held.item.deliveries >= q.max_deliveries:
            part.engine.ack(held.engine_claim)  # leaves this queue: the move below is durable
            part.items.pop(held.item_id, None)
            self._settle(q, claim_id, outcome)
            held.item.history.append(attempt)
            await carried_through(self._dead_letter(q, [held.item]))
            return "dead_letter"
        try:
            part.engine.release(held.engine_claim, int(delay_s * 1000))
        except LeaseLostError:
            self._settle(q, claim_id, "expired")
            raise LeaseLostError(f"claim {claim_id} expired before it was released") from None
        self._settle(q, claim_id, outcome)
        held.item.history.append(attempt)
        self.store.note_history_nowait(held.item.key, held.item.history)
        q.events.emit(outcome, held.item.key, held.partition, held.item.deliveries, claim_id=claim_id, error=error)
        part.wake()
        return "queue"

    async def reject(self, q: NamedQueue, claim_id: int, reason: str) -> None:
        """Dead-letters at once, whatever the count (Q12)."""
        held = self._remove_held(q, claim_id, "rejected")
        held.item.history.append(self._attempt(held, claim_id, "rejected", reason))
        await carried_through(self._dead_letter(q, [held.item]))

    # ---- expiry and dead letters -----------------------------------------------------
    def _expired(self, q: NamedQueue, part: Partition, expired: list[Any]) -> None:
        if not expired:
            return
        by_engine_claim = {h.engine_claim: (cid, h) for cid, h in q.held.items()
                           if q.partitions.get(h.partition) is part}
        dead = []
        for e in expired:
            claim_id, held = by_engine_claim.get(e.claim_id, (None, None))
            if held is None or claim_id is None:
                continue
            attempt = self._attempt(held, claim_id, "expired")
            held.item.history.append(attempt)
            self._settle(q, claim_id, "expired")
            q.events.emit("expired", held.item.key, held.partition, held.item.deliveries, claim_id=claim_id)
            if e.dead_lettered:
                part.items.pop(held.item_id, None)
                dead.append(held.item)
            else:
                self.store.note_history_nowait(held.item.key, held.item.history)
                part.wake()
        if dead:
            carry_on(self._dead_letter(q, dead))

    async def _dead_letter(self, q: NamedQueue, items: list[Item]) -> None:
        if q.dead_letter is None:
            await self.store.delete_items([i.key for i in items])
            return
        dlq = await self.ensure(q.account, q.dead_letter, create=True)
        await self._move(items, dlq)
        for item in items:
            q.events.emit("dead_lettered", item.key, item.partition, item.deliveries, to=dlq.name)

    async def _move(self, items: list[Item], target: NamedQueue, *, reset: bool = False) -> None:
        moves = []
        for item in items:
            self._seq += 1
            item.queue, item.seq = target.id, self._seq
            if reset:
                item.deliveries = 0
            moves.append({"key": item.key, "fields": {"queue": target.id, "seq": item.seq,
                                                       "deliveries": item.deliveries, "history": item.history}})
        await self.store.move_items(moves)
        part = target.partition(DEFAULT_PARTITION)
        for item in items:
            item.partition = DEFAULT_PARTITION
            part.items[part.engine.restore(item.key.encode(), item.deliveries)] = item
            target.events.emit("put", item.key, DEFAULT_PARTITION, item.deliveries, item.payload,
                               history=item.history)
        part.wake(len(items))

    async def redrive(self, q: NamedQueue, target_name: str) -> int:
        """Moves every visible item of this (dead-letter) queue to `target_name`, history kept and
        delivery count reset (Q14)."""
        target = self.find(q.account, target_name)
        items = [i for part in q.partitions.values() for i in self._pop_visible(q, part, 1 << 62)]
        if items:
            await carried_through(self._redriven(q, items, target))
        return len(items)

    async def _redriven(self, q: NamedQueue, items: list[Item], target: NamedQueue) -> None:
        await self._move(items, target, reset=True)
        for item in items:
            q.events.emit("redriven", item.key, DEFAULT_PARTITION, item.deliveries, to=target.name)

    def tick(self) -> None:
        for q in list(self.queues.values()):
            if q.events.revision != q.events.saved_revision:
                q.events.saved_revision = q.events.revision
                self.store.save_revision_nowait(q.id, q.events.revision)
            if q.held:
                for part in list(q.partitions.values()):
                    if part.engine.in_flight():
                        self._expired(q, part, part.engine.expire())

    # ---- reading -----------------------------------------------------------------------
    def length(self, q: NamedQueue, partition: str | None) -> int:
        parts = q.partitions.values() if partition is None else [q.partition(partition)]
        return sum(len(p.items) for p in parts)

    def peek(self, q: NamedQueue, partition: str | None, limit: int) -> list[Item]:
        parts = q.partitions.values() if partition is None else [q.partition(partition)]
        items = sorted((i for p in parts for i in p.items.values()), key=lambda i: i.seq)
        return items[:limit]

    async def clear(self, q: NamedQueue, partition: str | None) -> None:
        await carried_through(self._clear(q, partition))

    async def _clear(self, q: NamedQueue, partition: str | None) -> None:
        await self.store.clear(q.id, partition)
        names = list(q.partitions) if partition is None else [partition]
        for name in names:
            old = q.partitions.pop(name, None)
            if old is not None:
                old.wake(len(old.waiters))
        q.held = {cid: h for cid, h in q.held.items() if h.partition not in names}


def _check_lease(lease_s: float) -> None:
    if not 0 < lease_s <= MAX_LEASE_S:
        raise InvalidError(f"lease must be between 0 and {MAX_LEASE_S} seconds")


def _row(item: Item) -> dict[str, Any]:
    return {"id": item.key, "queue": item.queue, "partition": item.partition, "payload": item.payload,
            "seq": item.seq, "put_at": item.put_at, "deliveries": item.deliveries, "history": item.history}
