"""Dicts against the real control plane: Modal's surface, entries, CAS, leases, locks."""

from __future__ import annotations

import threading
import time

import pytest

import apothic
from apothic.exception import ConflictError, InvalidError, NotFoundError


def test_modal_surface(server: dict) -> None:
    with apothic.Dict.ephemeral() as d:
        d["a"] = 1
        d.put(("tuple", 2), {"nested": [1, 2]})
        d.update({"b": 2}, c=3)
        assert d["a"] == 1 and d.get(("tuple", 2)) == {"nested": [1, 2]} and d.get("missing", "dflt") == "dflt"
        assert "b" in d and "zzz" not in d and d.len() == 4
        assert d.put("a", 99, skip_if_exists=True) is False and d["a"] == 1
        assert sorted(d.keys(prefix="")) == sorted(["a", "b", "c"])  # string keys share the text prefix
        assert d.pop("c") == 3 and d.pop("c", None) is None
        with pytest.raises(KeyError):
            d["c"]
        with pytest.raises(KeyError):
            d.pop("c")
        assert dict(d.items()) == {"a": 1, "b": 2, ("tuple", 2): {"nested": [1, 2]}}
        assert d.clear() == 3 and d.len() == 0


def test_entries_and_cas(server: dict) -> None:
    with apothic.Dict.ephemeral() as d:
        ok, entry = d.cas("k", "v1", expected_version=0)  # 0: create only if absent
        assert ok and entry.version == 1 and entry.create_revision == entry.mod_revision
        ok, entry = d.cas("k", "v2", expected_version=0)
        assert not ok and entry.value == "v1"
        ok, entry = d.cas("k", "v2", expected_value="v1")
        assert ok and entry.version == 2 and entry.mod_revision > entry.create_revision
        assert d.entry("k").value == "v2" and d.entry("nope") is None
        with pytest.raises(InvalidError):
            d.cas("k", "v3")


