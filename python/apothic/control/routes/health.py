from __future__ import annotations

import os

from aiohttp import web

from apothic.control import keys
from apothic.control.routes._body import json_response

routes = web.RouteTableDef()


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    scheduler = request.app[keys.SCHEDULER]
    return json_response({
        "status": "ok",
        "pid": os.getpid(),
        "db": request.app[keys.CONFIG].db_url,
        "workers": len(scheduler.workers),
        "jobs_in_flight": len(scheduler.jobs),
        "revision": request.app[keys.HUB].revision,
    })
