"""The container side of a web function: serves proxied requests that arrive as frames.

`container.main` hands over its channel here once it has imported a function marked as web
(`apothic.service`). Every kind becomes one ASGI app run on this process's own event loop:
`endpoint` and `fastapi_endpoint` are wrapped, `asgi_app` is used as returned, `wsgi_app` runs
through a2wsgi's thread pool and `web_server` is reached with aiohttp on 127.0.0.1:port.

Frames (u32 length + `apothic._wire`), each carrying the stream id `sid` the control plane chose:
  in:  http_open {scope, end} + first body bytes · http_body {end} · http_reset
       ws_open {scope} · ws_msg {text} · ws_close {code}
  out: http_start {status, headers, end} + first body bytes · http_data {end} · http_reset {message}
       ws_accept {subprotocol, headers} · ws_msg {text} · ws_close {code, reason}
The control plane admits at most `max_inputs` streams at once, so nothing here queues them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

import orjson

from apothic import _wire
from apothic._worker import web_relay

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What a stopping container spends, within the agent's 3 s grace before SIGKILL: requests in
# flight may finish, then the app's lifespan shutdown runs.
_DRAIN_S = 1.0
_SHUTDOWN_S = 1.5
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
                         "trailer", "proxy-authenticate", "proxy-authorization"})


def _error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


_HIGH_WATER = 4 << 20  # bytes written to the agent and not yet taken, before an app's send() waits


class _Link:
    """The socket to the agent, written from the loop and (through the loop) from other threads.
    Stream frames sent in one turn of the loop leave as one batch (see web_relay)."""

    def __init__(self, writer: asyncio.StreamWriter, loop: asyncio.AbstractEventLoop) -> None:
        self.writer = writer
        self.loop = loop
        self.thread = threading.get_ident()
        self.pending: list[bytes] = []

    def _write(self, frame: bytes) -> None:
        self.writer.write(len(frame).to_bytes(4, "big") + frame)

    def _queue(self, frame: bytes) -> None:
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append(frame)

    def flush(self) -> None:
        frames, self.pending = self.pending, []
        if len(frames) == 1:
            self._write(frames[0])
        elif frames:
            self._write(_wire.pack({"t": web_relay.BATCH}, _wire.join_frames(frames)))

    async def backpressure(self) -> None:
        """Past a few MiB unread by the agent, the app's `send()` waits here: a client that has
        paused its download stops the app instead of growing this process's memory."""
        if self.writer.transport.get_write_buffer_size() > _HIGH_WATER:
            await self.writer.drain()

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        frame = _wire.pack(header, payload)
        if threading.get_ident() != self.thread:  # print() from a handler running in a worker thread
            self.loop.call_soon_threadsafe(self._write, frame)
        elif header["t"].startswith(web_relay.WEB_FRAMES):
            self._queue(frame)
        else:
            self._write(frame)


class _Stream:
    """One proxied HTTP request or websocket: what the app receives comes through `inbox`."""

    def __init__(self, sid: int, scope: Scope) -> None:
        self.sid = sid
        self.scope = scope
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.gone = False  # the client went away: sends are dropped

    async def receive(self) -> Message:
        return await self.inbox.get()


