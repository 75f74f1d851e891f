"""Cross-language contracts: ids, error codes, the _core boundary."""

from __future__ import annotations

import re
from pathlib import Path

from apothic import _ids
from apothic._bridge.errors import core_error_codes
from apothic.exception import CODE_TO_CLASS, exit_code_for

ROOT = Path(__file__).resolve().parents[2]


def test_id_prefixes_match_the_rust_table() -> None:
    rust = (ROOT / "crates/apothic-types/src/ids.rs").read_text()
    pairs = dict(re.findall(r'\("(\w+)", "(\w+)"\)', rust))
    assert pairs == _ids.PREFIXES


def test_new_ids_are_valid_and_unique() -> None:
    ids = {_ids.new_id("function_call") for _ in range(1000)}
    assert len(ids) == 1000 and all(_ids.is_valid("function_call", i) for i in ids)
    assert not _ids.is_valid("function_call", "fn-" + "0" * 26)


def test_every_core_error_code_has_a_class_and_an_exit_code() -> None:
    for code in core_error_codes():
        assert code in CODE_TO_CLASS, code
        assert exit_code_for(code) != 10 or code == "internal", code


def test_only_the_bridge_imports_core() -> None:
    offenders = []
    for path in (ROOT / "python/apothic").rglob("*.py"):
        if "_bridge" in path.parts:
            continue
        if re.search(r"^\s*(from apothic import _core|import apothic\._core|from apothic\._core)", path.read_text(),
                     re.M):
            offenders.append(str(path))
    assert offenders == []


def test_python_files_stay_small() -> None:
    big = [str(p) for p in (ROOT / "python").rglob("*.py") if len(p.read_text().splitlines()) > 800]
    assert big == []


def test_ulids_carry_the_time_and_sort_by_it() -> None:
    import time

    ids = []
    for _ in range(3):
        ids.append(_ids.new_id("function_call"))
        time.sleep(0.002)
    assert ids == sorted(ids)
    for object_id in ids:
        body = object_id.split("-", 1)[1]
        value = int(body.translate(str.maketrans("0123456789ABCDEFGHJKMNPQRSTVWXYZ",
                                                 "0123456789abcdefghijklmnopqrstuv")), 32)
        assert value < 1 << 128
        assert abs((value >> 80) - time.time() * 1000) < 60_000  # the first 48 bits: milliseconds


def test_ulids_made_within_one_millisecond_sort_in_the_order_made() -> None:
    import base64

    ids = [_ids.new_id("queue_item") for _ in range(20_000)]  # many share a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # The lookup-table encoder writes what base32 with Crockford's alphabet would.
    value = (_ids._last_ms << 80) | _ids._random
    crockford = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    assert ids[-1] == "qi-" + base64.b32encode(value.to_bytes(20, "big"))[6:].translate(crockford).decode()
