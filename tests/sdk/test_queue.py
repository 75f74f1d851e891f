"""Queues against the real control plane: Modal's surface, claims, leases, dead letters."""

from __future__ import annotations

import os
import queue as std_queue
import subprocess
import sys
import time
from pathlib import Path

import pytest

import apothic
from apothic.exception import InvalidError, LeaseLostError, NotFoundError
from tests.support import servers


def test_put_get_fifo_partitions_len_clear(server: dict) -> None:
    with apothic.Queue.ephemeral() as q:
        q.put_many([1, 2, 3])
        q.put({"x": 1}, partition="other")
        assert q.len() == 3 and q.len(partition="other") == 1 and q.len(total=True) == 4
        assert list(q.iterate()) == [1, 2, 3]  # iterate does not consume
        assert q.get() == 1 and q.get_many(5) == [2, 3]
        assert q.get(block=False) is None and q.get_many(2, block=False) == []
        with pytest.raises(std_queue.Empty):
            q.get(timeout=0.2)
        assert q.get(partition="other") == {"x": 1}
        q.put_many([4, 5])
        q.clear()
        assert q.len(total=True) == 0


def test_blocking_get_wakes_on_put(server: dict) -> None:
    with apothic.Queue.ephemeral() as q:
        putter = subprocess.Popen([sys.executable, "-c", f"import time, apothic; time.sleep(0.5); "
                                   f"apothic.Queue.from_name({q.name!r}).put('late')"])
        try:
            assert q.get(timeout=30) == "late"
        finally:
            putter.wait(timeout=30)


def test_claim_ack_renew_release(server: dict) -> None:
    with apothic.Queue.ephemeral() as q:
        q.put("job")
        c = q.claim(lease=5)
        assert (c.value, c.delivery_count) == ("job", 1) and c.lease_expires_at > time.time()
        with pytest.raises(std_queue.Empty):  # held: invisible to everyone else
            q.claim(timeout=0.2)
        assert c.renew(10) > time.time() + 5
        assert c.release() == "queue"
        again = q.claim()
        assert again.delivery_count == 2 and again.claim_id != c.claim_id
        with pytest.raises(LeaseLostError):
            c.ack()  # a superseded claim changes nothing
        again.ack()
        again.ack()  # repeating the ack of the current claim is fine
        assert q.len() == 0


def test_expired_lease_redelivers_then_dead_letters_with_history(server: dict) -> None:
    name = f"dl-{time.time_ns()}"
    q = apothic.Queue.from_name(name, create_if_missing=True, max_deliveries=2)
    q.put("poison")
    first = q.claim(lease=0.3)
    time.sleep(0.5)
    second = q.claim(lease=0.3, timeout=5)
    assert second.delivery_count == 2
    with pytest.raises(LeaseLostError):
        first.renew(5)
    time.sleep(0.5)
    with pytest.raises(std_queue.Empty):
        q.claim(timeout=0.3)
    dlq = q.dead_letters()
    dead = dlq.claim(timeout=5)
    assert dead.value == "poison" and [a["outcome"] for a in dead.history] == ["expired", "expired"]
    dead.release()
    assert q.redrive() == 1
    back = q.claim(timeout=5)
    assert back.value == "poison" and back.delivery_count == 1  # redrive resets the count
    back.reject("still bad")
    assert dlq.len() == 1
    q.delete_queue()
    dlq.delete_queue()


def test_fail_counts_as_a_delivery(server: dict) -> None:
    with apothic.Queue.ephemeral(max_deliveries=2) as q:
        q.put("x")
        assert q.claim().fail("boom") == "queue"
        assert q.claim().fail(RuntimeError("again")) == "dead_letter"
        dead = q.dead_letters().claim(timeout=5)
        assert [a["error"] for a in dead.history] == ["boom", "again"]
        q.dead_letters().delete_queue()


def test_bad_input(server: dict) -> None:
    with pytest.raises(NotFoundError):
        apothic.Queue.from_name("never-made").put(1)
    with apothic.Queue.ephemeral() as q:
        with pytest.raises(apothic.exception.SerializationError):
            q.put(__import__("threading").Lock())
        with pytest.raises(InvalidError):
            q.put(1, partition_ttl=5)
        with pytest.raises(apothic.exception.Error) as info:
            q.put(1, partition="p" * 65)
        assert info.value.code == "request.malformed"


