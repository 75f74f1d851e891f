"""Queues: Modal's surface (put/get/len/clear/iterate/partitions) plus claims with leases,
acks, dead letters and redrive. Items are durable from the moment `put` returns."""

from __future__ import annotations

import base64
import contextlib
import pickle
import queue as std_queue
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import cloudpickle

from apothic import _stream, _wire
from apothic._client import Client, get_client
from apothic._utils.dual import dual_inline
from apothic.exception import Error, InvalidError, SerializationError

_WAIT_S = 50.0
_DEFAULT_PARTITION_TTL = 86400


_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def _dump(value: Any) -> bytes:
    if type(value) in _PLAIN:  # pickled alike by either; cloudpickle's Pickler costs more to set up
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        return cloudpickle.dumps(value)
    except Exception as e:
        raise SerializationError(f"could not pickle the queue item: {e}") from None


def _frames(body: bytes) -> list[tuple[dict[str, Any], bytes]]:
    out, offset = [], 0
    while offset < len(body):
        size = int.from_bytes(body[offset : offset + 4], "big")
        out.append(_wire.unpack(body[offset + 4 : offset + 4 + size]))
        offset += 4 + size
    return out


def _params(partition: str | None, **extra: Any) -> dict[str, str]:
    params = {k: str(v) for k, v in extra.items() if v is not None}
    if partition is not None:
        params["partition"] = partition
    return params


@dataclass(frozen=True)
class QueueEvent:
    """One queue event; `value` is set on put events (and snapshot items)."""

    type: str
    revision: int
    id: str | None
    partition: str | None
    delivery_count: int
    value: Any
    detail: dict[str, Any]

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> QueueEvent:
        known = {"type", "revision", "id", "partition", "delivery_count", "value"}
        value = raw.get("value")
        return cls(raw["type"], raw["revision"], raw.get("id"), raw.get("partition"), raw.get("delivery_count") or 0,
                   None if value is None else cloudpickle.loads(base64.b64decode(value)),
                   {k: v for k, v in raw.items() if k not in known})


class Claim:
    """One delivery of one item, held until `lease_expires_at` unless renewed."""

    def __init__(self, queue: Queue, header: dict[str, Any], payload: bytes) -> None:
        self._queue = queue
        self.claim_id: int = header["claim_id"]
        self.id: str = header["id"]
        self.delivery_count: int = header["delivery_count"]
        self.lease_expires_at: float = header["lease_expires_at"]
        self.history: list[dict[str, Any]] = header.get("history") or []
        self.value = cloudpickle.loads(payload)

    def __repr__(self) -> str:
        return f"Claim({self.claim_id}, delivery_count={self.delivery_count})"

    async def _post(self, verb: str, params: dict[str, str] | None = None, body: Any = None) -> dict[str, Any]:
        client = await get_client()
        path = f"/v1/queues/{quote(self._queue.name, safe='')}/claims/{self.claim_id}/{verb}"
        return await client.json("POST", path, params=params, json=body)

    @dual_inline
    async def ack(self) -> None:
        await self._post("ack")

    @dual_inline
    async def renew(self, lease: float = 30) -> float:
        self.lease_expires_at = (await self._post("renew", {"lease": str(lease)}))["lease_expires_at"]
        return self.lease_expires_at

    @dual_inline
    async def release(self, delay: float = 0) -> str:
        """Gives the item back, visible after `delay` s; counts as a failed delivery."""
        return (await self._post("release", {"delay": str(delay)}))["went_to"]

    @dual_inline
    async def fail(self, error: str | BaseException = "") -> str:
        return (await self._post("fail", body={"error": str(error)}))["went_to"]

    @dual_inline
    async def reject(self, reason: str = "") -> None:
        """Dead-letters the item now, whatever its delivery count."""
        await self._post("reject", body={"reason": reason})


