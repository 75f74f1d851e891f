"""Object ids, `<prefix>-<ulid>`; the prefixes mirror `apothic-types::ids` (checked by a test)."""

from __future__ import annotations

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
}

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid() -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(kind: str) -> str:
    return f"{PREFIXES[kind]}-{_ulid()}"


def is_valid(kind: str, object_id: str) -> bool:
    prefix, _, body = object_id.partition("-")
    return (
        prefix == PREFIXES.get(kind)
        and len(body) == 26
        and all(c.isdigit() or ("A" <= c <= "Z") for c in body)
    )
