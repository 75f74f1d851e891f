"""The agent's sandbox host driven by its frames directly, under each isolation this host has:
processes, flow control, sessions, timeouts, and nothing left running after terminate. Process
I/O goes on streams the host opens; here they are `FakeStream`s that keep a window as a
session stream does (the real streams are exercised end to end in tests/e2e/test_sandboxes.py)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from apothic._bridge.session import SANDBOX_HEADERS, STREAM_WINDOW
from apothic._worker import sandbox_host
from apothic._worker.sandbox_host import SandboxHost, detect_isolation
from apothic.exception import ConnectionError

ISOLATIONS = ["process", "bubblewrap"]
WINDOW = STREAM_WINDOW


class FakeStream:
    """The parts of a SessionStream the host uses: written bytes wait in `out`, and `drain()`
    holds the writer while more than a window of them is uncredited (`credit`)."""

    def __init__(self, headers: bytes) -> None:
        self.headers = headers
        self.out = bytearray()
        self.credited = 0
        self.closed = False
        self.was_reset = False
        self.room = asyncio.Event()
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()

    def write(self, data: bytes) -> None:
        if self.was_reset:
            raise ConnectionError("reset", code="session.stream_reset")
        self.out += data

    async def drain(self) -> None:
        while len(self.out) - self.credited > WINDOW and not self.was_reset:
            self.room.clear()
            await self.room.wait()
        if self.was_reset:
            raise ConnectionError("reset", code="session.stream_reset")

    def credit(self, upto: int) -> None:
        self.credited = upto
        self.room.set()

    def close(self) -> None:
        self.closed = True

    def reset(self, code: int = 8) -> None:
        self.was_reset = True
        self.room.set()
        self.inbox.put_nowait(None)

    async def read(self) -> bytes:
        item = await self.inbox.get()
        if item is None:
            raise ConnectionError("reset", code="session.stream_reset")
        return item


class Harness:
    def __init__(self, home: Path, isolation: str) -> None:
        self.frames: list[tuple[dict[str, Any], bytes]] = []
        self.arrived = asyncio.Event()
        self.streams: dict[tuple[str, int], FakeStream] = {}
        self.host = SandboxHost(home, self._send, self._open)  # type: ignore[arg-type]
        self.host.isolation = isolation
        self._reqs = itertools.count(1)

    def _open(self, headers: bytes) -> FakeStream:
        _sandbox, proc, fd = headers[len(SANDBOX_HEADERS):].decode().split(" ")
        stream = self.streams[proc, int(fd)] = FakeStream(headers)
        return stream

    def _send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        self.frames.append((header, payload))
        self.arrived.set()

    async def until(self, match: Any, timeout: float = 30) -> tuple[dict[str, Any], bytes]:
        async def find() -> tuple[dict[str, Any], bytes]:
            while True:
                for frame in self.frames:
                    if match(frame[0]):
                        return frame
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(find(), timeout)

    async def ask(self, header: dict[str, Any], payload: bytes = b"") -> dict[str, Any]:
        req = next(self._reqs)
        self.host.handle({**header, "req": req}, payload)
        reply, _ = await self.until(lambda h: h["t"] == "sb_reply" and h["req"] == req)
        return reply

    def output(self, proc: str, fd: int) -> bytes:
        return bytes(self.streams[proc, fd].out)


@pytest.fixture(params=ISOLATIONS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if request.param == "bubblewrap" and detect_isolation() != "bubblewrap":
        pytest.skip("bwrap is not installed here, or cannot make namespaces")
    return Harness(tmp_path, request.param)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_exec_stdin_output_and_flow_control(harness: Harness) -> None:
    async def go() -> None:
        assert (await harness.ask({"t": "sb_create", "sandbox": "sb-1", "env": {"A": "1"}}))["isolation"] == \
            harness.host.isolation
        assert (await harness.ask({"t": "sb_exec", "sandbox": "sb-1", "proc": "p1",
                                   "args": ["sh", "-c", "echo $A; cat"]}))["ok"]
        stdin = harness.streams["p1", 1]
        stdin.inbox.put_nowait(b"piped\n")
        stdin.inbox.put_nowait(b"")  # the control plane's end of the stream: stdin's end
        exit_frame, _ = await harness.until(lambda h: h["t"] == "sb_exit" and h["proc"] == "p1")
        assert exit_frame["returncode"] == 0 and harness.output("p1", 1) == b"1\npiped\n"
        # Each pipe's stream ends once its output has all been written.
        assert harness.streams["p1", 1].closed and harness.streams["p1", 2].closed
        # Three windows of output: the agent stops at one window until credit comes back.
        size = 3 * WINDOW
        await harness.ask({"t": "sb_exec", "sandbox": "sb-1", "proc": "big",
                           "args": ["head", "-c", str(size), "/dev/zero"]})
        await asyncio.sleep(1.0)
        held = len(harness.output("big", 1))
        assert WINDOW <= held <= WINDOW + 64 * 1024
        assert harness.host.sandboxes["sb-1"].procs["big"].proc.returncode is None  # blocked on its pipe
        while len(harness.output("big", 1)) < size:
            harness.streams["big", 1].credit(len(harness.output("big", 1)))
            await asyncio.sleep(0.05)
        await harness.until(lambda h: h["t"] == "sb_exit" and h["proc"] == "big")
        # Terminate resets the process streams: output not yet taken goes with the sandbox.
        await harness.ask({"t": "sb_exec", "sandbox": "sb-1", "proc": "held", "args": ["cat"]})
        await harness.ask({"t": "sb_terminate", "sandbox": "sb-1"})
        assert harness.streams["held", 1].was_reset and harness.streams["held", 2].was_reset

    _run(go())


def test_sessions_timeouts_and_terminate(harness: Harness) -> None:
    async def go() -> None:
        await harness.ask({"t": "sb_create", "sandbox": "sb-2", "workdir": "/w"})
        first = await harness.ask({"t": "sb_session", "sandbox": "sb-2", "session": "s", "create": True,
                                   "cmd": "cd sub 2>/dev/null || mkdir sub && cd sub; export X=7"})
        assert first["returncode"] == 0
        second = await harness.ask({"t": "sb_session", "sandbox": "sb-2", "session": "s", "cmd": "echo $X; pwd"})
        out = second["stdout"].splitlines()
        assert out[0] == "7" and out[1].endswith("/root/w/sub")
        slow = await harness.ask({"t": "sb_exec", "sandbox": "sb-2", "proc": "slow", "args": ["sleep", "60"],
                                  "timeout": 0.3})
        assert slow["ok"]
        timed, _ = await harness.until(lambda h: h["t"] == "sb_exit" and h["proc"] == "slow")
        assert timed["timed_out"] and timed["returncode"] == -9
        missing = await harness.ask({"t": "sb_exec", "sandbox": "sb-2", "proc": "x", "args": ["no-such-cmd"]})
        assert missing["error"]["code"] == "sandbox.process_not_found"
        # A grandchild in the background: terminate must take it too.
        await harness.ask({"t": "sb_exec", "sandbox": "sb-2", "proc": "bg", "args": ["sh", "-c", "sleep 300 & wait"]})
        root = harness.host.sandboxes["sb-2"].root
        await harness.ask({"t": "sb_terminate", "sandbox": "sb-2"})
        assert not root.exists()
        ended = await harness.ask({"t": "sb_exec", "sandbox": "sb-2", "proc": "y", "args": ["true"]})
        assert ended["error"]["code"] == "sandbox.terminated"

    _run(go())
    assert _processes_of("sb-2") == []


def _processes_of(sandbox_id: str) -> list[int]:
    import time

    deadline = time.monotonic() + 10
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if f"APOTHIC_SANDBOX_ID={sandbox_id}\0".encode() in (entry / "environ").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_isolation_can_be_forced_to_plain_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APOTHIC_SANDBOX_ISOLATION", "process")
    assert sandbox_host.detect_isolation() == "process"
    monkeypatch.setattr(sandbox_host.shutil, "which", lambda *_a, **_k: None)
    monkeypatch.setenv("APOTHIC_SANDBOX_ISOLATION", "auto")
    assert sandbox_host.detect_isolation() == "process"  # no bwrap on this host: plain processes
