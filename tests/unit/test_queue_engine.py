"""The Rust queue engine through the bridge: leases, redelivery, dead letters, errors."""

from __future__ import annotations

import time

import pytest

from apothic._bridge.queue import QueueEngine
from apothic.exception import LeaseLostError, NotFoundError


def test_claim_ack_in_order() -> None:
    q = QueueEngine()
    a, b = q.put(b"a"), q.put(b"b")
    first, _ = q.claim(10_000)
    second, _ = q.claim(10_000)
    assert (first.item_id, first.payload, second.item_id) == (a, b"a", b)
    assert q.ack(first.claim_id) == b"a"
    with pytest.raises(LeaseLostError):
        q.ack(first.claim_id)
    assert len(q) == 1 and q.in_flight() == 1


def test_lease_expiry_redelivers_then_dead_letters() -> None:
    q = QueueEngine(max_deliveries=2)
    q.put(b"x")
    first, _ = q.claim(20)
    time.sleep(0.05)
    again, expired = q.claim(20)
    assert [e.claim_id for e in expired] == [first.claim_id] and not expired[0].dead_lettered
    assert again.delivery_count == 2
    time.sleep(0.05)
    assert [e.dead_lettered for e in q.expire()] == [True]
    assert len(q) == 0


def test_release_with_delay_and_remove() -> None:
    q = QueueEngine()
    item = q.put(b"x")
    claim, _ = q.claim(10_000)
    q.release(claim.claim_id, delay_ms=10_000)
    assert q.claim(10_000)[0] is None
    assert 0 < q.next_deadline_in_ms() <= 10_000
    q.remove(item)
    with pytest.raises(NotFoundError):
        q.remove(item)


def test_restore_keeps_delivery_count() -> None:
    q = QueueEngine(max_deliveries=5)
    q.restore(b"x", 3)
    claim, _ = q.claim(1000)
    assert claim.delivery_count == 4
