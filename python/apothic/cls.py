"""Stateful classes with Modal's names: `@app.cls`, `parameter`, `enter`, `exit`, `method`.

`Model(x=1)` is a handle to an *instance*: the pool of containers that construct `Model` with
`x=1`, run its `@enter` hooks once, and then serve its `@method`s. Each set of parameter values
(and each `with_options(...)` variant) gets its own pool, so `Model(x=1)` and `Model(x=2)` never
share a container. A method call is a job like any other (`remote`, `spawn`, `map`, `starmap`, and
the `.aio` forms), and `@exit` hooks run when a container stops gracefully: on scaledown, on
`stop()`, when the app stops and when the server shuts down (after a bounded grace period the
container is killed).

`Model.named("ctr-1", x=1)` creates, or from any process attaches to, one persistent *named
instance*: an actor with exactly one container whose calls run one at a time, in arrival order.
Its record (name, class, parameters, status) is durable, so it can be attached to by name after
a control-plane restart; `stop()` runs `@exit` and ends it, and later calls fail with
`cls.instance_stopped` (`Model.named` with the same name then starts a fresh instance).

If a named instance's container dies (SIGKILL, out of memory, a lost worker), the call it was
running fails with `execution.failed`, and the instance restarts: the calls after it run on a new
container whose `@enter` has run again, with the in-memory state lost. For the same reason a
named instance runs each call once (no retries: a retried call would run out of arrival order),
and its state does not survive a control-plane restart either; keep what must last in a Dict,
a Queue or a Volume.

Every instance handle (anonymous or named) pickles into another process and works there.
"""

from __future__ import annotations

import base64
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from apothic._client import Client, get_client
from apothic._serialization import dump_args
from apothic._utils.dual import dual
from apothic.exception import ExecutionError, InvalidError, NotFoundError
from apothic.function import Function, validate_options

if TYPE_CHECKING:
    from apothic.app import App

_ROLES_ATTR = "__apothic_roles__"
PARAM_TYPES: dict[str, type] = {"int": int, "str": str, "bytes": bytes, "bool": bool}
# with_options() keywords Modal has that Apothic cannot honour yet: refused, never dropped.
_UNSUPPORTED_OPTIONS = ("env", "secrets", "volumes", "region", "cloud", "buffer_containers")


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


class _Parameter:
    __slots__ = ("default", "init")

    def __init__(self, default: Any, init: bool) -> None:
        self.default = default
        self.init = init


def parameter(*, default: Any = NO_DEFAULT, init: bool = True) -> Any:
    """A constructor argument of an `@app.cls` class: `x: int = apothic.parameter(default=1)`."""
    if default is not NO_DEFAULT and type(default) not in PARAM_TYPES.values():
        raise InvalidError(f"a parameter's default must be an int, str, bytes or bool, not {type(default).__name__}",
                           code="cls.invalid_params")
    return _Parameter(default, init)


