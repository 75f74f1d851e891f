"""Errors become `{"error": {"code", "message"}}`; every /v1 route needs a key."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from apothic.control import keys
from apothic.exception import Error

log = logging.getLogger("apothic.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PRINCIPAL = "principal"

# Routes that authenticate on their own (the worker session uses a join token).
_SELF_AUTHENTICATED = {"/v1/workers/session"}
# Web services are public like Modal's; routes/web.py applies their optional proxy auth.
_PUBLIC_PREFIX = "/web/"


def error_response(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Error as e:
        return error_response(e.code, e.message, e.http_status)
    except web.HTTPException as e:
        if e.status == 404:
            return error_response("not_found", f"no route {request.method} {request.path}", 404)
        if e.status == 405:
            return error_response("request.malformed", f"method {request.method} not allowed here", 405)
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response("internal", "internal error; see the server log", 500)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in _SELF_AUTHENTICATED or request.path.startswith(_PUBLIC_PREFIX):
        return await handler(request)
    kind = "worker" if request.path.startswith("/v1/blobs/") and request.method == "GET" and \
        request.headers.get("X-Apothic-Worker") else "user"
    request[PRINCIPAL] = await request.app[keys.AUTH].authenticate(
        request.headers.get("Authorization"), kind=kind
    )
    return await handler(request)


def account_of(request: web.Request) -> str:
    return request[PRINCIPAL].account
