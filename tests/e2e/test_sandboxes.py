"""Sandboxes end to end: a real control plane, real worker agents, real processes in them."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import apothic
from apothic._worker.sandbox_host import detect_isolation
from apothic.exception import (
    ConflictError,
    ExecTimeoutError,
    NotFoundError,
    SandboxPathEscapeError,
    SandboxTerminatedError,
    SandboxTimeoutError,
)
from tests.support import servers

ROOT = Path(__file__).resolve().parents[2]
app = apothic.App("sandbox-tests")


@pytest.fixture
def sb(server: dict) -> Iterator[apothic.Sandbox]:
    box = apothic.Sandbox.create(app=app, timeout=120)
    try:
        yield box
    finally:
        box.terminate()


def _in_another_process(home: Path, code: str) -> Any:
    """Runs `code` in a fresh interpreter against the same server; returns what it printed, as JSON."""
    result = subprocess.run([sys.executable, "-c", code], env=servers.env_for(home), capture_output=True,
                            text=True, timeout=90, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout.strip().splitlines()[-1])


def test_exec_streams_stdin_and_exit_code(sb: apothic.Sandbox) -> None:
    p = sb.exec("sh", "-c", 'echo "out $GREETING"; echo oops >&2; cat; exit 3', env={"GREETING": "hi"})
    p.stdin.write("from stdin\n")
    p.stdin.write(b"bytes too\n")
    p.stdin.write_eof()
    p.stdin.drain()
    assert p.stdout.read() == "out hi\nfrom stdin\nbytes too\n"
    assert p.stderr.read() == "oops\n"
    assert p.wait() == 3 and p.returncode == 3 and p.poll() == 3
    lines = sb.exec("sh", "-c", "for i in 1 2 3; do echo line$i; done").stdout
    assert list(lines) == ["line1\n", "line2\n", "line3\n"]
    raw = sb.exec("printf", "\\000\\377", text=False)
    assert raw.stdout.read() == b"\x00\xff"


def test_aio_forms(sb: apothic.Sandbox) -> None:
    async def go() -> tuple[str, int, list[str], str]:
        p = await sb.exec.aio("sh", "-c", "echo a; echo b")
        lines = [line async for line in p.stdout]
        code = await p.wait.aio()
        await sb.filesystem.write_text.aio("async", "f.txt")
        text = await sb.filesystem.read_text.aio("f.txt")
        session = await sb.session.aio("aio")
        result = await session.run.aio("echo $((6 * 7))")
        return text, code, lines, result.stdout

    assert asyncio.run(go()) == ("async", 0, ["a\n", "b\n"], "42\n")


def test_large_output_flows_past_the_window(sb: apothic.Sandbox) -> None:
    """5 MiB is five times what may wait unacknowledged: it arrives only if reading credits the agent."""
    p = sb.exec("head", "-c", str(5 * 1024 * 1024), "/dev/zero", text=False)
    data = p.stdout.read()
    assert len(data) == 5 * 1024 * 1024 and data.count(0) == len(data)
    assert p.wait() == 0


def test_filesystem_round_trip(sb: apothic.Sandbox, tmp_path: Path) -> None:
    fs = sb.filesystem
    fs.make_directory("/data/nested")
    fs.write_bytes(b"\x00binary", "/data/nested/b.bin")
    fs.write_text("héllo", "data/t.txt")
    assert fs.read_bytes("data/nested/b.bin") == b"\x00binary"
    assert fs.read_text("/data/t.txt") == "héllo"
    entries = fs.list_files("/data")
    assert [(e.path, e.type) for e in entries] == [("/data/nested", "directory"), ("/data/t.txt", "file")]
    assert fs.stat("data/t.txt").size == len("héllo".encode())
    # The sandbox's processes see the same files, from the root as their working directory.
    assert sb.exec("cat", "data/t.txt").stdout.read() == "héllo"
    local = tmp_path / "local.txt"
    local.write_text("from the host")
    fs.copy_from_local(local, "/data/copied.txt")
    fs.copy_to_local("/data/copied.txt", tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_text() == "from the host"
    fs.remove("/data/t.txt")
    with pytest.raises(NotFoundError) as info:
        fs.stat("/data/t.txt")
    assert info.value.code == "sandbox.file_not_found"
    with pytest.raises(apothic.exception.SandboxFilesystemError):
        fs.remove("/data")  # not empty, and not recursive
    fs.remove("/data", recursive=True)
    assert fs.list_files("/") == []


def test_every_filesystem_call_refuses_to_leave_the_root(sb: apothic.Sandbox, tmp_path: Path) -> None:
    """Through the SDK, the control plane and the agent: `..`, and a symlink that a process in
    the sandbox made pointing out, for each of the ten calls."""
    secret = tmp_path / "secret.txt"
    secret.write_text("host only")
    assert sb.exec("ln", "-s", str(tmp_path), "out").wait() == 0
    assert sb.exec("ln", "-s", "../../../../../../../../..", "up").wait() == 0
    fs = sb.filesystem
    calls = {
        "read_bytes": lambda p: fs.read_bytes(p),
        "read_text": lambda p: fs.read_text(p),
        "write_bytes": lambda p: fs.write_bytes(b"x", p),
        "write_text": lambda p: fs.write_text("x", p),
        "list_files": lambda p: fs.list_files(p),
        "stat": lambda p: fs.stat(p),
        "make_directory": lambda p: fs.make_directory(p + "/d"),
        "remove": lambda p: fs.remove(p, recursive=True),
        "copy_from_local": lambda p: fs.copy_from_local(secret, p),
        "copy_to_local": lambda p: fs.copy_to_local(p, tmp_path / "stolen"),
    }
    for name, call in calls.items():
        for path in ("../secret.txt", "/../../secret.txt", "out/secret.txt", "up/etc/passwd"):
            with pytest.raises(SandboxPathEscapeError, match="leaves the sandbox root"):
                call(path)
            assert secret.read_text() == "host only", (name, path)
    assert not (tmp_path / "stolen").exists()
    # An absolute path names a place under the root, never the host's file of that name.
    with pytest.raises(NotFoundError):
        fs.read_text(str(secret))


def test_sessions_keep_cwd_and_env_and_reattach_from_another_process(sb: apothic.Sandbox, home: Path) -> None:
    shell = sb.session("shell")
    assert shell.run("mkdir -p work && cd work && export FOO=bar").returncode == 0
    result = shell.run("pwd; echo $FOO; echo warn >&2; false")
    assert result.stdout.splitlines()[1] == "bar" and result.stdout.splitlines()[0].endswith("/root/work")
    assert (result.stderr, result.returncode) == ("warn\n", 1)
    handle = pickle.dumps(sb)
    again = _in_another_process(home, f"""
