"""The web ingress: `/web/{app}/{label}/...` proxied to a container of the web function.

Public like Modal's endpoints (no API key needed), unless the function asked for proxy auth
(`requires_proxy_auth=True`: an `Apothic-Key` header with an API key of the owning account).
Requests and responses stream in both directions; websockets are relayed message by message.
The function's `timeout` bounds the wait for a container and for the response to begin (504
`web.timeout`); a response that has begun (a stream, SSE, a websocket) may run as long as it likes.
Each request is its own stream of the worker's session, with its own flow control: the response
is taken from the stream only as fast as the client reads it, so a slow client holds back only
its own request; a request that ends early (client gone, timeout) RESETs its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from apothic.control import keys
from apothic.control.middlewares import error_response
from apothic.control.web import Stream, WebService
from apothic.exception import WebTimeoutError, WebUpstreamError
from apothic.service import PROXY_AUTH_HEADER

routes = web.RouteTableDef()

_INLINE_BODY = 256 * 1024  # a request body up to this size rides in the opening frame
_CHUNK = 64 * 1024
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
                         "trailer", "proxy-authenticate", "proxy-authorization", PROXY_AUTH_HEADER.lower()})


def _scope(request: web.Request) -> dict[str, Any]:
    """What the container needs to build the ASGI scope. As under `uvicorn --root-path`, the app
    is mounted at root_path `/web/{app}/{label}` and `path` is the full path, so frameworks
    route on the rest and build links and redirects that point back through this proxy."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    slash = "" if request.match_info["tail"] else "/"  # /web/a/f is the app's root, as /web/a/f/ is
    return {
        "method": request.method, "path": request.path + slash, "raw_path": request.rel_url.raw_path + slash,
        "root_path": f"/web/{request.match_info['app']}/{request.match_info['label']}",
        "query": request.query_string,
        "scheme": request.scheme, "client": list(peer[:2]) if peer else None,
        "headers": [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP],
    }


def _response_headers(pairs: list[list[str]], *, whole: bool) -> CIMultiDict[str]:
    drop = _HOP_BY_HOP | {"content-length"} if whole else _HOP_BY_HOP
    return CIMultiDict((k, v) for k, v in pairs if k.lower() not in drop)


async def _next(service: WebService, stream: Stream, deadline: float | None, fn_name: str,
                timeout_s: float) -> tuple[dict, bytes]:
    try:
        return await service.receive(stream, deadline)
    except TimeoutError:
        raise WebTimeoutError(f"{fn_name} did not answer within its {timeout_s:g} s timeout") from None


@routes.route("*", r"/web/{app}/{label}{tail:(/.*)?}")
async def serve_web(request: web.Request) -> web.StreamResponse:
    service = request.app[keys.WEB]
    fn = await service.resolve(request.match_info["app"], request.match_info["label"])
    await service.authorize(fn, request.headers.get(PROXY_AUTH_HEADER))
    deadline = time.monotonic() + fn.spec.timeout_s
    ct = await service.acquire(fn.spec.id, deadline)
    try:
        stream = service.open(ct)
    except BaseException:
        service.release(ct)
        raise
    try:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _proxy_websocket(request, service, stream, deadline, fn.spec.name, fn.spec.timeout_s)
        return await _proxy_http(request, service, stream, deadline, fn.spec.name, fn.spec.timeout_s)
    finally:
        service.close(stream)
        service.release(ct)


async def _pump_body(request: web.Request, service: WebService, stream: Stream) -> None:
    async for chunk in request.content.iter_chunked(_CHUNK):
        if not service.send(stream, {"t": "http_body", "end": False}, chunk):
            return
        await service.drain(stream)  # read the client's body only as fast as the app takes it
    service.send(stream, {"t": "http_body", "end": True})


