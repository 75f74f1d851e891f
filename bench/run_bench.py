"""Foundation benchmark: Apothic's warm calls, spawn/map throughput and cold starts, next to Ray's.

Run as `.venv/bin/python bench/run_bench.py` (what `make bench` does). It starts its own control
plane in a fresh temporary APOTHIC_HOME, stops it by pid in `finally`, then (if `import ray`
works) measures a local Ray cluster with the same loops. Every loop is bounded by a count and a
time limit, and every blocking phase runs under a watchdog. Results go to
bench/results/foundation.json; a short summary is printed.

Options: --n N (calls per loop, default 2000), --seconds S (time limit per loop, default 20),
--cold K (cold-start samples, default 5), --no-ray, --keep-home (keep the temporary
APOTHIC_HOME and its logs), --out PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
BIN = ROOT / ".venv" / "bin"
TAG_ENV = "APOTHIC_BENCH_TAG"

# Everything this run starts inherits the tag, so leftovers can be found (and only ours killed).
TAG = uuid.uuid4().hex
os.environ[TAG_ENV] = TAG
for _var in ("APOTHIC_SERVER_URL", "APOTHIC_API_KEY"):
    os.environ.pop(_var, None)
HOME = tempfile.mkdtemp(prefix="apothic-bench-")
os.environ["APOTHIC_HOME"] = HOME  # before apothic is imported
sys.path.insert(0, str(BENCH_DIR))


# ---- helpers -------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def lat_stats(seconds: list[float]) -> dict[str, float]:
    ms = [x * 1000.0 for x in seconds]
    return {"p50_ms": round(pct(ms, 50), 3), "p90_ms": round(pct(ms, 90), 3),
            "p99_ms": round(pct(ms, 99), 3), "max_ms": round(max(ms), 3) if ms else float("nan"),
            "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan")}


def bounded(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """Runs fn in a daemon thread; raises TimeoutError if it takes longer than `timeout` s."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=target, name=f"bench-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{what} did not finish within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def tagged_pids() -> list[int]:
    """Live processes (other than this one) whose environment carries this run's tag."""
    needle = f"{TAG_ENV}={TAG}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env.split(b"\0") and state != b"Z":
            found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


def reap_leftovers(phase: str, grace_s: float) -> list[str]:
    """Waits up to grace_s for this run's processes to exit, then SIGKILLs those left, by pid."""
    deadline = time.monotonic() + grace_s
    left = tagged_pids()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = tagged_pids()
    report = []
    for pid in left:
        report.append(f"{pid}: {cmdline(pid)}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if report:
        log(f"{phase}: {len(report)} process(es) outlived the shutdown, SIGKILLed: {report}")
    return report


def pid_alive(pid: int) -> bool:
    from apothic._embedded import pid_alive as alive

    return alive(pid)


def apothic_cli() -> list[str]:
    exe = BIN / "apothic"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "apothic"]


