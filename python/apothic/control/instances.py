"""Class variants and named instances (actors), for the scheduler.

A registered class is a *template*: a function record that never runs calls itself. Each set of
parameter values and `with_options` overrides gets a *variant*: a function of its own, with its
own queue and pool of containers, made on first use and written to the store (a `func` row), so
calls spawned on it survive a control-plane restart like any other. A *named instance* is a
variant pinned to exactly one container (min = max = 1), that runs one call at a time with none
held in reserve (FunctionRuntime.slots), and never retries: its calls run in arrival order.

If a named instance's container dies, the call it was running fails and the scheduler starts a
new container (min_containers = 1): the instance restarts with its @enter hooks and fresh state.

An anonymous variant with nothing to do (no container, no call queued or running) for
APOTHIC_VARIANT_IDLE_S (10 minutes) leaves memory: `Model(user=x)` for every user would
otherwise keep a pool per user for the life of the deployment. Its row stays; its next use
(the same parameters again, or a call to its id from a handle made earlier) brings it back.

This object belongs to the scheduler's actor: it is reached only from its event loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

import orjson

from apothic import _ids
from apothic.cls import PARAM_TYPES, decode_value, resolve_params
from apothic.control.model import TERMINAL, FunctionRuntime, FunctionSpec
from apothic.control.store.instances import InstanceStore
from apothic.exception import (
    InstanceConflictError,
    InstanceStoppedError,
    InvalidError,
    MalformedRequestError,
    NotFoundError,
)
from apothic.function import validate_options

if TYPE_CHECKING:
    from apothic.control.scheduler import Scheduler

# The options with_options() may change; the SDK refuses the others before they get here.
_OVERRIDABLE = frozenset({"cpu", "memory", "timeout", "retries", "max_containers", "min_containers",
                          "scaledown_window", "gpu", "placements"})


def template_of(raw: Any) -> dict[str, Any] | None:
    """A registered class's description (from `POST /v1/apps`), checked; None for a function."""
    if raw is None:
        return None
    methods = raw.get("methods") if isinstance(raw, dict) else None
    params = raw.get("params") if isinstance(raw, dict) else None
    if (not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods)
            or not isinstance(params, dict)
            or not all(isinstance(p, dict) and p.get("type") in PARAM_TYPES for p in params.values())):
        raise MalformedRequestError("cls must be {methods: [names], params: {name: {type, default?}}}")
    return {"role": "template", "methods": methods, "params": params}


def _variant_idle_s() -> float:
    return float(os.environ.get("APOTHIC_VARIANT_IDLE_S", "600"))


def _key(params: dict[str, Any], overrides: dict[str, Any]) -> bytes:
    return orjson.dumps([params, overrides], option=orjson.OPT_SORT_KEYS)


