from __future__ import annotations

import time

from aiohttp import web

from apothic import _ids
from apothic.control import keys
from apothic.control.instances import template_of
from apothic.control.middlewares import account_of
from apothic.control.model import FunctionSpec
from apothic.control.routes._body import field, json_body, json_response
from apothic.control.routes.streams import follow
from apothic.exception import MalformedRequestError, NotFoundError

routes = web.RouteTableDef()


@routes.post("/v1/apps")
async def create_app(request: web.Request) -> web.Response:
    """Registers an ephemeral app (`app.run()`) or a deployment (`app.deploy()`)."""
    body = await json_body(request)
    account = account_of(request)
    scheduler = request.app[keys.SCHEDULER]
    store = request.app[keys.STORE]
    name = field(body, "name", str, required=False) or "ephemeral"
    mode = field(body, "mode", str)
    if mode not in ("ephemeral", "deployed"):
        raise MalformedRequestError("mode must be 'ephemeral' or 'deployed'")
    bundle = field(body, "bundle_hash", str)
    if not await store.has_blob(bundle):
        raise NotFoundError(f"code bundle {bundle} was not uploaded", code="blob.not_found")
    raw_functions = field(body, "functions", list)
    if mode == "deployed":
        # A new deployment replaces the live one of the same name.
        for app in await store.list_apps(account):
            if app["name"] == name and app.get("state") == "deployed":
                await scheduler.stop_app(app["id"])
    now = time.time()
    app = {"id": _ids.new_id("app"), "account": account, "name": name, "mode": mode,
           "state": "deployed" if mode == "deployed" else "running", "bundle_hash": bundle,
           "created_at": now, "updated_at": now}
    specs = []
    for raw in raw_functions:
        if not isinstance(raw, dict):
            raise MalformedRequestError("each function must be an object")
        options = field(raw, "options", dict, required=False) or {}
        scheduler.validate_options(options)
        specs.append(FunctionSpec(
            id=_ids.new_id("function"), app_id=app["id"], account=account,
            name=field(raw, "name", str), module=field(raw, "module", str),
            qualname=field(raw, "qualname", str), bundle_hash=bundle, options=options,
            cls=template_of(raw.get("cls")),
        ))
    await scheduler.register_app(app, specs)
    return json_response({"app_id": app["id"], "functions": {s.name: s.id for s in specs}})


@routes.get("/v1/apps")
async def list_apps(request: web.Request) -> web.Response:
    apps = await request.app[keys.STORE].list_apps(account_of(request))
    return json_response([{k: a.get(k) for k in ("id", "name", "mode", "state", "created_at")} for a in apps])


async def _own_app(request: web.Request, ref: str) -> dict:
    """An app by id, or the live app of that name."""
    apps = await request.app[keys.STORE].list_apps(account_of(request))
    for app in reversed(apps):
        if app["id"] == ref or (app["name"] == ref and app.get("state") in ("running", "deployed")):
            return app
    raise NotFoundError(f"no app {ref}", code="app.not_found")


@routes.post("/v1/apps/{app}/stop")
async def stop_app(request: web.Request) -> web.Response:
    app = await _own_app(request, request.match_info["app"])
    await request.app[keys.SCHEDULER].stop_app(app["id"])
    return json_response({"id": app["id"], "state": "stopped"})


@routes.get("/v1/apps/{app}/logs")
async def app_logs(request: web.Request) -> web.StreamResponse:
    app = await _own_app(request, request.match_info["app"])
    store = request.app[keys.STORE]

    async def history(after: int) -> list[dict]:
        return await store.app_logs(app["id"], after)

    return await follow(request, f"logs:{app['id']}", history, ends=lambda _: False)


@routes.get("/v1/apps/{app}/logs/revision")
async def app_log_revision(request: web.Request) -> web.Response:
    app = await _own_app(request, request.match_info["app"])
    return json_response({"revision": request.app[keys.SCHEDULER].last_log_revision.get(app["id"], 0)})


@routes.get("/v1/functions/lookup")
async def lookup_function(request: web.Request) -> web.Response:
    app_name = request.query.get("app", "")
    name = request.query.get("name", "")
    account = account_of(request)
    store = request.app[keys.STORE]
    for app in reversed(await store.list_apps(account)):
        if app["name"] == app_name and app.get("state") == "deployed":
            for fn in await store.functions_of(app["id"]):
                if fn["name"] == name:
                    return json_response({"function_id": fn["id"], "app_id": app["id"], "options": fn["options"],
                                          "cls": fn.get("cls")})
            raise NotFoundError(f"app {app_name!r} has no function {name!r}", code="function.not_found")
    raise NotFoundError(f"no deployed app named {app_name!r}", code="app.not_found")


# ---- classes (cls.py, control/instances.py) ------------------------------------------------
def _class_request(body: dict) -> tuple[dict, dict]:
    params = body.get("params")
    options = body.get("options") or {}
    if not isinstance(params, dict | None) or not isinstance(options, dict):
        raise MalformedRequestError("params and options must be objects")
    return params, options  # type: ignore[return-value]


def _variant_answer(spec: FunctionSpec, **extra: object) -> web.Response:
    c = spec.cls or {}
    return json_response({"function_id": spec.id, "params": c.get("params"), "methods": c.get("methods"), **extra})


@routes.post("/v1/functions/{function}/variants")
async def create_class_variant(request: web.Request) -> web.Response:
    """The pool of a class for some parameter values and options (`Model(x=1)`), made on first use."""
    params, options = _class_request(await json_body(request))
    spec = await request.app[keys.SCHEDULER].instances.variant(
        request.match_info["function"], account_of(request), params or {}, options)
    return _variant_answer(spec)


@routes.post("/v1/functions/{function}/instances")
async def attach_class_instance(request: web.Request) -> web.Response:
    """Creates the named instance of a class, or attaches to it (`Model.named("ctr-1", x=1)`)."""
    body = await json_body(request)
    name = field(body, "name", str)
    if not name or len(name) > 128:
        raise MalformedRequestError("an instance name is a string of 1 to 128 characters")
    params, options = _class_request(body)
    spec, created = await request.app[keys.SCHEDULER].instances.named_instance(
        request.match_info["function"], account_of(request), name, params, options)
    return _variant_answer(spec, created=created)


@routes.post("/v1/functions/{function}/stop")
async def stop_class_instance(request: web.Request) -> web.Response:
    """Stops a named instance: its @exit hooks run and later calls fail with cls.instance_stopped."""
    function_id = request.match_info["function"]
    await request.app[keys.SCHEDULER].instances.stop(function_id, account_of(request))
    return json_response({"function_id": function_id, "status": "stopped"})
