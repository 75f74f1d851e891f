"""Apps: the packaging unit. `@app.function`, `@app.local_entrypoint`, `app.run()`, `app.deploy()`."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypedDict, Unpack

from apothic import _bundle, _loop, service
from apothic._client import Client, get_client
from apothic.cls import Cls
from apothic.exception import InvalidError
from apothic.function import Function, validate_options
from apothic.image import Image
from apothic.placement import placements_from_options
from apothic.retries import Retries
from apothic.sandbox import Sandbox

_LOG_DRAIN_S = 2.0


class LocalEntrypoint:
    def __init__(self, raw_f: Callable[..., Any], app: App) -> None:
        self.raw_f = raw_f
        self.app = app
        self.__name__ = raw_f.__name__
        self.__doc__ = raw_f.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)


class ClsOptions(TypedDict, total=False):
    """What `@app.cls` accepts: the options of `@app.function`, but for `name`."""

    image: Image | None
    timeout: float | None
    retries: int | Retries | None
    min_containers: int | None
    max_containers: int | None
    scaledown_window: float | None
    cpu: float | None
    memory: int | None
    gpu: str | list[str] | None
    gpu_count: int | None
    min_vram_gb: float | None
    geolocation: str | list[str] | None
    max_cost_per_hour_usd: float | None
    offer_filters: dict[str, Any] | None
    serialized: bool


class App:
    def __init__(self, name: str | None = None, *, image: Image | None = None) -> None:
        self.name = name
        self.image = image
        self.app_id: str | None = None
        self.registered_functions: dict[str, Function] = {}
        self.registered_classes: dict[str, Cls] = {}
        self.registered_entrypoints: dict[str, LocalEntrypoint] = {}
        self._module: Any = None
        self._printed_revision = 0  # the last log line printed by app.run()

    def __repr__(self) -> str:
        return f"App({self.name!r})"

    def function(
        self,
        _warn_parentheses_missing: Any = None,
        *,
        image: Image | None = None,
        timeout: float | None = None,
        retries: int | Retries | None = None,
        min_containers: int | None = None,
        max_containers: int | None = None,
        scaledown_window: float | None = None,
        cpu: float | None = None,
        memory: int | None = None,
        gpu: str | list[str] | None = None,
        gpu_count: int | None = None,
        min_vram_gb: float | None = None,
        geolocation: str | list[str] | None = None,
        max_cost_per_hour_usd: float | None = None,
        offer_filters: dict[str, Any] | None = None,
        name: str | None = None,
        serialized: bool = False,
    ) -> Callable[[Callable[..., Any]], Function]:
        if _warn_parentheses_missing is not None:
            raise InvalidError("use @app.function() with parentheses")
        if serialized:
            raise InvalidError("serialized=True cannot be honoured yet: functions are imported by module")
        if isinstance(retries, int) and not isinstance(retries, bool):
            retries = Retries(max_retries=retries)
        if retries is not None and not isinstance(retries, Retries):
            raise InvalidError("retries must be an int or apothic.Retries")
        (image or self.image or Image.debian_slim()).check_supported()

        def wrap(raw_f: Callable[..., Any]) -> Function:
            raw_f, web = service.unwrap(raw_f)
            fname = name or raw_f.__name__
            if "<locals>" in raw_f.__qualname__:
                raise InvalidError(f"{fname}: functions must be defined at module level")
            placements = placements_from_options(
                fname, gpu=gpu, gpu_count=gpu_count, min_vram_gb=min_vram_gb, geolocation=geolocation,
                max_cost_per_hour_usd=max_cost_per_hour_usd, offer_filters=offer_filters)
            options = {"timeout": timeout, "retries": retries.wire() if retries else None,
                       "min_containers": min_containers, "max_containers": max_containers,
                       "scaledown_window": scaledown_window, "cpu": cpu, "memory": memory, "gpu": gpu,
                       "placements": [p.spec() for p in placements] or None}
            validate_options(fname, options)
            if web is not None:
                service.check_options(self, fname, web, options)
                options["web"] = web.wire()
            kind = service.WebFunction if web is not None else Function
            fn = kind(raw_f, name=fname, app=self, options={k: v for k, v in options.items() if v is not None})
            fn._qualname = raw_f.__qualname__  # type: ignore[attr-defined]
            self._module = sys.modules.get(raw_f.__module__)
            self.registered_functions[fname] = fn
            return fn

        return wrap

    # ---- web services (service.py): the decorator and @app.function in one step ----------
    def endpoint(self, *, method: str = "GET", label: str | None = None, requires_proxy_auth: bool = False,
                 **function_options: Any) -> Callable[[Callable[..., Any]], Function]:
        return service.stacked(self, service.endpoint(method=method, label=label,
                                                      requires_proxy_auth=requires_proxy_auth), function_options)

    def fastapi_endpoint(self, *, method: str = "GET", label: str | None = None, docs: bool = False,
                         requires_proxy_auth: bool = False, **function_options: Any
                         ) -> Callable[[Callable[..., Any]], Function]:
        return service.stacked(self, service.fastapi_endpoint(method=method, label=label, docs=docs,
                                                              requires_proxy_auth=requires_proxy_auth),
                               function_options)

    def asgi(self, *, label: str | None = None, requires_proxy_auth: bool = False,
             **function_options: Any) -> Callable[[Callable[..., Any]], Function]:
        return service.stacked(self, service.asgi_app(label=label, requires_proxy_auth=requires_proxy_auth),
                               function_options)

    def wsgi_app(self, *, label: str | None = None, requires_proxy_auth: bool = False,
                 **function_options: Any) -> Callable[[Callable[..., Any]], Function]:
        return service.stacked(self, service.wsgi_app(label=label, requires_proxy_auth=requires_proxy_auth),
                               function_options)

    def web_server(self, port: int, *, startup_timeout: float = 5.0, label: str | None = None,
                   requires_proxy_auth: bool = False, **function_options: Any
                   ) -> Callable[[Callable[..., Any]], Function]:
        return service.stacked(self, service.web_server(port, startup_timeout=startup_timeout, label=label,
                                                        requires_proxy_auth=requires_proxy_auth), function_options)

    def cls(self, _warn_parentheses_missing: Any = None, **options: Unpack[ClsOptions]) -> Callable[[type], Cls]:
        """Registers a class (cls.py) with the options of `@app.function` (all but `name`),
        checked by it."""
        if _warn_parentheses_missing is not None:
            raise InvalidError("use @app.cls() with parentheses")
        if "name" in options:
            raise InvalidError("@app.cls() takes no name=: a class is registered under its own name")
        check = self.function(**options)
        return lambda user_cls: Cls._register(self, user_cls, check)

    def sandbox(self, *args: str, name: str | None = None, **options: Any) -> Sandbox:
        """Starts a sandbox of this app: `Sandbox.create(*args, app=self, name=name, ...)`."""
        return Sandbox.create(*args, app=self, name=name, **options)

    def local_entrypoint(self, _warn_parentheses_missing: Any = None, *, name: str | None = None
                         ) -> Callable[[Callable[..., Any]], LocalEntrypoint]:
        if _warn_parentheses_missing is not None:
            raise InvalidError("use @app.local_entrypoint() with parentheses")

        def wrap(raw_f: Callable[..., Any]) -> LocalEntrypoint:
            entry = LocalEntrypoint(raw_f, self)
            self.registered_entrypoints[name or raw_f.__name__] = entry
            if self._module is None:
                self._module = sys.modules.get(raw_f.__module__)
            return entry

        return wrap

    # ---- registration -------------------------------------------------------------------
    async def _register(self, mode: str) -> Client:
        if self._module is None or not (self.registered_functions or self.registered_classes):
            raise InvalidError(f"app {self.name!r} has no functions to run")
        client = await get_client()
        self._mode = mode  # a deployed app's web URLs use its name, an ephemeral one's its id
        digest, data = _bundle.build(self._module)
        exists = await client.json("GET", f"/v1/blobs/{digest}/exists")
        if not exists["exists"]:
            await client.request("PUT", f"/v1/blobs/{digest}", data=data)
        module_name = _bundle.module_name_for(self._module)
        functions = [{"name": n, "module": module_name, "qualname": f._qualname, "options": f.options}  # type: ignore[attr-defined]
                     for n, f in self.registered_functions.items()]
        functions += [c._wire(module_name) for c in self.registered_classes.values()]
        name = self.name or module_name
        created = await client.json("POST", "/v1/apps", json={"name": name, "mode": mode, "bundle_hash": digest,
                                                               "functions": functions})
        self.app_id = created["app_id"]
        for fname, function_id in created["functions"].items():
            registered = self.registered_classes.get(fname) or self.registered_functions[fname]
            registered._function_id = function_id
        return client

    async def _stop(self, client: Client) -> None:
        if self.app_id is not None:
            await client.json("POST", f"/v1/apps/{self.app_id}/stop")
        for fn in self.registered_functions.values():
            fn._function_id = None
        for registered in self.registered_classes.values():
            registered._function_id = None

    @contextlib.contextmanager
    def run(self, *, show_output: bool = True) -> Iterator[App]:
        """Runs an ephemeral app for the duration of the block; prints its remote output."""
        client = _loop.run(self._register("ephemeral"))
        printer = asyncio.run_coroutine_threadsafe(self._print_logs(client), _loop.loop()) if show_output else None
        try:
            yield self
        finally:
            if printer is not None:
                _loop.run(self._drain_logs(client, printer))
            _loop.run(self._stop(client))
            self.app_id = None

    def deploy(self, name: str | None = None) -> App:
        if name:
            self.name = name
        _loop.run(self._register("deployed"))
        return self

    # ---- remote output at the caller's terminal ------------------------------------------
    async def _print_logs(self, client: Client) -> None:
        self._printed_revision = 0
        async for line in client.stream(f"/v1/apps/{self.app_id}/logs", {"after": "0"}):
            stream = sys.stderr if line.get("stream") == "stderr" else sys.stdout
            stream.write(line["text"])
            stream.flush()
            self._printed_revision = line["revision"]

    async def _drain_logs(self, client: Client, printer: Any) -> None:
        """Waits until everything logged so far has been printed (bounded), then stops printing."""
        health = await client.json("GET", "/v1/health")
        target = health["revision"]
        deadline = time.monotonic() + _LOG_DRAIN_S
        while not printer.done() and time.monotonic() < deadline:
            logged = await client.json("GET", f"/v1/apps/{self.app_id}/logs/revision")
            if logged["revision"] == 0 or self._printed_revision >= min(target, logged["revision"]):
                break
            await asyncio.sleep(0.02)
        printer.cancel()