def _shown(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={decode_value(v)!r}" for k, v in params.items()) or "no parameters"


class Instances:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.store = InstanceStore(scheduler.store.db)
        self.variants: dict[tuple[str, bytes], str] = {}  # (template id, params+options) -> variant id
        self.named: dict[tuple[str, str], str] = {}  # (template id, instance name) -> running variant id
        # Variants being written: a second request for the same one waits for the first.
        self._creating: dict[tuple[str, Any], asyncio.Future[FunctionSpec]] = {}

    def retire_idle(self, now: float, busy: set[str]) -> list[str]:
        """Drops from memory the anonymous variants idle past APOTHIC_VARIANT_IDLE_S; `busy`
        holds the functions with unfinished calls. Returns the ids retired."""
        retired = []
        for key, variant_id in list(self.variants.items()):
            fn = self.scheduler.functions.get(variant_id)
            if fn is not None and (fn.containers or len(fn.queue) or variant_id in busy
                                   or now - fn.last_used < _variant_idle_s()):
                continue
            del self.variants[key]
            if fn is not None:
                del self.scheduler.functions[variant_id]
                self.scheduler.placer.forget(variant_id)
                retired.append(variant_id)
        return retired

    async def reload(self, function_id: str) -> FunctionRuntime | None:
        """A retired anonymous variant, back from its row for a call to its id; None if there is
        no such variant or its class is no longer running."""
        row = await self.store.get_variant(function_id)
        if row is None or function_id in self.scheduler.functions:
            return self.scheduler.functions.get(function_id)
        spec = FunctionSpec.from_record(row)
        c = spec.cls or {}
        if c.get("role") != "variant" or c.get("instance") or c.get("base") not in self.scheduler.functions:
            return None  # not an anonymous variant, or its class's app is no longer running
        return self._revive(spec)

    def _revive(self, spec: FunctionSpec) -> FunctionRuntime:
        fn = self.scheduler.functions[spec.id] = FunctionRuntime.create(spec)
        self._index(spec)
        return fn

    def restore(self) -> None:
        for fn in self.scheduler.functions.values():
            self._index(fn.spec)

    def _index(self, spec: FunctionSpec) -> None:
        c = spec.cls
        if not c or c.get("role") != "variant":
            return
        if c.get("instance"):
            if c.get("status") != "stopped":
                self.named[(c["base"], c["instance"])] = spec.id
        else:
            self.variants[(c["base"], _key(c["params"], c.get("overrides") or {}))] = spec.id

    def check_callable(self, fn: FunctionRuntime) -> None:
        """Refuses a call to a class template, or to a stopped named instance."""
        c = fn.spec.cls or {}
        if c.get("role") == "template":
            raise InvalidError(f"{fn.spec.name} is a class: call a method of an instance, "
                               f"as {fn.spec.name}().method.remote()")
        if c.get("status") == "stopped":
            raise InstanceStoppedError(f"instance {c.get('instance')!r} of {fn.spec.name} was stopped")

    def _template(self, template_id: str, account: str) -> FunctionRuntime:
        fn = self.scheduler.functions.get(template_id)
        if fn is None or fn.spec.account != account:
            raise NotFoundError(f"class {template_id} is not running or deployed", code="function.not_found")
        if not fn.spec.cls or fn.spec.cls.get("role") != "template":
            raise NotFoundError(f"{fn.spec.name} is not a class", code="cls.not_found")
        return fn

    def _options(self, template: FunctionRuntime, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - _OVERRIDABLE)
        if unknown:
            raise InvalidError(f"with_options({unknown[0]}=...) cannot be honoured")
        options = template.spec.options | overrides
        validate_options(template.spec.name, options)
        self.scheduler.validate_options(options)
        return options

    def _live(self, variant_id: str | None) -> FunctionRuntime | None:
        fn = self.scheduler.functions.get(variant_id) if variant_id else None
        return fn if fn is not None and fn.spec.dispatchable else None

    async def variant(self, template_id: str, account: str, params: dict[str, Any],
                      overrides: dict[str, Any]) -> FunctionSpec:
        """The pool for these parameter values and options, made on first use."""
        template = self._template(template_id, account)
        resolved = resolve_params(template.spec.name, template.spec.cls["params"], params)  # type: ignore[index]
        options = self._options(template, overrides)
        key = (template_id, _key(resolved, overrides))
        found = self._live(self.variants.get(key))
        if found is None and key not in self._creating:
            # Retired while idle: the same parameters get the same pool (and row) back.
            row = await self.store.find_variant(template_id, key[1].decode())
            found = self._live(self.variants.get(key))  # made meanwhile?
            if found is None and row is not None and self.scheduler.functions.get(template_id) is template:
                found = self._revive(FunctionSpec.from_record(row))
        if found is not None:
            found.last_used = time.monotonic()
            return found.spec
        return await self._create(template, key, resolved, overrides, options, None)

    async def named_instance(self, template_id: str, account: str, name: str, params: dict[str, Any] | None,
                             overrides: dict[str, Any]) -> tuple[FunctionSpec, bool]:
        """The running named instance `name` (its parameters must match any given), or a new one."""
        template = self._template(template_id, account)
        cls_name, schema = template.spec.name, template.spec.cls["params"]  # type: ignore[index]
        key = (template_id, name)
        if key in self._creating:
            await asyncio.shield(self._creating[key])
        running = self._live(self.named.get(key))
        if running is not None:
            c = running.spec.cls or {}
            if params is not None and resolve_params(cls_name, schema, params) != c["params"]:
                raise InstanceConflictError(
                    f"instance {name!r} of {cls_name} runs with {_shown(c['params'])}, not "
                    f"{_shown(resolve_params(cls_name, schema, params))}")
            if overrides and overrides != (c.get("overrides") or {}):
                raise InstanceConflictError(f"instance {name!r} of {cls_name} runs with other options")
            return running.spec, False
        resolved = resolve_params(cls_name, schema, params or {})
        options = self._options(template, overrides)
        if options.get("retries"):
            raise InvalidError(f"{cls_name}: retries cannot be honoured on a named instance: a retried call "
                               "would run out of arrival order")
        options |= {"min_containers": 1, "max_containers": 1}
        return await self._create(template, key, resolved, overrides, options, name), True

    async def _create(self, template: FunctionRuntime, key: tuple[str, Any], params: dict[str, Any],
                      overrides: dict[str, Any], options: dict[str, Any], instance: str | None) -> FunctionSpec:
        pending = self._creating.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        t = template.spec
        spec = FunctionSpec(
            id=_ids.new_id("function"), app_id=t.app_id, account=t.account, name=t.name, module=t.module,
            qualname=t.qualname, bundle_hash=t.bundle_hash, options=options,
            cls={"role": "variant", "base": t.id, "methods": t.cls["methods"], "params": params,  # type: ignore[index]
                 "overrides": overrides, "instance": instance, "status": "running",
                 "key": None if instance else key[1].decode()},
        )
        future: asyncio.Future[FunctionSpec] = asyncio.get_running_loop().create_future()
        self._creating[key] = future
        try:
            await self.store.save_variant(spec.record())
            if self.scheduler.functions.get(t.id) is not template:
                raise NotFoundError(f"the app of class {t.name} was stopped", code="function.not_found")
            fn = FunctionRuntime.create(spec)
            self.scheduler.functions[spec.id] = fn
            self._index(spec)
            self.scheduler._pump(fn)
            future.set_result(spec)
            return spec
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(e)
                future.exception()  # retrieved: a waiter may or may not be there
            raise
        finally:
            del self._creating[key]

    async def stop(self, variant_id: str, account: str) -> None:
        """Ends a named instance: @exit runs in its container, calls not yet done are cancelled, and
        later calls fail with `cls.instance_stopped`. Stopping it twice is fine."""
        fn = self.scheduler.functions.get(variant_id)
        if fn is None or fn.spec.account != account:
            raise NotFoundError(f"instance {variant_id} is not running", code="function.not_found")
        c = fn.spec.cls or {}
        if not c.get("instance"):
            raise InvalidError("only named instances can be stopped")
        if c.get("status") == "stopped":
            return
        c["status"] = "stopped"
        fn.live = False
        if self.named.get((c["base"], c["instance"])) == variant_id:
            del self.named[(c["base"], c["instance"])]
        await self.store.set_status(variant_id, "stopped")
        for ct in list(fn.containers.values()):
            self.scheduler._stop_container(ct, graceful=True)
        jobs = self.scheduler.jobs.values()
        for job in [j for j in jobs if j.function_id == variant_id and j.status not in TERMINAL]:
            await self.scheduler._cancel(job, fn, f"instance {c['instance']!r} was stopped")
