"""A Vast.ai API on 127.0.0.1 that follows the documented endpoints, for tests.

- `POST /api/v0/bundles/`: the search query body (`{field: {op: value}}`, `order`, `limit`,
  `type`), answered from a synthetic market in Vast's units (MB, "City, CC"). Like the real
  service it is not to be trusted: offers marked `_ignores_query` come back whatever the query
  says, so a client that does not re-check locally would rent them.
- `PUT /api/v0/asks/{id}/`: creates an instance. Its `onstart` script runs here as a real
  process, with the request's `env` added to this process's environment, so a real agent dials
  back to a real control plane. Answers `{"success": true, "new_contract": id}`.
- `GET /api/v0/instances/`, `GET /api/v0/instances/{id}/`, `DELETE /api/v0/instances/{id}/`
  (kills the instance's process by pid; `no_such_instance` when unknown).
- Every call needs `Authorization: Bearer <key>`; errors have Vast's shape
  `{"success": false, "error": name, "msg": text}`.

Each instance gets its own APOTHIC_HOME (a host of its own). Every process is stopped by pid in
`close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

# ---- the parts shared with fake_fly ---------------------------------------------------------


@dataclass
class Instance:
    id: str
    label: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None
    state: str = "running"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Processes:
    """Instance processes: started from a script with the request's environment, stopped by pid."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, instance_id: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        home = self.root / f"host-{instance_id}"
        home.mkdir(parents=True, exist_ok=True)
        # The host's image has apothic installed: the start script finds it importable.
        full_env = os.environ.copy() | {"PYTHON": sys.executable, "APOTHIC_HOME": str(home)} | env
        with open(home / "instance.log", "ab") as out:
            proc = subprocess.Popen(argv, env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=home)
        self.started.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes] | None, grace_s: float = 10.0) -> None:
        # SIGTERM first: the agent then stops its own containers.
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)

    def close(self) -> None:
        for proc in self.started:
            self.stop(proc)


class ThreadedServer:
    """Runs an aiohttp app on 127.0.0.1 in a thread of its own, so tests can drive it from
    synchronous code and from another event loop alike."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def error(status: int, name: str, msg: str) -> web.Response:
    return web.json_response({"success": False, "error": name, "msg": msg}, status=status)


# ---- the Vast market ----------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and a > b,
    "lt": lambda a, b: a is not None and a < b,
    "gte": lambda a, b: a is not None and a >= b,
    "lte": lambda a, b: a is not None and a <= b,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}
_TOP_LEVEL = {"limit", "type", "order", "allocated_storage"}


def vast_offer(offer_id: int, gpu_name: str, num_gpus: int, gpu_ram_mb: int, dph_total: float, *,
               geolocation: str = "Austin, US", reliability: float = 0.99, inet_down: float = 800.0,
               verified: bool = True, cpu_cores: int = 16, cpu_ram_mb: int = 64_000, disk_space: float = 200.0,
               ignores_query: bool = False) -> dict[str, Any]:
    """One offer in Vast's own fields and units."""
    return {
        "id": offer_id, "ask_contract_id": offer_id, "bundle_id": offer_id + 10_000, "machine_id": offer_id + 20_000,
        "gpu_name": gpu_name, "num_gpus": num_gpus, "gpu_ram": gpu_ram_mb, "gpu_total_ram": gpu_ram_mb * num_gpus,
        "cpu_cores": cpu_cores, "cpu_cores_effective": float(cpu_cores), "cpu_ram": cpu_ram_mb,
        "disk_space": disk_space, "dph_total": dph_total, "dph_base": round(dph_total * 0.9, 4),
        "reliability": reliability, "reliability2": reliability, "inet_down": inet_down, "inet_up": inet_down / 2,
        "geolocation": geolocation, "verified": verified, "rentable": True, "rented": False,
        "cuda_max_good": 12.4, "external": False, "_ignores_query": ignores_query,
    }


def default_market() -> list[dict[str, Any]]:
    """A small market: A100s at several prices and places, other GPUs, and two offers that
    violate any A100 query under $2/h but come back anyway (as Vast's can)."""
    return [
        vast_offer(101, "A100 SXM4", 1, 81_920, 1.40, geolocation="Oregon, US"),
        vast_offer(102, "A100 PCIE", 1, 40_960, 0.95, geolocation="Quebec, CA", reliability=0.995),
        vast_offer(103, "A100 SXM4", 2, 81_920, 2.60, geolocation="Texas, US"),
        vast_offer(104, "A100 PCIE", 1, 40_960, 1.10, geolocation="Bavaria, DE"),
        vast_offer(105, "H100 SXM", 1, 81_920, 2.40, geolocation="Virginia, US"),
        vast_offer(106, "RTX 4090", 1, 24_564, 0.35, geolocation="Ontario, CA"),
        vast_offer(107, "RTX 3090", 2, 24_576, 0.30, geolocation="Sweden, SE", reliability=0.93),
        # Cheapest of all, and wrong: not an A100, and an A100 far over any sensible cap.
        vast_offer(108, "RTX 3060", 1, 12_288, 0.05, geolocation="Taiwan, TW", ignores_query=True),
        vast_offer(109, "A100 SXM4", 1, 81_920, 9.00, geolocation="Oregon, US", ignores_query=True),
    ]