def _marker(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(f):
            raise InvalidError(f"@apothic.{role}() applies to a method")
        setattr(f, _ROLES_ATTR, frozenset(getattr(f, _ROLES_ATTR, frozenset()) | {role}))
        return f

    return mark


def enter(_warn_parentheses_missing: Any = None, *, snap: bool = False) -> Callable[[Callable[..., Any]], Any]:
    """Runs once in each container after construction, before its first call."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("use @apothic.enter() with parentheses")
    if snap:
        raise InvalidError("enter(snap=True) cannot be honoured: Apothic takes no memory snapshots")
    return _marker("enter")


def exit(_warn_parentheses_missing: Any = None) -> Callable[[Callable[..., Any]], Any]:
    """Runs when a container stops gracefully (scaledown, `stop()`, app stop, server shutdown)."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("use @apothic.exit() with parentheses")
    return _marker("exit")


def method(_warn_parentheses_missing: Any = None, *, is_generator: bool | None = None
           ) -> Callable[[Callable[..., Any]], Any]:
    """Exposes a method of an `@app.cls` class for remote calls."""
    if _warn_parentheses_missing is not None:
        raise InvalidError("use @apothic.method() with parentheses")
    if is_generator:
        raise InvalidError("generator methods cannot be honoured yet")
    return _marker("method")


# ---- what a class declares ------------------------------------------------------------------
def _hooks(user_cls: type, role: str) -> list[str]:
    """Names of the functions marked with `role`, base classes first, in definition order."""
    names: list[str] = []
    for klass in reversed(user_cls.__mro__):
        for name, value in vars(klass).items():
            target = value.__func__ if isinstance(value, staticmethod | classmethod) else value
            if role in getattr(target, _ROLES_ATTR, ()) and name not in names:
                names.append(name)
    return names


def _param_schema(user_cls: type) -> dict[str, dict[str, Any]]:
    annotations: dict[str, Any] = {}
    for klass in reversed(user_cls.__mro__):
        annotations.update(vars(klass).get("__annotations__", {}))
    schema: dict[str, dict[str, Any]] = {}
    for name in dir(user_cls):
        value = inspect.getattr_static(user_cls, name, None)
        if not isinstance(value, _Parameter):
            continue
        hint = annotations.get(name)
        type_name = hint if isinstance(hint, str) else getattr(hint, "__name__", None)
        if type_name not in PARAM_TYPES:
            raise InvalidError(f"{user_cls.__name__}.{name}: a parameter needs an int, str, bytes or bool "
                               f"annotation, not {hint!r}", code="cls.invalid_params")
        if not value.init:
            continue
        entry: dict[str, Any] = {"type": type_name}
        if value.default is not NO_DEFAULT:
            entry["default"] = encode_value(value.default)
        schema[name] = entry
    return schema


def describe(user_cls: type) -> dict[str, Any]:
    """The class as the control plane keeps it: its methods and its parameters."""
    init = vars(user_cls).get("__init__")
    if init is not None and len(inspect.signature(init).parameters) > 1:
        raise InvalidError(f"{user_cls.__name__}: use apothic.parameter() for constructor arguments, "
                           "not __init__ arguments")
    methods = _hooks(user_cls, "method")
    if not methods:
        raise InvalidError(f"{user_cls.__name__} has no @apothic.method()")
    return {"methods": methods, "params": _param_schema(user_cls)}


def encode_value(value: Any) -> Any:
    return {"bytes_b64": base64.b64encode(value).decode()} if isinstance(value, bytes) else value


def decode_value(value: Any) -> Any:
    return base64.b64decode(value["bytes_b64"]) if isinstance(value, dict) and "bytes_b64" in value else value


def resolve_params(cls_name: str, schema: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """Wire-encoded parameter values checked against a class's schema, defaults filled in.
    Used by the SDK at construction and by the control plane for classes looked up by name."""
    unknown = sorted(set(params) - set(schema))
    if unknown:
        raise InvalidError(f"{cls_name} has no parameter {unknown[0]!r} (its parameters: "
                           f"{', '.join(schema) or 'none'})", code="cls.invalid_params")
    resolved: dict[str, Any] = {}
    for name, entry in schema.items():
        if name in params:
            value = decode_value(params[name])
        elif "default" in entry:
            value = decode_value(entry["default"])
        else:
            raise InvalidError(f"{cls_name}() is missing the parameter {name!r}", code="cls.invalid_params")
        if type(value) is not PARAM_TYPES[entry["type"]]:
            raise InvalidError(f"{cls_name} parameter {name!r} must be {entry['type']}, not "
                               f"{type(value).__name__}", code="cls.invalid_params")
        resolved[name] = encode_value(value)
    return resolved


def construct(user_cls: type, params: dict[str, Any]) -> Any:
    """An instance built as a container builds it: parameters set, then a no-argument __init__."""
    obj = user_cls.__new__(user_cls)
    for name, value in params.items():
        setattr(obj, name, decode_value(value))
    if user_cls.__init__ is not object.__init__:
        obj.__init__()
    return obj


def run_hooks(obj: Any, role: str) -> None:
    for name in _hooks(type(obj), role):
        value = getattr(obj, name)()
        if inspect.iscoroutine(value):
            import asyncio

            asyncio.run(value)


# ---- handles ----------------------------------------------------------------------------------
class Cls:
    """A class registered with `@app.cls(...)`, or looked up with `Cls.from_name(...)`."""

    def __init__(self, user_cls: type | None, *, name: str, app: App | None = None,
                 options: dict[str, Any] | None = None, app_name: str | None = None,
                 info: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> None:
        self._user_cls = user_cls
        self._name = name
        self._app = app
        self._app_name = app_name
        self.options = options or {}
        self._info = info  # {"methods": [...], "params": {...}}; None until a looked-up class is hydrated
        self._overrides = overrides or {}
        self._function_id: str | None = None
        self._qualname = user_cls.__qualname__ if user_cls is not None else name

    def __repr__(self) -> str:
        return f"Cls({self._name!r}, id={self._function_id!r})"

    @property
    def object_id(self) -> str | None:
        return self._function_id

    @classmethod
    def _register(cls, app: App, user_cls: type, check_options: Callable[[Any], Function]) -> Cls:
        if not isinstance(user_cls, type):
            raise InvalidError("@app.cls() applies to a class")
        info = describe(user_cls)
        if user_cls.__name__ in app.registered_functions or user_cls.__name__ in app.registered_classes:
            raise InvalidError(f"app {app.name!r} already has a function or class named {user_cls.__name__!r}")
        # The function decorator checks the options exactly as it does for a function; the
        # Function it makes is only a carrier of those checked options.
        carrier = check_options(user_cls)
        del app.registered_functions[carrier._name]
        made = cls(user_cls, name=carrier._name, app=app, options=carrier.options, info=info)
        app.registered_classes[made._name] = made
        return made

    def _wire(self, module_name: str) -> dict[str, Any]:
        return {"name": self._name, "module": module_name, "qualname": self._qualname, "options": self.options,
                "cls": self._info}

    @classmethod
    def from_name(cls, app_name: str, name: str) -> Cls:
        """A class of a deployed app, looked up by name on first use."""
        return cls(None, name=name, app_name=app_name)

    def with_options(self, *, cpu: float | None = None, memory: int | None = None,
                     timeout: float | None = None, retries: Any = None, max_containers: int | None = None,
                     min_containers: int | None = None, scaledown_window: float | None = None,
                     gpu: str | list[str] | None = None, gpu_count: int | None = None,
                     min_vram_gb: float | None = None, geolocation: str | list[str] | None = None,
                     max_cost_per_hour_usd: float | None = None, offer_filters: dict[str, Any] | None = None,
                     **unsupported: Any) -> Cls:
        """A variant of this class with its own pool of containers and these options. Placement
        options given here (gpu, gpu_count, min_vram_gb, geolocation, max_cost_per_hour_usd,
        offer_filters) replace the class's placement as a whole."""
        from apothic.placement import placements_from_options
        from apothic.retries import Retries

        for key, value in unsupported.items():
            if key not in _UNSUPPORTED_OPTIONS:
                raise TypeError(f"with_options() got an unexpected keyword argument {key!r}")
            if value not in (None, {}, []):
                raise InvalidError(f"with_options({key}=...) cannot be honoured yet")
        if isinstance(retries, int) and not isinstance(retries, bool):
            retries = Retries(max_retries=retries)
        if retries is not None and not isinstance(retries, Retries):
            raise InvalidError("retries must be an int or apothic.Retries")
        given = {"cpu": cpu, "memory": memory, "timeout": timeout,
                 "retries": retries.wire() if retries is not None else None, "max_containers": max_containers,
                 "min_containers": min_containers, "scaledown_window": scaledown_window}
        placements = placements_from_options(
            self._name, gpu=gpu, gpu_count=gpu_count, min_vram_gb=min_vram_gb, geolocation=geolocation,
            max_cost_per_hour_usd=max_cost_per_hour_usd, offer_filters=offer_filters)
        if placements:
            given |= {"gpu": gpu, "placements": [p.spec() for p in placements]}
        overrides = self._overrides | {k: v for k, v in given.items() if v is not None}
        validate_options(self._name, self.options | overrides)
        variant = Cls(self._user_cls, name=self._name, app=self._app, options=self.options,
                      app_name=self._app_name, info=self._info, overrides=overrides)
        variant._function_id = self._function_id
        variant._base = self  # type: ignore[attr-defined]  # hydration goes through the registered class
        return variant

    def __call__(self, **params: Any) -> Obj:
        encoded = {k: encode_value(v) for k, v in params.items()}
        if self._info is not None:
            encoded = resolve_params(self._name, self._info["params"], encoded)
        return Obj(self, encoded)

    @dual
    async def named(self, name: str, **params: Any) -> Obj:
        """The named instance `name`: created with these parameters, or attached to if it runs.
        Parameters given for a running instance must match its own (else `cls.instance_conflict`)."""
        if not isinstance(name, str) or not name or len(name) > 128:
            raise InvalidError("an instance name is a string of 1 to 128 characters")
        encoded: dict[str, Any] | None = {k: encode_value(v) for k, v in params.items()} if params else None
        if encoded is not None and self._info is not None:
            encoded = resolve_params(self._name, self._info["params"], encoded)
        if (self.options | self._overrides).get("retries"):
            raise InvalidError(f"{self._name}: retries cannot be honoured on a named instance: a retried call "
                               "would run out of arrival order")
        client = await get_client()
        base = await self._hydrate(client)
        found = await client.json("POST", f"/v1/functions/{base}/instances",
                                  json={"name": name, "params": encoded, "options": self._overrides})
        return Obj(self, found["params"], variant_id=found["function_id"], instance=name, base_id=base,
                   methods=found["methods"])

    async def _hydrate(self, client: Client) -> str:
        """The registered class's id (looked up by name for a deployed class)."""
        base: Cls = getattr(self, "_base", self)
        if base._function_id is None:
            if base._app_name is None:
                raise ExecutionError(
                    f"class {self._name} is not running: use it inside `with app.run():`, from "
                    "`apothic run`, or deploy its app and use Cls.from_name")
            found = await client.json("GET", "/v1/functions/lookup", params={"app": base._app_name,
                                                                              "name": base._name})
            if not found.get("cls"):
                raise NotFoundError(f"{base._name!r} in app {base._app_name!r} is a function, not a class",
                                    code="cls.not_found")
            base._function_id, base._info, base.options = found["function_id"], found["cls"], found["options"]
        self._function_id, self._info = base._function_id, base._info
        return base._function_id


class Obj:
    """An instance handle: `Model(x=1)` or `Model.named("ctr-1")`. Its methods are attributes."""

    def __init__(self, cls: Cls, params: dict[str, Any], *, variant_id: str | None = None,
                 instance: str | None = None, base_id: str | None = None, methods: list[str] | None = None) -> None:
        self._cls = cls
        self._params = params  # wire-encoded
        self._variant_id = variant_id
        self._instance = instance
        self._base_id = base_id  # the registered class the variant belongs to
        self._methods = methods
        self._local: Any = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={decode_value(v)!r}" for k, v in self._params.items())
        if self._instance is not None:
            return f"{self._cls._name}.named({self._instance!r}{', ' + args if args else ''})"
        return f"{self._cls._name}({args})"

    @property
    def object_id(self) -> str | None:
        return self._variant_id

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._params:
            return decode_value(self._params[name])
        known = self._methods or (self._cls._info or {}).get("methods")
        if known is not None and name not in known:
            raise AttributeError(f"{self._cls._name} has no method {name!r} (its methods: {', '.join(known)})")
        return _Method(self, name)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Names and ids only: the other process needs neither the user's class nor its code.
        state = {"name": self._cls._name, "app_name": self._cls._app_name, "options": self._cls.options,
                 "overrides": self._cls._overrides, "info": self._cls._info, "params": self._params,
                 "variant_id": self._variant_id, "instance": self._instance,
                 "base_id": self._base_id or self._cls._function_id, "methods": self._methods}
        return (_rebuild_obj, (state,))

    async def _resolve(self, client: Client, method: str) -> str:
        """The id of this instance's pool, created on first use for an anonymous instance."""
        if self._variant_id is None or (self._instance is None and self._cls._function_id not in
                                        (None, self._base_id)):
            base = await self._cls._hydrate(client)
            found = await client.json("POST", f"/v1/functions/{base}/variants",
                                      json={"params": self._params, "options": self._cls._overrides})
            self._variant_id, self._base_id = found["function_id"], base
            self._params, self._methods = found["params"], found["methods"]
        if self._methods is not None and method not in self._methods:
            raise NotFoundError(f"{self._cls._name} has no method {method!r}", code="cls.method_not_found")
        return self._variant_id

    def _local_instance(self) -> Any:
        if self._local is None:
            if self._cls._user_cls is None:
                raise ExecutionError(f"{self._cls._name} was looked up by name: it has no local body")
            self._local = construct(self._cls._user_cls, self._params)
            run_hooks(self._local, "enter")
        return self._local

    @dual
    async def stop(self) -> None:
        """Stops a named instance: its @exit hooks run, calls still queued are cancelled, and later
        calls fail with `cls.instance_stopped`."""
        if self._instance is None:
            raise InvalidError("only named instances can be stopped: an anonymous instance's containers "
                               "scale down on their own")
        client = await get_client()
        await client.json("POST", f"/v1/functions/{self._variant_id}/stop")


class _Method(Function):
    """`obj.method`: a Function whose calls go to the instance's pool, prefixed by the method name."""

    def __init__(self, obj: Obj, method_name: str) -> None:
        super().__init__(None, name=f"{obj._cls._name}.{method_name}", options=obj._cls.options)
        self._obj = obj
        self._method = method_name

    def __repr__(self) -> str:
        return f"{self._obj!r}.{self._method}"

    def _dump(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        return dump_args(self._name, (self._method, *args), kwargs)

    async def _hydrate(self) -> tuple[Client, str]:
        client = await get_client()
        self._function_id = await self._obj._resolve(client, self._method)
        return client, self._function_id

    def local(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._obj._local_instance(), self._method)(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (getattr, (self._obj, self._method))


def _rebuild_obj(state: dict[str, Any]) -> Obj:
    cls = Cls(None, name=state["name"], app_name=state["app_name"], options=state["options"],
              info=state["info"], overrides=state["overrides"])
    cls._function_id = state["base_id"]
    return Obj(cls, state["params"], variant_id=state["variant_id"], instance=state["instance"],
               base_id=state["base_id"], methods=state["methods"])


class Dispatcher:
    """Inside a container: calls arrive as (method name, *args) and run on the one instance."""

    def __init__(self, obj: Any, methods: list[str]) -> None:
        self.obj = obj
        self.methods = frozenset(methods)

    def __call__(self, method_name: str, /, *args: Any, **kwargs: Any) -> Any:
        if method_name not in self.methods:
            raise NotFoundError(f"{type(self.obj).__name__} has no method {method_name!r}",
                                code="cls.method_not_found")
        return getattr(self.obj, method_name)(*args, **kwargs)