async def _proxy_http(request: web.Request, service: WebService, stream: Stream, deadline: float,
                      name: str, timeout_s: float) -> web.StreamResponse:
    scope = _scope(request)
    body_task: asyncio.Task[None] | None = None
    length = request.content_length
    if not request.body_exists:
        sent = service.send(stream, {"t": "http_open", "scope": scope, "end": True})
    elif length is not None and length <= _INLINE_BODY:
        sent = service.send(stream, {"t": "http_open", "scope": scope, "end": True}, await request.read())
    else:  # a large or chunked body streams while the app runs (it may answer before reading it all)
        sent = service.send(stream, {"t": "http_open", "scope": scope, "end": False})
        body_task = asyncio.create_task(_pump_body(request, service, stream))
    if not sent:
        raise WebUpstreamError(f"{name}: the worker serving it is gone")
    response: web.StreamResponse | None = None
    try:
        header, payload = await _next(service, stream, deadline, name, timeout_s)
        if header["t"] != "http_start":
            raise WebUpstreamError(f"{name} failed: {header.get('message') or 'the container broke off the request'}")
        if header.get("end"):
            return web.Response(status=header["status"], body=payload,
                                headers=_response_headers(header["headers"], whole=True))
        response = web.StreamResponse(status=header["status"],
                                      headers=_response_headers(header["headers"], whole=False))
        await response.prepare(request)
        if payload:
            await response.write(payload)
        while True:
            header, payload = await _next(service, stream, None, name, timeout_s)
            if header["t"] != "http_data":
                # Too late for an error status: cutting the connection tells the client it is incomplete.
                if request.transport is not None:
                    request.transport.close()
                return response
            if payload:
                await response.write(payload)
            if header.get("end"):
                await response.write_eof()
                return response
    except ConnectionError:
        # The client went away mid-response: closing the stream unfinished RESETs it, which
        # stops the app's work (so does a timeout or cancellation, raised through).
        if request.transport is not None:
            request.transport.close()
        return response if response is not None else web.Response(status=499)
    finally:
        if body_task is not None:
            body_task.cancel()
            with contextlib.suppress(BaseException):
                await body_task


async def _proxy_websocket(request: web.Request, service: WebService, stream: Stream, deadline: float,
                           name: str, timeout_s: float) -> web.StreamResponse:
    scope = _scope(request)
    scope["subprotocols"] = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                             if p.strip()]
    if not service.send(stream, {"t": "ws_open", "scope": scope}):
        raise WebUpstreamError(f"{name}: the worker serving it is gone")
    try:
        header, _ = await _next(service, stream, deadline, name, timeout_s)
    except WebTimeoutError:
        service.send(stream, {"t": "ws_close", "code": 1001})
        raise
    if header["t"] == "http_reset":
        raise WebUpstreamError(f"{name} failed: {header.get('message') or 'the container broke off the request'}")
    if header["t"] != "ws_accept":
        return error_response("web.websocket_rejected", f"{name} refused the websocket", 403)
    subprotocol = header.get("subprotocol")
    ws = web.WebSocketResponse(protocols=[subprotocol] if subprotocol else (), max_msg_size=0)
    await ws.prepare(request)

    async def from_app() -> None:
        while True:
            frame, payload = await service.receive(stream)
            if frame["t"] == "ws_msg":
                if frame.get("text"):
                    await ws.send_str(payload.decode("utf-8"))
                else:
                    await ws.send_bytes(payload)
            else:  # ws_close from the app, or http_reset: the container is gone
                await ws.close(code=frame.get("code", 1000) if frame["t"] == "ws_close" else 1011)
                return

    relay = asyncio.create_task(from_app())
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                service.send(stream, {"t": "ws_msg", "text": True}, msg.data.encode("utf-8"))
            elif msg.type == WSMsgType.BINARY:
                service.send(stream, {"t": "ws_msg", "text": False}, msg.data)
        if not relay.done():  # the client closed first
            service.send(stream, {"t": "ws_close", "code": ws.close_code or 1000})
    finally:
        relay.cancel()
        with contextlib.suppress(BaseException):
            await relay
    return ws
