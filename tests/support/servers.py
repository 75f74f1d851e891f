"""Starts and stops real control planes (and so their local worker agents) by pid."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

APOTHIC = [sys.executable, "-m", "apothic"]


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.pop("APOTHIC_SERVER_URL", None)
    env.pop("APOTHIC_API_KEY", None)
    env.update({"APOTHIC_HOME": str(home), "APOTHIC_LEASE_MS": "2000", "APOTHIC_HEARTBEAT_S": "0.4"})
    env.update(extra)
    return env


def start(home: Path, **extra: str) -> dict:
    subprocess.run([*APOTHIC, "server", "start"], env=env_for(home, **extra), check=True,
                   capture_output=True, timeout=90)
    return json.loads((home / "server.json").read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def wait_dead(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def agent_pids(server_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def stop(home: Path, pid: int) -> None:
    """SIGTERM the server (it stops its agents), then SIGKILL whatever is left, by pid."""
    children = agent_pids(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_dead(pid, 20):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for child in children:
        if not wait_dead(child, 5):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