class Queue:
    def __init__(self, name: str, *, create_if_missing: bool = False, max_deliveries: int = 0,
                 dead_letter: str | None = None) -> None:
        self.name = name
        self._create = create_if_missing
        self._max_deliveries = max_deliveries
        self._dead_letter = dead_letter
        self._ready = False
        self._path = f"/v1/queues/{quote(name, safe='')}"

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    @classmethod
    def from_name(cls, name: str, *, create_if_missing: bool = False, max_deliveries: int = 0,
                  dead_letter: str | None = None, environment_name: str | None = None) -> Queue:
        if environment_name is not None:
            raise InvalidError("environments do not exist yet: leave environment_name unset")
        return cls(name, create_if_missing=create_if_missing, max_deliveries=max_deliveries,
                   dead_letter=dead_letter)

    @classmethod
    @contextlib.contextmanager
    def ephemeral(cls, *, max_deliveries: int = 0) -> Iterator[Queue]:
        """A queue that exists for the block and is deleted after it."""
        q = cls(f"ephemeral-{secrets.token_hex(8)}", create_if_missing=True, max_deliveries=max_deliveries)
        q.hydrate()
        try:
            yield q
        finally:
            q.delete_queue()

    async def _client(self) -> tuple[Client, str]:
        client = await get_client()
        if not self._ready:
            await client.json("POST", "/v1/queues", json={
                "name": self.name, "create_if_missing": self._create, "max_deliveries": self._max_deliveries,
                "dead_letter": self._dead_letter})
            self._ready = True
        return client, self._path

    @dual_inline
    async def hydrate(self) -> Queue:
        await self._client()
        return self

    @dual_inline
    async def info(self) -> dict[str, Any]:
        client, _ = await self._client()
        return next(q for q in await client.json("GET", "/v1/queues") if q["name"] == self.name)

    # ---- put ---------------------------------------------------------------------------
    @dual_inline
    async def put(self, v: Any, block: bool = True, timeout: float | None = None, *,
                  partition: str | None = None, partition_ttl: int = _DEFAULT_PARTITION_TTL) -> None:
        await self._put_many([v], partition, partition_ttl)

    @dual_inline
    async def put_many(self, vs: list[Any], block: bool = True, timeout: float | None = None, *,
                       partition: str | None = None, partition_ttl: int = _DEFAULT_PARTITION_TTL) -> None:
        if vs:
            await self._put_many(list(vs), partition, partition_ttl)

    async def _put_many(self, vs: list[Any], partition: str | None, partition_ttl: int) -> list[str]:
        if partition_ttl != _DEFAULT_PARTITION_TTL:
            raise InvalidError("partition_ttl cannot be honoured yet: items are kept until consumed")
        parts = []
        for v in vs:
            payload = _dump(v)
            parts.append(len(payload).to_bytes(4, "big") + payload)
        client, path = await self._client()
        return (await client.json("POST", f"{path}/items", data=b"".join(parts), params=_params(partition)))["ids"]

    # ---- get and claim -----------------------------------------------------------------
    async def _poll(self, verb: str, n: int, block: bool, timeout: float | None, partition: str | None,
                    **extra: Any) -> list[tuple[dict[str, Any], bytes]]:
        """Long polls until items come or the timeout passes; raises queue.Empty then."""
        client, path = await self._client()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 0.0 if not block else (_WAIT_S if deadline is None else max(0.0, deadline - time.monotonic()))
            try:
                _, _, body = await client.request("POST", f"{path}/{verb}", params=_params(
                    partition, n=n, timeout=f"{min(left, _WAIT_S):.3f}", **extra))
                return _frames(body)
            except Error as e:
                if e.code != "queue.empty":
                    raise
                if not block or (deadline is not None and time.monotonic() >= deadline):
                    raise std_queue.Empty() from None

    @dual_inline
    async def get(self, block: bool = True, timeout: float | None = None, *, partition: str | None = None) -> Any:
        """The next item, removed. Non-blocking: None when empty; blocking: queue.Empty at timeout."""
        try:
            [(_, payload)] = await self._poll("get", 1, block, timeout, partition)
        except std_queue.Empty:
            if not block:
                return None
            raise
        return cloudpickle.loads(payload)

    @dual_inline
    async def get_many(self, n_values: int, block: bool = True, timeout: float | None = None, *,
                       partition: str | None = None) -> list[Any]:
        try:
            frames = await self._poll("get", n_values, block, timeout, partition)
        except std_queue.Empty:
            if not block:
                return []
            raise
        return [cloudpickle.loads(payload) for _, payload in frames]

    @dual_inline
    async def claim(self, timeout: float | None = None, lease: float = 30, *, partition: str | None = None,
                    consumer: str | None = None) -> Claim:
        """Holds the next item for `lease` seconds; ack it, or it comes back. queue.Empty at timeout."""
        [(header, payload)] = await self._poll("claims", 1, True, timeout, partition, lease=lease,
                                               consumer=consumer)
        return Claim(self, header, payload)

    @dual_inline
    async def claim_many(self, n: int, timeout: float | None = None, lease: float = 30, *,
                         partition: str | None = None, consumer: str | None = None) -> list[Claim]:
        frames = await self._poll("claims", n, True, timeout, partition, lease=lease, consumer=consumer)
        return [Claim(self, header, payload) for header, payload in frames]

    # ---- the rest ----------------------------------------------------------------------
    @dual_inline
    async def len(self, *, partition: str | None = None, total: bool = False) -> int:
        client, path = await self._client()
        return (await client.json("GET", f"{path}/len", params=_params(None if total else partition or "")))["len"]

    @dual_inline
    async def clear(self, *, partition: str | None = None, all: bool = False) -> None:
        client, path = await self._client()
        await client.json("POST", f"{path}/clear", params=_params(None if all else partition or ""))

    @dual_inline
    async def peek(self, limit: int = 100, *, partition: str | None = None) -> list[Any]:
        client, path = await self._client()
        _, _, body = await client.request("GET", f"{path}/items", params=_params(partition or "", limit=limit))
        return [cloudpickle.loads(payload) for _, payload in _frames(body)]

    def iterate(self, *, partition: str | None = None, item_poll_timeout: float = 0.0) -> Iterator[Any]:
        """The items in order, without removing them."""
        if item_poll_timeout:
            raise InvalidError("item_poll_timeout cannot be honoured yet: iterate() reads what is queued now")
        yield from self.peek(10_000, partition=partition)

    def dead_letters(self) -> Queue:
        return Queue(self._dead_letter or f"{self.name}.dlq", create_if_missing=True)

    @dual_inline
    async def redrive(self) -> int:
        """Moves this queue's dead letters back into it; returns how many moved."""
        await self._client()
        dlq = self.dead_letters()
        client, path = await dlq._client()
        return (await client.json("POST", f"{path}/redrive", json={"to": self.name}))["moved"]

    @dual_inline
    async def delete_queue(self) -> None:
        client = await get_client()
        await client.json("DELETE", f"/v1/queues/{quote(self.name, safe='')}")
        self._ready = False

    def watch(self, snapshot: bool = False, start_revision: int | None = None) -> Iterator[QueueEvent]:
        """The queue's events: with snapshot=True its items first (then one `snapshot_end`),
        with start_revision every event from there on; then live ones until you stop."""
        params = _stream.watch_params(snapshot, start_revision)

        async def open_stream() -> Any:
            client, path = await self._client()
            return await client.open_stream(f"{path}/watch", params)

        for raw in _stream.follow(open_stream):
            yield QueueEvent.from_wire(raw)

