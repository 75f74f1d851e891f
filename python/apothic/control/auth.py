"""API keys and worker join tokens. Only hashes are stored; the embedded default writes the
local account's key to $APOTHIC_HOME/api_key where the SDK and CLI find it."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apothic.control.store import Store
from apothic.control.store.capacity import CapacityStore
from apothic.exception import AuthError

LOCAL_ACCOUNT = "ac-000000000000000000000LOCAL"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")


@dataclass(frozen=True, slots=True)
class Principal:
    account: str
    kind: str  # user | worker


@dataclass(frozen=True, slots=True)
class WorkerGrant:
    """What a rented worker's credential binds it to: the rental, the provider, and the offer's
    metadata it registers with (what the provider sold is what the scheduler matches)."""

    rental: str
    provider: str
    metadata: dict[str, Any] = field(default_factory=dict)
    worker: str | None = None  # set for a per-worker key: the worker it was issued to
    token_hash: str = ""
    one_time: bool = False  # a join token: consumed at the first hello, exchanged for a key


class Auth:
    def __init__(self, store: Store, home: Path) -> None:
        self.store = store
        self.home = home
        self.worker_token = ""
        # Keys cannot be revoked yet, so a key once found stays valid: skip the store next time.
        self._known: dict[str, Principal] = {}
        self.grants = CapacityStore(store.db)
        self._consuming: set[str] = set()  # join tokens being exchanged now: one hello wins

    async def bootstrap(self) -> None:
        """First start makes the local account and its key; every start has a worker token."""
        await self.store.ensure_account(LOCAL_ACCOUNT, "local")
        key_file = self.home / "api_key"
        key = key_file.read_text().strip() if key_file.exists() else ""
        if not key or await self.store.find_key(key_hash(key)) is None:
            key = "ak-" + secrets.token_urlsafe(32)
            await self.store.add_key(key_hash(key), LOCAL_ACCOUNT, "user")
            _write_secret(key_file, key)
        token_file = self.home / "worker_token"
        token = token_file.read_text().strip() if token_file.exists() else ""
        if not token or await self.store.find_key(key_hash(token)) is None:
            token = "wt-" + secrets.token_urlsafe(32)
            await self.store.add_key(key_hash(token), LOCAL_ACCOUNT, "worker")
            _write_secret(token_file, token)
        self.worker_token = token

    async def authenticate(self, header: str | None, *, kind: str) -> Principal:
        if not header:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>'", code="auth.missing_key")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthError("malformed Authorization header: expected 'Bearer <key>'")
        digest = key_hash(key.strip())
        principal = self._known.get(digest)
        if principal is None:
            row = await self.store.find_key(digest)
            if row is not None:
                principal = self._known[digest] = Principal(account=row["account"], kind=row["kind"])
        if principal is None or principal.kind != kind:
            raise AuthError("invalid API key" if kind == "user" else "invalid worker token")
        return principal

    # ---- one-time join tokens for rented workers -----------------------------------------
    async def issue_join_token(self, *, rental: str, provider: str, metadata: dict[str, Any]) -> str:
        """A token that lets one agent join once, as the offer `metadata` describes; durable
        before it is handed to a provider, so it survives a restart while the host boots."""
        token = "jt-" + secrets.token_urlsafe(32)
        await self.grants.put_join_token(key_hash(token), {
            "rental": rental, "provider": provider, "metadata": metadata, "account": LOCAL_ACCOUNT,
            "created_at": time.time(),
        })
        return token

    async def worker_grant(self, header: str | None) -> WorkerGrant | None:
        """The grant behind a join token or a per-worker key; None for any other credential
        (the shared worker token of local agents), which `authenticate` then checks."""
        scheme, _, key = (header or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key.startswith(("jt-", "wkey-")):
            return None
        digest = key_hash(key)
        if key.startswith("jt-"):
            row = await self.grants.join_token(digest)
            if row is None or digest in self._consuming:
                raise AuthError("invalid worker token: this join token is unknown or was already used")
            return WorkerGrant(rental=row["rental"], provider=row["provider"], metadata=row.get("metadata") or {},
                               token_hash=digest, one_time=True)
        row = await self.grants.worker_key(digest)
        if row is None:
            raise AuthError("invalid worker token: this worker key is unknown or was revoked")
        return WorkerGrant(rental=row["rental"], provider=row["provider"], metadata=row.get("metadata") or {},
                           worker=row["worker"], token_hash=digest)

    async def exchange(self, grant: WorkerGrant, worker_id: str) -> str:
        """Consumes a join token and returns the durable key the worker reconnects with; the
        key also fetches code bundles, like any worker credential, and does nothing else."""
        if not grant.one_time or grant.token_hash in self._consuming:
            raise AuthError("invalid worker token: this join token was already used")
        self._consuming.add(grant.token_hash)
        key = "wkey-" + secrets.token_urlsafe(32)
        digest = key_hash(key)
        await self.grants.exchange(
            grant.token_hash, digest,
            {"worker": worker_id, "rental": grant.rental, "provider": grant.provider, "metadata": grant.metadata,
             "created_at": time.time()},
            {"key_hash": digest, "account": LOCAL_ACCOUNT, "kind": "worker", "created_at": time.time()},
        )
        return key

    async def revoke_rental(self, rental: str) -> None:
        """Forgets a rental and every credential it issued (its host is destroyed)."""
        for digest in await self.grants.forget_rental(rental):
            self._known.pop(digest, None)
