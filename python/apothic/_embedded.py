"""The embedded default: with no server configured, start a local control plane in the
background (state under $APOTHIC_HOME) and reuse it from then on."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from apothic import _config
from apothic.exception import ConnectionError

_START_TIMEOUT_S = 60.0


def is_healthy(url: str) -> bool:
    key = _config.api_key() or ""
    request = urllib.request.Request(f"{url}/v1/health", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_server() -> dict | None:
    info = _config.server_info()
    if info and pid_alive(int(info.get("pid", 0))) and is_healthy(info["url"]):
        return info
    return None


def start_daemon(extra_args: list[str] | None = None) -> dict:
    """Starts `apothic server start --foreground` detached; returns server.json once it answers."""
    home = _config.home()
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    with open(home / "logs" / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "apothic", "server", "start", "--foreground", *(extra_args or [])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConnectionError(f"the embedded server exited with code {proc.returncode}; "
                                  f"see {home / 'logs' / 'server.log'}")
        info = _config.server_info()
        if info and info.get("pid") == proc.pid and is_healthy(info["url"]):
            return info
        time.sleep(0.05)
    proc.kill()
    raise ConnectionError(f"the embedded server did not start within {_START_TIMEOUT_S:.0f} s")


def ensure_server() -> str:
    """The URL of this home's server, starting it first if none is running."""
    home = _config.home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once get one server
        info = running_server() or start_daemon()
    return info["url"]
