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
    "queue": "qu",
    "queue_item": "qi",
    "dict": "di",
    "sandbox": "sb",
}

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters for each 10-bit value: a ULID (48-bit time, 80-bit random part; 26 characters)
# is 13 lookups, not base64's pure-Python base32 encoder (most of new_id's 4 us).
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_RANDOM_MASK = (1 << 80) - 1

# Monotonic ULIDs (the spec's monotonic mode): the random part is drawn once per millisecond and
# incremented for each further id within it, so ids made in one process sort in the order they
# were made, and most cost no system call for randomness.
_last_ms = -1
_random = 0
_time_text, _text_ms = "", -1  # _last_ms's ten characters


def _ulid() -> str:
    global _last_ms, _random, _time_text, _text_ms
    ms = int(time.time() * 1000)
    if ms > _last_ms:
        _last_ms, _random = ms, int.from_bytes(os.urandom(10), "big")
    else:  # the same millisecond, or the clock stepped back: stay after the last id
        _random = (_random + 1) & _RANDOM_MASK
        if _random == 0:  # 2**80 ids in one millisecond: borrow the next one
            _last_ms += 1
    if _text_ms != _last_ms:
        _time_text, _text_ms = "".join([_PAIRS[(_last_ms >> shift) & 1023] for shift in (40, 30, 20, 10, 0)]), _last_ms
    r = _random
    return (_time_text + _PAIRS[r >> 70] + _PAIRS[(r >> 60) & 1023] + _PAIRS[(r >> 50) & 1023]
            + _PAIRS[(r >> 40) & 1023] + _PAIRS[(r >> 30) & 1023] + _PAIRS[(r >> 20) & 1023]
            + _PAIRS[(r >> 10) & 1023] + _PAIRS[r & 1023])


def new_id(kind: str) -> str:
    return f"{PREFIXES[kind]}-{_ulid()}"


def is_valid(kind: str, object_id: str) -> bool:
    prefix, _, body = object_id.partition("-")
    return (
        prefix == PREFIXES.get(kind)
        and len(body) == 26
        and all(c.isdigit() or ("A" <= c <= "Z") for c in body)
    )