def _country(value: Any) -> Any:
    # Filters name countries by code while offers carry "City, CC".
    return value.rsplit(",", 1)[-1].strip() if isinstance(value, str) and "," in value else value


class FakeVast:
    def __init__(self, root: Path, *, api_key: str = "vast-test-key",
                 market: list[dict[str, Any]] | None = None) -> None:
        self.api_key = api_key
        self.market = market if market is not None else default_market()
        self.instances: dict[str, Instance] = {}
        self.processes = Processes(root)
        self.queries: list[dict[str, Any]] = []
        self.create_bodies: list[dict[str, Any]] = []
        self.failures: list[tuple[str, int, str]] = []  # (path prefix, status, error name), used once each
        self._ids = itertools.count(7001)
        app = web.Application(middlewares=[self._auth])
        app.add_routes([
            web.post("/api/v0/bundles/", self.search),
            web.put("/api/v0/asks/{offer}/", self.create),
            web.get("/api/v0/instances/", self.list_instances),
            web.get("/api/v0/instances/{id}/", self.get_instance),
            web.delete("/api/v0/instances/{id}/", self.destroy),
        ])
        self.server = ThreadedServer(app)

    @property
    def url(self) -> str:
        return self.server.url + "/api/v0"

    def start(self) -> FakeVast:
        self.server.start()
        return self

    def close(self) -> None:
        self.server.stop()
        self.processes.close()

    def fail_next(self, path_prefix: str, status: int, name: str) -> None:
        self.failures.append((path_prefix, status, name))

    def add_instance(self, label: str) -> Instance:
        """An instance made outside this session (say, by a control plane that crashed), with no process."""
        instance = Instance(id=str(next(self._ids)), label=label, env={}, proc=None)
        self.instances[instance.id] = instance
        return instance

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return error(401, "auth_error", "Invalid or missing API key")
        for n, (prefix, status, name) in enumerate(self.failures):
            if request.path.startswith(prefix):
                del self.failures[n]
                return error(status, name, f"injected {name}")
        return await handler(request)

    async def search(self, request: web.Request) -> web.Response:
        try:
            query = await request.json()
        except ValueError:
            return error(400, "invalid_args", "body is not JSON")
        self.queries.append(query)
        selected = []
        for offer in self.market:
            if offer["_ignores_query"] or self._passes(offer, query):
                selected.append(offer)
        for field_name, direction in reversed(query.get("order") or []):
            selected.sort(key=lambda o: o.get(field_name) or 0, reverse=direction == "desc")
        limit = int(query.get("limit") or 64)
        return web.json_response({"offers": [_public(o) for o in selected[:limit]]})

    def _passes(self, offer: dict[str, Any], query: dict[str, Any]) -> bool:
        for field_name, ops in query.items():
            if field_name in _TOP_LEVEL:
                continue
            if not isinstance(ops, dict):
                raise web.HTTPBadRequest(text=f"bad filter for {field_name}")
            value = offer.get(field_name)
            if field_name == "geolocation":
                value = _country(value)
            for op, expected in ops.items():
                if op not in _OPS:
                    raise web.HTTPBadRequest(text=f"unknown operator {op}")
                if not _OPS[op](value, expected):
                    return False
        return True

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.create_bodies.append(body)
        offer = next((o for o in self.market if str(o["id"]) == request.match_info["offer"]), None)
        if offer is None or offer.get("rented"):
            return error(404, "no_such_ask", f"offer {request.match_info['offer']} is no longer available")
        for required in ("image", "onstart", "label"):
            if not body.get(required):
                return error(400, "invalid_args", f"{required} is required")
        offer["rented"] = True
        instance_id = str(next(self._ids))
        env = {str(k): str(v) for k, v in (body.get("env") or {}).items()}
        proc = self.processes.start(instance_id, ["bash", "-c", body["onstart"]], env)
        self.instances[instance_id] = Instance(id=instance_id, label=body["label"], env=env, proc=proc,
                                               extra={"offer": offer["id"], "gpu_name": offer["gpu_name"]})
        return web.json_response({"success": True, "new_contract": int(instance_id)})

    def _row(self, instance: Instance) -> dict[str, Any]:
        alive = instance.proc is None or instance.proc.poll() is None
        return {"id": int(instance.id), "label": instance.label, "actual_status": "running" if alive else "exited",
                "intended_status": "running", **instance.extra}

    async def list_instances(self, request: web.Request) -> web.Response:
        return web.json_response({"instances": [self._row(i) for i in self.instances.values()]})

    async def get_instance(self, request: web.Request) -> web.Response:
        instance = self.instances.get(request.match_info["id"])
        if instance is None:
            return error(404, "no_such_instance", "Instance not found")
        return web.json_response({"instances": self._row(instance)})

    async def destroy(self, request: web.Request) -> web.Response:
        instance = self.instances.pop(request.match_info["id"], None)
        if instance is None:
            return error(404, "no_such_instance", "Instance not found")
        await asyncio.get_running_loop().run_in_executor(None, Processes.stop, instance.proc)
        return web.json_response({"success": True})


def _public(offer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in offer.items() if not k.startswith("_")}


@contextlib.contextmanager
def running(root: Path, **kwargs: Any) -> Iterator[FakeVast]:
    fake = FakeVast(root, **kwargs).start()
    try:
        yield fake
    finally:
        fake.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