# ---- the app each kind becomes ---------------------------------------------------------------
def _endpoint_app(fn: Callable[..., Any], method: str, pool: ThreadPoolExecutor) -> ASGIApp:
    """A plain function answering JSON: query parameters and a JSON object body are its keyword
    arguments; its return value is the response body."""
    signature = inspect.signature(fn)
    is_async = inspect.iscoroutinefunction(fn)

    async def reply(send: Send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != method and not (method == "GET" and scope["method"] == "HEAD"):
            await reply(send, 405, _error_body("request.malformed", f"this endpoint answers {method} only"))
            return
        kwargs: dict[str, Any] = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if body:
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                await reply(send, 400, _error_body("request.malformed", f"the body is not valid JSON: {e}"))
                return
            if not isinstance(data, dict):
                await reply(send, 400, _error_body("request.malformed", "the JSON body must be an object"))
                return
            kwargs.update(data)
        try:
            signature.bind(**kwargs)
        except TypeError as e:
            await reply(send, 400, _error_body("request.malformed", f"{fn.__name__}: {e}"))
            return
        try:
            if is_async:
                value = await fn(**kwargs)
            else:
                value = await asyncio.get_running_loop().run_in_executor(pool, lambda: fn(**kwargs))
            payload = orjson.dumps(value)
        except Exception as e:
            traceback.print_exc()
            await reply(send, 500, _error_body("remote.error", f"{type(e).__name__}: {e}"))
            return
        await reply(send, 200, payload)

    return app


def _fastapi_app(fn: Callable[..., Any], method: str, docs: bool) -> ASGIApp:
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware

    api = FastAPI(docs_url="/docs" if docs else None, redoc_url=None, openapi_url="/openapi.json" if docs else None)
    api.add_api_route("/", fn, methods=[method])
    api.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    return api


async def _port_open(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return True
    return False


def _proxy_app(port: int) -> ASGIApp:
    """Forwards requests and websockets to a server this container started on 127.0.0.1:port."""
    import aiohttp

    session: aiohttp.ClientSession | None = None
    base = f"http://127.0.0.1:{port}"

    def client() -> aiohttp.ClientSession:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        return session

    def target(scope: Scope) -> str:
        # The server was started at the root of its port: the proxy's mount point is not its business.
        path = scope["raw_path"].decode("latin-1")[len(scope.get("root_path", "")):] or "/"
        query = scope["query_string"].decode("latin-1")
        return base + path + (f"?{query}" if query else "")

    def forwarded(scope: Scope) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                if k.decode("latin-1") not in _HOP_BY_HOP and k != b"host"
                and not k.startswith(b"sec-websocket-")]

    async def http(scope: Scope, receive: Receive, send: Send) -> None:
        async def body() -> Any:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    return

        async with client().request(scope["method"], target(scope), headers=forwarded(scope), data=body(),
                                    allow_redirects=False) as response:
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
                       if k.lower() not in _HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        try:
            upstream = await client().ws_connect(target(scope), headers=forwarded(scope),
                                                 protocols=scope.get("subprotocols") or ())
        except aiohttp.ClientError:
            await send({"type": "websocket.close", "code": 1011})
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.protocol})

        async def downstream() -> None:
            async for msg in upstream:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await send({"type": "websocket.send", "text": msg.data})
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await send({"type": "websocket.send", "bytes": msg.data})
            await send({"type": "websocket.close", "code": upstream.close_code or 1000})

        pump = asyncio.create_task(downstream())
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    await upstream.close(code=message.get("code", 1000))
                    break
                if message.get("text") is not None:
                    await upstream.send_str(message["text"])
                else:
                    await upstream.send_bytes(message.get("bytes") or b"")
        finally:
            pump.cancel()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await http(scope, receive, send)
        elif scope["type"] == "websocket":
            await websocket(scope, receive, send)

    return app


async def build_app(fn: Callable[..., Any], spec: dict[str, Any], pool: ThreadPoolExecutor) -> ASGIApp:
    """The ASGI app for a web function, started and ready to take requests."""
    kind = spec["kind"]
    if kind == "endpoint":
        return _endpoint_app(fn, spec["method"], pool)
    if kind == "fastapi":
        return _fastapi_app(fn, spec["method"], bool(spec.get("docs")))
    if kind == "web_server":
        port = int(spec["port"])
        # The function starts the server (a subprocess, or a thread of its own) and may block.
        failed: list[BaseException] = []

        def start() -> None:
            try:
                fn()
            except BaseException as e:
                failed.append(e)

        threading.Thread(target=start, name="web-server-start", daemon=True).start()
        if not await _port_open(port, float(spec.get("startup_timeout") or 5.0)):
            if failed:
                raise failed[0]
            raise RuntimeError(f"nothing accepted connections on 127.0.0.1:{port} within "
                               f"{spec.get('startup_timeout')} s (web_server startup_timeout)")
        return _proxy_app(port)
    built = fn()
    if inspect.isawaitable(built):
        built = await built
    if kind == "wsgi":
        from a2wsgi import WSGIMiddleware

        return WSGIMiddleware(built, workers=max(1, int(spec.get("max_inputs") or 1)))  # type: ignore[return-value]
    if not callable(built):
        raise TypeError(f"an asgi_app function must return an ASGI app, not {type(built).__name__}")
    return built


class _Lifespan:
    """The app's lifespan (FastAPI and Starlette have one): startup before the first request,
    shutdown when the container stops (SIGTERM from the agent, or its socket closed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._supported = False

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._started, self._stopped = loop.create_future(), loop.create_future()
        self._inbox.put_nowait({"type": "lifespan.startup"})
        self._task = asyncio.create_task(self._run())
        await self._started

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        for done, ok, failed in ((self._started, "lifespan.startup.complete", "lifespan.startup.failed"),
                                 (self._stopped, "lifespan.shutdown.complete", "lifespan.shutdown.failed")):
            if done is None or done.done():
                continue
            if kind == ok:
                self._supported = True
                done.set_result(None)
            elif kind == failed:
                done.set_exception(RuntimeError(f"lifespan {kind.split('.')[1]} failed: {message.get('message', '')}"))

    async def _run(self) -> None:
        try:
            await self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}, self._inbox.get,
                           self._send)
        except Exception:
            pass  # an app without lifespan support raises on the scope: that is allowed
        for done in (self._started, self._stopped):
            if done is not None and not done.done():
                done.set_result(None)

    async def shutdown(self, timeout: float) -> None:
        """Runs the app's shutdown handlers, for at most `timeout` seconds; their failure is
        printed to the container's log."""
        if not self._supported or self._stopped is None or self._stopped.done():
            return
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), timeout)
        except TimeoutError:
            print(f"lifespan shutdown did not finish within {timeout:g} s", file=sys.stderr)
        except Exception as e:
            print(e, file=sys.stderr)


