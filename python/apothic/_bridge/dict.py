"""Python twin of `crates/apothic-py/src/dict.rs`: the etcd-style dict engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apothic import _core
from apothic._bridge.errors import translated


@dataclass(frozen=True, slots=True)
class Entry:
    value: bytes
    version: int
    create_revision: int
    mod_revision: int
    lease: int | None

    @classmethod
    def of(cls, raw: tuple | None) -> Entry | None:
        return None if raw is None else cls(*raw)


@dataclass(frozen=True, slots=True)
class Change:
    """One durable change: a key written (entry set) or deleted (entry None), or a lease
    granted (ttl_ms > 0) or revoked."""

    kind: str  # kv | lease_granted | lease_revoked
    revision: int
    key: bytes | None
    entry: Entry | None
    lease: int | None
    ttl_ms: int


def _changes(raw: list[tuple]) -> list[Change]:
    out = []
    for kind, revision, subject, entry, ttl in raw:
        if kind == "kv":
            out.append(Change(kind, revision, subject, Entry.of(entry), None, 0))
        else:
            out.append(Change(kind, revision, None, None, subject, ttl))
    return out


@dataclass(frozen=True, slots=True)
class Mutation:
    value: Any
    revision: int
    changes: list[Change]


def _mutation(raw: tuple, value: Any = None) -> Mutation:
    result, revision, changes = raw
    return Mutation(result if value is None else value, revision, _changes(changes))


class DictEngine:
    __slots__ = ("_ref",)

    def __init__(self, ref: Any = None) -> None:
        self._ref = ref if ref is not None else _core.DictRef()

    @classmethod
    @translated
    def restore(cls, revision: int, entries: list[tuple], leases: list[tuple[int, int]]) -> DictEngine:
        return cls(_core.DictRef.restore(revision, entries, leases))

    def revision(self) -> int:
        return self._ref.revision()

    def get(self, key: bytes) -> Entry | None:
        return Entry.of(self._ref.get(key))

    def range(self, prefix: bytes) -> list[tuple[bytes, Entry]]:
        return [(k, Entry(*e)) for k, e in self._ref.range(prefix)]

    def __len__(self) -> int:
        return len(self._ref)

    @translated
    def put(self, key: bytes, value: bytes, lease: int | None = None, skip_if_exists: bool = False) -> Mutation:
        raw = self._ref.put(key, value, lease, skip_if_exists)
        written, entry = raw[0]
        return _mutation(raw, (written, Entry(*entry)))

    @translated
    def put_fenced(self, key: bytes, value: bytes, lock: bytes, fence: int, lease: int | None = None) -> Mutation:
        raw = self._ref.put_fenced(key, value, lock, fence, lease)
        written, entry = raw[0]
        return _mutation(raw, (written, Entry(*entry)))

    @translated
    def delete(self, key: bytes) -> Mutation:
        raw = self._ref.delete(key)
        return _mutation(raw, Entry.of(raw[0]) or False)

    def clear(self) -> Mutation:
        return _mutation(self._ref.clear())

    @translated
    def cas(self, key: bytes, value: bytes, *, expected_value: bytes | None = None,
            expected_version: int | None = None, expected_mod_revision: int | None = None,
            lease: int | None = None) -> Mutation:
        """Value: (succeeded, current entry or None)."""
        if expected_value is not None:
            raw = self._ref.cas(key, value, "value", expected_value, 0, lease)
        elif expected_version is not None:
            raw = self._ref.cas(key, value, "version", None, expected_version, lease)
        else:
            raw = self._ref.cas(key, value, "mod_revision", None, expected_mod_revision or 0, lease)
        ok, entry = raw[0]
        return _mutation(raw, (ok, Entry.of(entry)))

    @translated
    def grant(self, ttl_ms: int) -> Mutation:
        return _mutation(self._ref.grant(ttl_ms))

    @translated
    def keepalive(self, lease: int) -> int:
        return self._ref.keepalive(lease)

    @translated
    def revoke(self, lease: int) -> Mutation:
        return _mutation(self._ref.revoke(lease))

    def expire(self) -> Mutation:
        return _mutation(self._ref.expire())

    @translated
    def campaign(self, name: bytes, candidate: bytes, value: bytes, lease: int) -> Mutation:
        """Value: (revision, leading, ahead)."""
        return _mutation(self._ref.campaign(name, candidate, value, lease))

    @translated
    def candidacy_standing(self, name: bytes, revision: int) -> tuple[bool, int]:
        return self._ref.candidacy_standing(name, revision)

    @translated
    def proclaim(self, name: bytes, revision: int, value: bytes) -> Mutation:
        return _mutation(self._ref.proclaim(name, revision, value))

    @translated
    def resign(self, name: bytes, revision: int) -> Mutation:
        return _mutation(self._ref.resign(name, revision))

    def leader(self, name: bytes) -> tuple[bytes, bytes, int, int] | None:
        """(candidate, value, revision, mod_revision) of the leader, or None."""
        return self._ref.leader(name)

    @translated
    def events_since(self, after: int, prefix: bytes = b"") -> list[tuple[int, str, bytes, Entry | None]]:
        return [(rev, kind, key, Entry.of(entry)) for rev, kind, key, entry in self._ref.events_since(after, prefix)]

    def next_deadline_in_ms(self) -> int | None:
        return self._ref.next_deadline_in_ms()

    @translated
    def lock(self, name: bytes, owner: bytes, ttl_ms: int) -> Mutation:
        """Value: (fence, lease, acquired, ahead)."""
        return _mutation(self._ref.lock(name, owner, ttl_ms))

    @translated
    def lock_standing(self, name: bytes, fence: int) -> tuple[bool, int]:
        return self._ref.lock_standing(name, fence)

    @translated
    def unlock(self, name: bytes, fence: int) -> Mutation:
        return _mutation(self._ref.unlock(name, fence))
