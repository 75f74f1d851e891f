"""SIGKILL of an agent and of the control plane: nothing acknowledged is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.support import servers

ROOT = Path(__file__).resolve().parents[2]

_DRIVER = """
import sys, apothic
sys.path.insert(0, {root!r})
from tests.e2e.apps import basic
with basic.app.run(show_output=False):
    call = basic.slow_once.spawn({markers!r})
    print(call.object_id, flush=True)
    print(call.get(timeout=90), flush=True)
    print(apothic.Job.from_id(call.object_id).attempts(), flush=True)
"""


def test_agent_sigkill_lets_the_lease_expire_and_the_call_run_again(server: dict, home: Path,
                                                                     markers: Path) -> None:
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER.format(root=str(ROOT), markers=str(markers))],
                              env=servers.env_for(home), stdout=subprocess.PIPE, text=True)
    try:
        marker = markers / "started"
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the first attempt never started"
        time.sleep(0.2)
        agent_pid = int(marker.read_text())  # the container's parent: the agent running it
        os.kill(agent_pid, signal.SIGKILL)
        out, _ = driver.communicate(timeout=90)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    _job_id, result, attempts = out.strip().splitlines()
    assert result == "second attempt"
    assert int(attempts) == 2
    assert agent_pid not in servers.agent_pids(server["pid"])


_SPAWNER = """
import sys, apothic
sys.path.insert(0, {root!r})
from tests.e2e.apps import basic
basic.app.deploy()
for i in range(40):
    call = basic.add.spawn(i, 1000)
    print(call.object_id, flush=True)
"""

_COLLECTOR = """
import sys, apothic
ids = sys.argv[1:]
print(apothic.FunctionCall.gather(*[apothic.FunctionCall.from_id(i) for i in ids]))
"""


def test_control_plane_sigkill_keeps_every_acknowledged_call(tmp_path: Path) -> None:
    home = tmp_path / "home"  # a surrealkv store on disk: it must survive the kill
    info = servers.start(home)
    env = servers.env_for(home)
    spawner = subprocess.Popen([sys.executable, "-c", _SPAWNER.format(root=str(ROOT))], env=env,
                               stdout=subprocess.PIPE, text=True)
    acknowledged: list[str] = []
    try:
        assert spawner.stdout is not None
        for line in spawner.stdout:
            acknowledged.append(line.strip())
            if len(acknowledged) == 20:
                orphans = servers.agent_pids(info["pid"])
                os.kill(info["pid"], signal.SIGKILL)  # mid-stream
                break
        spawner.kill()
        spawner.wait()
        # Calls acknowledged before the kill reached the server are still in the pipe.
        acknowledged += [line.strip() for line in spawner.stdout]
        spawner.stdout.close()
        assert servers.wait_dead(info["pid"])
        # Agents notice their server is gone and exit rather than linger as orphans.
        assert all(servers.wait_dead(pid, 10) for pid in orphans)
        info = servers.start(home)
        result = subprocess.run([sys.executable, "-c", _COLLECTOR, *acknowledged], env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        values = eval(result.stdout)  # a printed list of ints
        assert sorted(values) == sorted(int(1000 + i) for i in range(len(acknowledged)))
        assert len(values) == len(set(acknowledged))
    finally:
        servers.stop(home, info["pid"])
    state = orjson.loads((home / "server.json").read_bytes()) if (home / "server.json").exists() else {}
    assert state.get("pid") != info["pid"]


_FINISHER = """
import sys, time, apothic
sys.path.insert(0, {root!r})
from tests.e2e.apps import basic
basic.app.deploy()
for i in range(20):
    call = basic.shout.spawn(f"hello {{i}}")
    call.get(timeout=60)
    print(call.object_id, flush=True)
"""

_INSPECTOR = """
import sys, apothic
for job_id in sys.argv[1:]:
    job = apothic.Job.from_id(job_id)
    print(job.status(), job.attempts(), "shouting hello" in job.logs())
"""


def test_finished_calls_stay_finished_after_a_restart(tmp_path: Path) -> None:
    """Calls that finished read back succeeded, run once, with their logs, after their rows were
    checkpointed, the control plane SIGKILLed and restarted: nothing finished runs again."""
    home = tmp_path / "home"
    info = servers.start(home)
    env = servers.env_for(home)
    try:
        run = subprocess.run([sys.executable, "-c", _FINISHER.format(root=str(ROOT))], env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        finished = run.stdout.split()
        time.sleep(0.5)  # past the checkpoint: the rows are in SurrealDB, not only in the journal
        os.kill(info["pid"], signal.SIGKILL)
        assert servers.wait_dead(info["pid"])
        info = servers.start(home)
        seen = subprocess.run([sys.executable, "-c", _INSPECTOR, *finished], env=env, capture_output=True, text=True,
                              timeout=60)
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout.splitlines() == ["succeeded 1 True"] * len(finished)
    finally:
        servers.stop(home, info["pid"])