def test_watch_snapshot_live_events_and_resume(server: dict) -> None:
    import threading

    with apothic.Queue.ephemeral() as q:
        q.put("before")
        seen: list[apothic.queue.QueueEvent] = []

        def watcher() -> None:
            for event in q.watch(snapshot=True):
                seen.append(event)
                if event.type == "acked":
                    return

        t = threading.Thread(target=watcher)
        t.start()
        deadline = time.monotonic() + 10
        while not any(e.type == "snapshot_end" for e in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        q.put("during")
        assert q.get() == "before"
        claim = q.claim()
        claim.ack()
        t.join(timeout=30)
        assert [(e.type, e.value) for e in seen] == [
            ("put", "before"), ("snapshot_end", None), ("put", "during"), ("taken", None), ("claimed", None),
            ("acked", None)]
        live = [e.revision for e in seen[2:]]
        assert live == sorted(live) and len(set(live)) == len(live)
        resumed = []
        for event in q.watch(start_revision=seen[3].revision):
            resumed.append((event.type, event.revision))
            if len(resumed) == 3:
                break
        assert resumed == [(e.type, e.revision) for e in seen[3:6]]
        with pytest.raises(NotFoundError) as info:  # history is bounded; resuming before it says so
            q.put_many(list(range(10_050)))
            next(q.watch(start_revision=1))
        assert info.value.code == "queue.compacted"


_TWO_LOOPS = """
import asyncio, sys, uvloop, apothic

q = apothic.Queue.from_name(sys.argv[1], create_if_missing=True)
d = apothic.Dict.from_name(sys.argv[1], create_if_missing=True)

async def produce():
    await asyncio.gather(*(q.put.aio(i) for i in range(20)))
    await d.put.aio("n", 20)

async def consume():
    claims = [await q.claim.aio(timeout=5) for _ in range(20)]
    await asyncio.gather(*(c.ack.aio() for c in claims))
    return sorted(c.value for c in claims), await d.get.aio("n"), await q.len.aio()

asyncio.run(produce())                  # one loop, closed at the end: its connection with it
got = uvloop.run(consume())             # another loop, of another kind
print(got == (list(range(20)), 20, 0), q.len())  # and the blocking form, on the SDK's own loop
"""


def test_aio_calls_run_on_each_callers_loop_and_close_with_it(server: dict, home: Path) -> None:
    """Queue and Dict `.aio` calls run on the caller's own loop with a connection of its own:
    two loops one after the other, an asyncio one and a uvloop one, then a blocking call; the
    first loop's connection is closed when asyncio.run ends (aiohttp says so otherwise)."""
    env = {**os.environ, **servers.env_for(home)}
    run = subprocess.run([sys.executable, "-W", "error::ResourceWarning", "-c", _TWO_LOOPS, "two-loops"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "0"]
    assert "Unclosed" not in run.stderr, run.stderr


def test_names_with_slashes_and_spaces(server: dict) -> None:
    """A name travels percent-encoded in the request path; the server decodes it whole (a queue
    named "a/b" used to be looked up as "a%2Fb" and not found)."""
    q = apothic.Queue.from_name("team/a b", create_if_missing=True)
    d = apothic.Dict.from_name("team/a b", create_if_missing=True)
    try:
        q.put(1)
        d["k"] = 2
        assert q.get(timeout=5) == 1 and d["k"] == 2
    finally:
        q.delete_queue()
        d.delete_dict()


def test_names_with_slashes_over_plain_http(server: dict, home: Path) -> None:
    """The same over HTTP without the rpc websocket, and the queue's watch stream (always HTTP),
    left open when the process exits."""
    script = """
import apothic
q = apothic.Queue.from_name("team/b c", create_if_missing=True)
q.put(7)
events = q.watch(snapshot=True)
first = next(iter(events))
print(first.type, q.get(timeout=5))
q.delete_queue()
"""  # the watch is left open: the process must still exit (it hung, closing it at exit)
    env = {**os.environ, **servers.env_for(home), "APOTHIC_TRANSPORT": "http"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["put", "7"]
