"""Functions and function calls, with Modal's names and semantics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from apothic import _loop, _wire
from apothic._client import Client, get_client
from apothic._serialization import dump_args, load_outcome
from apothic._utils.dual import dual_inline
from apothic.exception import Error, ExecutionError, InvalidError, TimeoutError, error_for
from apothic.job import Job, check_job_id

if TYPE_CHECKING:
    from apothic.app import App

_WAIT_S = 50.0  # one long poll; the server caps it below its own timeouts


async def _result(client: Client, job_id: str, timeout: float | None) -> Any:
    """Waits for a job's outcome (long polls), then returns its value or raises its error."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = _WAIT_S if deadline is None else max(0.0, min(_WAIT_S, deadline - time.monotonic()))
        try:
            _, _, payload = await client.request("GET", f"/v1/jobs/{job_id}/result",
                                                 params={"timeout": f"{left:.3f}"})
        except Error as e:
            if e.code != "job.pending":
                raise
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"call {job_id} did not finish within {timeout} s") from None
            continue
        return load_outcome(payload)


_BATCH = 10_000  # ids per outcomes request, the server's limit


def _settle(header: dict[str, Any], payload: bytes) -> Any:
    """A finished job's value, or its error raised."""
    if payload and header["status"] in ("succeeded", "failed"):
        return load_outcome(payload)
    error = header.get("error") or {"code": "execution.failed", "message": f"job {header['id']} {header['status']}"}
    raise error_for(error["code"], error["message"])


async def _outcomes(client: Client, job_ids: list[str], *, first: bool = False
                    ) -> AsyncIterator[tuple[str, dict[str, Any], bytes]]:
    """Yields (job id, header, payload) as jobs end, asking the server in batches (long polls)."""
    remaining = list(dict.fromkeys(job_ids))
    while remaining:
        chunks = [remaining[i : i + _BATCH] for i in range(0, len(remaining), _BATCH)]
        bodies = await asyncio.gather(*(
            client.request("POST", "/v1/jobs/outcomes", json={"ids": chunk, "timeout": _WAIT_S, "first": first})
            for chunk in chunks))
        done: set[str] = set()
        for _, _, body in bodies:
            offset = 0
            while offset < len(body):
                size = int.from_bytes(body[offset : offset + 4], "big")
                header, payload = _wire.unpack(body[offset + 4 : offset + 4 + size])
                offset += 4 + size
                done.add(header["id"])
                yield header["id"], header, payload
        remaining = [i for i in remaining if i not in done]


async def _values(client: Client, job_ids: list[str], order_outputs: bool = True) -> list[Any]:
    """Each job's value or exception: in the given order, or in the order they ended."""
    settled: dict[str, Any] = {}
    ordered: list[Any] = []
    async for job_id, header, payload in _outcomes(client, job_ids, first=not order_outputs):
        try:
            value: Any = _settle(header, payload)
        except Exception as e:
            value = e
        settled[job_id] = value
        ordered.append(value)
    return [settled[i] for i in job_ids] if order_outputs else ordered


class FunctionCall(Job):
    """A spawned call. `object_id` is its durable job id."""

    @classmethod
    def from_id(cls, function_call_id: str) -> FunctionCall:
        return cls(check_job_id(function_call_id))

    def __repr__(self) -> str:
        return f"FunctionCall({self.object_id!r})"

    @dual_inline
    async def get(self, timeout: float | None = None) -> Any:
        return await _result(await get_client(), self.object_id, timeout)

    @dual_inline
    async def cancel(self, terminate_containers: bool = False) -> None:
        client = await get_client()
        await client.json("POST", f"/v1/jobs/{self.object_id}/cancel")

    @dual_inline
    async def gather(cls, *calls: FunctionCall) -> list[Any]:
        """Every call's value, in order; the first failure (in order) is raised."""
        values = await _values(await get_client(), [c.object_id for c in calls])
        for value in values:
            if isinstance(value, BaseException):
                raise value
        return values


class _MapMethod:
    """`f.map(...)` returns an iterator; `f.map.aio(...)` an async iterator."""

    def __init__(self, function: Function, star: bool) -> None:
        self._function = function
        self._star = star

    def _inputs(self, iterables: tuple[Iterable[Any], ...], kwargs: dict[str, Any]) -> list[tuple[tuple, dict]]:
        if self._star:
            [iterable] = iterables
            return [(tuple(args), kwargs) for args in iterable]
        return [(tuple(args), kwargs) for args in zip(*iterables, strict=False)]

    def __call__(self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None,
                 order_outputs: bool = True, return_exceptions: bool = False) -> Iterator[Any]:
        inputs = self._inputs(iterables, kwargs or {})
        results = _loop.run(self._function._map(inputs, return_exceptions, order_outputs))
        yield from results

    async def aio(self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None,
                  order_outputs: bool = True, return_exceptions: bool = False) -> AsyncIterator[Any]:
        inputs = self._inputs(iterables, kwargs or {})
        for value in await _loop.run_async(self._function._map(inputs, return_exceptions, order_outputs)):
            yield value


