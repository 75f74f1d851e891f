"""Classes end to end: a real control plane, real agents and container processes.

Anonymous instances (`Counter(start=1)`), `with_options`, `Cls.from_name`, named instances
(actors), @enter/@exit, pickled handles in other processes, SIGKILL of an instance's container,
and a control-plane restart under a named instance.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import apothic
from apothic import _loop
from apothic._client import get_client
from apothic.exception import (
    ExecutionError,
    FunctionTimeoutError,
    InstanceConflictError,
    InstanceStoppedError,
    InvalidError,
    NotFoundError,
)
from tests.e2e.apps import classes
from tests.e2e.apps.classes import Counter, Greeter
from tests.support import servers

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deployed(server: dict):
    classes.app.deploy()
    try:
        yield classes
    finally:
        _loop.run(_stop_app(classes.app))


async def _stop_app(app: apothic.App) -> None:
    await app._stop(await get_client())


def _events(markers: Path) -> list[str]:
    path = markers / "events"
    return path.read_text().splitlines() if path.exists() else []


def _wait_for(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def _in_another_process(script: str, home: Path, stdin: bytes = b"", *args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", script, *args], env=servers.env_for(home), input=stdin,
                            capture_output=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().split()


def _name() -> str:
    return f"ctr-{uuid.uuid4().hex[:8]}"


# ---- anonymous instances ------------------------------------------------------------------
def test_method_call_forms(deployed) -> None:
    obj = Counter(start=7)
    assert obj.echo.remote(1, b=2) == (7, 3)
    assert obj.echo.spawn(5).get(timeout=60) == (7, 5)
    assert list(obj.echo.map([1, 2, 3])) == [(7, 1), (7, 2), (7, 3)]
    assert list(obj.echo.starmap([(1, 2), (3, 4)])) == [(7, 3), (7, 7)]
    assert obj.add_async.remote(0) == 7  # an async method

    async def go() -> tuple:
        a = await obj.echo.remote.aio(1)
        b = await (await obj.echo.spawn.aio(2)).get.aio()
        c = [x async for x in obj.echo.map.aio([3, 4])]
        return a, b, c

    assert asyncio.run(go()) == ((7, 1), (7, 2), [(7, 3), (7, 4)])


def test_parameters_key_the_containers(deployed, markers: Path) -> None:
    one = Counter(start=1, marker_dir=str(markers)).state.remote()
    two = Counter(start=2, marker_dir=str(markers)).state.remote()
    assert (one["start"], two["start"]) == (1, 2)
    assert one["pid"] != two["pid"]
    assert Greeter(name="ann").greet.remote() == "hello ann"
    assert Greeter(name="bo", greeting=b"hi", loud=True).greet.remote() == "HI BO"


def test_enter_runs_once_and_exit_runs_on_scaledown(deployed, markers: Path) -> None:
    obj = Counter(start=100, marker_dir=str(markers))
    pid = obj.state.remote()["pid"]
    obj.echo.remote(1)
    assert _events(markers).count(f"enter {pid}") == 1
    # scaledown_window=1: the idle container stops gracefully, and its @exit hook runs there.
    assert _wait_for(lambda: any(line.startswith(f"exit {pid} ") for line in _events(markers))), _events(markers)


def test_constructor_errors_are_clear(deployed) -> None:
    with pytest.raises(InvalidError, match="no parameter 'nope'") as info:
        Counter(nope=1)
    assert info.value.code == "cls.invalid_params"
    with pytest.raises(InvalidError, match="must be int"):
        Counter(start="x")
    with pytest.raises(InvalidError, match="must be int"):
        Counter(start=True)
    with pytest.raises(InvalidError, match="missing the parameter 'name'"):
        Greeter()
    with pytest.raises(AttributeError, match="no method 'nope'"):
        Counter().nope  # noqa: B018


def test_with_options(deployed) -> None:
    slow = Counter.with_options(timeout=1)(start=3)
    with pytest.raises(FunctionTimeoutError):
        slow.sleep.remote(30)
    # A variant has its own pool: same parameters, another container.
    assert Counter.with_options(cpu=0.5)(start=4).state.remote()["pid"] != Counter(start=4).state.remote()["pid"]
    with pytest.raises(InvalidError, match="secrets"):
        Counter.with_options(secrets=["s"])
    # A variant may ask for its own placement: compiled here, and matched against workers there.
    local = Counter.with_options(offer_filters={"provider": {"eq": "local"}})(start=5)
    assert local.state.remote()["value"] == 5
    with pytest.raises(InvalidError, match="reliability"):
        Counter.with_options(offer_filters={"reliability": {"gte": "high"}})
    with pytest.raises(apothic.exception.Error) as info:
        Counter.with_options(gpu="B200:8")(start=6).state.remote()
    assert info.value.code == "placement.no_match" and "B200" in info.value.message
    with pytest.raises(InvalidError, match="max_containers"):
        Counter.with_options(max_containers=0)
    with pytest.raises(TypeError):
        Counter.with_options(bogus=1)


def test_from_name(deployed) -> None:
    Remote = apothic.Cls.from_name("e2e-classes", "Greeter")
    assert Remote(name="cy", loud=True).greet.remote() == "HELLO CY"
    with pytest.raises(InvalidError) as info:
        Remote(nope=1).greet.remote()
    assert info.value.code == "cls.invalid_params"
    with pytest.raises(AttributeError, match="no method 'nope'"):  # hydrated: its methods are known
        Remote(name="x").nope  # noqa: B018
    with pytest.raises(NotFoundError) as info:  # not yet hydrated: the first call finds out
        apothic.Cls.from_name("e2e-classes", "Greeter")(name="x").nope.remote()
    assert info.value.code == "cls.method_not_found"
    with pytest.raises(NotFoundError) as info:
        apothic.Cls.from_name("e2e-classes", "plain")().x.remote()
    assert info.value.code == "cls.not_found"
    with pytest.raises(InvalidError, match="is a class"):
        apothic.Function.from_name("e2e-classes", "Greeter").remote()


def test_anonymous_handle_survives_pickle(deployed, home: Path) -> None:
    blob = pickle.dumps(Counter(start=21).echo)
    script = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()).remote(1)[1])"
    assert _in_another_process(script, home, blob) == ["1"]
    blob = pickle.dumps(Counter(start=21))
    script = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()).echo.remote(2)[0])"
    assert _in_another_process(script, home, blob) == ["21"]


# ---- named instances ------------------------------------------------------------------------
def test_named_instance_keeps_state_and_attaches_from_another_process(deployed, home: Path) -> None:
    name = _name()
    inst = Counter.named(name, start=10)
    assert [inst.add.remote(1) for _ in range(3)] == [11, 12, 13]
    script = ("import sys, apothic\n"
              "C = apothic.Cls.from_name('e2e-classes', 'Counter')\n"
              "print(C.named(sys.argv[1]).add.remote(1))\n"  # no params: attach
              "print(C.named(sys.argv[1], start=10).add.remote(1))\n"  # the same params: attach
              "try:\n"
              "    C.named(sys.argv[1], start=11)\n"
              "except apothic.exception.InstanceConflictError as e:\n"
              "    print(e.code)\n")
    assert _in_another_process(script, home, b"", name) == ["14", "15", "cls.instance_conflict"]
    with pytest.raises(InstanceConflictError):
        Counter.named(name, start=99)
    assert asyncio.run(Counter.named.aio(name)).add.remote(1) == 16
    blob = pickle.dumps(inst)
    script = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()).add.remote(1))"
    assert _in_another_process(script, home, blob) == ["17"]
    inst.stop()


def test_named_instance_runs_calls_one_at_a_time_in_arrival_order(deployed) -> None:
    inst = Counter.named(_name())
    calls = [inst.record.spawn(i, 0.05) for i in range(12)]
    assert apothic.FunctionCall.gather(*calls) == list(range(12))
    history = inst.history.remote()
    assert [i for i, _, _ in history] == list(range(12))
    for (_, _, ended), (_, began, _) in itertools.pairwise(history):
        assert ended <= began  # never two at once
    inst.stop()


def test_stop_runs_exit_and_later_calls_fail(deployed, markers: Path, home: Path) -> None:
    name = _name()
    inst = Counter.named(name, marker_dir=str(markers))
    assert inst.add.remote(5) == 5
    pid = inst.state.remote()["pid"]
    blob = pickle.dumps(inst)
    inst.stop()
    assert _wait_for(lambda: f"exit {pid} 5" in _events(markers)), _events(markers)
    with pytest.raises(InstanceStoppedError) as info:
        inst.add.remote(1)
    assert info.value.code == "cls.instance_stopped"
    script = ("import pickle, sys, apothic\n"
              "try:\n"
              "    pickle.loads(sys.stdin.buffer.read()).add.remote(1)\n"
              "except apothic.exception.Error as e:\n"
              "    print(e.code)\n")
    assert _in_another_process(script, home, blob) == ["cls.instance_stopped"]
    inst.stop()  # twice is fine
    fresh = Counter.named(name, marker_dir=str(markers))  # the name starts a new instance
    assert fresh.add.remote(1) == 1
    fresh.stop()


def test_sigkill_of_a_named_instance_restarts_it(deployed, markers: Path) -> None:
    inst = Counter.named(_name(), start=3, marker_dir=str(markers))
    assert inst.add.remote(2) == 5
    before = inst.state.remote()["pid"]
    with pytest.raises(ExecutionError) as info:
        inst.die.remote()
    assert info.value.code == "execution.failed" and "exited" in info.value.message
    after = inst.state.remote()
    assert after["pid"] != before
    assert after["value"] == 3  # a restarted instance: @enter ran again, in-memory state is lost
    assert [line.split()[0] for line in _events(markers)].count("enter") == 2
    inst.stop()


# ---- @exit when the app stops ------------------------------------------------------------------
def test_exit_runs_on_app_stop_and_a_hanging_exit_is_killed(server: dict, markers: Path) -> None:
    with classes.ephemeral.run(show_output=False):
        calm = classes.Tidy(marker_dir=str(markers)).pid.remote()
        stuck = classes.Tidy(marker_dir=str(markers), hang=True).pid.remote()
    assert _wait_for(lambda: f"exit {calm}" in _events(markers) and f"exit {stuck}" in _events(markers))
    # The hanging @exit is bounded: SIGKILL after the agent's grace period.
    assert _wait_for(lambda: not _alive(stuck), timeout=15)
    assert not _alive(calm)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---- decoration ---------------------------------------------------------------------------------
scratch = apothic.App("scratch")


class Undecorated:
    @apothic.method()
    def f(self):
        return 1


def test_decoration_errors() -> None:
    with pytest.raises(InvalidError, match="max_containers"):  # the checks of @app.function
        scratch.cls(max_containers=0)(Undecorated)
    with pytest.raises(InvalidError, match="serialized"):
        scratch.cls(serialized=True)
    with pytest.raises(InvalidError, match=r"apothic\.parameter"):

        class WithInit:
            def __init__(self, x):
                self.x = x

            @apothic.method()
            def f(self):
                return self.x

        scratch.cls()(WithInit)
    with pytest.raises(InvalidError, match=r"no @apothic\.method"):

        class NoMethods:
            pass

        scratch.cls()(NoMethods)
    with pytest.raises(InvalidError, match="annotation"):

        class BadParam:
            x: list = apothic.parameter()

            @apothic.method()
            def f(self):
                return 1

        scratch.cls()(BadParam)
    with pytest.raises(InvalidError, match="parentheses"):
        apothic.method(lambda self: 1)
    with pytest.raises(InvalidError, match="snap"):
        apothic.enter(snap=True)


# ---- durability: the control plane restarts under a named instance ------------------------------
_CREATE = """
import sys, apothic
sys.path.insert(0, {root!r})
from tests.e2e.apps import classes
classes.app.deploy()
inst = classes.Counter.named("ctr-1", start=7, marker_dir={markers!r})
print(inst.add.remote(1), inst.state.remote()["pid"])
"""

_ATTACH = """
import apothic
C = apothic.Cls.from_name("e2e-classes", "Counter")
state = C.named("ctr-1").state.remote()
print(state["start"], state["value"])
try:
    C.named("ctr-1", start=8)