# ---- serving streams -----------------------------------------------------------------------
class Runtime:
    def __init__(self, link: _Link, app: ASGIApp, state: dict[str, Any]) -> None:
        self.link = link
        self.app = app
        self.state = state
        self.streams: dict[int, _Stream] = {}

    def _scope(self, raw: dict[str, Any], kind: str) -> Scope:
        path = raw["path"]
        scheme = raw.get("scheme", "http")
        if kind == "websocket":
            scheme = "wss" if scheme == "https" else "ws"
        scope: Scope = {
            "type": kind, "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "scheme": scheme,
            "path": path, "raw_path": raw.get("raw_path", path).encode("latin-1"),
            "root_path": raw.get("root_path", ""),
            "query_string": raw.get("query", "").encode("latin-1"),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in raw["headers"]],
            "client": tuple(raw["client"]) if raw.get("client") else None, "server": ("127.0.0.1", 80),
            "state": dict(self.state),
        }
        if kind == "http":
            scope["method"] = raw["method"]
        else:
            scope["subprotocols"] = raw.get("subprotocols") or []
        return scope

    def handle(self, header: dict[str, Any], payload: bytes) -> None:
        kind = header["t"]
        sid = header.get("sid")
        if kind == "http_open":
            stream = _Stream(sid, self._scope(header["scope"], "http"))
            stream.inbox.put_nowait({"type": "http.request", "body": payload, "more_body": not header.get("end")})
            self._start(stream, self._serve_http)
        elif kind == "ws_open":
            stream = _Stream(sid, self._scope(header["scope"], "websocket"))
            stream.inbox.put_nowait({"type": "websocket.connect"})
            self._start(stream, self._serve_ws)
        elif (stream := self.streams.get(sid)) is None:  # type: ignore[assignment]
            return
        elif kind == "http_body":
            stream.inbox.put_nowait({"type": "http.request", "body": payload, "more_body": not header.get("end")})
        elif kind == "ws_msg":
            key = "text" if header.get("text") else "bytes"
            value = payload.decode("utf-8") if key == "text" else payload
            stream.inbox.put_nowait({"type": "websocket.receive", key: value})
        elif kind in ("ws_close", "http_reset"):
            stream.gone = True
            stream.inbox.put_nowait({"type": "websocket.disconnect" if kind == "ws_close" else "http.disconnect",
                                     "code": header.get("code", 1000)})
            if kind == "http_reset" and stream.task is not None:
                stream.task.cancel()

    def _start(self, stream: _Stream, serve: Callable[[_Stream], Awaitable[None]]) -> None:
        self.streams[stream.sid] = stream
        stream.task = asyncio.create_task(serve(stream))
        stream.task.add_done_callback(lambda _: self.streams.pop(stream.sid, None))

    async def _serve_http(self, stream: _Stream) -> None:
        sid, link = stream.sid, self.link
        start: Message | None = None
        began = ended = False
        # After the body, the app may wait on receive() for a disconnect: it gets one only if it
        # comes (http_reset), so the inbox simply stays empty until then.

        async def send(message: Message) -> None:
            nonlocal start, began, ended
            if stream.gone or ended:
                return
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                return
            body = bytes(message.get("body", b""))
            more = bool(message.get("more_body"))
            ended = not more
            if start is not None:
                # The start goes out with the first body bytes: one frame for a whole small response.
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", ())]
                link.send({"t": "http_start", "sid": sid, "status": start["status"], "headers": headers,
                           "end": ended}, body)
                start, began = None, True
            else:
                link.send({"t": "http_data", "sid": sid, "end": ended}, body)
            await link.backpressure()

        try:
            await self.app(stream.scope, stream.receive, send)
        except asyncio.CancelledError:
            return  # the client went away
        except Exception as e:
            traceback.print_exc()
            if stream.gone or ended:
                return
            if not began:  # nothing went out yet: a 500 the client can read
                link.send({"t": "http_start", "sid": sid, "status": 500, "end": True,
                           "headers": [("content-type", "application/json")]},
                          _error_body("remote.error", f"{type(e).__name__}: {e}"))
            else:
                link.send({"t": "http_reset", "sid": sid, "message": f"{type(e).__name__}: {e}"})
            return
        if stream.gone or ended:
            return
        if start is not None:  # a start with no body message: an empty response
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", ())]
            link.send({"t": "http_start", "sid": sid, "status": start["status"], "headers": headers, "end": True})
        else:
            link.send({"t": "http_reset", "sid": sid, "message": "the app returned without a complete response"})

    async def _serve_ws(self, stream: _Stream) -> None:
        sid, link = stream.sid, self.link
        closed = False

        async def send(message: Message) -> None:
            nonlocal closed
            if stream.gone or closed:
                return
            kind = message["type"]
            if kind == "websocket.accept":
                link.send({"t": "ws_accept", "sid": sid, "subprotocol": message.get("subprotocol"),
                           "headers": [(k.decode("latin-1"), v.decode("latin-1"))
                                       for k, v in message.get("headers") or ()]})
            elif kind == "websocket.send":
                if message.get("text") is not None:
                    link.send({"t": "ws_msg", "sid": sid, "text": True}, message["text"].encode("utf-8"))
                else:
                    link.send({"t": "ws_msg", "sid": sid, "text": False}, bytes(message.get("bytes") or b""))
                await link.backpressure()
            elif kind == "websocket.close":
                closed = True
                link.send({"t": "ws_close", "sid": sid, "code": message.get("code", 1000),
                           "reason": message.get("reason") or ""})

        code = 1000
        try:
            await self.app(stream.scope, stream.receive, send)
        except asyncio.CancelledError:
            return
        except Exception:
            traceback.print_exc()
            code = 1011
        if not closed and not stream.gone:
            link.send({"t": "ws_close", "sid": sid, "code": code, "reason": ""})

    def refuse_call(self, header: dict[str, Any]) -> None:
        """A `.remote()` that reached a web container (through Function.from_name) fails clearly."""
        import cloudpickle

        message = "a web function is called over HTTP at its get_web_url(), not with .remote()"
        payload = cloudpickle.dumps(("err", TypeError(message), message))
        self.link.send({"t": "result", "job": header["job"], "ok": False,
                        "error": {"code": "remote.error", "message": message}}, payload)