def api_get(path: str) -> Any:
    info = json.loads((Path(HOME) / "server.json").read_text())
    key = (Path(HOME) / "api_key").read_text().strip()
    req = urllib.request.Request(info["url"] + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this run's processes, grouped by role."""
    tick = os.sysconf("SC_CLK_TCK")
    roles: dict[str, float] = {}
    for pid in [os.getpid(), *tagged_pids()]:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        cmd = cmdline(pid)
        role = ("client" if pid == os.getpid() else "server" if "server start" in cmd
                else "agent" if "worker start" in cmd else "containers" if "_worker.container" in cmd
                else "other")
        roles[role] = roles.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return roles


def cpu_ms_per_call(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, float]:
    """CPU ms per call by role; processes that started or ended in between count only in part."""
    return {role: round((after.get(role, 0.0) - before.get(role, 0.0)) * 1000 / max(calls, 1), 3)
            for role in sorted(set(before) | set(after))}


def containers_total() -> int:
    return sum(int(w.get("containers") or 0) for w in api_get("/v1/workers"))


# ---- Apothic ---------------------------------------------------------------------------------
def sequential_calls(call: Callable[[int], Any], n: int, seconds: float, warmup: int) -> dict[str, Any]:
    for i in range(warmup):
        assert call(i) == i
    lat: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    for i in range(n):
        t0 = time.perf_counter()
        value = call(i)
        lat.append(time.perf_counter() - t0)
        assert value == i, (value, i)
        if t0 >= deadline:
            break
    elapsed = time.perf_counter() - start
    return {"n": len(lat), "seconds": round(elapsed, 3), "per_s": round(len(lat) / elapsed, 1),
            "warmup": warmup, "hit_time_limit": len(lat) < n, **lat_stats(lat)}


def bench_apothic(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    proc = subprocess.run([*apothic_cli(), "server", "start"], capture_output=True, text=True, timeout=90)
    out["server_start_cli_s"] = round(time.perf_counter() - t0, 3)
    if proc.returncode != 0:
        raise RuntimeError(f"apothic server start failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    log(f"server: {proc.stdout.strip()}")
    deadline = time.monotonic() + 30
    while not api_get("/v1/workers"):
        if time.monotonic() > deadline:
            raise RuntimeError("no worker agent connected within 30 s of server start")
        time.sleep(0.05)
    out["server_start_to_worker_connected_s"] = round(time.perf_counter() - t0, 3)

    import apothic
    import bench_app

    noop, cold_noop = bench_app.noop, bench_app.cold_noop
    n, secs = args.n, args.seconds

    t0 = time.perf_counter()
    with bench_app.app.run():
        out["app_register_s"] = round(time.perf_counter() - t0, 3)

        t0 = time.perf_counter()
        assert bounded(lambda: noop.remote(-1), 60, "first call") == -1
        out["first_call_after_register_ms"] = round((time.perf_counter() - t0) * 1000, 1)

        log("warm sequential noop.remote() ...")
        cpu0 = cpu_by_role()
        out["warm_remote"] = bounded(lambda: sequential_calls(noop.remote, n, secs, 50), secs + 120,
                                     "warm remote loop")
        out["warm_remote"]["cpu_ms_per_call"] = cpu_ms_per_call(cpu0, cpu_by_role(),
                                                                 out["warm_remote"]["n"] + 50)
        log(f"  {out['warm_remote']['per_s']}/s, p50 {out['warm_remote']['p50_ms']} ms")

        log("spawn + FunctionCall.gather ...")

        def spawn_gather() -> dict[str, Any]:
            start = time.perf_counter()
            deadline = start + secs
            calls = []
            for i in range(n):
                calls.append(noop.spawn(i))
                if time.perf_counter() >= deadline:
                    break
            spawned = time.perf_counter()
            results = apothic.FunctionCall.gather(*calls)
            end = time.perf_counter()
            assert results == list(range(len(calls))), "gather returned wrong results"
            return {"n": len(calls), "hit_time_limit": len(calls) < n,
                    "spawn_only_per_s": round(len(calls) / (spawned - start), 1),
                    "spawn_s": round(spawned - start, 3), "gather_s": round(end - spawned, 3),
                    "end_to_end_s": round(end - start, 3),
                    "end_to_end_per_s": round(len(calls) / (end - start), 1)}

        cpu0 = cpu_by_role()
        out["spawn_gather"] = bounded(spawn_gather, secs + 180, "spawn+gather")
        out["spawn_gather"]["cpu_ms_per_call"] = cpu_ms_per_call(cpu0, cpu_by_role(),
                                                                  out["spawn_gather"]["n"])
        log(f"  {out['spawn_gather']['end_to_end_per_s']}/s end to end "
            f"(spawning alone {out['spawn_gather']['spawn_only_per_s']}/s)")

        log("map ...")

        def do_map() -> dict[str, Any]:
            start = time.perf_counter()
            results = list(noop.map(range(n)))
            end = time.perf_counter()
            assert results == list(range(n)), "map returned wrong results"
            return {"n": n, "seconds": round(end - start, 3), "per_s": round(n / (end - start), 1)}

        cpu0 = cpu_by_role()
        out["map"] = bounded(do_map, 180, "map")
        out["map"]["cpu_ms_per_call"] = cpu_ms_per_call(cpu0, cpu_by_role(), n)
        log(f"  {out['map']['per_s']}/s")

        log("spawn.aio, 64 in flight, then gather ...")

        def spawn_concurrently() -> dict[str, Any]:
            # Ray's submit-all does not wait for each submission; the nearest Apothic form keeps
            # 64 spawns in flight, each still acknowledged only once its job is durable.
            async def submit_all() -> list[Any]:
                gate = asyncio.Semaphore(64)

                async def one(i: int) -> Any:
                    async with gate:
                        return await noop.spawn.aio(i)

                return await asyncio.gather(*(one(i) for i in range(n)))

            start = time.perf_counter()
            calls = asyncio.run(submit_all())
            submitted = time.perf_counter()
            results = apothic.FunctionCall.gather(*calls)
            end = time.perf_counter()
            assert results == list(range(n)), "gather returned wrong results"
            return {"n": n, "end_to_end_per_s": round(n / (end - start), 1),
                    "spawn_only_per_s": round(n / (submitted - start), 1)}

        cpu0 = cpu_by_role()
        out["spawn_concurrent"] = bounded(spawn_concurrently, 180, "spawn.aio x64")
        out["spawn_concurrent"]["cpu_ms_per_call"] = cpu_ms_per_call(cpu0, cpu_by_role(), n)
        log(f"  {out['spawn_concurrent']['end_to_end_per_s']}/s end to end "
            f"(spawning alone {out['spawn_concurrent']['spawn_only_per_s']}/s)")

        log("spawn_map, then gather ...")

        def spawn_map_gather() -> dict[str, Any]:
            start = time.perf_counter()
            calls = noop.spawn_map(range(n))  # one request; every job durable before it returns
            submitted = time.perf_counter()
            results = apothic.FunctionCall.gather(*calls)
            end = time.perf_counter()
            assert results == list(range(n)), "gather returned wrong results"
            return {"n": n, "end_to_end_per_s": round(n / (end - start), 1),
                    "spawn_only_per_s": round(n / (submitted - start), 1)}

        out["spawn_map_gather"] = bounded(spawn_map_gather, 180, "spawn_map+gather")
        log(f"  {out['spawn_map_gather']['end_to_end_per_s']}/s end to end "
            f"(submitting alone {out['spawn_map_gather']['spawn_only_per_s']}/s)")

        # Cold start, way 1: the same function after its container scaled down (scaledown_window=1).
        log("cold start after scaledown ...")
        base = containers_total()
        assert bounded(lambda: cold_noop.remote(0), 60, "cold_noop first call") == 0
        samples = []
        for k in range(args.cold):
            deadline = time.monotonic() + 15
            while containers_total() > base and time.monotonic() < deadline:
                time.sleep(0.1)
            scaled = containers_total() <= base
            time.sleep(0.5)  # let the agent's spare container finish starting
            t0 = time.perf_counter()
            assert bounded(lambda k=k: cold_noop.remote(k), 60, "cold_noop call") == k
            samples.append(round((time.perf_counter() - t0) * 1000, 1))
            if not scaled:
                log(f"  sample {k}: the previous container had not scaled down after 15 s")
                out.setdefault("cold_after_scaledown_not_scaled", []).append(k)
        out["cold_after_scaledown_ms"] = {"median": round(statistics.median(samples), 1), "values": samples}
        log(f"  median {out['cold_after_scaledown_ms']['median']} ms, all {samples}")

    # Cold start, way 2: a freshly registered ephemeral app each time (new function id, no container).
    log("cold start with a fresh ephemeral app each time ...")
    samples, registers = [], []
    for k in range(args.cold):
        time.sleep(0.5)
        t0 = time.perf_counter()
        with bench_app.cold_app.run(show_output=False):
            t1 = time.perf_counter()
            assert bounded(lambda k=k: bench_app.fresh_noop.remote(k), 60, "fresh app call") == k
            t2 = time.perf_counter()
        samples.append(round((t2 - t1) * 1000, 1))
        registers.append(round((t1 - t0) * 1000, 1))
    out["cold_fresh_app_ms"] = {"median": round(statistics.median(samples), 1), "values": samples,
                                "register_median_ms": round(statistics.median(registers), 1),
                                "register_values_ms": registers}
    log(f"  median {out['cold_fresh_app_ms']['median']} ms, all {samples}")
    return out


def stop_apothic() -> dict[str, Any]:
    out: dict[str, Any] = {}
    info_path = Path(HOME) / "server.json"
    pid = None
    try:
        pid = int(json.loads(info_path.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        pass
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([*apothic_cli(), "server", "stop"], capture_output=True, text=True, timeout=40)
        out["server_stop"] = (proc.stdout or proc.stderr).strip()
    except subprocess.TimeoutExpired:
        out["server_stop"] = "timed out after 40 s"
    out["server_stop_s"] = round(time.perf_counter() - t0, 3)
    if pid is not None and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        out["server_sigkilled"] = True
    out["leftover_processes"] = reap_leftovers("apothic", 10.0)
    return out


# ---- Ray -----------------------------------------------------------------------------------
def bench_ray(args: argparse.Namespace, ray: Any, import_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"version": ray.__version__, "import_s": round(import_s, 3)}
    n, secs = args.n, args.seconds
    try:
        t0 = time.perf_counter()
        # On the main thread, not under bounded(): Ray starts its GCS server and raylet with
        # PR_SET_PDEATHSIG, which fires when the *thread* that started them exits.
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        out["init_s"] = round(time.perf_counter() - t0, 3)
        log(f"ray.init {out['init_s']} s")

        @ray.remote
        def noop(x=None):
            return x

        @ray.remote
        class Echo:
            def ping(self, x=None):
                return x

        t0 = time.perf_counter()
        assert bounded(lambda: ray.get(noop.remote(-1), timeout=60), 90, "ray first task") == -1
        out["first_task_after_init_ms"] = round((time.perf_counter() - t0) * 1000, 1)

        log("ray sync loop ...")
        out["sync_tasks"] = bounded(lambda: sequential_calls(lambda i: ray.get(noop.remote(i), timeout=60),
                                                             n, secs, 50), secs + 120, "ray sync loop")
        log(f"  {out['sync_tasks']['per_s']}/s, p50 {out['sync_tasks']['p50_ms']} ms")

        log("ray submit all, then get ...")

        def submit_get() -> dict[str, Any]:
            start = time.perf_counter()
            deadline = start + secs
            refs = []
            for i in range(n):
                refs.append(noop.remote(i))
                if time.perf_counter() >= deadline:
                    break
            submitted = time.perf_counter()
            results = ray.get(refs, timeout=180)
            end = time.perf_counter()
            assert results == list(range(len(refs)))
            return {"n": len(refs), "hit_time_limit": len(refs) < n,
                    "submit_only_per_s": round(len(refs) / (submitted - start), 1),
                    "end_to_end_s": round(end - start, 3),
                    "end_to_end_per_s": round(len(refs) / (end - start), 1)}

        out["submit_then_get"] = bounded(submit_get, secs + 200, "ray submit+get")
        log(f"  {out['submit_then_get']['end_to_end_per_s']}/s")

        # The nearest thing Ray has to a container cold start: an actor (a new worker process) and its
        # first call.
        log("ray actor cold start ...")
        samples = []
        for _ in range(args.cold):
            t0 = time.perf_counter()
            actor = Echo.remote()
            assert bounded(lambda a=actor: ray.get(a.ping.remote(1), timeout=60), 90, "ray actor") == 1
            samples.append(round((time.perf_counter() - t0) * 1000, 1))
            ray.kill(actor)
            time.sleep(0.3)
        out["actor_cold_start_ms"] = {"median": round(statistics.median(samples), 1), "values": samples}
        log(f"  median {out['actor_cold_start_ms']['median']} ms, all {samples}")
    finally:
        t0 = time.perf_counter()
        try:
            ray.shutdown()
        except Exception as e:
            out["shutdown_error"] = repr(e)
        out["shutdown_s"] = round(time.perf_counter() - t0, 3)
        out["leftover_processes"] = reap_leftovers("ray", 10.0)
    return out


# ---- report --------------------------------------------------------------------------------
def ratio(a: Any, b: Any) -> float | None:
    try:
        return round(float(a) / float(b), 3) if float(b) else None
    except (TypeError, ValueError):
        return None


def ratios(ap: dict[str, Any], ray: dict[str, Any]) -> dict[str, Any]:
    def get(d: dict[str, Any], *path: str) -> Any:
        for p in path:
            if not isinstance(d, dict) or p not in d:
                return None
            d = d[p]
        return d

    pairs = {
        "warm_round_trips_per_s": (("warm_remote", "per_s"), ("sync_tasks", "per_s")),
        "warm_p50_ms": (("warm_remote", "p50_ms"), ("sync_tasks", "p50_ms")),
        "warm_p90_ms": (("warm_remote", "p90_ms"), ("sync_tasks", "p90_ms")),
        "warm_p99_ms": (("warm_remote", "p99_ms"), ("sync_tasks", "p99_ms")),
        "spawn_gather_vs_submit_get_per_s": (("spawn_gather", "end_to_end_per_s"),
                                             ("submit_then_get", "end_to_end_per_s")),
        "spawn_only_vs_submit_only_per_s": (("spawn_gather", "spawn_only_per_s"),
                                            ("submit_then_get", "submit_only_per_s")),
        "map_vs_submit_get_per_s": (("map", "per_s"), ("submit_then_get", "end_to_end_per_s")),
        "spawn_concurrent_vs_submit_get_per_s": (("spawn_concurrent", "end_to_end_per_s"),
                                                 ("submit_then_get", "end_to_end_per_s")),
        "spawn_map_gather_vs_submit_get_per_s": (("spawn_map_gather", "end_to_end_per_s"),
                                                 ("submit_then_get", "end_to_end_per_s")),
        "cold_after_scaledown_vs_actor_cold_median_ms": (("cold_after_scaledown_ms", "median"),
                                                         ("actor_cold_start_ms", "median")),
        "cold_fresh_app_vs_actor_cold_median_ms": (("cold_fresh_app_ms", "median"),
                                                   ("actor_cold_start_ms", "median")),
        "first_call_vs_first_task_ms": (("first_call_after_register_ms",), ("first_task_after_init_ms",)),
        "control_plane_start_vs_ray_init_s": (("server_start_to_worker_connected_s",), ("init_s",)),
    }
    return {k: ratio(get(ap, *a), get(ray, *b)) for k, (a, b) in pairs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--cold", type=int, default=5)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--keep-home", action="store_true")
    parser.add_argument("--out", default=str(BENCH_DIR / "results" / "foundation.json"))
    args = parser.parse_args()

    result: dict[str, Any] = {
        "benchmark": "foundation",
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": {"cpu_count": os.cpu_count(), "arch": platform.machine()},
        "params": {"n": args.n, "seconds_limit": args.seconds, "cold_samples": args.cold, "warmup": 50},
        "notes": ("Client, control plane, worker agent and containers share this machine's cores; "
                  "figures are floors, not capacity. Ratios are apothic/ray: for */s above 1 means "
                  "Apothic is faster, for *_ms and *_s above 1 means Apothic is slower."),
    }
    failed = False
    try:
        result["apothic"] = bench_apothic(args)
    except Exception as e:
        failed = True
        result["apothic_error"] = f"{type(e).__name__}: {e}"
        log(f"apothic phase failed: {result['apothic_error']}")
    finally:
        result["apothic_teardown"] = stop_apothic()
        if args.keep_home:
            result["apothic_home"] = HOME
        else:
            shutil.rmtree(HOME, ignore_errors=True)

    if args.no_ray:
        result["ray"] = "unavailable: skipped (--no-ray)"
    else:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray listener on 127.0.0.1
        t0 = time.perf_counter()
        try:
            import ray
        except Exception as e:
            result["ray"] = f"unavailable: import ray failed: {type(e).__name__}: {e}"
        else:
            try:
                result["ray"] = bench_ray(args, ray, time.perf_counter() - t0)
            except Exception as e:
                failed = True
                result["ray"] = f"unavailable: the Ray phase failed: {type(e).__name__}: {e}"
                log(result["ray"])
    if isinstance(result.get("apothic"), dict) and isinstance(result.get("ray"), dict):
        result["ratios_apothic_over_ray"] = ratios(result["apothic"], result["ray"])

    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    summarize(result, out_path)
    return 1 if failed else 0


def summarize(r: dict[str, Any], path: Path) -> None:
    ap, ray, rt = r.get("apothic") or {}, r.get("ray"), r.get("ratios_apothic_over_ray") or {}
    print(f"\nFoundation benchmark, {r['timestamp']}, Python {r['python']}, {r['machine']['cpu_count']} CPUs")
    if ap:
        w = ap["warm_remote"]
        print(f"Apothic  server start->worker {ap['server_start_to_worker_connected_s']} s, "
              f"first call {ap['first_call_after_register_ms']} ms")
        print(f"Apothic  warm remote {w['per_s']}/s  p50/p90/p99 "
              f"{w['p50_ms']}/{w['p90_ms']}/{w['p99_ms']} ms (n={w['n']})")
        print(f"Apothic  spawn+gather {ap['spawn_gather']['end_to_end_per_s']}/s "
              f"(spawn alone {ap['spawn_gather']['spawn_only_per_s']}/s), map {ap['map']['per_s']}/s, "
              f"spawn.aio x64+gather {ap['spawn_concurrent']['end_to_end_per_s']}/s, "
              f"spawn_map+gather {ap['spawn_map_gather']['end_to_end_per_s']}/s")
        print(f"Apothic  cold after scaledown median {ap['cold_after_scaledown_ms']['median']} ms "
              f"{ap['cold_after_scaledown_ms']['values']}")
        print(f"Apothic  cold fresh app median {ap['cold_fresh_app_ms']['median']} ms "
              f"{ap['cold_fresh_app_ms']['values']}")
    else:
        print(f"Apothic  failed: {r.get('apothic_error')}")
    if isinstance(ray, dict):
        s = ray.get("sync_tasks", {})
        print(f"Ray {ray.get('version')}  init {ray.get('init_s')} s, "
              f"first task {ray.get('first_task_after_init_ms')} ms")
        print(f"Ray      sync tasks {s.get('per_s')}/s  p50/p90/p99 "
              f"{s.get('p50_ms')}/{s.get('p90_ms')}/{s.get('p99_ms')} ms")
        print(f"Ray      submit+get {ray.get('submit_then_get', {}).get('end_to_end_per_s')}/s, "
              f"actor cold median {ray.get('actor_cold_start_ms', {}).get('median')} ms")
    else:
        print(f"Ray      {ray}")
    for k, v in rt.items():
        print(f"  apothic/ray {k}: {v}")
    print(f"Written to {path}")


if __name__ == "__main__":
    sys.exit(main())
