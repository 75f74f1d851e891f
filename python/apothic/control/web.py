"""Web ingress: which function a URL names, which container serves a request, and the streams
of proxied requests that ride the worker sessions.

A web function's containers come from the scheduler like any other's (min_containers are kept,
idle ones stop after scaledown_window), but requests never touch the function queue: each
request takes a slot on a ready container (at most `max_inputs` at once), starting a container
when none has room (a cold start) and waiting, within the function's timeout, for one to be
ready. Each request is one stream with an id chosen here; its frames (`http_*`, `ws_*`) go to
the container's worker with the container named, and come back from it carrying the id.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any

from apothic import _ids, _wire
from apothic._worker import web_relay
from apothic.control.auth import Auth
from apothic.control.model import Container, FunctionRuntime
from apothic.control.scheduler import Scheduler
from apothic.control.store import Store
from apothic.exception import AuthError, InvalidError, NotFoundError, WebTimeoutError, WebUpstreamError

Frame = tuple[dict[str, Any], bytes]
_WAKE_S = 0.5  # a waiting request looks again this often even if nothing told it to


class Inbox:
    """A stream's frames from its container, in order, for its one reader. Lighter than an
    asyncio.Queue and its timeout wrappers, which showed per request in the profile."""

    __slots__ = ("frames", "waiter")

    def __init__(self) -> None:
        self.frames: collections.deque[Frame] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None

    def put(self, frame: Frame) -> None:
        self.frames.append(frame)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self, deadline: float | None = None) -> Frame:
        """The next frame; TimeoutError once `deadline` (time.monotonic()) passes first."""
        while not self.frames:
            loop = asyncio.get_running_loop()
            self.waiter = waiter = loop.create_future()
            expiry = None if deadline is None else loop.call_later(max(0.0, deadline - time.monotonic()),
                                                                   _expire, waiter)
            try:
                await waiter
            finally:
                self.waiter = None
                if expiry is not None:
                    expiry.cancel()
        return self.frames.popleft()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


@dataclass(slots=True, eq=False)
class Stream:
    sid: int
    container: Container
    worker_id: str
    inbox: Inbox = field(default_factory=Inbox)


def web_spec(fn: FunctionRuntime) -> dict[str, Any]:
    return fn.spec.options.get("web") or {}


class WebService:
    def __init__(self, scheduler: Scheduler, store: Store, auth: Auth) -> None:
        self.scheduler = scheduler
        self.store = store
        self.auth = auth
        self.routes: dict[tuple[str, str], str] = {}  # (app name or id, label) -> function id
        self.streams: dict[int, Stream] = {}
        self.by_container: dict[str, set[int]] = {}
        self.waiting: dict[str, int] = {}  # function id -> requests waiting for a slot
        self.changed: dict[str, asyncio.Event] = {}  # function id -> set when a slot may have opened
        self.failures: dict[str, tuple[float, str]] = {}  # function id -> (when, why its container failed)
        self._last_sid = 0
        self._outgoing: dict[str, list[Frame]] = {}  # container id -> frames to send this loop turn
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
                reason = self.scheduler.unplaceable_reason(fn)
                if reason is not None:
                    raise InvalidError(f"{fn.spec.name}: {reason}", code="placement.no_match")
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
            for sid in self.by_container.pop(ct.id, set()):
                stream = self.streams.get(sid)
                if stream is not None:
                    stream.inbox.put(({"t": "http_reset", "sid": sid,
                                              "message": f"container {ct.id} stopped"}, b""))
        self._wake(ct.function_id)

    # ---- streams ----------------------------------------------------------------------------
    def open(self, ct: Container) -> Stream:
        self._last_sid += 1
        stream = Stream(sid=self._last_sid, container=ct, worker_id=ct.worker_id)
        self.streams[stream.sid] = stream
        self.by_container.setdefault(ct.id, set()).add(stream.sid)
        return stream

    def close(self, stream: Stream) -> None:
        self.streams.pop(stream.sid, None)
        sids = self.by_container.get(stream.container.id)
        if sids is not None:
            sids.discard(stream.sid)

    def send(self, stream: Stream, header: dict[str, Any], payload: bytes = b"") -> bool:
        """A frame to the stream's container; False when its worker is gone."""
        worker = self.scheduler.workers.get(stream.worker_id)
        if worker is None:
            return False
        header["sid"] = stream.sid
        pending = self._outgoing.get(stream.container.id)
        if pending is None:
            pending = self._outgoing[stream.container.id] = []
            asyncio.get_running_loop().call_soon(self._flush, stream.container, stream.worker_id)
        pending.append((header, payload))
        return True

    def _flush(self, ct: Container, worker_id: str) -> None:
        """This turn's frames for a container leave as one (a batch when there are several)."""
        frames = self._outgoing.pop(ct.id, None)
        worker = self.scheduler.workers.get(worker_id)
        if not frames or worker is None:
            return  # a worker that is gone has its streams reset by the container's drop
        if len(frames) == 1:
            header, payload = frames[0]
            header["container"] = ct.id
            worker.send(header, payload)
        else:
            worker.send({"t": web_relay.BATCH, "container": ct.id},
                        web_relay.pack_batch([_wire.pack(h, p) for h, p in frames]))

    def on_frame(self, worker_id: str, header: dict[str, Any], payload: bytes) -> None:
        """A frame from a worker's session: to the stream it names, if that worker and container
        serve it (user code in one container cannot answer another container's requests)."""
        if header["t"] == web_relay.BATCH:
            container = header.get("container")  # stamped by the agent, never by the container
            for frame in web_relay.unpack_batch(payload):
                inner, body = _wire.unpack(frame)
                inner["container"] = container
                self._deliver(worker_id, inner, body)
        else:
            self._deliver(worker_id, header, payload)

    def _deliver(self, worker_id: str, header: dict[str, Any], payload: bytes) -> None:
        stream = self.streams.get(header.get("sid", 0))
        if stream is not None and stream.worker_id == worker_id and stream.container.id == header.get("container"):
            stream.inbox.put((header, payload))
