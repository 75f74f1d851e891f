"""The worker session as a multiplexer, end to end: a stalled proxied stream holds back only
itself, and a worker whose session goes silent is declared dead by the session's heartbeat.

The app below is shipped to containers like any other (this module is imported there, so it
keeps its top-level imports light and side-effect free)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import apothic
from tests.support import servers

ROOT = Path(__file__).resolve().parents[2]

app = apothic.App("e2e-worker-session")

CHUNK = 64 * 1024
FIREHOSE_BYTES = 64 * 1024 * 1024
_PATTERN = bytes(range(256)) * (CHUNK // 256)


@app.function()
@apothic.asgi_app()
def firehose():
    """Streams FIREHOSE_BYTES as fast as it can."""

    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        chunks = 1 if scope["query_string"] == b"warm" else FIREHOSE_BYTES // CHUNK
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": _PATTERN, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return asgi


@app.endpoint(method="GET")
def ping(n: str = "0"):
    return {"pong": int(n)}


@app.function()
def add(a, b):
    return a + b


def _rss(pid: int) -> int:
    """Resident bytes of a process (0 if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next(ln for ln in status.splitlines() if ln.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_a_paused_client_stalls_only_its_own_stream(server: dict) -> None:
    import aiohttp

    def footprint() -> dict[int, int]:
        """Resident bytes of the control plane, its agents and their containers: wherever a
        stalled response could pile up."""
        agents = servers.agent_pids(server["pid"])
        containers = [c for a in agents for c in servers.agent_pids(a)]
        return {p: _rss(p) for p in [server["pid"], *agents, *containers]}

    async def check() -> None:
        timeout = aiohttp.ClientTimeout(total=180)
        async with aiohttp.ClientSession(timeout=timeout, read_bufsize=CHUNK) as paused, \
                aiohttp.ClientSession(timeout=timeout) as other:
            async with other.get(ping.get_web_url(), params={"n": "-1"}) as r:  # warm: its container runs
                assert r.status == 200
            assert await asyncio.to_thread(add.remote, 1, 1) == 2
            async with other.get(firehose.get_web_url() + "?warm") as r:  # its container runs too
                assert r.status == 200 and len(await r.read()) == CHUNK
            await asyncio.sleep(2)  # and the agent's next spare container has finished starting
            before = footprint()
            async with paused.get(firehose.get_web_url()) as big:
                assert big.status == 200
                first = await big.content.readexactly(CHUNK)
                # The firehose's client now reads nothing. Other requests and calls on the same
                # worker (so the same session) must keep completing meanwhile.
                started = time.monotonic()
                for i in range(10):
                    async with other.get(ping.get_web_url(), params={"n": str(i)}) as r:
                        assert r.status == 200 and await r.json() == {"pong": i}
                    assert await asyncio.to_thread(add.remote, i, 1) == i + 1
                assert time.monotonic() - started < 60, "requests crawled while one stream was stalled"
                await asyncio.sleep(2)  # time for the firehose to push whatever the streams let through
                after = footprint()
                grown = {p: after[p] - before[p] for p in before if p in after}
                # The stalled response is held back by its stream's window and the container's
                # link: the app waits in send() instead of piling it up in any of our processes.
                assert sum(grown.values()) < FIREHOSE_BYTES // 2, f"our processes grew by {grown} bytes"
                assert max(grown.values()) < FIREHOSE_BYTES // 4, f"one of our processes grew by {grown} bytes"
                # Reading again, the whole body arrives intact.
                digest = hashlib.sha256(first)
                total = len(first)
                async for chunk in big.content.iter_chunked(1 << 20):
                    digest.update(chunk)
                    total += len(chunk)
        assert total == FIREHOSE_BYTES
        assert digest.hexdigest() == hashlib.sha256(_PATTERN * (FIREHOSE_BYTES // CHUNK)).hexdigest()

    with app.run(show_output=False):
        asyncio.run(check())


_DRIVER = """
import sys, apothic
sys.path.insert(0, {root!r})
from tests.e2e.apps import basic
with basic.app.run(show_output=False):
    call = basic.slow_once.spawn({markers!r})
    print(call.get(timeout=120), flush=True)
"""


def _worker_pids(home: Path) -> set[int]:
    out = subprocess.run([sys.executable, "-m", "apothic", "worker", "list", "--json"], env=servers.env_for(home),
                         capture_output=True, text=True, timeout=60, check=True, cwd=ROOT)
    return {w["pid"] for w in json.loads(out.stdout)}


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_silent_worker_is_declared_dead_and_its_call_runs_elsewhere(tmp_path: Path) -> None:
    home = tmp_path / "home"
    markers = tmp_path / "markers"
    markers.mkdir()
    # A 3 s dead timeout keeps the test short. The stopped agent's TCP connection stays open, and
    # no websocket heartbeat runs: only the session's own pings can notice the silence. Two
    # agents, so the call has somewhere else to run while one is stopped.
    env = {"APOTHIC_DB_URL": "mem://", "APOTHIC_SESSION_DEAD_S": "3", "APOTHIC_LOCAL_WORKERS": "2"}
    info = servers.start(home, **env)
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER.format(root=str(ROOT), markers=str(markers))],
                              env=servers.env_for(home, **env), stdout=subprocess.PIPE, text=True)
    stopped: int | None = None
    try:
        marker = markers / "started"
        assert _wait_for(marker.exists, 60), "the first attempt never started"
        time.sleep(0.2)
        stopped = int(marker.read_text())  # the container's parent: the agent running the call
        assert stopped in _worker_pids(home)
        os.kill(stopped, signal.SIGSTOP)
        silenced = time.monotonic()
        assert _wait_for(lambda: stopped not in _worker_pids(home), 30), "the silent worker was never dropped"
        took = time.monotonic() - silenced
        assert took >= 2.5, f"dropped after {took:.1f} s, before the 3 s dead timeout"
        # Its lease ran out meanwhile: the call ran again on the other agent.
        out, _ = driver.communicate(timeout=90)
        assert out.strip() == "second attempt"
        assert servers._alive(stopped), "the stopped agent should still be there, silent"
        # Woken, the agent finds its session gone and connects again.
        os.kill(stopped, signal.SIGCONT)
        assert _wait_for(lambda: stopped in _worker_pids(home), 30), "the woken agent did not reconnect"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        if driver.stdout is not None:
            driver.stdout.close()
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGCONT)
        servers.stop(home, info["pid"])
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)
