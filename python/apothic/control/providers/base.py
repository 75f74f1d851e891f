"""The one interface every capacity provider implements, and what the rented ones share.

A provider searches offers (normalized rows, held in the Rust offer table), rents one by
creating an instance whose start script runs the worker agent with a one-time join token,
destroys instances, and lists the instances this control plane started (by label), so that a
restart can reconcile them. Provider errors become one-line `ProviderError`s: code
`provider.unavailable` when the provider could not answer (network, 5xx, 429), and
`provider.rejected` when it answered no (bad key, offer gone, invalid request).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import aiohttp
import orjson

from apothic._bridge.placement import OfferTable
from apothic.exception import InvalidError, ProviderError

LABEL_PREFIX = "apothic:"
# The start script a rented host runs: worker/bootstrap.sh, sent verbatim. It installs apothic
# only when it is not importable, then starts the agent with the join token from its environment.
_BOOTSTRAP = Path(__file__).resolve().parents[4] / "worker" / "bootstrap.sh"
_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)


@runtime_checkable
class Provider(Protocol):
    name: str
    # Whether `rent` can add capacity. `local` cannot: its own loop keeps agents on this host.
    rentable: bool

    async def search(self, spec: dict[str, Any], limit: int = 64) -> OfferTable:
        """Offers that pass `spec`'s compiled filter, re-checked here, best first."""
        ...

    async def catalog(self, limit: int = 256) -> OfferTable:
        """The cheapest part of the market with no requirement, for explaining near misses."""
        ...

    async def rent(self, offer: dict[str, Any], *, server_url: str, join_token: str, label: str) -> str:
        """Creates an instance from `offer` whose agent joins with `join_token`; its id."""
        ...

    async def destroy(self, instance_id: str) -> None:
        """Destroys an instance; one that is already gone counts as destroyed."""
        ...

    async def instances(self, label_prefix: str) -> list[dict[str, Any]]:
        """Instances whose label starts with `label_prefix`: `{"id", "label", "state"}`."""
        ...

    async def close(self) -> None: ...


def label_for(server_id: str, rental_id: str) -> str:
    """An instance's label: the control plane that rented it, and which rental it is, so that a
    restart can tell its own instances from another control plane's, and adopt or destroy them."""
    return f"{LABEL_PREFIX}{server_id}/{rental_id}"


def rental_of(label: str, server_id: str) -> str | None:
    prefix = f"{LABEL_PREFIX}{server_id}/"
    return label[len(prefix):] if label.startswith(prefix) else None


def start_script() -> str:
    path = Path(os.environ.get("APOTHIC_WORKER_SCRIPT") or _BOOTSTRAP)
    try:
        return path.read_text()
    except OSError as e:
        raise InvalidError(f"cannot read the worker start script {path}: {e.strerror}; "
                           "set APOTHIC_WORKER_SCRIPT to worker/bootstrap.sh") from None


def agent_env(*, server_url: str, join_token: str, provider: str) -> dict[str, str]:
    """What the start script reads from the instance's environment."""
    env = {"APOTHIC_SERVER_URL": server_url, "APOTHIC_WORKER_TOKEN": join_token, "APOTHIC_PROVIDER": provider}
    package = os.environ.get("APOTHIC_WORKER_PACKAGE")
    if package:
        env["APOTHIC_PACKAGE"] = package
    return env


class HttpProvider:
    """The HTTP plumbing of a rented provider: one session, bearer auth, errors as codes."""

    name = "http"

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._token}"}, timeout=_TIMEOUT,
                json_serialize=lambda v: orjson.dumps(v).decode(),
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def send(self, method: str, path: str, what: str, *, json: Any = None,
                   params: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One request: its status and raw body; a network failure is `provider.unavailable`."""
        try:
            async with self._session().request(method, self.base_url + path, json=json, params=params) as r:
                return r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise ProviderError(f"{self.name}: {what} failed: {type(e).__name__}: {e or 'no answer'}",
                                code="provider.unavailable") from None

    async def request(self, method: str, path: str, what: str, *, json: Any = None,
                      params: dict[str, str] | None = None, ok_errors: tuple[str, ...] = ()) -> Any:
        """Sends one request; returns the decoded JSON body, or raises a one-line ProviderError.
        `ok_errors` are provider error names that count as success (e.g. destroying an instance
        that is already gone)."""
        status, body = await self.send(method, path, what, json=json, params=params)
        return self.decode(status, body, what, ok_errors)

    def decode(self, status: int, body: bytes, what: str, ok_errors: tuple[str, ...] = ()) -> Any:
        data: Any = None
        if body:
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                data = None
        error_name, message = self.error_of(data)
        if error_name and error_name in ok_errors:
            return data
        if status == 429 or status >= 500:
            raise ProviderError(f"{self.name}: {what} failed: HTTP {status}{_detail(message, body)}",
                                code="provider.unavailable")
        if status in (401, 403):
            raise ProviderError(f"{self.name}: {what} refused: the API key was not accepted (HTTP {status})"
                                f"{_detail(message, None)}", code="provider.rejected")
        if status >= 400 or error_name:
            raise ProviderError(f"{self.name}: {what} rejected: HTTP {status}{_detail(message, body)}",
                                code="provider.rejected")
        if data is None and body:
            raise ProviderError(f"{self.name}: {what} answered with something that is not JSON",
                                code="provider.unavailable")
        return data

    def error_of(self, data: Any) -> tuple[str | None, str]:
        """The provider's error name and message from a response body, if it carries one."""
        if isinstance(data, dict) and data.get("error"):
            return str(data["error"]), str(data.get("msg") or data.get("message") or data["error"])
        return None, ""


def _detail(message: str, body: bytes | None) -> str:
    text = message or (body or b"").decode("utf-8", "replace")
    text = " ".join(text.split())[:200]
    return f" ({text})" if text else ""
