"""Worker agents: the list, and the one websocket session each agent dials out to.

The session is an `apothic-session` multiplexer (see _bridge/session.py): its control stream
carries `_wire` frames (hello/welcome, calls and results, heartbeats, container lifecycle,
sandbox requests), the agent's log stream carries output, and each proxied HTTP request or
websocket gets a stream of its own (control/web.py), so flow control holds back only the
stream whose reader is slow."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from apothic import _ids
from apothic._bridge.session import (
    LOGS_HEADERS,
    REFUSED,
    SANDBOX_HEADERS,
    SessionChannel,
    SessionStream,
    config_from_env,
)
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
    # No websocket heartbeat: the session pings, and declares the agent dead when it goes silent.
    ws = web.WebSocketResponse(heartbeat=None, max_msg_size=0, compress=False)
    await ws.prepare(request)
    scheduler = request.app[keys.SCHEDULER]
    web_service = request.app[keys.WEB]
    channel = SessionChannel(ws, dialer=False, config=config_from_env())
    channel.start()
    worker: WorkerHandle | None = None
    accepter: asyncio.Task[None] | None = None
    try:
        control = await channel.control()

        def on_sandbox_stream(stream: SessionStream) -> None:
            if worker is None:
                stream.reset(REFUSED)
            else:
                request.app[keys.SANDBOXES].on_stream(worker, stream)

        accepter = asyncio.create_task(_accept(channel, scheduler, on_sandbox_stream))
        while (frame := await control.read_frame()) is not None:
            header, payload = frame
            if header["t"] == "hello":
                worker = WorkerHandle(
                    id=(grant.worker if grant else None) or header.get("worker") or _ids.new_id("worker"),
                    send=_sender(control),
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
                worker.send(welcome, b"")
                web_service.attach(worker.id, channel)
                scheduler.worker_connected(worker)
                log.info("worker %s connected (pid %s)", worker.id, worker.pid)
            elif worker is not None and header["t"].startswith("sb_"):
                request.app[keys.SANDBOXES].on_frame(worker, header, payload)
            elif worker is not None:
                await _handle(scheduler, worker, header, payload)
    except Error as e:  # the session ended under us: dead (silent), closed, or a protocol error
        log.info("worker session %s ended: %s", worker.id if worker else "(before hello)", e.message)
    finally:
        if accepter is not None:
            accepter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accepter
        if worker is not None:
            log.info("worker %s disconnected", worker.id)
            web_service.detach(worker.id, channel)
            scheduler.worker_disconnected(worker.id)
            request.app[keys.SANDBOXES].worker_disconnected(worker.id)
            if worker.metadata and request.app.get(CAPACITY) is not None:
                request.app[CAPACITY].worker_left(worker.id)
        # Last: closing the websocket of a silent peer waits out aiohttp's close timeout.
        await channel.close()
    return ws


def _sender(control: SessionStream) -> Callable[[dict[str, Any], bytes], None]:
    def send(header: dict[str, Any], payload: bytes = b"") -> None:
        # Frames to a session that has just ended are dropped, as they were to a closed
        # websocket: the reader sees the end and drops the worker.
        with contextlib.suppress(Error):
            control.write_frame(header, payload)

    return send


async def _accept(channel: SessionChannel, scheduler: Scheduler,
                  on_sandbox_stream: Callable[[SessionStream], None]) -> None:
    """Streams the agent opens: its log stream, and one per sandbox process pipe. Anything else
    is refused."""
    readers: set[asyncio.Task[None]] = set()
    try:
        while True:
            try:
                stream = await channel.accept()
            except Error:
                return  # the session ended; the control stream's reader cleans up
            if stream.headers == LOGS_HEADERS:
                task = asyncio.create_task(_read_logs(stream, scheduler))
                readers.add(task)
                task.add_done_callback(readers.discard)
            elif stream.headers.startswith(SANDBOX_HEADERS):
                on_sandbox_stream(stream)
            else:
                stream.reset(REFUSED)
    finally:
        for task in list(readers):
            task.cancel()


async def _read_logs(stream: SessionStream, scheduler: Scheduler) -> None:
    with contextlib.suppress(Error):
        while (frame := await stream.read_frame()) is not None:
            header, payload = frame
            scheduler.log(header.get("job"), header.get("app"), header["container"], header["stream"],
                          payload.decode("utf-8", "replace"))


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
