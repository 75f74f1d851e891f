"""The HTTP client of the control plane's /v1 API. It lives on the SDK's background loop;
aiohttp is imported here, lazily, so that `import apothic` stays cheap inside containers."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any

import orjson

from apothic import _config, _wire
from apothic.exception import AuthError, ConnectionError, Error, error_for

_BATCHED = "apothic.rpc.batched"  # the websocket subprotocol of routes/rpc.py: many frames a message


class _RpcUnavailable(Exception):
    pass


class Client:
    def __init__(self, url: str, key: str | None) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self._session: Any = None
        # Requests go over one multiplexed websocket (/v1/rpc) when the server offers it.
        self._use_rpc = os.environ.get("APOTHIC_TRANSPORT", "websocket") != "http"
        self._ws: Any = None
        self._ws_lock: asyncio.Lock | None = None
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], bytes]]] = {}
        self._next_id = 0
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        # Requests made in one turn of the loop go out in one websocket message (see rpc.py).
        self._outbox: list[bytes] = []
        self._outbox_ready: asyncio.Event | None = None
        self._closer: AsyncIterator[None] | None = None

    def _http(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
            self._session = aiohttp.ClientSession(
                headers=headers, connector=aiohttp.TCPConnector(limit=256),
                timeout=aiohttp.ClientTimeout(total=None, connect=10),
            )
        return self._session

    async def request(
        self, method: str, path: str, *, json: Any = None, data: bytes | None = None,
        params: dict[str, Any] | None = None, ok: tuple[int, ...] = (200, 201, 202),
    ) -> tuple[int, dict[str, str], bytes]:
        import aiohttp

        body = orjson.dumps(json) if json is not None else data
        if self._use_rpc:
            try:
                status, response_headers, payload = await self._rpc(method, path, params, body or b"")
            except _RpcUnavailable:
                self._use_rpc = False
            else:
                if status not in ok:
                    raise self._error(status, payload)
                return status, response_headers, payload
        headers = {"Content-Type": "application/json"} if json is not None else {}
        try:
            async with self._http().request(method, self.url + path, data=body, params=params,
                                            headers=headers) as r:
                payload = await r.read()
                if r.status not in ok:
                    raise self._error(r.status, payload)
                return r.status, dict(r.headers), payload
        except aiohttp.ClientConnectionError as e:
            raise ConnectionError(f"could not reach the Apothic server at {self.url}: {e}") from None

    async def _rpc(self, method: str, path: str, params: dict[str, Any] | None,
                   body: bytes) -> tuple[int, dict[str, str], bytes]:
        await self._socket()
        self._next_id += 1
        request_id = self._next_id
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        query = {k: str(v) for k, v in (params or {}).items()} if params else {}
        try:
            self._outbox.append(_wire.pack_joinable({"id": request_id, "method": method, "path": path,
                                                     "query": query}, body))
            if self._outbox_ready is not None:
                self._outbox_ready.set()
            header, payload = await future
        finally:
            self._pending.pop(request_id, None)
        return header["status"], {"Content-Type": header.get("content_type", "")}, payload

    async def _socket(self) -> Any:
        import aiohttp

        if self._ws is not None and not self._ws.closed:
            return self._ws
        if self._ws_lock is None:
            self._ws_lock = asyncio.Lock()
        async with self._ws_lock:
            if self._ws is not None and not self._ws.closed:
                return self._ws
            try:
                # No per-message deflate: compressing every small frame cost more CPU than any other step.
                self._ws = await self._http().ws_connect(f"{self.url}/v1/rpc", max_msg_size=0, heartbeat=30.0,
                                                         compress=0, protocols=(_BATCHED,))
            except aiohttp.WSServerHandshakeError:
                raise _RpcUnavailable() from None  # e.g. a refused key: HTTP then reports it properly
            except aiohttp.ClientConnectionError as e:
                raise ConnectionError(f"could not reach the Apothic server at {self.url}: {e}") from None
            self._outbox.clear()  # frames for a lost socket: their requests failed with it
            self._outbox_ready = asyncio.Event()
            self._reader = asyncio.create_task(self._read(self._ws, self._outbox_ready))
            self._writer = asyncio.create_task(self._write(self._ws, self._outbox_ready))
            return self._ws

    async def _write(self, ws: Any, ready: asyncio.Event) -> None:
        while True:
            await ready.wait()
            ready.clear()
            if ws.closed:
                return
            if self._outbox and self._ws is ws:
                # A server that did not pick the batched subprotocol (an older one) takes one
                # frame per message.
                messages = [b"".join(self._outbox)] if ws.protocol == _BATCHED else \
                    [frame[4:] for frame in self._outbox]
                self._outbox.clear()
                try:
                    for message in messages:
                        await ws.send_bytes(message)
                except Exception:  # the reader sees the socket close and fails what is pending
                    await ws.close()
                    return

    async def _read(self, ws: Any, ready: asyncio.Event) -> None:
        import aiohttp

        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    continue
                answers = _wire.unpack_frames(msg.data) if ws.protocol == _BATCHED else [_wire.unpack(msg.data)]
                for header, payload in answers:
                    future = self._pending.get(header.get("id"))
                    if future is not None and not future.done():
                        future.set_result((header, payload))
        finally:
            ready.set()  # the writer sees the socket closed and ends
            lost = ConnectionError(f"lost the connection to the Apothic server at {self.url}; "
                                   "requests in flight may or may not have taken effect")
            for future in list(self._pending.values()):
                if not future.done():
                    future.set_exception(lost)

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        _, _, payload = await self.request(method, path, **kwargs)
        return orjson.loads(payload)

    @staticmethod
    def _error(status: int, payload: bytes) -> Error:
        try:
            error = orjson.loads(payload)["error"]
            return error_for(error["code"], error["message"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            if status == 401:
                return AuthError("the server refused the API key")
            return Error(f"HTTP {status}: {payload[:200].decode('utf-8', 'replace')}")

    async def stream(self, path: str, params: dict[str, Any] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Reads an NDJSON stream line by line."""
        import aiohttp

        try:
            async with self._http().get(self.url + path, params=params) as r:
                if r.status != 200:
                    raise self._error(r.status, await r.read())
                async for line in r.content:
                    if line.strip():
                        yield orjson.loads(line)
        except aiohttp.ClientConnectionError as e:
            raise ConnectionError(f"lost the stream from {self.url}: {e}") from None

    async def open_stream(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """An NDJSON response, open, for a caller that reads it line by line and closes it."""
        import aiohttp

        try:
            r = await self._http().get(self.url + path, params=params)
        except aiohttp.ClientConnectionError as e:
            raise ConnectionError(f"could not reach the Apothic server at {self.url}: {e}") from None
        if r.status != 200:
            payload = await r.read()
            r.release()
            raise self._error(r.status, payload)
        return r

    async def close_with_loop(self) -> None:
        """Closes this client when its loop shuts down (asyncio.run's end): the loop closes the
        async generators it has seen first, and this one's `finally` closes the client. Without
        it aiohttp reports an unclosed session when the loop is gone."""

        async def closer() -> AsyncIterator[None]:
            try:
                yield
            finally:
                await self.close()

        self._closer = closer()
        await self._closer.__anext__()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        for task in (self._reader, self._writer):
            if task is not None:
                task.cancel()
        if self._session is not None:
            await self._session.close()


_client: Client | None = None  # the SDK loop's
# Clients of other loops: an `.aio` call of a queue or dict runs on its caller's own loop (see
# _utils/dual.py), over a connection of that loop's own. Each is closed when its loop shuts down.
_loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Client] = weakref.WeakKeyDictionary()
_endpoint: tuple[str, str] | None = None
_endpoint_lock = threading.Lock()


