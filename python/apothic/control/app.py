"""The control plane's aiohttp application: `create_app(config)` and `serve(config)`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from apothic.control import keys
from apothic.control.auth import Auth
from apothic.control.capacity import CAPACITY, capacity_context
from apothic.control.config import ServerConfig
from apothic.control.dicts import DictService
from apothic.control.hub import Hub
from apothic.control.middlewares import authenticate, errors
from apothic.control.providers.local import LocalProvider
from apothic.control.queues import QueueService
from apothic.control.routes import apps, blobs, dicts, health, jobs, offers, queues, rpc, workers
from apothic.control.routes import sandboxes as sandbox_routes
from apothic.control.routes import web as web_routes
from apothic.control.sandboxes import SandboxManager
from apothic.control.scheduler import Scheduler
from apothic.control.store import Database, Store
from apothic.control.store.dicts import DictStore
from apothic.control.store.queues import QueueStore
from apothic.control.store.sandboxes import SandboxStore
from apothic.control.web import WebService

log = logging.getLogger("apothic.control")


async def _state(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    store = Store(Database(config.db_url, config.home / "journal" / "store.log"))
    await store.open()
    hub = Hub(await store.max_revision())
    scheduler = Scheduler(store, hub, lease_ms=config.lease_ms)
    await scheduler.restore()
    auth = Auth(store, config.home)
    await auth.bootstrap()
    queue_service = QueueService(QueueStore(store.db), hub)
    await queue_service.restore()
    app[keys.QUEUES] = queue_service
    dict_service = DictService(DictStore(store.db), hub)
    await dict_service.restore()
    app[keys.DICTS] = dict_service
    app[keys.WEB] = WebService(scheduler, store, auth)
    app[keys.STORE], app[keys.HUB], app[keys.SCHEDULER], app[keys.AUTH] = store, hub, scheduler, auth
    app[keys.LOCAL_PROVIDER] = LocalProvider(
        home=config.home, target=config.local_workers, connected=lambda: len(scheduler.workers)
    )
    yield
    await app[keys.LOCAL_PROVIDER].close()
    await store.close()


async def _link_capacity(app: web.Application) -> AsyncIterator[None]:
    """The scheduler rents through the capacity manager, which starts after the store and auth."""
    app[keys.SCHEDULER].capacity = app[CAPACITY]
    yield
    app[keys.SCHEDULER].capacity = None


async def _sandboxes(app: web.Application) -> AsyncIterator[None]:
    scheduler = app[keys.SCHEDULER]
    manager = SandboxManager(SandboxStore(app[keys.STORE].db), lambda: scheduler.workers,
                             scheduler.capacity_wanted.set, scheduler.placer)
    await manager.restore()
    app[keys.SANDBOXES] = manager
    yield
    manager.close()


async def _ticker(app: web.Application) -> AsyncIterator[None]:
    scheduler = app[keys.SCHEDULER]
    queue_service = app[keys.QUEUES]
    dict_service = app[keys.DICTS]
    interval = app[keys.CONFIG].tick_s

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await scheduler.tick()
                queue_service.tick()
                dict_service.tick()
            except Exception:
                log.exception("scheduler tick failed")

    task = asyncio.create_task(loop(), name="scheduler-tick")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(config: ServerConfig) -> web.Application:
    app = web.Application(middlewares=[errors, authenticate], client_max_size=80 * 1024 * 1024)
    app[keys.CONFIG] = config
    app.cleanup_ctx.extend([_state, capacity_context, _link_capacity, _ticker])
    app.cleanup_ctx.append(_sandboxes)
    app.add_routes(sandbox_routes.routes)
    for module in (apps, blobs, dicts, health, jobs, offers, queues, rpc, workers):
        app.add_routes(module.routes)
    app.add_routes(web_routes.routes)
    app[rpc.ROUTE_INDEX] = rpc.RouteIndex(app)
    return app


def server_file(config: ServerConfig) -> os.PathLike[str]:
    return config.home / "server.json"


async def serve(config: ServerConfig) -> None:
    """Runs until SIGTERM or SIGINT; writes $APOTHIC_HOME/server.json once it accepts requests."""
    config.home.mkdir(parents=True, exist_ok=True)
    app = create_app(config)
    # Open streams and worker sessions would hold shutdown for aiohttp's default 60 s.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    host = "127.0.0.1" if config.host in ("0.0.0.0", "") else config.host
    url = f"http://{host}:{port}"
    provider = app[keys.LOCAL_PROVIDER]
    provider.server_url, provider.token = url, app[keys.AUTH].worker_token
    provider_task = asyncio.create_task(provider.run(app[keys.SCHEDULER].capacity_wanted))
    path = server_file(config)
    tmp = config.home / "server.json.tmp"
    tmp.write_bytes(orjson.dumps({"url": url, "pid": os.getpid()}))
    os.replace(tmp, path)
    log.info("control plane listening on %s (db %s)", url, config.db_url)
    # What start-up loaded lives as long as the process: keep the collector from walking it, and
    # collect the young generation less often (it was ~4% of the CPU per request under load).
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        provider_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await provider_task
        await provider.close()  # before the runner waits on their sessions
        with contextlib.suppress(FileNotFoundError):
            if orjson.loads(open(path, "rb").read()).get("pid") == os.getpid():
                os.unlink(path)
        await runner.cleanup()


def run_forever(config: ServerConfig) -> None:
    import uvloop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(serve(config))
