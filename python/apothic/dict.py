"""Dicts: Modal's surface plus etcd's: entries with versions and revisions, compare-and-set,
leases whose keys vanish with them, and locks whose fence tokens guard writes."""

from __future__ import annotations

import base64
import contextlib
import pickle
import secrets
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import cloudpickle

from apothic import _loop, _stream
from apothic._client import Client, get_client
from apothic._utils.dual import dual_inline
from apothic.exception import InvalidError, SerializationError

_UNSET: Any = object()


def encode_key(key: Any) -> bytes:
    """Strings keep their text (so prefixes mean something); other keys are pickled."""
    if isinstance(key, str):
        return b"s" + key.encode()
    try:
        return b"p" + cloudpickle.dumps(key)
    except Exception as e:
        raise SerializationError(f"could not pickle the dict key: {e}") from None


def decode_key(raw: bytes) -> Any:
    return raw[1:].decode() if raw[:1] == b"s" else cloudpickle.loads(raw[1:])


_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def _dump(value: Any) -> bytes:
    if type(value) in _PLAIN:  # pickled alike by either; cloudpickle's Pickler costs more to set up
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        return cloudpickle.dumps(value)
    except Exception as e:
        raise SerializationError(f"could not pickle the dict value: {e}") from None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class DictEntry:
    value: Any
    version: int
    create_revision: int
    mod_revision: int
    lease: int | None

    @classmethod
    def from_wire(cls, raw: dict[str, Any] | None) -> DictEntry | None:
        if raw is None:
            return None
        return cls(cloudpickle.loads(base64.b64decode(raw["value"])), raw["version"], raw["create_revision"],
                   raw["mod_revision"], raw["lease"])


@dataclass(frozen=True)
class DictEvent:
    """One change: `put` (entry set) or `delete`, or `snapshot_end` after a snapshot."""

    type: str
    revision: int
    key: Any
    entry: DictEntry | None
    snapshot: bool = False

    @property
    def value(self) -> Any:
        return None if self.entry is None else self.entry.value

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> DictEvent:
        key = None if raw.get("key") is None else decode_key(base64.b64decode(raw["key"]))
        return cls(raw["type"], raw["revision"], key, DictEntry.from_wire(raw.get("entry")),
                   bool(raw.get("snapshot")))


class DictLease:
    """A lease: keys put with it are deleted when it is revoked or not kept alive."""

    def __init__(self, d: Dict, lease_id: int, ttl: float) -> None:
        self._dict = d
        self.id = lease_id
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"DictLease({self.id}, ttl={self.ttl})"

    @dual_inline
    async def keepalive(self) -> float:
        client, path = await self._dict._client()
        return (await client.json("POST", f"{path}/leases/{self.id}/keepalive"))["ttl"]

    @dual_inline
    async def revoke(self) -> int:
        client, path = await self._dict._client()
        return (await client.json("POST", f"{path}/leases/{self.id}/revoke"))["deleted_keys"]


