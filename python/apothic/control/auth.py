"""API keys and worker join tokens. Only hashes are stored; the embedded default writes the
local account's key to $APOTHIC_HOME/api_key where the SDK and CLI find it."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from apothic.control.store import Store
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


class Auth:
    def __init__(self, store: Store, home: Path) -> None:
        self.store = store
        self.home = home
        self.worker_token = ""
        # Keys cannot be revoked yet, so a key once found stays valid: skip the store next time.
        self._known: dict[str, Principal] = {}

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
