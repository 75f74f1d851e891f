"""Object ids, `<prefix>-<ulid>`; the prefixes mirror `apothic-types::ids` (checked by a test)."""

from __future__ import annotations

import base64
import os
import time

PREFIXES: dict[str, str] = {
    "app": "ap",
    "function": "fn",
    "function_call": "fc",
    "deployment": "dp",
    "worker": "wk",
    "container": "ct",
    "account": "ac",
    "blob": "bl",
    "queue": "qu",
    "queue_item": "qi",
    "dict": "di",
    "sandbox": "sb",
}

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# base64's base32 encoder (C) with its alphabet swapped for Crockford's: a ULID per call costs
# one encode instead of a 26-step Python loop, which showed in the profile of spawn().
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())


def _ulid() -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    # 160 bits encode to 32 characters; the top 30 bits are zero, so the last 26 are the ULID.
    return base64.b32encode(value.to_bytes(20, "big"))[6:].translate(_TO_CROCKFORD).decode()


def new_id(kind: str) -> str:
    return f"{PREFIXES[kind]}-{_ulid()}"


def is_valid(kind: str, object_id: str) -> bool:
    prefix, _, body = object_id.partition("-")
    return (
        prefix == PREFIXES.get(kind)
        and len(body) == 26
        and all(c.isdigit() or ("A" <= c <= "Z") for c in body)
    )
