"""Web services: functions that answer HTTP at a stable URL on the control plane.

Modal's decorators, stacked under `@app.function(...)`:

    @app.function()
    @apothic.concurrent(max_inputs=10)
    @apothic.asgi_app()
    def web(): return fastapi_app

and the seed's one-step forms on the app (`@app.endpoint()`, `@app.asgi()`, ...), which take the
same function options. A marker decorator wraps the raw function in `_WebPartial`; `@app.function`
unwraps it into a `WebFunction` and ships the web spec with the function's options, and the
container (`apothic._worker.web_runtime`) reads the same spec off the raw function it imports.

Web URLs are public, like Modal's. `requires_proxy_auth=True` makes the control plane demand an
`Apothic-Key: <api key>` header of the owning account, refusing others with 401 before any
container wakes; the header never reaches the app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from apothic._client import get_client
from apothic._utils.dual import dual
from apothic.exception import ExecutionError, InvalidError
from apothic.function import Function

if TYPE_CHECKING:
    from apothic.app import App

KINDS = ("endpoint", "fastapi", "asgi", "wsgi", "web_server")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
WEB_ATTR = "__apothic_web__"  # set on the raw function; the container reads it after import
PROXY_AUTH_HEADER = "Apothic-Key"


@dataclass(frozen=True, slots=True)
class WebSpec:
    kind: str | None = None
    method: str = "GET"
    label: str | None = None
    port: int | None = None
    startup_timeout: float = 5.0
    requires_proxy_auth: bool = False
    docs: bool = False
    max_inputs: int = 1
    target_inputs: int | None = None

    def wire(self) -> dict[str, Any]:
        return asdict(self)


class _WebPartial:
    """A raw function carrying web markers, waiting for `@app.function()`."""

    def __init__(self, raw_f: Callable[..., Any], spec: WebSpec) -> None:
        self.raw_f = raw_f
        self.spec = spec
        self.__name__ = getattr(raw_f, "__name__", "web")
        self.__qualname__ = getattr(raw_f, "__qualname__", self.__name__)
        self.__module__ = getattr(raw_f, "__module__", "__main__")
        self.__doc__ = raw_f.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)


def _mark(raw: Any, **changes: Any) -> _WebPartial:
    if isinstance(raw, Function):
        raise InvalidError("web decorators go below @app.function(), not above it")
    if isinstance(raw, _WebPartial):
        if "kind" in changes and raw.spec.kind is not None:
            raise InvalidError(f"{raw.__name__}: only one of fastapi_endpoint, asgi_app, wsgi_app and "
                               "web_server may be applied")
        return _WebPartial(raw.raw_f, replace(raw.spec, **changes))
    if not callable(raw):
        raise InvalidError("a web decorator must be applied to a function")
    return _WebPartial(raw, replace(WebSpec(), **changes))


def _check_label(label: str | None) -> None:
    if label is not None and (not label or not all(c.isalnum() or c in "-_" for c in label)):
        raise InvalidError(f"label {label!r} may hold only letters, digits, '-' and '_'")


def _check_method(method: str) -> str:
    upper = method.upper()
    if upper not in METHODS:
        raise InvalidError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    return upper


def _refuse_custom_domains(custom_domains: Any) -> None:
    if custom_domains:
        raise InvalidError("custom_domains cannot be honoured: services are served under the control plane's URL")


def fastapi_endpoint(_warn_parentheses_missing: Any = None, *, method: str = "GET", label: str | None = None,
                     custom_domains: Any = None, docs: bool = False, requires_proxy_auth: bool = False
                     ) -> Callable[[Any], _WebPartial]:
    """One FastAPI handler: query parameters (and a JSON body) become its arguments."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("use @apothic.fastapi_endpoint() with parentheses")
    _check_label(label)
    _refuse_custom_domains(custom_domains)
    verb = _check_method(method)
    return lambda raw: _mark(raw, kind="fastapi", method=verb, label=label, docs=docs,
                             requires_proxy_auth=requires_proxy_auth)


def web_endpoint(*_: Any, **__: Any) -> Any:
    """Modal's old name: it refuses, as Modal's does, pointing at the new one."""
    raise InvalidError("web_endpoint was renamed fastapi_endpoint")


def endpoint(_warn_parentheses_missing: Any = None, *, method: str = "GET", label: str | None = None,
             requires_proxy_auth: bool = False) -> Callable[[Any], _WebPartial]:
    """A plain function answering JSON: query parameters or a JSON object body become keyword
    arguments, and the return value is the JSON response. Needs no web framework."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("use @apothic.endpoint() with parentheses")
    _check_label(label)
    verb = _check_method(method)
    return lambda raw: _mark(raw, kind="endpoint", method=verb, label=label,
                             requires_proxy_auth=requires_proxy_auth)


def asgi_app(_warn_parentheses_missing: Any = None, *, label: str | None = None, custom_domains: Any = None,
             requires_proxy_auth: bool = False) -> Callable[[Any], _WebPartial]:
    """The function returns an ASGI app (FastAPI, Starlette, ...); websockets included."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("use @apothic.asgi_app() with parentheses")
    _check_label(label)
    _refuse_custom_domains(custom_domains)
    return lambda raw: _mark(raw, kind="asgi", label=label, requires_proxy_auth=requires_proxy_auth)