import pickle, orjson, apothic
sb = pickle.loads({handle!r})
r = sb.session("shell", create_if_missing=False).run("echo $FOO; basename $PWD; printf no-newline")
print(orjson.dumps([r.stdout, r.returncode]).decode())
""")
    assert again == ["bar\nwork\nno-newline", 0]
    with pytest.raises(NotFoundError) as info:
        sb.session("nobody", create_if_missing=False)
    assert info.value.code == "sandbox.session_not_found"
    ended = sb.session("short").run("echo bye; exit 4")
    assert (ended.stdout, ended.returncode) == ("bye\n", 4)
    with pytest.raises(NotFoundError):
        sb.session("short", create_if_missing=False)
    with pytest.raises(ExecTimeoutError):
        sb.session("slow").run("sleep 30", timeout=0.5)


def test_resumable_handles(server: dict, home: Path) -> None:
    box = apothic.Sandbox.create(app=app, name="named-box", timeout=120)
    try:
        box.filesystem.write_text("kept", "state.txt")
        assert apothic.Sandbox.from_id(box.object_id) == box
        assert apothic.Sandbox.from_name("sandbox-tests", "named-box").object_id == box.object_id
        with pytest.raises(ConflictError) as taken:
            apothic.Sandbox.create(app=app, name="named-box")
        assert taken.value.code == "sandbox.name_taken"
        seen = _in_another_process(home, f"""