class DictLock:
    """A held lock. `fence` strictly increases across holders; `d.put(k, v, fence=lock)` is
    refused once a later holder exists. The lock's lease is kept alive while the block runs."""

    def __init__(self, d: Dict, name: str, ttl: float, timeout: float | None) -> None:
        self._dict = d
        self.name = name
        self.ttl = ttl
        self._timeout = timeout
        self.fence: int | None = None
        self.lease: DictLease | None = None
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def acquire(self) -> DictLock:
        self.fence, lease = self._dict._acquire(self.name, self.ttl, self._timeout)
        self.lease = DictLease(self._dict, lease, self.ttl)
        self._stop.clear()
        self._keeper = threading.Thread(target=self._keep, name=f"apothic-lock-{self.name}", daemon=True)
        self._keeper.start()
        return self

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with contextlib.suppress(Exception):  # a lost lease shows up as a refused fenced write
                assert self.lease is not None
                self.lease.keepalive()

    def release(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join()
        if self.fence is not None:
            self._dict._release(self.name, self.fence)
            self.fence = None

    def __enter__(self) -> DictLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Election:
    def __init__(self, d: Dict, name: str) -> None:
        self._dict = d
        self.name = name
        self.candidate = secrets.token_hex(8)
        self.revision: int | None = None
        self.lease: DictLease | None = None
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Election({self.name!r}, leading={self.revision is not None})"

    def _path(self, verb: str) -> str:
        return f"elections/{quote(self.name, safe='')}/{verb}"

    def campaign(self, value: Any, *, ttl: float = 10, timeout: float | None = None) -> Election:
        """Blocks until this candidate leads (or raises TimeoutError); then keeps its lease alive."""
        async def go() -> dict[str, Any]:
            import time

            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = 50.0 if deadline is None else max(0.0, min(50.0, deadline - time.monotonic()))
                try:
                    return await self._dict._call(self._path("campaign"), {
                        "candidate": self.candidate, "value": _b64(_dump(value)), "ttl": ttl, "timeout": left})
                except Exception as e:
                    if getattr(e, "code", "") != "election.timeout" or (
                            deadline is not None and time.monotonic() >= deadline):
                        raise

        won = _loop.run(go())
        self.revision = won["revision"]
        self.lease = DictLease(self._dict, won["lease"], ttl)
        self._stop.clear()
        self._keeper = threading.Thread(target=self._keep, name=f"apothic-election-{self.name}", daemon=True)
        self._keeper.start()
        return self

    def _keep(self) -> None:
        while self.lease is not None and not self._stop.wait(self.lease.ttl / 3):
            with contextlib.suppress(Exception):  # a lost lease shows up as a refused proclaim
                self.lease.keepalive()

    def proclaim(self, value: Any) -> None:
        """Changes the leader's value; refused (ConflictError) unless this candidate leads."""
        if self.revision is None:
            raise InvalidError("proclaim needs a won campaign")
        _loop.run(self._dict._call(self._path("proclaim"), {"revision": self.revision, "value": _b64(_dump(value))}))

    def resign(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join()
        if self.revision is not None:
            with contextlib.suppress(Exception):
                _loop.run(self._dict._call(self._path("resign"), {"revision": self.revision}))
        if self.lease is not None:
            with contextlib.suppress(Exception):
                self.lease.revoke()
        self.revision, self.lease = None, None

    async def _leader(self, seen: list[int] | None = None, timeout: float = 0) -> dict[str, Any] | None:
        body: dict[str, Any] = {"timeout": timeout}
        if seen is not None:
            body["seen"] = seen
        return (await self._dict._call(self._path("leader"), body))["leader"]

    @dual_inline
    async def leader(self) -> Any:
        """The leader's value, or None when nobody leads."""
        found = await self._leader()
        return None if found is None else cloudpickle.loads(base64.b64decode(found["value"]))

    def observe(self) -> Iterator[Any]:
        """The leader's value now (if any) and every time it changes; runs until you stop."""
        seen = [0, 0]
        while True:
            found = _loop.run(self._leader(seen, 50.0))
            if found is not None and [found["revision"], found["mod_revision"]] != seen:
                seen = [found["revision"], found["mod_revision"]]
                yield cloudpickle.loads(base64.b64decode(found["value"]))


class Dict:
    def __init__(self, name: str, *, create_if_missing: bool = False) -> None:
        self.name = name
        self._create = create_if_missing
        self._ready = False
        self._path = f"/v1/dicts/{quote(name, safe='')}"

    def __repr__(self) -> str:
        return f"Dict({self.name!r})"

    @classmethod
    def from_name(cls, name: str, *, create_if_missing: bool = False,
                  environment_name: str | None = None) -> Dict:
        if environment_name is not None:
            raise InvalidError("environments do not exist yet: leave environment_name unset")
        return cls(name, create_if_missing=create_if_missing)

    @classmethod
    @contextlib.contextmanager
    def ephemeral(cls) -> Iterator[Dict]:
        d = cls(f"ephemeral-{secrets.token_hex(8)}", create_if_missing=True)
        d.hydrate()
        try:
            yield d
        finally:
            d.delete_dict()

    async def _client(self) -> tuple[Client, str]:
        client = await get_client()
        if not self._ready:
            await client.json("POST", "/v1/dicts", json={"name": self.name, "create_if_missing": self._create})
            self._ready = True
        return client, self._path

    async def _call(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        client, path = await self._client()
        return await client.json("POST", f"{path}/{verb}", json=body)

    @dual_inline
    async def hydrate(self) -> Dict:
        await self._client()
        return self

    # ---- Modal's surface -----------------------------------------------------------------
    async def _entry(self, key: Any) -> DictEntry | None:
        return DictEntry.from_wire((await self._call("get", {"key": _b64(encode_key(key))}))["entry"])

    @dual_inline
    async def entry(self, key: Any) -> DictEntry | None:
        """The key's value with its version, create_revision, mod_revision and lease."""
        return await self._entry(key)

    @dual_inline
    async def get(self, key: Any, default: Any = None) -> Any:
        entry = await self._entry(key)
        return default if entry is None else entry.value

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _UNSET)
        if value is _UNSET:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.pop(key)

    def __contains__(self, key: Any) -> bool:
        return self.contains(key)

    @dual_inline
    async def contains(self, key: Any) -> bool:
        return await self._entry(key) is not None

    @dual_inline
    async def put(self, key: Any, value: Any, *, skip_if_exists: bool = False, lease: DictLease | None = None,
                  fence: DictLock | None = None) -> bool:
        """Writes the value; returns False when skip_if_exists left an existing key alone."""
        body: dict[str, Any] = {"key": _b64(encode_key(key)), "value": _b64(_dump(value)),
                                "skip_if_exists": skip_if_exists}
        if lease is not None:
            body["lease"] = lease.id
        if fence is not None:
            if fence.fence is None:
                raise InvalidError("fence= needs a lock that is held")
            body["fence"] = {"lock": fence.name, "fence": fence.fence}
        return (await self._call("put", body))["written"]

    @dual_inline
    async def update(self, other: Mapping[Any, Any] | None = None, /, **kwargs: Any) -> None:
        items = {**(dict(other) if other else {}), **kwargs}
        if items:
            await self._call("put_many", {"items": [[_b64(encode_key(k)), _b64(_dump(v))]
                                                    for k, v in items.items()]})

    @dual_inline
    async def pop(self, key: Any, default: Any = _UNSET) -> Any:
        entry = (await self._call("delete", {"key": _b64(encode_key(key))}))["entry"]
        if entry is None:
            if default is _UNSET:
                raise KeyError(key)
            return default
        return DictEntry.from_wire(entry).value  # type: ignore[union-attr]

    @dual_inline
    async def len(self) -> int:
        client, path = await self._client()
        return (await client.json("GET", f"{path}/len"))["len"]

    async def _items(self, prefix: str | None = None) -> list[tuple[Any, DictEntry]]:
        body = {} if prefix is None else {"prefix": _b64(encode_key(prefix))}
        found = (await self._call("range", body))["entries"]
        return [(decode_key(base64.b64decode(k)), DictEntry.from_wire(e)) for k, e in found]  # type: ignore[misc]

    @dual_inline
    async def items(self, prefix: str | None = None) -> list[tuple[Any, Any]]:
        return [(k, e.value) for k, e in await self._items(prefix)]

    @dual_inline
    async def keys(self, prefix: str | None = None) -> list[Any]:
        return [k for k, _ in await self._items(prefix)]

    @dual_inline
    async def values(self, prefix: str | None = None) -> list[Any]:
        return [e.value for _, e in await self._items(prefix)]

    @dual_inline
    async def clear(self) -> int:
        return (await self._call("clear", {}))["cleared"]

    @dual_inline
    async def delete_dict(self) -> None:
        client = await get_client()
        await client.json("DELETE", f"/v1/dicts/{quote(self.name, safe='')}")
        self._ready = False

    # ---- coordination --------------------------------------------------------------------
    @dual_inline
    async def cas(self, key: Any, new: Any, *, expected_value: Any = _UNSET,
                  expected_version: int | None = None, lease: DictLease | None = None
                  ) -> tuple[bool, DictEntry | None]:
        """Writes `new` iff the key holds expected_value, or has expected_version (0: absent).
        Returns (succeeded, the entry now)."""
        body: dict[str, Any] = {"key": _b64(encode_key(key)), "value": _b64(_dump(new))}
        if expected_value is not _UNSET:
            body["expected_value"] = _b64(_dump(expected_value))
        elif expected_version is not None:
            body["expected_version"] = expected_version
        else:
            raise InvalidError("cas needs expected_value= or expected_version=")
        if lease is not None:
            body["lease"] = lease.id
        found = await self._call("cas", body)
        return found["succeeded"], DictEntry.from_wire(found["entry"])

    @dual_inline
    async def lease(self, ttl: float = 10) -> DictLease:
        return DictLease(self, (await self._call("leases", {"ttl": ttl}))["lease"], ttl)

    def lock(self, name: str, ttl: float = 10, timeout: float | None = None) -> DictLock:
        """A lock to use as `with d.lock("name") as lock:`; waits up to `timeout` for it."""
        return DictLock(self, name, ttl, timeout)

    def _acquire(self, name: str, ttl: float, timeout: float | None) -> tuple[int, int]:
        async def go() -> tuple[int, int]:
            import time

            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = 50.0 if deadline is None else max(0.0, min(50.0, deadline - time.monotonic()))
                try:
                    found = await self._call(f"locks/{quote(name, safe='')}/acquire",
                                             {"ttl": ttl, "timeout": left, "owner": secrets.token_hex(4)})
                    return found["fence"], found["lease"]
                except Exception as e:
                    if getattr(e, "code", "") != "lock.timeout" or (deadline is not None and
                                                                     time.monotonic() >= deadline):
                        raise

        return _loop.run(go())

    def _release(self, name: str, fence: int) -> None:
        _loop.run(self._call(f"locks/{quote(name, safe='')}/release", {"fence": fence}))

    def election(self, name: str) -> Election:
        """A leader election among this dict's clients (etcd's recipe: the oldest live
        candidacy leads; a leader that stops keeping its lease alive is replaced)."""
        return Election(self, name)

    def watch(self, prefix: str | None = None, snapshot: bool = False,
              start_revision: int | None = None) -> Iterator[DictEvent]:
        """Changes to keys under `prefix` (a string; None: every key): with snapshot=True the
        current entries first (then one `snapshot_end` event), with start_revision every change
        from that revision on, then live changes. Runs until the caller stops iterating."""
        params = _stream.watch_params(snapshot, start_revision,
                                      prefix="" if prefix is None else _b64(encode_key(prefix)))

        async def open_stream() -> Any:
            client, path = await self._client()
            return await client.open_stream(f"{path}/watch", params)

        for raw in _stream.follow(open_stream):
            yield DictEvent.from_wire(raw)
