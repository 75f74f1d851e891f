"""The HTTP client of the control plane's /v1 API. It lives on the SDK's background loop;
aiohttp is imported here, lazily, so that `import apothic` stays cheap inside containers."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from apothic import _config
from apothic.exception import AuthError, ConnectionError, Error, error_for


class Client:
    def __init__(self, url: str, key: str | None) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self._session: Any = None

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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


_client: Client | None = None


def _close_at_exit() -> None:
    from apothic import _loop

    if _client is not None and _loop._loop is not None and _loop._loop.is_running():
        with contextlib.suppress(Exception):
            _loop.run(_client.close())


atexit.register(_close_at_exit)
_lock = asyncio.Lock()


async def get_client() -> Client:
    """The client for this process: APOTHIC_SERVER_URL, or the embedded server (started if needed)."""
    global _client
    async with _lock:
        if _client is None:
            url = _config.explicit_server_url()
            if url is None:
                from apothic._embedded import ensure_server

                url = await asyncio.get_running_loop().run_in_executor(None, ensure_server)
            key = _config.api_key()
            if key is None:
                raise AuthError("no API key: set APOTHIC_API_KEY or start the embedded server once",
                                code="auth.missing_key")
            _client = Client(url, key)
        return _client
