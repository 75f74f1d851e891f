"""A Fly Machines API on 127.0.0.1 that follows the documented endpoints, for tests.

- `POST /v1/apps/{app}/machines` with `{"name", "region", "config": {"image", "guest", "env",
  "metadata", "init", ...}}`: creates a machine; its `config.init.exec` runs here as a real
  process with `config.env` added, so a real agent dials back. Answers the machine object.
- `GET /v1/apps/{app}/machines` (optionally `?metadata.<key>=<value>`), `GET .../{id}`,
  `POST .../{id}/stop`, `DELETE .../{id}` (refused with 412 while the machine runs unless
  `?force=true`; kills the process by pid).
- Every call needs `Authorization: Bearer <token>`; an unknown app is 404; errors are
  `{"error": "<message>"}` as Fly sends them. Guests are checked against Fly's GPU kinds.

Every process is stopped by pid in `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.fake_vast import Instance, Processes, ThreadedServer

GPU_KINDS = {"a10", "l40s", "a100-pcie-40gb", "a100-sxm4-80gb"}
REGIONS = {"ord", "iad", "sjc", "ams", "syd", "fra", "lhr"}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class FakeFly:
    def __init__(self, root: Path, *, token: str = "fly-test-token", app: str = "apothic-workers") -> None:
        self.token = token
        self.app_name = app
        self.machines: dict[str, Instance] = {}
        self.processes = Processes(root)
        self.create_bodies: list[dict[str, Any]] = []
        self.failures: list[tuple[str, int, str]] = []
        app_ = web.Application(middlewares=[self._auth])
        app_.add_routes([
            web.post("/v1/apps/{app}/machines", self.create),
            web.get("/v1/apps/{app}/machines", self.list_machines),
            web.get("/v1/apps/{app}/machines/{id}", self.get_machine),
            web.post("/v1/apps/{app}/machines/{id}/stop", self.stop_machine),
            web.delete("/v1/apps/{app}/machines/{id}", self.destroy),
        ])
        self.server = ThreadedServer(app_)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> FakeFly:
        self.server.start()
        return self

    def close(self) -> None:
        self.server.stop()
        self.processes.close()

    def fail_next(self, method_path: str, status: int, message: str) -> None:
        self.failures.append((method_path, status, message))

    def add_machine(self, label: str) -> Instance:
        machine = Instance(id=secrets.token_hex(7), label=label, env={}, proc=None, state="started",
                           extra={"region": "ord", "config": {"metadata": {"apothic_label": label}}})
        self.machines[machine.id] = machine
        return machine

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "unauthorized")
        if request.match_info.get("app") != self.app_name:
            return _error(404, f"app {request.match_info.get('app')} not found")
        key = f"{request.method} {request.path}"
        for n, (prefix, status, message) in enumerate(self.failures):
            if key.startswith(prefix):
                del self.failures[n]
                return _error(status, message)
        return await handler(request)

    def _machine(self, machine: Instance) -> dict[str, Any]:
        state = machine.state
        if state == "started" and machine.proc is not None and machine.proc.poll() is not None:
            state = "stopped"
        return {"id": machine.id, "name": machine.extra.get("name", machine.id), "state": state,
                "region": machine.extra.get("region"), "instance_id": "01" + machine.id.upper(),
                "config": machine.extra.get("config", {})}

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.create_bodies.append(body)
        config = body.get("config") or {}
        if not config.get("image"):
            return _error(400, "config.image is required")
        guest = config.get("guest") or {}
        if guest.get("gpu_kind") and guest["gpu_kind"] not in GPU_KINDS:
            return _error(422, f"invalid gpu_kind {guest['gpu_kind']!r}")
        region = body.get("region") or "ord"
        if region not in REGIONS:
            return _error(422, f"invalid region {region!r}")
        argv = ((config.get("init") or {}).get("exec")) or []
        if not argv:
            return _error(400, "this fake runs machines from config.init.exec only")
        machine_id = secrets.token_hex(7)
        env = {str(k): str(v) for k, v in (config.get("env") or {}).items()}
        proc = self.processes.start(machine_id, [str(a) for a in argv], env)
        label = str((config.get("metadata") or {}).get("apothic_label") or "")
        machine = Instance(id=machine_id, label=label, env=env, proc=proc, state="started",
                           extra={"name": body.get("name") or machine_id, "region": region, "config": config})
        self.machines[machine_id] = machine
        return web.json_response(self._machine(machine))

    async def list_machines(self, request: web.Request) -> web.Response:
        wanted = {k.removeprefix("metadata."): v for k, v in request.query.items() if k.startswith("metadata.")}
        rows = []
        for machine in self.machines.values():
            metadata = (machine.extra.get("config") or {}).get("metadata") or {}
            if all(metadata.get(k) == v for k, v in wanted.items()):
                rows.append(self._machine(machine))
        return web.json_response(rows)

    async def get_machine(self, request: web.Request) -> web.Response:
        machine = self.machines.get(request.match_info["id"])
        if machine is None:
            return _error(404, "machine not found")
        return web.json_response(self._machine(machine))

    async def stop_machine(self, request: web.Request) -> web.Response:
        machine = self.machines.get(request.match_info["id"])
        if machine is None:
            return _error(404, "machine not found")
        await asyncio.get_running_loop().run_in_executor(None, Processes.stop, machine.proc)
        machine.state = "stopped"
        return web.json_response({"ok": True})

    async def destroy(self, request: web.Request) -> web.Response:
        machine = self.machines.get(request.match_info["id"])
        if machine is None:
            return _error(404, "machine not found")
        running = machine.proc is not None and machine.proc.poll() is None
        if running and request.query.get("force") != "true":
            return _error(412, "unable to destroy machine, not currently stopped")
        await asyncio.get_running_loop().run_in_executor(None, Processes.stop, machine.proc)
        del self.machines[machine.id]
        return web.json_response({"ok": True})


@contextlib.contextmanager
def running(root: Path, **kwargs: Any) -> Iterator[FakeFly]:
    fake = FakeFly(root, **kwargs).start()
    try:
        yield fake
    finally:
        fake.close()