def _close_at_exit() -> None:
    from apothic import _loop

    if _client is not None and _loop._loop is not None and _loop._loop.is_running():
        with contextlib.suppress(Exception):
            _loop.run(_client.close())


atexit.register(_close_at_exit)


def _find_endpoint() -> tuple[str, str]:
    """The server URL and API key for this process: APOTHIC_SERVER_URL, or the embedded server
    (started if needed). Blocking: called on an executor thread, once per process."""
    global _endpoint
    with _endpoint_lock:
        if _endpoint is None:
            url = _config.explicit_server_url()
            if url is None:
                from apothic._embedded import ensure_server

                url = ensure_server()
            key = _config.api_key()
            if key is None:
                raise AuthError("no API key: set APOTHIC_API_KEY or start the embedded server once",
                                code="auth.missing_key")
            _endpoint = (url, key)
        return _endpoint


def swap(state: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
    """Replaces this process's endpoint and clients with `state` (None: none, so the next call
    finds them again) and returns the ones it had. For a process that must talk to another
    control plane for a while, as tests do."""
    global _client, _endpoint
    had = (_endpoint, _client, dict(_loop_clients))
    _endpoint, _client, clients = state if state is not None else (None, None, {})
    _loop_clients.clear()
    _loop_clients.update(clients)
    return had


async def get_client() -> Client:
    """The client of the running loop: the SDK loop's, or one for a caller's own loop."""
    loop = asyncio.get_running_loop()
    client = _loop_clients.get(loop)
    return client if client is not None else await _new_client(loop)


async def _new_client(loop: asyncio.AbstractEventLoop) -> Client:
    global _client
    from apothic import _loop

    url, key = _endpoint or await loop.run_in_executor(None, _find_endpoint)
    client = _loop_clients.get(loop)
    if client is None:
        client = _loop_clients[loop] = Client(url, key)
        if loop is _loop._loop:
            _client = client  # closed at exit (the SDK loop runs until the process ends)
        else:
            await client.close_with_loop()
    return client