class Function:
    """A remote function. Build one with `@app.function(...)`, or `Function.from_name(...)`."""

    def __init__(self, raw_f: Callable[..., Any] | None, *, name: str, app: App | None = None,
                 options: dict[str, Any] | None = None, app_name: str | None = None) -> None:
        self._raw_f = raw_f
        self._name = name
        self._app = app
        self._app_name = app_name
        self.options = options or {}
        self._function_id: str | None = None
        self.map = _MapMethod(self, star=False)
        self.starmap = _MapMethod(self, star=True)

    def __repr__(self) -> str:
        return f"Function({self._name!r}, id={self._function_id!r})"

    @property
    def object_id(self) -> str | None:
        return self._function_id

    @classmethod
    def from_name(cls, app_name: str, name: str) -> Function:
        """A deployed function, looked up by name on first use."""
        return cls(None, name=name, app_name=app_name)

    def get_raw_f(self) -> Callable[..., Any]:
        if self._raw_f is None:
            raise ExecutionError(f"{self._name} was looked up by name: it has no local body")
        return self._raw_f

    def get_web_url(self) -> str:
        """The stable URL of a web function, also one looked up with `Function.from_name`
        (a function that is not a web function raises InvalidError)."""
        from apothic.service import web_url_of

        return _loop.run(web_url_of(self))

    def local(self, *args: Any, **kwargs: Any) -> Any:
        return self.get_raw_f()(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.local(*args, **kwargs)

    def _dump(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """One call's payload (a class method's call puts its method name in front: cls.py)."""
        return dump_args(self._name, args, kwargs)

    async def _hydrate(self) -> tuple[Client, str]:
        client = await get_client()
        if self._function_id is None:
            if self._app_name is None:
                raise ExecutionError(
                    f"function {self._name} is not running: call it inside `with app.run():`, from "
                    "`apothic run`, or deploy its app and use Function.from_name")
            found = await client.json("GET", "/v1/functions/lookup", params={"app": self._app_name,
                                                                              "name": self._name})
            self._function_id = found["function_id"]
        return client, self._function_id

    @dual_inline
    async def remote(self, *args: Any, **kwargs: Any) -> Any:
        payload = self._dump(args, kwargs)
        client, function_id = await self._hydrate()
        status, _, body = await client.request(
            "POST", f"/v1/functions/{function_id}/calls", data=payload, params={"wait": str(_WAIT_S)})
        if status == 200:
            return load_outcome(body)
        import orjson

        return await _result(client, orjson.loads(body)["job_id"], None)

    @dual_inline
    async def spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        payload = self._dump(args, kwargs)
        client, function_id = await self._hydrate()
        found = await client.json("POST", f"/v1/functions/{function_id}/calls", data=payload)
        return FunctionCall(found["job_id"])

    async def _spawn_many(self, inputs: list[tuple[tuple, dict]]) -> list[str]:
        if not inputs:
            return []
        client, function_id = await self._hydrate()
        parts = []
        for args, kwargs in inputs:
            payload = self._dump(args, kwargs)
            parts.append(len(payload).to_bytes(4, "big") + payload)
        found = await client.json("POST", f"/v1/functions/{function_id}/calls:batch", data=b"".join(parts))
        return found["job_ids"]

    async def _map(self, inputs: list[tuple[tuple, dict]], return_exceptions: bool,
                   order_outputs: bool = True) -> list[Any]:
        """Every input's outcome: in input order, or in the order the calls finished."""
        client = await get_client()
        results = await _values(client, await self._spawn_many(inputs), order_outputs)
        if not return_exceptions:
            for value in results:
                if isinstance(value, BaseException):
                    raise value
        return results

    @dual_inline
    async def spawn_map(self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None) -> list[FunctionCall]:
        inputs = [(tuple(args), kwargs or {}) for args in zip(*iterables, strict=False)]
        return [FunctionCall(i) for i in await self._spawn_many(inputs)]


def validate_options(name: str, options: dict[str, Any]) -> None:
    """Fails at decoration time for an option that cannot be honoured."""
    for key in ("min_containers", "max_containers"):
        value = options.get(key)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise InvalidError(f"{name}: {key} must be a non-negative integer")
    if options.get("max_containers") == 0:
        raise InvalidError(f"{name}: max_containers must be at least 1")
    if (options.get("min_containers") or 0) > (options.get("max_containers") or 1 << 30):
        raise InvalidError(f"{name}: min_containers cannot exceed max_containers")
    timeout = options.get("timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise InvalidError(f"{name}: timeout must be a positive number of seconds")
