"""One multiplexed websocket per SDK client that carries ordinary /v1 requests.

An HTTP request costs the Python client about 0.5 ms of its own CPU and one round trip each;
over one websocket many requests are in flight at once and each costs a frame. Every request
that arrives here is resolved by the same router and served by the same handler as over HTTP,
so the API has one implementation; only streaming routes (events, logs, watches, the worker
session) stay on HTTP.

When the client offers the websocket subprotocol `apothic.rpc.batched` (and so the server picks
it), each message holds any number of frames, `u32 length | frame` after one another: a client
with many requests in flight sends them in one message, and the answers finished in one turn of
the loop go back in one. A websocket message cost about a third of the control plane's CPU per
request before that. Without it (an older client), one frame per message as before.

Frames of a planned route (control/plans.py: the hot Queue and Dict calls) are decided in the
reading loop itself, with no task of their own, and the rows of every 16 of them go to the
journal as one write; they are answered once it is durable: there and then when the journal
writer is idle (the write is made in place), else when the writer has it. The same plan function
serves the route over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from apothic import _wire
from apothic.control import keys, plans
from apothic.control.decided import carry_on
from apothic.control.middlewares import PRINCIPAL
from apothic.control.plans import Answer, Plan
from apothic.exception import Error

routes = web.RouteTableDef()
log = logging.getLogger("apothic.rpc")

BATCHED = "apothic.rpc.batched"
_STREAMING = {"job_events", "app_logs", "watch_dict", "watch_queue", "worker_session", "rpc_session"}


class RpcRequest(dict[str, Any]):
    """What a handler reads of a request: app, method, path, query, match_info, body, principal."""

    def __init__(self, app: web.Application, method: str, path: str, query: dict[str, str], body: bytes,
                 principal: Any) -> None:
        super().__init__()
        self.app = app
        self.method = method
        self._raw_path = path
        self.path = path if "%" not in path else URL.build(path=path).path
        self.query = query  # handlers only get() and test membership: a dict does, without parsing a URL
        self.headers: CIMultiDict[str] = _NO_HEADERS
        self.match_info: Any = None
        self._body = body
        self[PRINCIPAL] = principal

    @property
    def rel_url(self) -> URL:
        return URL.build(path=self._raw_path, query=self.query)

    async def read(self) -> bytes:
        return self._body


_NO_HEADERS: CIMultiDict[str] = CIMultiDict()
# Frames started (or decided and journaled) before the loop takes a turn. A client with many
# requests in flight sends them in one message; started all at once, they were journaled in one
# sync and answered in one message, and client and server took turns to work, each idle while the
# other did. A turn every few frames lets the first ones be synced and answered while the rest
# are served. For planned frames too: one journal write per 16 instead of one per message gave
# 3,553-3,868 queue cycles/s instead of 3,133-3,449, and more dict writes/s (alternated runs).
_FRAMES_PER_TURN = 16
_VARIABLE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class _Match(dict[str, str]):
    """What a handler reads of match_info (the path's variables), and the handler."""

    __slots__ = ("handler",)
    http_exception = None


class RouteIndex:
    """The app's routes by method, number of path segments and last segment; a path is matched
    segment by segment against the one or two routes of its shape, the first registered winning.

    aiohttp's router tries its resources one by one with regular expressions: 12-55 us a request
    here, more than most handlers, and a cache by path missed on every path that names a claim
    or a job. Routes with a pattern this index does not know (a regex, two variables in one
    segment) are left to the router, as is any path that matches nothing here (its 404 or 405).
    Variables are decoded as the router decodes them (all but %2F and %25; see
    _body.path_name).
    """

    def __init__(self, app: web.Application) -> None:
        self._routes: dict[tuple[str, int, str | None], list[tuple[int, tuple[str | None, ...], tuple[str, ...], Any]]]
        self._routes = {}
        for order, route in enumerate(app.router.routes()):
            if route.resource is None:
                continue
            pattern: list[str | None] = []
            names: list[str] = []
            for part in route.resource.canonical.split("/"):
                if "{" not in part:
                    pattern.append(part)
                elif m := _VARIABLE.match(part):
                    pattern.append(None)
                    names.append(m.group(1))
                else:
                    break
            else:
                key = (route.method, len(pattern), pattern[-1])
                self._routes.setdefault(key, []).append((order, tuple(pattern), tuple(names), route.handler))

    def resolve(self, method: str, raw_path: str) -> _Match | None:
        parts = raw_path.split("/")
        best: tuple[int, list[str], tuple[str, ...], Any] | None = None
        for last in (parts[-1], None):
            for order, pattern, names, handler in self._routes.get((method, len(parts), last), ()):
                if best is not None and order > best[0]:
                    break
                values = _values(pattern, parts)
                if values is not None:
                    best = (order, values, names, handler)
                    break
        if best is None:
            return None
        _, values, names, handler = best
        match = _Match(zip(names, [_decoded(v) if "%" in v else v for v in values], strict=True))
        match.handler = handler
        return match


def _decoded(segment: str) -> str:
    return URL.build(path="/" + segment, encoded=True).path_safe[1:]


def _values(pattern: tuple[str | None, ...], parts: list[str]) -> list[str] | None:
    """The path's variables if it fits the pattern (a variable is one non-empty segment)."""
    values = []
    for want, got in zip(pattern, parts, strict=True):
        if want is None:
            if not got:
                return None
            values.append(got)
        elif want != got:
            return None
    return values


ROUTE_INDEX = web.AppKey("rpc_route_index", RouteIndex)


# Matches by (method, path), for the paths asked again and again (one queue's puts); handlers
# only read them. Cleared when full.
_MATCHES: dict[tuple[str, str], _Match] = {}
_MATCHES_MAX = 4096


async def _resolve(app: web.Application, request: RpcRequest) -> Any:
    match = _indexed(app, request.method, request._raw_path)
    if match is None:
        return await app.router.resolve(request)  # type: ignore[arg-type]
    return match


def _indexed(app: web.Application, method: str, raw_path: str) -> _Match | None:
    key = (method, raw_path)
    match = _MATCHES.get(key)
    if match is None:
        match = app[ROUTE_INDEX].resolve(method, raw_path)
        if match is None:
            return None
        if len(_MATCHES) >= _MATCHES_MAX:
            _MATCHES.clear()
        _MATCHES[key] = match
    return match


def _plan(app: web.Application, principal: Any, header: dict[str, Any], body: bytes) -> Plan | bytes | None:
    """The frame's plan when its route is planned (control/plans.py) and decides at once; its
    answer when deciding refused it; None to serve it as any request."""
    method, path = header.get("method"), header.get("path")
    if not isinstance(method, str) or not isinstance(path, str):
        return None
    match = _indexed(app, method, path)
    plan_fn = getattr(match.handler, "plan", None) if match is not None else None
    if plan_fn is None:
        return None
    try:
        return plan_fn(app, principal.account, match, header.get("query") or {}, body)  # type: ignore[no-any-return]
    except Error as e:
        return _answer(header.get("id"), e)
    except Exception as e:
        log.exception("unhandled error in rpc %s %s", method, path)
        return _answer(header.get("id"), e)


def _answer(request_id: Any, outcome: Answer | BaseException) -> bytes:
    if isinstance(outcome, tuple):
        body, content_type = outcome
        return _wire.pack_joinable({"id": request_id, "status": 200, "content_type": content_type}, body)
    if isinstance(outcome, Error):
        status, payload = _error(outcome.code, outcome.message, outcome.http_status)
    else:
        status, payload = _error("internal", "internal error; see the server log", 500)
    return _wire.pack_joinable({"id": request_id, "status": status, "content_type": "application/json"}, payload)


def _error(code: str, message: str, status: int) -> tuple[int, bytes]:
    return status, orjson.dumps({"error": {"code": code, "message": message}})


async def _serve(app: web.Application, principal: Any, header: dict[str, Any], body: bytes) -> bytes:
    status: int
    content_type = "application/json"
    try:
        request = RpcRequest(app, header["method"], header["path"], header.get("query") or {}, body, principal)
        match = await _resolve(app, request)
        if match.http_exception is not None:
            exc = match.http_exception
            status, payload = _error("not_found" if exc.status == 404 else "request.malformed",
                                     f"no route {request.method} {request.path}", exc.status)
        elif getattr(match.handler, "__name__", "") in _STREAMING:
            status, payload = _error("request.malformed", f"{request.path} streams: call it over HTTP", 400)
        else:
            request.match_info = match
            response = await match.handler(request)  # type: ignore[arg-type]
            status, payload = response.status, bytes(response.body or b"")  # type: ignore[attr-defined]
            content_type = response.content_type
    except Error as e:
        status, payload = _error(e.code, e.message, e.http_status)
    except web.HTTPException as e:
        status, payload = _error("request.malformed", e.reason, e.status)
    except Exception:
        log.exception("unhandled error in rpc %s %s", header.get("method"), header.get("path"))
        status, payload = _error("internal", "internal error; see the server log", 500)
    return _wire.pack_joinable({"id": header.get("id"), "status": status, "content_type": content_type}, payload)


@routes.get("/v1/rpc")
async def rpc_session(request: web.Request) -> web.StreamResponse:
    principal = request[PRINCIPAL]
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=0, compress=False, protocols=(BATCHED,))
    await ws.prepare(request)
    batched = ws.ws_protocol == BATCHED  # an older client offers none: one frame per message
    outbox: list[bytes] = []
    ready = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def writer() -> None:
        while True:
            await ready.wait()
            ready.clear()
            answers = outbox[:]
            outbox.clear()
            if batched:
                await ws.send_bytes(b"".join(answers))
            else:
                for answer in answers:
                    await ws.send_bytes(answer[4:])  # answers are joinable frames: drop the length

    async def serve(header: dict[str, Any], body: bytes) -> None:
        outbox.append(await _serve(request.app, principal, header, body))
        ready.set()

    def answer_plans(decided: list[tuple[Any, Plan]], outcomes: list[Answer | BaseException]) -> None:
        for (request_id, _), outcome in zip(decided, outcomes, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, Error):
                log.error("unhandled error finishing rpc %s", request_id, exc_info=outcome)
            outbox.append(_answer(request_id, outcome))
        ready.set()

    async def finish_plans(durable: asyncio.Future[None] | None, decided: list[tuple[Any, Plan]]) -> None:
        answer_plans(decided, await plans.finish(durable, [plan for _, plan in decided]))

    def commit_plans(decided: list[tuple[Any, Plan]]) -> None:
        """Journals the decided frames' rows as one write, now; answers them once durable: at once
        when the journal writer was idle and took them in place (plans.start_in_place)."""
        if decided:
            outcomes = plans.start_in_place(request.app[keys.STORE].db, [plan for _, plan in decided])
            if outcomes is not None:
                answer_plans(decided, outcomes)
                return
            durable = plans.start(request.app[keys.STORE].db, [plan for _, plan in decided])
            # Not cancelled with the session: rows on their way to the journal must take effect
            # (a queue item made visible, watchers told) whether or not anyone hears the answer.
            carry_on(finish_plans(durable, decided))

    write_task = asyncio.create_task(writer())
    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            decided: list[tuple[Any, Plan]] = []
            frames = _wire.unpack_frames(msg.data) if batched else [_wire.unpack(msg.data)]
            for i, (header, body) in enumerate(frames, 1):
                plan = _plan(request.app, principal, header, body)
                if isinstance(plan, Plan):
                    decided.append((header.get("id"), plan))
                elif plan is not None:  # refused at once
                    outbox.append(plan)
                    ready.set()
                else:
                    task = asyncio.create_task(serve(header, body))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if i % _FRAMES_PER_TURN == 0:
                    commit_plans(decided)
                    decided = []
                    await asyncio.sleep(0)
            commit_plans(decided)
    finally:
        for task in [*tasks, write_task]:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, write_task, return_exceptions=True)
    return ws