except apothic.exception.InstanceConflictError as e:
    print(e.code)
C.named("ctr-1").stop()
"""


def test_named_instance_survives_a_control_plane_restart(tmp_path: Path, markers: Path) -> None:
    home = tmp_path / "home"  # a store on disk: the instance's record must outlive the server
    info = servers.start(home)
    try:
        value, pid = _in_another_process(_CREATE.format(root=str(ROOT), markers=str(markers)), home)
        assert value == "8"
        servers.stop(home, info["pid"])
        # Server shutdown stops the container gracefully: its @exit hook ran.
        assert f"exit {pid} 8" in _events(markers), _events(markers)
        info = servers.start(home)
        # Same name, same parameters; the state was in memory, so it starts over from @enter.
        assert _in_another_process(_ATTACH, home) == ["7", "7", "cls.instance_conflict"]
    finally:
        servers.stop(home, info["pid"])


_VARIANTS = """
import sys, time, apothic
sys.path.insert(0, {root!r})
from tests.e2e.apps import classes
classes.app.deploy()
handle = classes.Counter(start=7)
print(handle.state.remote()["value"], handle.object_id, flush=True)
time.sleep({wait})  # scaledown_window=1, then the variant idles past APOTHIC_VARIANT_IDLE_S
fresh = classes.Counter(start=7)  # the same parameters find the retired variant's row
print(fresh.state.remote()["value"], fresh.object_id == handle.object_id, flush=True)
time.sleep({wait})
print(handle.state.remote()["value"], flush=True)  # a call to a retired variant's id brings it back
"""


def test_idle_anonymous_variants_leave_memory_and_come_back(tmp_path: Path) -> None:
    """An anonymous instance's pool idle past APOTHIC_VARIANT_IDLE_S is dropped from the control
    plane's memory (one per parameter set used would otherwise stay for the deployment's life);
    a call through an old handle, or the same parameters again, bring the same variant back."""
    home = tmp_path / "home"
    info = servers.start(home, APOTHIC_VARIANT_IDLE_S="1")
    try:
        run = subprocess.run([sys.executable, "-c", _VARIANTS.format(root=str(ROOT), wait=7.5)],
                             env=servers.env_for(home, APOTHIC_VARIANT_IDLE_S="1"), capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stderr
        first, second, third = run.stdout.splitlines()
        assert first.split()[0] == "7" and second.split() == ["7", "True"] and third == "7"
        retirements = (home / "logs" / "server.log").read_text().split("idle class variants from memory")[1:]
        assert len(retirements) >= 2 and all(first.split()[1] in r.splitlines()[0] for r in retirements)
    finally:
        servers.stop(home, info["pid"])
