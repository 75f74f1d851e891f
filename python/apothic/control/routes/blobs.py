"""Content-addressed blobs: the code bundles that ship a caller's modules to containers."""

from __future__ import annotations

import hashlib

from aiohttp import web

from apothic.control import keys
from apothic.control.routes._body import json_response
from apothic.exception import MalformedRequestError, NotFoundError

routes = web.RouteTableDef()
_MAX_BLOB = 64 * 1024 * 1024


@routes.put("/v1/blobs/{digest}")
async def put_blob(request: web.Request) -> web.Response:
    digest = request.match_info["digest"]
    data = await request.read()
    if len(data) > _MAX_BLOB:
        raise MalformedRequestError("blob larger than 64 MiB")
    if hashlib.sha256(data).hexdigest() != digest:
        raise MalformedRequestError("blob content does not match its sha256 digest")
    await request.app[keys.STORE].put_blob(digest, data)
    return json_response({"digest": digest, "size": len(data)})


@routes.get("/v1/blobs/{digest}/exists")
async def blob_exists(request: web.Request) -> web.Response:
    return json_response({"exists": await request.app[keys.STORE].has_blob(request.match_info["digest"])})


@routes.get("/v1/blobs/{digest}")
async def get_blob(request: web.Request) -> web.Response:
    data = await request.app[keys.STORE].get_blob(request.match_info["digest"])
    if data is None:
        raise NotFoundError(f"no blob {request.match_info['digest']}", code="blob.not_found")
    return web.Response(body=data, content_type="application/octet-stream")
