"""Remote functions end to end: a real control plane, real agents, real container processes."""

from __future__ import annotations

import asyncio
import threading

import pytest

import apothic
from apothic.exception import (
    FunctionTimeoutError,
    InputCancellation,
    NotFoundError,
    SerializationError,
)
from tests.e2e.apps import basic


@pytest.fixture(scope="module")
def running(server: dict):
    with basic.app.run(show_output=False):
        yield basic


def test_remote_returns_the_value(running) -> None:
    assert running.add.remote(2, b=3) == 5


def test_async_function_and_aio_forms(running) -> None:
    async def go() -> tuple[int, int, list[int]]:
        a = await running.add_async.remote.aio(1, 2)
        call = await running.add.spawn.aio(4, 4)
        b = await call.get.aio()
        c = [x async for x in running.add.map.aio([1, 2], [10, 20])]
        return a, b, c

    assert asyncio.run(go()) == (3, 8, [11, 22])


def test_map_starmap_spawn_gather(running) -> None:
    assert list(running.add.map(range(20), range(20))) == [2 * i for i in range(20)]
    assert list(running.add.starmap([(1, 2), (3, 4)])) == [3, 7]
    assert sorted(running.wait_for.map([0.6, 0.0], order_outputs=False)) == ["done", "done"]
    first, second = running.add.map([1, "x"], [1, 1], return_exceptions=True)
    assert first == 2 and isinstance(second, TypeError)
    calls = [running.add.spawn(i, 1) for i in range(5)]
    assert apothic.FunctionCall.gather(*calls) == [1, 2, 3, 4, 5]
    again = apothic.FunctionCall.from_id(calls[0].object_id)
    assert again.get(timeout=10) == 1


def test_remote_exception_keeps_its_type_and_traceback(running) -> None:
    with pytest.raises(basic.CustomError, match="boom") as info:
        running.fail.remote("boom")
    notes = "".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback" in notes and "raise CustomError(message)" in notes


def test_timeout_ends_as_timed_out(running) -> None:
    call = running.sleepy.spawn(10)
    with pytest.raises(FunctionTimeoutError):
        call.get()
    job = apothic.Job.from_id(call.object_id)
    assert job.status() == "timed_out"
    assert [e.type for e in job.events()][-1] == "timed_out"


def test_container_sigkill_is_retried(running, markers) -> None:
    call = running.die_once.spawn(str(markers))
    assert call.get(timeout=60) == "survived"
    job = apothic.Job.from_id(call.object_id)
    assert job.attempts() == 2
    types = [e.type for e in job.events()]
    assert types[0] == "queued" and "retrying" in types and types[-1] == "succeeded"


def test_retries_exhausted_fail_with_the_last_error(running) -> None:
    call = running.always_fail.spawn()
    with pytest.raises(RuntimeError, match="always"):
        call.get(timeout=60)
    job = apothic.Job.from_id(call.object_id)
    assert job.status() == "failed" and job.attempts() == 2


def test_events_revisions_increase_and_logs_are_kept(running) -> None:
    call = running.shout.spawn("hi")
    assert call.get() == "HI"
    job = apothic.Job.from_id(call.object_id)
    events = list(job.events())
    assert [e.type for e in events] == ["queued", "assigned", "started", "succeeded"]
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    # Resuming after a revision yields exactly the rest.
    assert [e.revision for e in job.events(after=revisions[1])] == revisions[2:]
    assert "shouting hi" in job.logs()
    assert job.wait(timeout=5) == "succeeded"


def test_events_stream_live_until_the_end(running) -> None:
    call = running.wait_for.spawn(1.0)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(e.type for e in apothic.Job.from_id(call.object_id).events()))
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert seen[0] == "queued" and seen[-1] == "succeeded"


def test_cancel_a_running_call(running) -> None:
    call = running.wait_for.spawn(30)
    job = apothic.Job.from_id(call.object_id)
    seen = []
    for e in job.events():
        seen.append((e.type, e.revision, round(e.time, 3)))
        if e.type == "started":
            break
    call.cancel()
    assert job.status() == "cancelled", seen
    with pytest.raises(InputCancellation):
        call.get(timeout=10)


def test_unpicklable_argument_is_a_clear_error(running) -> None:
    with pytest.raises(SerializationError, match="could not pickle the arguments of add"):
        running.add.remote(threading.Lock())


def test_unknown_job_id(server: dict) -> None:
    with pytest.raises(NotFoundError):
        apothic.Job.from_id("fc-00000000000000000000000000").status()
    with pytest.raises(NotFoundError):
        apothic.Job.from_id("not-a-job")


def test_function_not_deployed(server: dict) -> None:
    with pytest.raises(NotFoundError) as info:
        apothic.Function.from_name("no-such-app", "f").remote()
    assert info.value.code == "app.not_found"


idle_app = apothic.App("idle")


@idle_app.function()
def never_started() -> int:
    return 1


def test_calling_outside_a_running_app_is_a_clear_error(server: dict) -> None:
    with pytest.raises(apothic.exception.ExecutionError, match="not running"):
        never_started.remote()


def test_functions_must_be_module_level() -> None:
    with pytest.raises(apothic.exception.InvalidError, match="module level"):

        @idle_app.function()
        def nested() -> None:
            pass


def test_options_that_cannot_be_honoured_fail_at_decoration() -> None:
    with pytest.raises(apothic.exception.InvalidError, match="bogus: unknown offer field"):
        idle_app.function(offer_filters={"bogus": {"eq": 1}})(never_started.get_raw_f())
    with pytest.raises(apothic.exception.InvalidError, match="reliability"):
        idle_app.function(offer_filters={"reliability": {"gte": "high"}})(never_started.get_raw_f())
    with pytest.raises(apothic.exception.InvalidError, match="gpu_name"):
        idle_app.function(offer_filters={"gpu_name": {"gt": "A100"}})(never_started.get_raw_f())
    with pytest.raises(apothic.exception.InvalidError, match="pip_install"):
        idle_app.function(image=apothic.Image.debian_slim().pip_install("numpy"))
    with pytest.raises(apothic.exception.InvalidError, match="max_retries"):
        apothic.Retries(max_retries=-1)


def test_impossible_requirement_fails_with_placement_no_match(running) -> None:
    with pytest.raises(apothic.exception.Error) as info:
        running.too_big.remote()
    assert info.value.code == "placement.no_match" and "cpu gte 100000" in info.value.message
    assert "nearest: local" in info.value.message  # this host, with what it failed


def test_gather_raises_the_first_failure_in_order(running) -> None:
    calls = [running.add.spawn(1, 1), running.fail.spawn("second"), running.fail.spawn("third")]
    with pytest.raises(basic.CustomError, match="second"):
        apothic.FunctionCall.gather(*calls)
