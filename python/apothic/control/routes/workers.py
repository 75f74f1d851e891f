"""Worker agents: the list, and the one websocket session each agent dials out to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import WSMsgType, web

from apothic import _ids, _wire
from apothic.control import keys
from apothic.control.capacity import CAPACITY
from apothic.control.middlewares import error_response
from apothic.control.model import WorkerHandle
from apothic.control.placement import worker_offer
from apothic.control.routes._body import json_response
from apothic.control.scheduler import Scheduler
from apothic.exception import AuthError, Error

routes = web.RouteTableDef()
log = logging.getLogger("apothic.sessions")


@routes.get("/v1/workers")
async def list_workers(request: web.Request) -> web.Response:
    workers = request.app[keys.SCHEDULER].workers.values()
    # `offer` is the row placement filters match against: what a provider sold, or what this host measured.
    return json_response([w.summary() | {"offer": worker_offer(w)} for w in workers])


@routes.get("/v1/workers/session")
async def worker_session(request: web.Request) -> web.StreamResponse:
    auth = request.app[keys.AUTH]
    try:
        # A rented host's agent presents a one-time join token, then its own key; local agents
        # present the server's shared worker token.
        grant = await auth.worker_grant(request.headers.get("Authorization"))
        if grant is None:
            await auth.authenticate(request.headers.get("Authorization"), kind="worker")
        elif request.app.get(CAPACITY) is None or grant.rental not in request.app[CAPACITY].rentals:
            raise AuthError(f"invalid worker token: rental {grant.rental} was given back")
    except Error as e:
        return error_response(e.code, e.message, e.http_status)
    ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=0, compress=False)
    await ws.prepare(request)
    scheduler = request.app[keys.SCHEDULER]
    web_service = request.app[keys.WEB]
    outbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def writer() -> None:
        while True:
            frame = await outbox.get()
            await ws.send_bytes(frame)

    worker: WorkerHandle | None = None
    write_task = asyncio.create_task(writer())
    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            header, payload = _wire.unpack(msg.data)
            if worker is not None and header["t"].startswith(("http_", "ws_")):  # proxied HTTP, hottest first
                web_service.on_frame(worker.id, header, payload)
            elif header["t"] == "hello":
                worker = WorkerHandle(
                    id=(grant.worker if grant else None) or header.get("worker") or _ids.new_id("worker"),
                    send=lambda h, p=b"": outbox.put_nowait(_wire.pack(h, p)),
                    capacity=header.get("capacity") or {},
                    pid=header.get("pid"),
                    provider=grant.provider if grant else header.get("provider", "manual"),
                    metadata=dict(grant.metadata) if grant else {},
                )
                welcome: dict[str, Any] = {"t": "welcome", "worker": worker.id}
                if grant is not None:
                    if grant.one_time:
                        try:
                            welcome["key"] = await auth.exchange(grant, worker.id)  # reconnects use this key
                        except AuthError as e:  # two agents raced with one token: the first one won
                            log.warning("refused worker %s: %s", worker.id, e.message)
                            worker = None
                            break
                    await request.app[CAPACITY].worker_joined(grant.rental, worker)
                worker.send(welcome)
                scheduler.worker_connected(worker)
                log.info("worker %s connected (pid %s)", worker.id, worker.pid)
            elif worker is not None and header["t"].startswith("sb_"):
                request.app[keys.SANDBOXES].on_frame(worker, header, payload)
            elif worker is not None:
                await _handle(scheduler, worker, header, payload)
    finally:
        write_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await write_task
        if worker is not None:
            log.info("worker %s disconnected", worker.id)
            scheduler.worker_disconnected(worker.id)
            request.app[keys.SANDBOXES].worker_disconnected(worker.id)
            if worker.metadata and request.app.get(CAPACITY) is not None:
                request.app[CAPACITY].worker_left(worker.id)
    return ws


async def _handle(scheduler: Scheduler, worker: WorkerHandle, header: dict[str, Any], payload: bytes) -> None:
    kind = header["t"]
    if kind == "heartbeat":
        scheduler.heartbeat(worker.id, header.get("running") or [])
    elif kind == "started":
        scheduler.job_started(header["job"], header["container"])
    elif kind == "result":
        await scheduler.job_result(header["job"], header["claim"], header["container"], header["ok"],
                                   payload, header.get("error"))
    elif kind == "log":
        scheduler.log(header.get("job"), header.get("app"), header["container"], header["stream"],
                      payload.decode("utf-8", "replace"))
    elif kind == "container_ready":
        scheduler.container_ready(header["container"])
    elif kind == "container_failed":
        await scheduler.container_failed(header["container"], header.get("error", ""))
    elif kind == "container_exited":
        await scheduler.container_exited(header["container"], header.get("returncode"))
    else:
        log.warning("worker %s sent an unknown frame %r", worker.id, kind)
