"""Dict under real concurrency and failure: CAS from several OS processes, and a control plane
killed during a stream of writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import apothic
from tests.support import servers

_INCREMENTER = """
import sys, apothic
d = apothic.Dict.from_name(sys.argv[1])
done = 0
while done < int(sys.argv[2]):
    current = d.entry("counter")
    ok, _ = d.cas("counter", current.value + 1, expected_version=current.version)
    done += ok
print(done)
"""


def test_cas_increments_from_several_processes_are_never_lost(server: dict, home: Path) -> None:
    name = f"cas-{os.getpid()}"
    d = apothic.Dict.from_name(name, create_if_missing=True)
    d["counter"] = 0
    workers = [subprocess.Popen([sys.executable, "-c", _INCREMENTER, name, "25"], env=servers.env_for(home),
                                stdout=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        outs = [w.communicate(timeout=120)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    assert [int(o) for o in outs] == [25] * 4
    entry = d.entry("counter")
    assert entry.value == 100 and entry.version == 101  # the initial put plus one write per increment
    d.delete_dict()


_WRITER = """
import apothic
d = apothic.Dict.from_name("durable", create_if_missing=True)
lease = d.lease(ttl=3600)
d.put("leased", "yes", lease=lease)
for i in range(100000):
    d[f"k{i}"] = i
    print(i, flush=True)
"""

_READER = """
import apothic
d = apothic.Dict.from_name("durable")
items = dict(d.items())
print(len([k for k in items if k.startswith("k")]), items.get("leased"), d.entry("k0").version)
"""


def test_control_plane_sigkill_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    home = tmp_path / "home"
    info = servers.start(home)
    env = servers.env_for(home)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER], env=env, stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    try:
        assert writer.stdout is not None
        for _ in writer.stdout:
            acknowledged += 1
            if acknowledged == 200:
                os.kill(info["pid"], signal.SIGKILL)
                break
        writer.kill()
        writer.wait()
        # The writer may have had more writes acknowledged before the kill reached the server;
        # their lines are still in the pipe.
        acknowledged += sum(1 for _ in writer.stdout)
        writer.stdout.close()
        assert servers.wait_dead(info["pid"])
        info = servers.start(home)
        read = subprocess.run([sys.executable, "-c", _READER], env=env, capture_output=True, text=True, timeout=60)
        assert read.returncode == 0, read.stderr
        count, leased, version = read.stdout.split()
        assert int(count) - acknowledged in (0, 1)  # every acknowledged write; at most one in flight
        assert leased == "yes" and version == "1"  # the lease was restored with its key
    finally:
        servers.stop(home, info["pid"])


_CREATE_AT_ONCE = """
import asyncio, apothic

async def main():
    async def one(i):
        d = apothic.Dict.from_name("born-once", create_if_missing=True)
        q = apothic.Queue.from_name("born-once", create_if_missing=True)
        await d.put.aio(f"k{i}", i)
        await q.put.aio(i)
    await asyncio.gather(*(one(i) for i in range(16)))

asyncio.run(main())
"""

_COUNT_BORN_ONCE = """
import apothic
d = apothic.Dict.from_name("born-once")
q = apothic.Queue.from_name("born-once")
print(d.len(), q.len())
"""


def test_dict_and_queue_created_by_many_clients_at_once_are_one(tmp_path: Path) -> None:
    """16 clients create the same missing dict and queue at once, each writes once; after a
    SIGKILL and a restart all 16 writes are in one dict and one queue (each client used to make
    its own, and all but one were dropped at the checkpoint)."""
    home = tmp_path / "home"
    info = servers.start(home)
    env = servers.env_for(home)
    try:
        made = subprocess.run([sys.executable, "-c", _CREATE_AT_ONCE], env=env, capture_output=True, text=True,
                              timeout=60)
        assert made.returncode == 0, made.stderr
        os.kill(info["pid"], signal.SIGKILL)
        assert servers.wait_dead(info["pid"])
        info = servers.start(home)
        read = subprocess.run([sys.executable, "-c", _COUNT_BORN_ONCE], env=env, capture_output=True, text=True,
                              timeout=60)
        assert read.returncode == 0, read.stderr
        assert read.stdout.split() == ["16", "16"]
    finally:
        servers.stop(home, info["pid"])