import pickle, orjson, apothic
sb = pickle.loads({pickle.dumps(box)!r})
by_name = apothic.Sandbox.from_name("sandbox-tests", "named-box")
p = by_name.exec("cat", "state.txt")
print(orjson.dumps([sb.filesystem.read_text("state.txt"), p.stdout.read(), sb.info()["status"]]).decode())
""")
        assert seen == ["kept", "kept", "running"]
    finally:
        box.terminate()
    with pytest.raises(NotFoundError):
        apothic.Sandbox.from_name("sandbox-tests", "named-box")  # only running sandboxes answer to a name
    assert apothic.Sandbox.from_id(box.object_id).info()["status"] == "terminated"


def test_app_sandbox_runs_a_command_to_its_end(server: dict) -> None:
    box = app.sandbox("sh", "-c", "echo main; echo err >&2; exit 7")
    assert box.wait() == 7 and box.returncode == 7 and box.poll() == 7
    assert box.stdout.read() == "main\n" and box.stderr.read() == "err\n"
    info = box.info()
    assert (info["status"], info["returncode"]) == ("exited", 7)


def test_timeout_terminates_and_says_so(server: dict) -> None:
    box = apothic.Sandbox.create("sleep", "60", app=app, timeout=1.5)
    started = time.monotonic()
    with pytest.raises(SandboxTimeoutError):
        box.wait()
    assert time.monotonic() - started < 30
    info = box.info()
    assert info["status"] == "timed_out" and "timeout" in info["reason"] and box.poll() == -1


def test_exec_timeout_kills_the_process(sb: apothic.Sandbox) -> None:
    p = sb.exec("sleep", "60", timeout=0.5)
    assert p.wait() == -signal.SIGKILL and p.timed_out


def test_a_killed_process_with_unread_output_still_reports_its_exit(sb: apothic.Sandbox) -> None:
    """Its exit comes while output it wrote still waits for a reader: the exit is final after a
    grace of a few seconds, not once someone reads."""
    p = sb.exec("sh", "-c", "head -c 20000000 /dev/zero; sleep 60", text=False, timeout=1)
    done: list[int] = []
    waiter = threading.Thread(target=lambda: done.append(p.wait()), daemon=True)
    waiter.start()
    waiter.join(60)
    assert done == [-signal.SIGKILL] and p.timed_out


def test_bad_inputs_get_one_line_errors_with_codes(server: dict, sb: apothic.Sandbox) -> None:
    for bad in ("sb-01M8PAPP01RCQQ29XP07KATKV5", "not-an-id"):
        with pytest.raises(NotFoundError) as info:
            apothic.Sandbox.from_id(bad)
        assert info.value.code == "sandbox.not_found" and "\n" not in info.value.message
    with pytest.raises(NotFoundError) as missing:
        sb.exec("no-such-command-here")
    assert missing.value.code == "sandbox.process_not_found"
    with pytest.raises(apothic.exception.InvalidError):
        apothic.Sandbox.create()
    sb.terminate()
    for action in (lambda: sb.exec("true"), lambda: sb.filesystem.read_text("x"), lambda: sb.session("s")):
        with pytest.raises(SandboxTerminatedError) as ended:
            action()
        assert ended.value.code == "sandbox.terminated" and "terminate() was called" in ended.value.message


def test_isolation_is_reported(sb: apothic.Sandbox) -> None:
    isolation = sb.info()["isolation"]
    assert isolation == detect_isolation()
    probe = sb.exec("sh", "-c", f"test -e {ROOT / 'pyproject.toml'} && echo visible || echo hidden")
    assert probe.stdout.read() == ("hidden\n" if isolation == "bubblewrap" else "visible\n")


def test_cli_lists_gets_execs_and_terminates(cli: Any) -> None:
    box = apothic.Sandbox.create(app=app, name="cli-box", timeout=120)
    try:
        listed = orjson.loads(cli("sandbox", "list", "--app", "sandbox-tests", "--json").stdout)
        assert box.object_id in [r["id"] for r in listed]
        assert orjson.loads(cli("sandbox", "get", box.object_id, "--json").stdout)["name"] == "cli-box"
        ran = cli("sandbox", "exec", box.object_id, "--", "sh", "-c", "echo out; echo err >&2; exit 5", expect=5)
        assert (ran.stdout, ran.stderr) == ("out\n", "err\n")
        cli("sandbox", "terminate", box.object_id)
        ended = cli("sandbox", "exec", box.object_id, "--", "true", expect=40)
        assert "sandbox.terminated" in ended.stderr and len(ended.stderr.strip().splitlines()) == 1
        missing = cli("sandbox", "get", "sb-01M8PAPP01RCQQ29XP07KATKV5", expect=13)
        assert "sandbox.not_found" in missing.stderr
    finally:
        box.terminate()


@app.function()
def agent_pid() -> int:
    """The pid of the agent running this call (a container is its agent's child)."""
    return os.getppid()


def test_unread_output_holds_back_only_its_own_stream(server: dict) -> None:
    """~68 MB of output that nobody reads for a while: the process stalls on its own stream (and
    its pipe), while function calls on the same worker keep completing promptly; the output then
    reads back whole. Before, output rode the control stream in front of function results."""
    count = 9_000_000
    expected = "".join(f"{i}\n" for i in range(1, count + 1)).encode()
    assert len(expected) > 64 * 1024 * 1024
    with app.run(show_output=False):
        pid = agent_pid.remote()
        worker = next(w["id"] for w in _workers() if w["pid"] == pid)
        # Sandboxes go to the worker with the fewest: more of them reach the calls' worker.
        boxes = [apothic.Sandbox.create(app=app, timeout=300)]
        while boxes[-1].info()["worker"] != worker and len(boxes) < 4:
            boxes.append(apothic.Sandbox.create(app=app, timeout=300))
        box = boxes[-1]
        try:
            assert box.info()["worker"] == worker
            p = box.exec("seq", "1", str(count), text=False)
            time.sleep(1.0)  # the flood fills its stream's window, then the pipe, then stops
            slowest = 0.0
            for _ in range(20):
                started = time.monotonic()
                assert agent_pid.remote() == pid
                slowest = max(slowest, time.monotonic() - started)
            assert p.poll() is None  # still held back: nothing read its output
            assert slowest < 5.0, f"a call took {slowest:.2f} s behind unread sandbox output"
            data = p.stdout.read()
            assert len(data) == len(expected) and data == expected
            assert p.wait() == 0
        finally:
            for b in boxes:
                b.terminate()


def test_a_lost_worker_ends_its_sandboxes(server: dict) -> None:
    """Runs last: it SIGKILLs the agent holding the sandbox (the local provider starts another)."""
    box = apothic.Sandbox.create(app=app, timeout=120)
    p = box.exec("sleep", "300")
    worker = box.info()["worker"]
    agent_pid = next(w["pid"] for w in _workers() if w["id"] == worker)
    assert _processes_of(box.object_id)
    os.kill(agent_pid, signal.SIGKILL)
    with pytest.raises(SandboxTerminatedError, match="worker_lost"):
        box.wait()
    assert box.info()["reason"] == f"its worker {worker} disconnected"
    with pytest.raises(SandboxTerminatedError):
        p.wait()
    # Nothing the sandbox ran outlives its agent.
    deadline = time.monotonic() + 10
    while _processes_of(box.object_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_of(box.object_id) == []


def _processes_of(sandbox_id: str) -> list[int]:
    """Pids whose environment names the sandbox (each of its processes has APOTHIC_SANDBOX_ID)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"APOTHIC_SANDBOX_ID={sandbox_id}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _workers() -> list[dict[str, Any]]:
    from apothic import _loop
    from apothic._client import get_client

    async def go() -> list[dict[str, Any]]:
        client = await get_client()
        return await client.json("GET", "/v1/workers")

    return _loop.run(go())


def test_control_plane_sigkill_ends_sandboxes_durably_and_leaves_no_process(tmp_path: Path) -> None:
    """The record was durable when create() answered; after a SIGKILL of the control plane its
    agents exit, their sandboxes' processes die with them, and the restarted server says how
    each sandbox ended."""
    home = tmp_path / "home"  # a surrealkv store on disk: it must survive the kill
    info = servers.start(home)
    try:
        created = _in_another_process(home, """
import orjson, apothic
sb = apothic.Sandbox.create("sleep", "300", app=apothic.App("restart-tests"), name="survivor")
sb.exec("sleep", "301")
print(orjson.dumps([sb.object_id, sb.info()["status"]]).decode())
""")
        sandbox_id, status = created
        assert status == "running" and _processes_of(sandbox_id)
        agents = servers.agent_pids(info["pid"])
        os.kill(info["pid"], signal.SIGKILL)
        assert servers.wait_dead(info["pid"])
        assert all(servers.wait_dead(pid, 10) for pid in agents)
        deadline = time.monotonic() + 10
        while _processes_of(sandbox_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_of(sandbox_id) == []
        info = servers.start(home)
        after = _in_another_process(home, f"""
import orjson, apothic
i = apothic.Sandbox.from_id({sandbox_id!r}).info()
print(orjson.dumps([i["status"], i["reason"], i["name"]]).decode())
""")
        assert after == ["worker_lost", "the control plane restarted; its worker session ended", "survivor"]
    finally:
        servers.stop(home, info["pid"])
