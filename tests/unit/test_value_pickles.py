"""Plain queue items and dict values skip cloudpickle's Pickler, with byte-identical output:
a dict CAS compares pickled bytes, so a value written by either must match the other's."""

from __future__ import annotations

import cloudpickle

from apothic import dict as apothic_dict
from apothic import queue as apothic_queue

VALUES = [0, 1, -5, 2**70, 3.5, float("inf"), "", "a", "é" * 300, b"", b"x" * 100, True, False, None, "x" * 100_000]


def test_plain_values_pickle_as_cloudpickle_does() -> None:
    for dump in (apothic_dict._dump, apothic_queue._dump):
        for value in VALUES:
            assert dump(value) == cloudpickle.dumps(value), (dump.__module__, value)
