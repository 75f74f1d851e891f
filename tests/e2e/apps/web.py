"""Web services the end-to-end tests call over real HTTP: one of each kind."""

import asyncio
import os
import threading
import time

import apothic

app = apothic.App("e2e-web")

WEB_SERVER_PORT = int(os.environ.get("APOTHIC_TEST_WEB_PORT", "18391"))


@app.endpoint(method="GET")
def hello(name: str = "world", times: str = "1"):
    return {"greeting": f"hello {name}", "times": int(times), "pid": os.getpid()}


@app.endpoint(method="POST", label="sum")
def add_numbers(a: int, b: int):
    print(f"adding {a} and {b}")
    return {"sum": a + b}


@app.endpoint(method="GET", timeout=2)
def slow(seconds: str = "10"):
    time.sleep(float(seconds))
    return {"slept": seconds}


@app.endpoint(scaledown_window=1)
def brief():
    return {"pid": os.getpid()}


@app.endpoint(method="GET")
def crash():
    """Kills its own container mid-request: the caller must get a 502."""
    os.kill(os.getpid(), 9)


@app.function()
@apothic.fastapi_endpoint(method="POST")
def square(item: dict):
    return {"square": item["x"] ** 2}


def _streaming_app():
    from fastapi import FastAPI, Request, WebSocket
    from fastapi.responses import StreamingResponse

    api = FastAPI()

    @api.get("/stream")
    async def stream(n: int = 5):
        async def events():
            for i in range(n):
                yield f"data: {i}\n\n"
                await asyncio.sleep(0.05)

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.get("/forever")
    async def forever(marker: str):
        """Streams until the client goes away; then leaves a marker saying it was stopped."""

        async def events():
            try:
                while True:
                    yield b"data: tick\n\n"
                    await asyncio.sleep(0.05)
            except BaseException:
                with open(marker, "w") as f:
                    f.write("stopped")
                raise

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.post("/echo")
    async def echo(request: Request):
        size, head = 0, b""
        async for chunk in request.stream():
            size += len(chunk)
            head = head or chunk[:8]
        return {"bytes": size, "head": head.decode()}

    @api.websocket("/ws")
    async def ws(socket: WebSocket):
        await socket.accept()
        while True:
            text = await socket.receive_text()
            if text == "bye":
                await socket.close(code=1000)
                return
            await socket.send_text(f"echo {text}")

    @api.websocket("/refuse")
    async def refuse(socket: WebSocket):
        await socket.close(code=1008)  # before accepting: the handshake is refused

    @api.get("/where/{name}")
    async def where(request: Request, name: str):
        return {"url": str(request.url_for("where", name=name)), "root_path": request.scope["root_path"]}

    @api.get("/wait")
    async def wait(seconds: float = 1.0):
        started = time.time()
        await asyncio.sleep(seconds)
        return {"pid": os.getpid(), "started": started, "ended": time.time()}

    return api


@app.function(min_containers=0, scaledown_window=30)
@apothic.concurrent(max_inputs=4)
@apothic.asgi_app()
def streaming():
    return _streaming_app()


def _lifespan_marker() -> str:
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"apothic-lifespan-{os.getpid()}.log")


@app.function(scaledown_window=1)
@apothic.asgi_app()
def with_lifespan():
    """Writes to a marker file at lifespan startup and, after an await, at shutdown."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(api):
        with open(_lifespan_marker(), "a") as f:
            f.write("startup\n")
        yield
        await asyncio.sleep(0.1)
        with open(_lifespan_marker(), "a") as f:
            f.write("shutdown\n")

    api = FastAPI(lifespan=lifespan)

    @api.get("/marker")
    async def marker():
        return {"path": _lifespan_marker()}

    return api


@app.function()
@apothic.wsgi_app()
def classic():
    def wsgi(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        text = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {environ['QUERY_STRING']} {body.decode()}"
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Kind", "wsgi")])
        return [text.encode()]

    return wsgi


@app.function()
@apothic.web_server(WEB_SERVER_PORT, startup_timeout=20)
def plain_server():
    """A plain HTTP server of the standard library, in a thread of the container (so it ends with it)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"{self.path} from {os.getpid()}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", WEB_SERVER_PORT), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


@app.asgi(requires_proxy_auth=True)
def private():
    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            return
        seen = sorted(k.decode() for k, _ in scope["headers"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": ",".join(seen).encode()})

    return asgi


@app.function()
@apothic.asgi_app()
def broken():
    raise RuntimeError("this app cannot start")


deployed = apothic.App("e2e-web-deployed")


@deployed.endpoint(label="ping")
def deployed_ping():
    return {"pong": True, "pid": os.getpid()}
