"""Python twin of `crates/apothic-py/src/queue.rs`: the in-memory queue engine with leases."""

from __future__ import annotations

from dataclasses import dataclass

from apothic import _core
from apothic._bridge.errors import translated


@dataclass(frozen=True, slots=True)
class Claim:
    claim_id: int
    item_id: int
    payload: bytes
    delivery_count: int
    lease_expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Expired:
    claim_id: int
    item_id: int
    delivery_count: int
    dead_lettered: bool


class QueueEngine:
    """One queue's hot state: ordered items, claims with leases, redelivery, dead letters."""

    __slots__ = ("_ref",)

    def __init__(self, max_deliveries: int = 0) -> None:
        self._ref = _core.QueueRef(max_deliveries)

    def put(self, payload: bytes, delay_ms: int = 0) -> int:
        return self._ref.put(payload, delay_ms)

    def restore(self, payload: bytes, delivery_count: int, delay_ms: int = 0) -> int:
        return self._ref.restore(payload, delivery_count, delay_ms)

    def claim(self, lease_ms: int) -> tuple[Claim | None, list[Expired]]:
        claim, expired = self._ref.claim(lease_ms)
        return (Claim(*claim) if claim else None), [Expired(*e) for e in expired]

    @translated
    def ack(self, claim_id: int) -> bytes:
        return self._ref.ack(claim_id)

    @translated
    def renew(self, claim_id: int, lease_ms: int) -> int:
        return self._ref.renew(claim_id, lease_ms)

    @translated
    def release(self, claim_id: int, delay_ms: int = 0) -> None:
        self._ref.release(claim_id, delay_ms)

    @translated
    def remove(self, item_id: int) -> None:
        self._ref.remove(item_id)

    def expire(self) -> list[Expired]:
        return [Expired(*e) for e in self._ref.expire()]

    def next_deadline_in_ms(self) -> int | None:
        return self._ref.next_deadline_in_ms()

    def __len__(self) -> int:
        return len(self._ref)

    def in_flight(self) -> int:
        return self._ref.in_flight()
