"""Proxied HTTP through Apothic next to the same ASGI app served directly by uvicorn.

Run as `.venv/bin/python bench/web_bench.py` (what `make bench` does). In one run it starts a
control plane (fresh temporary APOTHIC_HOME, in-memory state) serving `hello` below as an
`@apothic.asgi_app()` with one container, and uvicorn (uvloop + httptools, one process) serving
the very same ASGI callable. One aiohttp client drives both alike: `--concurrency` requests in
flight, each phase bounded by `--n` requests and `--seconds`; phases alternate (direct, proxied,
direct, proxied, ...) so that both see the same machine. Every process started here is stopped
by pid in `finally`. Results go to bench/results/web.json.

The floor (issue 5): proxied requests/s at least half of direct.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import apothic

BENCH_DIR = Path(__file__).resolve().parent
BODY = b'{"hello":"world"}'


async def hello_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app both servers run: a small JSON answer, no framework in the way."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


app = apothic.App("web-bench")


@app.function(min_containers=1, max_containers=1)
@apothic.concurrent(max_inputs=256)
@apothic.asgi_app()
def hello() -> Any:
    return hello_asgi


# ---- the measuring side (only when run as a script) ------------------------------------------
def log(msg: str) -> None:
    print(f"[web-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout} s")


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def load(url: str, n: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """`concurrency` workers send GETs until n requests are done or the time is up."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    issued = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal issued, errors
            while issued < n and time.perf_counter() < deadline:
                issued += 1
                t0 = time.perf_counter()
                try:
                    async with session.get(url) as r:
                        body = await r.read()
                        if r.status != 200 or body != BODY:
                            errors += 1
                            continue
                except aiohttp.ClientError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(pct(latencies, 50) * 1000, 3), "p99_ms": round(pct(latencies, 99) * 1000, 3),
    }


def run_load(url: str, n: int, seconds: float, concurrency: int) -> dict[str, Any]:
    import uvloop

    return uvloop.run(load(url, n, seconds, concurrency))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8000, help="requests per phase")
    parser.add_argument("--seconds", type=float, default=8.0, help="time limit per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=5, help="direct/proxied phase pairs")
    parser.add_argument("--out", default=str(BENCH_DIR / "results" / "web.json"))
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="apothic-web-bench-")
    env = os.environ.copy()
    for var in ("APOTHIC_SERVER_URL", "APOTHIC_API_KEY"):
        env.pop(var, None)
    env.update({"APOTHIC_HOME": home, "APOTHIC_DB_URL": "mem://"})
    os.environ.update({"APOTHIC_HOME": home})
    for var in ("APOTHIC_SERVER_URL", "APOTHIC_API_KEY"):
        os.environ.pop(var, None)
    python = sys.executable
    server_pid: int | None = None
    agents: list[int] = []
    uvicorn: subprocess.Popen[bytes] | None = None
    results: dict[str, Any] = {}
    try:
        log("starting the control plane")
        subprocess.run([python, "-m", "apothic", "server", "start"], env=env, check=True, capture_output=True,
                       timeout=120)
        server = json.loads((Path(home) / "server.json").read_text())
        server_pid = server["pid"]
        port = free_port()
        log(f"starting uvicorn on port {port}")
        uvicorn = subprocess.Popen(
            [python, "-m", "uvicorn", "web_bench:hello_asgi", "--app-dir", str(BENCH_DIR), "--host", "127.0.0.1",
             "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--lifespan", "off",
             "--no-access-log", "--log-level", "warning"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, 60)
        direct_url = f"http://127.0.0.1:{port}/"
        with app.run(show_output=False):
            proxied_url = hello.get_web_url()
            agents = children_of(server_pid)
            log(f"proxied URL {proxied_url}; warming both")
            run_load(proxied_url, 500, 30, 8)  # the first request is the cold start
            run_load(direct_url, 500, 30, 8)
            rounds = []
            for i in range(args.rounds):
                direct = run_load(direct_url, args.n, args.seconds, args.concurrency)
                proxied = run_load(proxied_url, args.n, args.seconds, args.concurrency)
                log(f"round {i + 1}: direct {direct['rps']} req/s p99 {direct['p99_ms']} ms | "
                    f"proxied {proxied['rps']} req/s p99 {proxied['p99_ms']} ms | "
                    f"ratio {proxied['rps'] / max(direct['rps'], 1e-9):.3f}")
                rounds.append({"direct": direct, "proxied": proxied})
        direct_rps = statistics.median(r["direct"]["rps"] for r in rounds)
        proxied_rps = statistics.median(r["proxied"]["rps"] for r in rounds)
        # Each round's two phases ran back to back, so their ratio is the least disturbed by other
        # load on the machine: the figure judged against the floor is the median of those.
        for r in rounds:
            r["ratio"] = round(r["proxied"]["rps"] / r["direct"]["rps"], 3) if r["direct"]["rps"] else 0.0
        ratio = statistics.median(r["ratio"] for r in rounds)
        results = {
            "benchmark": "web",
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "command": " ".join([".venv/bin/python", "bench/web_bench.py", *sys.argv[1:]]),
            "app": "raw ASGI callable answering 17 bytes of JSON",
            "direct": "uvicorn 0.54.0, one process, uvloop + httptools, access log off",
            "proxied": "client -> control plane /web/... -> a stream of the worker session (apothic-session "
                       "over a websocket) per request -> agent -> container (asgi_app, concurrent "
                       "max_inputs=256, one container)",
            "client": f"aiohttp, {args.concurrency} in flight, at most {args.n} requests and {args.seconds} s "
                      "per phase",
            "rounds": rounds,
            "median_rps": {"direct": direct_rps, "proxied": proxied_rps},
            "median_p99_ms": {"direct": statistics.median(r["direct"]["p99_ms"] for r in rounds),
                              "proxied": statistics.median(r["proxied"]["p99_ms"] for r in rounds)},
            "ratio_proxied_to_direct": ratio,
            "ratio_of_median_rps": round(proxied_rps / direct_rps, 3) if direct_rps else 0.0,
            "load_average_at_end": os.getloadavg()[0],
            "floor": 0.5,
            "meets_floor": ratio >= 0.5,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        log(f"median: direct {direct_rps} req/s, proxied {proxied_rps} req/s; median of round ratios {ratio} "
            f"(floor 0.5) -> {args.out}")
    finally:
        if uvicorn is not None:
            stop_pid(uvicorn.pid)
        if server_pid is not None:
            agents = agents or children_of(server_pid)
            stop_pid(server_pid, 20)
            for pid in agents:
                stop_pid(pid, 5)


if __name__ == "__main__":
    main()
