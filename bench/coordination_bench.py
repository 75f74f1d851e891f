"""Queue and Dict benchmark. Queue: put -> claim -> ack cycles through the SDK (1 and 32
concurrent clients), and the Rust engine alone (in-process, and through the Python binding
against a pure-Python claim/ack loop as the peer). Dict: writes/s and point reads/s (1 and 32
clients), CAS/s with and without contention, watch event latency. Also the machine's synced
append latency (disk_sync), which the SDK figures follow. Writes bench/results/coordination.json.

Run: .venv/bin/python bench/coordination_bench.py   (make bench runs it)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
APOTHIC = [str(ROOT / ".venv" / "bin" / "python"), "-m", "apothic"]
SECONDS = 10.0  # every loop stops at this time limit or its count, whichever comes first
SERVER_PID = 0  # the control plane's, for its CPU time per operation


def server_cpu_s() -> float:
    fields = Path(f"/proc/{SERVER_PID}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ms_per_op(before: tuple[float, float], ops: int) -> dict[str, float]:
    """CPU time per operation of each process (all its threads): a steadier figure than the
    rate on a machine whose cores are shared with other work."""
    server0, client0 = before
    return {"server": round((server_cpu_s() - server0) / ops * 1000, 3),
            "client": round((time.process_time() - client0) / ops * 1000, 3)}


def sdk_cycles(clients: int, n: int) -> dict[str, Any]:
    import apothic

    q = apothic.Queue.from_name(f"bench-{clients}", create_if_missing=True)

    async def client(count: int, deadline: float, lat: list[float]) -> int:
        done = 0
        while done < count and time.monotonic() < deadline:
            start = time.perf_counter()
            await q.put.aio(done)
            claim = await q.claim.aio(timeout=10)
            await claim.ack.aio()
            lat.append(time.perf_counter() - start)
            done += 1
        return done

    async def run() -> tuple[int, float, list[float], dict[str, float]]:
        await q.hydrate.aio()
        lat: list[float] = []
        deadline = time.monotonic() + SECONDS
        cpu0 = (server_cpu_s(), time.process_time())
        start = time.perf_counter()
        counts = await asyncio.gather(*(client(n // clients, deadline, lat) for _ in range(clients)))
        return sum(counts), time.perf_counter() - start, lat, cpu_ms_per_op(cpu0, sum(counts))

    total, seconds, lat, cpu = asyncio.run(run())
    lat.sort()
    return {"clients": clients, "cycles": total, "cycles_per_s": round(total / seconds, 1),
            "p50_ms": round(lat[len(lat) // 2] * 1000, 3), "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 3),
            "cpu_ms_per_cycle": cpu}


def dict_ops(clients: int, n: int) -> dict[str, Any]:
    import apothic

    d = apothic.Dict.from_name(f"bench-{clients}", create_if_missing=True)

    async def run(op: str) -> tuple[int, float, dict[str, float]]:
        await d.hydrate.aio()
        await d.put.aio("shared", 0)
        deadline = time.monotonic() + SECONDS

        async def client(c: int) -> int:
            done = 0
            while done < n // clients and time.monotonic() < deadline:
                if op == "write":
                    await d.put.aio(f"k{c}-{done % 100}", done)
                elif op == "read":
                    await d.get.aio(f"k{c}-{done % 100}")
                elif op == "cas_private":  # each client its own key: no contention
                    await d.cas.aio(f"cas{c}", done + 1, expected_value=done if done else None) \
                        if done else await d.put.aio(f"cas{c}", 1)
                else:  # everyone on one key: most CAS calls lose
                    entry = await d.entry.aio("shared")
                    await d.cas.aio("shared", entry.value + 1, expected_version=entry.version)
                done += 1
            return done

        cpu0 = (server_cpu_s(), time.process_time())
        start = time.perf_counter()
        counts = await asyncio.gather(*(client(c) for c in range(clients)))
        return sum(counts), time.perf_counter() - start, cpu_ms_per_op(cpu0, sum(counts))

    out: dict[str, Any] = {"clients": clients}
    for op in ("write", "read", "cas_private", "cas_contended"):
        total, seconds, cpu = asyncio.run(run(op))
        out[f"{op}_per_s"] = round(total / seconds, 1)
        out[f"{op}_cpu_ms_per_op"] = cpu
    return out


def watch_latency(n: int) -> dict[str, Any]:
    """Time from a put's acknowledgement to a watcher's receipt of its event."""
    import threading

    import apothic

    d = apothic.Dict.from_name("bench-watch", create_if_missing=True)
    received: dict[int, float] = {}
    ready = threading.Event()

    def watcher() -> None:
        for event in d.watch(prefix="w", snapshot=True):
            if event.type == "snapshot_end":
                ready.set()
            elif event.type == "put":
                received[event.value] = time.perf_counter()
                if len(received) >= n:
                    return

    t = threading.Thread(target=watcher, daemon=True)
    t.start()
    ready.wait(30)
    acked: dict[int, float] = {}
    deadline = time.monotonic() + SECONDS
    for i in range(n):
        if time.monotonic() > deadline:
            break
        d.put("w", i)
        acked[i] = time.perf_counter()
        time.sleep(0.002)
    t.join(10)
    lat = sorted(max(0.0, received[i] - acked[i]) * 1000 for i in acked if i in received)
    return {"events": len(lat), "p50_ms": round(lat[len(lat) // 2], 3), "p99_ms": round(lat[int(len(lat) * 0.99)], 3)}


def binding_vs_python(n: int) -> dict[str, Any]:
    from apothic._bridge.queue import QueueEngine

    engine = QueueEngine()
    for _ in range(n):
        engine.put(b"x")
    start = time.perf_counter()
    for _ in range(n):
        claim, _ = engine.claim(30_000)
        engine.ack(claim.claim_id)
    rust = n / (time.perf_counter() - start)

    # The peer: the same claim/ack bookkeeping (ready deque, leases dict) in plain Python.
    ready: deque[int] = deque(range(n))
    leases: dict[int, tuple[int, float]] = {}
    start = time.perf_counter()
    for claim_id in range(n):
        item = ready.popleft()
        leases[claim_id] = (item, time.monotonic() + 30)
        del leases[claim_id]
    python = n / (time.perf_counter() - start)
    return {"n": n, "binding_claim_ack_per_s": round(rust), "pure_python_claim_ack_per_s": round(python),
            "ratio": round(rust / python, 2)}


def disk_sync(home: Path, n: int = 500) -> dict[str, Any]:
    """The machine's synced-append latency, as the journal appends (4 KiB, O_DSYNC, into a zeroed
    file next to the store): every durable request waits for one such append, shared by its batch.
    Here it moves with the host's load, and the SDK figures move with it; the engine figure
    tracks the CPU only."""
    path = home / "disk-probe.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.pwrite(fd, bytes(n * 4096), 0)
        os.fsync(fd)
        append_fd = os.open(path, os.O_WRONLY | os.O_DSYNC)
        try:
            block, took = os.urandom(4096), []
            for i in range(n):
                start = time.perf_counter()
                os.pwrite(append_fd, block, i * 4096)
                took.append(time.perf_counter() - start)
        finally:
            os.close(append_fd)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    took.sort()
    return {"appends": n, "p50_us": round(took[n // 2] * 1e6), "p99_us": round(took[int(n * 0.99)] * 1e6)}


def engine_alone() -> dict[str, Any]:
    out = subprocess.run(["cargo", "run", "--release", "-q", "-p", "apothic-queue", "--example", "throughput"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="apothic-qbench-"))
    os.environ.update({"APOTHIC_HOME": str(home), "APOTHIC_LOCAL_WORKERS": "0"})
    os.environ.pop("APOTHIC_SERVER_URL", None)
    os.environ.pop("APOTHIC_API_KEY", None)
    subprocess.run([*APOTHIC, "server", "start"], check=True, capture_output=True, timeout=120)
    global SERVER_PID
    pid = SERVER_PID = json.loads((home / "server.json").read_text())["pid"]
    result: dict[str, Any] = {"benchmark": "coordination", "cpus": os.cpu_count(), "python": sys.version.split()[0],
                              "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    try:
        # The 32-client phases run for several seconds: longer than the store's checkpoint lag
        # (1 s), so that SurrealDB's share of the work falls inside what they measure.
        result["sdk_1_client"] = sdk_cycles(1, 2000)
        result["sdk_32_clients"] = sdk_cycles(32, 32000)
        result["dict_1_client"] = dict_ops(1, 2000)
        result["dict_32_clients"] = dict_ops(32, 64000)
        result["dict_watch"] = watch_latency(500)
    finally:
        subprocess.run([*APOTHIC, "server", "stop"], capture_output=True, timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    result["disk_sync"] = disk_sync(home)
    result["binding"] = binding_vs_python(500_000)
    result["engine_alone"] = engine_alone()
    out = BENCH_DIR / "results" / "coordination.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
