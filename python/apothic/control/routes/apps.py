from __future__ import annotations

import time

from aiohttp import web

from apothic import _ids
from apothic.control import keys
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
                    return json_response({"function_id": fn["id"], "app_id": app["id"], "options": fn["options"]})
            raise NotFoundError(f"app {app_name!r} has no function {name!r}", code="function.not_found")
    raise NotFoundError(f"no deployed app named {app_name!r}", code="app.not_found")