async def _main(sock: socket.socket, leftover: bytes, fn: Callable[..., Any], spec: dict[str, Any],
                outputs: list[Any]) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    link = _Link(writer, loop)
    for out in outputs:
        out.channel = link  # prints become log frames through the loop, in order
    pool = ThreadPoolExecutor(max_workers=max(1, int(spec.get("max_inputs") or 1)), thread_name_prefix="web")
    loop.set_default_executor(pool)
    try:
        app = await build_app(fn, spec, pool)
        lifespan = _Lifespan(app)
        await lifespan.startup()
    except BaseException as e:
        link.send({"t": "load_failed", "error": "".join(traceback.format_exception(e))})
        await writer.drain()
        return
    runtime = Runtime(link, app, lifespan.state)
    link.send({"t": "ready"})
    # SIGTERM (the agent stopping this container: scaledown, redeploy, shutdown) ends the serving
    # loop as a closed socket does; either way the app's lifespan shutdown then runs, within the
    # agent's grace before SIGKILL.
    serving = asyncio.create_task(_read_frames(reader, writer, runtime, leftover))
    loop.add_signal_handler(signal.SIGTERM, serving.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    await _drain(runtime, _DRAIN_S)
    await lifespan.shutdown(_SHUTDOWN_S)
    link.flush()
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _drain(runtime: Runtime, timeout: float) -> None:
    """Lets requests in flight finish, for at most `timeout` seconds."""
    tasks = [s.task for s in runtime.streams.values() if s.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


async def _read_frames(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, runtime: Runtime,
                       leftover: bytes) -> None:
    buffer = leftover
    while True:
        while len(buffer) >= 4 and len(buffer) >= 4 + (size := int.from_bytes(buffer[:4], "big")):
            header, payload = _wire.unpack(buffer[4 : 4 + size])
            buffer = buffer[4 + size :]
            if header["t"] == web_relay.BATCH:
                for frame_header, frame_payload in _wire.unpack_frames(payload):
                    runtime.handle(frame_header, frame_payload)
            elif header["t"] == "run":
                runtime.refuse_call(header)
            else:
                runtime.handle(header, payload)
        chunk = await reader.read(1 << 20)
        if not chunk:
            return
        buffer = buffer + chunk if buffer else chunk
        if writer.transport.get_write_buffer_size() > (8 << 20):
            await writer.drain()  # the agent is slow to read: let it catch up


def serve(sock: socket.socket, leftover: bytes, fn: Callable[..., Any], spec: dict[str, Any],
          outputs: list[Any]) -> None:
    """Serves until the agent closes the socket. Called from `container.main` after the import."""
    try:
        import uvloop
    except ImportError:
        runner: Callable[[Any], Any] = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_main(sock, leftover, fn, spec, outputs))
    sys.stdout.flush()