def test_concurrent_cas_has_one_winner(server: dict) -> None:
    with apothic.Dict.ephemeral() as d:
        d["counter"] = 0
        wins: list[int] = []

        def contender(i: int) -> None:
            ok, _ = d.cas("counter", i, expected_value=0)
            if ok:
                wins.append(i)

        threads = [threading.Thread(target=contender, args=(i,)) for i in range(1, 9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1 and d["counter"] == wins[0]


def test_lease_expiry_deletes_leased_keys(server: dict) -> None:
    with apothic.Dict.ephemeral() as d:
        lease = d.lease(ttl=0.5)
        d.put("ephemeral", 1, lease=lease)
        d.put("kept", 2)
        assert d.entry("ephemeral").lease == lease.id
        lease.keepalive()
        deadline = time.monotonic() + 10
        while "ephemeral" in d and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "ephemeral" not in d and d["kept"] == 2
        with pytest.raises(NotFoundError):
            lease.keepalive()
        other = d.lease(ttl=30)
        d.put("x", 1, lease=other)
        assert other.revoke() == 1 and "x" not in d


def test_lock_fences_increase_and_stale_holders_are_refused(server: dict) -> None:
    with apothic.Dict.ephemeral() as d:
        with d.lock("job", ttl=5) as first:
            assert d.put("owner", "first", fence=first)
            stale = first.fence
        with d.lock("job", ttl=5) as second:
            assert second.fence > stale
            d.put("owner", "second", fence=second)
        first.fence = stale  # a holder that does not know it lost the lock
        with pytest.raises(ConflictError):
            d.put("owner", "zombie", fence=first)
        assert d["owner"] == "second"


def test_lock_waits_for_the_holder(server: dict) -> None:
    with apothic.Dict.ephemeral() as d:
        order: list[str] = []
        holder = d.lock("m", ttl=5).acquire()

        def waiter() -> None:
            with d.lock("m", ttl=5, timeout=20):
                order.append("waiter")

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.5)
        order.append("holder")
        holder.release()
        t.join(timeout=30)
        assert order == ["holder", "waiter"]
        blocked = d.lock("m", ttl=5).acquire()
        with pytest.raises(apothic.exception.TimeoutError):
            d.lock("m", ttl=5, timeout=0.3).acquire()
        blocked.release()


def test_bad_input(server: dict) -> None:
    with pytest.raises(NotFoundError):
        apothic.Dict.from_name("never-made").get("x")
    with apothic.Dict.ephemeral() as d:
        with pytest.raises(apothic.exception.SerializationError):
            d["lock"] = threading.Lock()
        # The watch history keeps the last 10,000 events: resuming before them says so.
        d.update({f"k{i}": i for i in range(10_050)})
        with pytest.raises(NotFoundError) as info:
            next(d.watch(start_revision=1))
        assert info.value.code == "dict.compacted"


def test_watch_snapshot_live_and_resume_without_gaps(server: dict) -> None:
    with apothic.Dict.ephemeral() as d:
        d["job/1"] = "queued"
        d["other"] = "not watched"
        seen: list[apothic.dict.DictEvent] = []

        def watcher() -> None:
            for event in d.watch(prefix="job/", snapshot=True):
                seen.append(event)
                if event.type == "delete":
                    return

        t = threading.Thread(target=watcher)
        t.start()
        deadline = time.monotonic() + 10
        while not any(e.type == "snapshot_end" for e in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        d["job/1"] = "running"
        d["other"] = "still not watched"
        d["job/2"] = "queued"
        del d["job/1"]
        t.join(timeout=30)
        assert [(e.type, e.key, e.value) for e in seen] == [
            ("put", "job/1", "queued"), ("snapshot_end", None, None), ("put", "job/1", "running"),
            ("put", "job/2", "queued"), ("delete", "job/1", None)]
        live = [e.revision for e in seen[2:]]
        assert live == sorted(live) and len(set(live)) == len(live)
        # Resuming from a revision replays exactly what came after it.
        resumed = []
        for event in d.watch(prefix="job/", start_revision=seen[3].revision):
            resumed.append((event.type, event.key, event.revision))
            if len(resumed) == 2:
                break
        assert resumed == [(e.type, e.key, e.revision) for e in seen[3:5]]


def test_concurrent_histories_are_linearizable(server: dict) -> None:
    """Four clients issue random puts, gets and CAS on three keys; each key's recorded history
    must have a legal single-register order that respects real time."""
    import random

    from tests.support.linearizability import Op, linearizable

    with apothic.Dict.ephemeral() as d:
        histories: dict[str, list[Op]] = {k: [] for k in ("x", "y", "z")}
        lock = threading.Lock()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(12):
                key = rng.choice("xyz")
                kind = rng.choice(["put", "get", "cas"])
                value = rng.randrange(4)
                invoked = time.monotonic()
                if kind == "put":
                    d.put(key, value)
                    op = Op("put", invoked, time.monotonic(), value=value)
                elif kind == "get":
                    got = d.get(key)
                    op = Op("get", invoked, time.monotonic(), output=got)
                else:
                    expected = rng.randrange(4)
                    ok, _ = d.cas(key, value, expected_value=expected)
                    op = Op("cas", invoked, time.monotonic(), value=value, expected=expected, output=ok)
                with lock:
                    histories[key].append(op)

        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for key, history in histories.items():
            assert linearizable(history), (key, history)


def test_election_leader_proclaim_resign_and_takeover(server: dict) -> None:
    with apothic.Dict.ephemeral() as d:
        first = d.election("primary").campaign("node-a", ttl=5)
        assert first.leader() == "node-a"
        observed: list[str] = []

        def observer() -> None:
            for value in d.election("primary").observe():
                observed.append(value)
                if value == "node-b":
                    return

        watcher = threading.Thread(target=observer)
        watcher.start()
        second = d.election("primary")
        contender = threading.Thread(target=lambda: second.campaign("node-b", ttl=5, timeout=30))
        contender.start()
        time.sleep(0.5)
        assert d.election("primary").leader() == "node-a"  # the second candidate waits in line
        first.proclaim("node-a v2")
        impostor = d.election("primary")
        impostor.revision = first.revision + 1  # a candidacy that does not lead
        with pytest.raises(ConflictError):  # only the leader may proclaim
            impostor.proclaim("usurper")
        first.resign()
        contender.join(timeout=30)
        watcher.join(timeout=30)
        assert d.election("primary").leader() == "node-b"
        assert observed[0] in ("node-a", "node-a v2") and observed[-1] == "node-b"
        second.resign()
        assert d.election("primary").leader() is None
