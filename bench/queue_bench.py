"""Queue benchmark: put -> claim -> ack cycles through the SDK (1 and 32 concurrent clients),
and the Rust engine alone (in-process, and through the Python binding against a pure-Python
claim/ack loop as the peer). Writes bench/results/queue.json.

Run: .venv/bin/python bench/queue_bench.py   (make bench runs it)
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

    async def run() -> tuple[int, float, list[float]]:
        await q.hydrate.aio()
        lat: list[float] = []
        deadline = time.monotonic() + SECONDS
        start = time.perf_counter()
        counts = await asyncio.gather(*(client(n // clients, deadline, lat) for _ in range(clients)))
        return sum(counts), time.perf_counter() - start, lat

    total, seconds, lat = asyncio.run(run())
    lat.sort()
    return {"clients": clients, "cycles": total, "cycles_per_s": round(total / seconds, 1),
            "p50_ms": round(lat[len(lat) // 2] * 1000, 3), "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 3)}


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
    pid = json.loads((home / "server.json").read_text())["pid"]
    result: dict[str, Any] = {"benchmark": "queue", "cpus": os.cpu_count(), "python": sys.version.split()[0],
                              "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    try:
        result["sdk_1_client"] = sdk_cycles(1, 2000)
        result["sdk_32_clients"] = sdk_cycles(32, 8000)
    finally:
        subprocess.run([*APOTHIC, "server", "stop"], capture_output=True, timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    result["binding"] = binding_vs_python(500_000)
    result["engine_alone"] = engine_alone()
    out = BENCH_DIR / "results" / "queue.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
