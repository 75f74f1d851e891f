"""Calls held in reserve behind a running one: they start in order, can be cancelled without
touching the running call, and go back to the queue uncounted when their container dies."""

from __future__ import annotations

import pytest

import apothic
from apothic.exception import ExecutionError, InputCancellation
from tests.e2e.apps import basic


@pytest.fixture(scope="module")
def running(server: dict):
    with basic.app.run(show_output=False):
        yield basic


def _types(call: apothic.FunctionCall) -> list[str]:
    return [e.type for e in apothic.Job.from_id(call.object_id).events()]


def test_cancel_a_reserved_call_leaves_the_running_one(running) -> None:
    first = running.one_at_a_time.spawn(1.0)
    second = running.one_at_a_time.spawn(0)
    for event in apothic.Job.from_id(first.object_id).events():
        if event.type == "started":
            break
    second.cancel()
    with pytest.raises(InputCancellation):
        second.get(timeout=10)
    assert first.get(timeout=30) == 1.0
    assert "assigned" in _types(second) and "started" not in _types(second)
    assert running.one_at_a_time.remote(0) == 0  # the container lived on


def test_a_reserved_call_survives_its_container_dying(running, markers) -> None:
    doomed = running.one_at_a_time.spawn(0.5, str(markers))
    waiting = running.one_at_a_time.spawn(0)
    with pytest.raises(ExecutionError, match="exited"):
        doomed.get(timeout=30)
    assert waiting.get(timeout=30) == 0
    assert apothic.Job.from_id(waiting.object_id).attempts() == 1
    types = _types(waiting)
    # Handed to the dying container, put back uncounted, then run once elsewhere.
    assert types.count("assigned") == 2 and types.count("started") == 1 and "queued" in types[1:]