def wsgi_app(_warn_parentheses_missing: Any = None, *, label: str | None = None, custom_domains: Any = None,
             requires_proxy_auth: bool = False) -> Callable[[Any], _WebPartial]:
    """The function returns a WSGI app (Flask, Django, ...), served through a2wsgi's thread pool."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("use @apothic.wsgi_app() with parentheses")
    _check_label(label)
    _refuse_custom_domains(custom_domains)
    return lambda raw: _mark(raw, kind="wsgi", label=label, requires_proxy_auth=requires_proxy_auth)


def web_server(port: int, *, startup_timeout: float = 5.0, label: str | None = None, custom_domains: Any = None,
               requires_proxy_auth: bool = False) -> Callable[[Any], _WebPartial]:
    """The function starts a server on 127.0.0.1:`port` inside the container's host; requests are
    proxied to it once it accepts connections (within `startup_timeout` seconds)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise InvalidError(f"web_server port must be an integer in 1..65535, not {port!r}")
    if not isinstance(startup_timeout, int | float) or startup_timeout <= 0:
        raise InvalidError("startup_timeout must be a positive number of seconds")
    _check_label(label)
    _refuse_custom_domains(custom_domains)
    return lambda raw: _mark(raw, kind="web_server", port=port, startup_timeout=float(startup_timeout),
                             label=label, requires_proxy_auth=requires_proxy_auth)


def concurrent(_warn_parentheses_missing: Any = None, *, max_inputs: int, target_inputs: int | None = None
               ) -> Callable[[Any], _WebPartial]:
    """Lets one container serve up to `max_inputs` requests at once (asyncio tasks for async apps,
    threads for sync handlers and WSGI apps). `target_inputs` is where new containers start."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("use @apothic.concurrent(max_inputs=...) with parentheses")
    if not isinstance(max_inputs, int) or isinstance(max_inputs, bool) or max_inputs < 1:
        raise InvalidError("max_inputs must be a positive integer")
    if target_inputs is not None and (not isinstance(target_inputs, int) or not 1 <= target_inputs <= max_inputs):
        raise InvalidError("target_inputs must be an integer between 1 and max_inputs")
    return lambda raw: _mark(raw, max_inputs=max_inputs, target_inputs=target_inputs)


def unwrap(raw: Any) -> tuple[Callable[..., Any], WebSpec | None]:
    """The raw function under any web markers, and the web spec they make (None: not web)."""
    if not isinstance(raw, _WebPartial):
        return raw, None
    if raw.spec.kind is None:
        raise InvalidError(f"{raw.__name__}: @apothic.concurrent applies only to web functions for now "
                           "(fastapi_endpoint, asgi_app, wsgi_app, web_server, endpoint)")
    setattr(raw.raw_f, WEB_ATTR, raw.spec.wire())
    return raw.raw_f, raw.spec


def check_options(app: App, name: str, spec: WebSpec, options: dict[str, Any]) -> None:
    """What `@app.function` checks of a web function: no retries, and a URL of its own in the app."""
    if options.get("retries"):
        raise InvalidError(f"{name}: retries are not allowed on web functions (a request is not retried)")
    label = spec.label or name
    for other_name, other in app.registered_functions.items():
        other_web = other.options.get("web")
        if other_name != name and other_web and (other_web.get("label") or other_name) == label:
            raise InvalidError(f"{name}: the URL label {label!r} is already {other_name}'s in app {app.name!r}")


class WebFunction(Function):
    """A function served over HTTP. `get_web_url()` is where it answers."""

    def get_web_url(self) -> str:
        """The stable URL: `{server}/web/{app name}/{label}/` for a deployed app (the same after
        a redeploy or a server restart), `{server}/web/{app id}/{label}/` for an ephemeral run."""
        from apothic import _loop

        return _loop.run(web_url_of(self))

    @property
    def web_url(self) -> str:
        return self.get_web_url()

    @dual
    async def remote(self, *args: Any, **kwargs: Any) -> Any:
        raise InvalidError(f"{self._name} is a web function: send it HTTP requests at get_web_url()")

    @dual
    async def spawn(self, *args: Any, **kwargs: Any) -> Any:
        raise InvalidError(f"{self._name} is a web function: send it HTTP requests at get_web_url()")


async def web_url_of(fn: Function) -> str:
    """A web function's URL, also for `Function.from_name(...)` (looked up on the server)."""
    client = await get_client()
    app = fn._app
    if app is not None:
        web = fn.options.get("web") or {}
        if app.app_id is None:
            raise ExecutionError(f"{fn._name} is not running: its URL exists once its app runs or is deployed")
        ref = app.name if getattr(app, "_mode", None) == "deployed" and app.name else app.app_id
    elif fn._app_name is not None:
        found = await client.json("GET", "/v1/functions/lookup", params={"app": fn._app_name, "name": fn._name})
        web = (found.get("options") or {}).get("web") or {}
        ref = fn._app_name
    else:
        raise ExecutionError(f"{fn._name} has no app")
    if not web:
        raise InvalidError(f"{fn._name} is not a web function")
    return f"{client.url}/web/{ref}/{web.get('label') or fn._name}/"


def stacked(app: App, marker: Callable[[Any], _WebPartial], function_options: dict[str, Any]
            ) -> Callable[[Callable[..., Any]], Function]:
    """`@app.asgi(...)` and friends: the web marker, then `@app.function(**function_options)`.
    A `max_inputs=` option means `@apothic.concurrent(max_inputs=...)`."""
    max_inputs = function_options.pop("max_inputs", None)

    def wrap(raw_f: Callable[..., Any]) -> Function:
        marked = marker(raw_f)
        if max_inputs is not None:
            marked = concurrent(max_inputs=max_inputs)(marked)
        return app.function(**function_options)(marked)

    return wrap
