"""Web ingress: which function a URL names, which container serves a request, and the streams
of proxied requests that ride the worker sessions.

A web function's containers come from the scheduler like any other's (min_containers are kept,
idle ones stop after scaledown_window), but requests never touch the function queue: each
request takes a slot on a ready container (at most `max_inputs` at once), starting a container
when none has room (a cold start) and waiting, within the function's timeout, for one to be
ready. Each request is one stream of the worker's session (apothic-session), opened here with
the container named in its headers; its frames (`http_*`, `ws_*`, each a `_wire` frame behind a
u32 length) go both ways on that stream. The stream's own flow control is the backpressure: a
response is read from the stream only as fast as the HTTP client takes it, so a slow client
stalls its own stream and nothing else. Ending a request early RESETs its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from apothic import _ids
from apothic._bridge.session import WEB_HEADERS, SessionChannel, SessionStream
from apothic.control.auth import Auth
from apothic.control.model import Container, FunctionRuntime
from apothic.control.scheduler import Scheduler
from apothic.control.store import Store
from apothic.exception import AuthError, Error, NotFoundError, WebTimeoutError, WebUpstreamError, error_for

Frame = tuple[dict[str, Any], bytes]
_WAKE_S = 0.5  # a waiting request looks again this often even if nothing told it to
# Frames after which the container has nothing more to say on a stream.
_FINAL = frozenset({"http_reset", "ws_close"})


@dataclass(slots=True, eq=False)
class Stream:
    container: Container
    worker_id: str
    wire: SessionStream
    finished: bool = False  # both sides said their last word: close quietly rather than reset
    dropped: str | None = None  # why the control plane ended it (its container stopped)


def _reset(stream: Stream) -> None:
    with contextlib.suppress(Error):  # the session itself ended: nothing to tell
        stream.wire.reset()


def web_spec(fn: FunctionRuntime) -> dict[str, Any]:
    return fn.spec.options.get("web") or {}


class WebService:
    def __init__(self, scheduler: Scheduler, store: Store, auth: Auth) -> None:
        self.scheduler = scheduler
        self.store = store
        self.auth = auth
        self.routes: dict[tuple[str, str], str] = {}  # (app name or id, label) -> function id
        self.channels: dict[str, SessionChannel] = {}  # worker id -> its session
        self.by_container: dict[str, set[Stream]] = {}
        self.waiting: dict[str, int] = {}  # function id -> requests waiting for a slot
        self.changed: dict[str, asyncio.Event] = {}  # function id -> set when a slot may have opened
        self.failures: dict[str, tuple[float, str]] = {}  # function id -> (when, why its container failed)
        scheduler.container_listeners.append(self._on_container)

    # ---- which function ---------------------------------------------------------------------
    async def resolve(self, app_ref: str, label: str) -> FunctionRuntime:
        """The live web function at /web/{app_ref}/{label}/: an ephemeral app by its id, a
        deployed app by its name (the newest deployment answers after a redeploy)."""
        cached = self.routes.get((app_ref, label))
        fn = self.scheduler.functions.get(cached) if cached else None
        if fn is not None and fn.live:
            return fn
        if _ids.is_valid("app", app_ref):
            app_ids = {app_ref}
        else:
            app_ids = {a["id"] for a in await self.store.live_apps()
                       if a.get("name") == app_ref and a.get("state") == "deployed"}
        for candidate in self.scheduler.functions.values():
            web = web_spec(candidate)
            if candidate.spec.app_id in app_ids and web and (web.get("label") or candidate.spec.name) == label:
                self.routes[(app_ref, label)] = candidate.spec.id
                return candidate
        raise NotFoundError(f"no web function {label!r} in a running app {app_ref!r}", code="web.not_found")

    async def authorize(self, fn: FunctionRuntime, key: str | None) -> None:
        """Proxy auth: an endpoint with requires_proxy_auth wants an API key of its own account."""
        if not web_spec(fn).get("requires_proxy_auth"):
            return
        if not key:
            raise AuthError("this endpoint requires proxy auth: send 'Apothic-Key: <api key>'",
                            code="auth.missing_key")
        principal = await self.auth.authenticate(f"Bearer {key}", kind="user")
        if principal.account != fn.spec.account:
            raise AuthError("invalid API key")

    # ---- which container --------------------------------------------------------------------
    def _pick(self, fn: FunctionRuntime, limit: int) -> Container | None:
        best: Container | None = None
        for ct in fn.containers.values():
            if ct.state == "ready" and ct.streams < limit and (best is None or ct.streams < best.streams):
                best = ct
        return best

    def _may_start(self, fn: FunctionRuntime) -> bool:
        # A web_server listens on a fixed port of its host: two containers there would collide.
        cap = 1 if web_spec(fn).get("kind") == "web_server" else fn.spec.max_containers
        return len(fn.containers) < cap

    async def acquire(self, function_id: str, deadline: float) -> Container:
        """A slot on a ready container of the function, starting containers as needed."""
        since = time.monotonic()
        self.waiting[function_id] = self.waiting.get(function_id, 0) + 1
        try:
            while True:
                fn = self.scheduler.functions.get(function_id)
                if fn is None or not fn.live:
                    raise NotFoundError("the web function's app was stopped", code="web.not_found")
                web = web_spec(fn)
                limit = int(web.get("max_inputs") or 1)
                target = int(web.get("target_inputs") or limit)
                ct = self._pick(fn, limit)
                if ct is not None:
                    ct.streams += 1
                    if ct.streams >= target and not fn.count("starting") and self._may_start(fn):
                        self.scheduler.start_container_for(function_id)  # ahead of the next request
                    return ct
                failed = self.failures.get(function_id)
                if failed is not None and failed[0] >= since:
                    raise WebUpstreamError(f"{fn.spec.name}: its container failed to start: {failed[1]}")
                found_nothing = self.scheduler.no_match.get(function_id)  # a search for capacity failed
                if found_nothing is not None and found_nothing[0] >= since:
                    raise error_for(found_nothing[1].code, f"{fn.spec.name}: {found_nothing[1].message}")
                if self.waiting[function_id] > fn.count("starting") * limit and self._may_start(fn):
                    self.scheduler.start_container_for(function_id)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WebTimeoutError(f"{fn.spec.name}: no container was ready within its "
                                          f"{fn.spec.timeout_s:g} s timeout")
                event = self.changed.setdefault(function_id, asyncio.Event())
                try:
                    await asyncio.wait_for(event.wait(), min(left, _WAKE_S))
                except TimeoutError:
                    pass
        finally:
            self.waiting[function_id] -= 1

    def release(self, ct: Container) -> None:
        ct.streams = max(0, ct.streams - 1)
        if ct.streams == 0:
            ct.idle_since = time.monotonic()  # the scaledown window runs from the last request
        self._wake(ct.function_id)

    def _wake(self, function_id: str) -> None:
        event = self.changed.pop(function_id, None)
        if event is not None:
            event.set()

    def _on_container(self, event: str, ct: Container, message: str) -> None:
        if event == "failed":
            self.failures[ct.function_id] = (time.monotonic(), message.strip().splitlines()[-1] if message else "")
        elif event == "dropped":
            for stream in self.by_container.pop(ct.id, set()):
                stream.dropped = f"container {ct.id} stopped"
                _reset(stream)  # its reader wakes with the reason
        self._wake(ct.function_id)

    # ---- sessions and streams ----------------------------------------------------------------
    def attach(self, worker_id: str, channel: SessionChannel) -> None:
        self.channels[worker_id] = channel

    def detach(self, worker_id: str, channel: SessionChannel) -> None:
        if self.channels.get(worker_id) is channel:  # not a newer session of the same worker
            del self.channels[worker_id]

    def open(self, ct: Container) -> Stream:
        channel = self.channels.get(ct.worker_id)
        if channel is None or channel.closed:
            raise WebUpstreamError(f"the worker serving container {ct.id} is gone")
        try:
            wire = channel.open(WEB_HEADERS + ct.id.encode())
        except Error as e:
            raise WebUpstreamError(f"the worker serving container {ct.id} is gone: {e.message}") from None
        stream = Stream(container=ct, worker_id=ct.worker_id, wire=wire)
        self.by_container.setdefault(ct.id, set()).add(stream)
        return stream

    def close(self, stream: Stream) -> None:
        """The request is over: a stream whose exchange finished closes; any other is RESET, which
        tells the container to stop the app's work on it."""
        streams = self.by_container.get(stream.container.id)
        if streams is not None:
            streams.discard(stream)
        if stream.finished:
            with contextlib.suppress(Error):
                stream.wire.close()
        else:
            _reset(stream)

    def send(self, stream: Stream, header: dict[str, Any], payload: bytes = b"") -> bool:
        """A frame to the stream's container; False when the stream or its worker is gone."""
        header["sid"] = stream.wire.id  # the agent passes frames through to the container as they are
        try:
            stream.wire.write_frame(header, payload)
        except Error:
            return False
        if header["t"] == "ws_close":
            stream.finished = True  # a goodbye: it must not be dropped by a reset
        return True

    async def drain(self, stream: Stream) -> None:
        """Waits while the stream's window is full (a request body the app reads slowly)."""
        await stream.wire.drain()

    async def receive(self, stream: Stream, deadline: float | None = None) -> Frame:
        """The next frame from the container; an `http_reset` frame (with a message) when the
        stream ended without one; TimeoutError once `deadline` (time.monotonic()) passes."""
        try:
            frame = await stream.wire.read_frame(None if deadline is None else deadline - time.monotonic())
        except Error as e:
            stream.finished = True  # nothing more will come; closing or resetting changes nothing
            message = stream.dropped or f"the worker's session ended the stream ({e.message})"
            return {"t": "http_reset", "message": message}, b""
        if frame is None:
            stream.finished = True
            return {"t": "http_reset", "message": "the container broke off the request"}, b""
        header = frame[0]
        kind = header["t"]
        if kind in _FINAL or (header.get("end") and kind in ("http_start", "http_data")):
            stream.finished = True
        return frame
