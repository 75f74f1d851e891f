from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from apothic.exception import MalformedRequestError


async def json_body(request: web.Request) -> dict[str, Any]:
    return parse_json(await request.read())


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise MalformedRequestError(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise MalformedRequestError("request body must be a JSON object")
    return body


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise MalformedRequestError(f"missing field {name!r}")
        return None
    if not isinstance(value, kind):
        raise MalformedRequestError(f"field {name!r} has the wrong type")
    return value


def float_param(request: web.Request, name: str, default: float) -> float:
    return float_query(request.query, name, default)


def float_query(query: Mapping[str, str], name: str, default: float) -> float:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise MalformedRequestError(f"query parameter {name!r} must be a number") from None


def path_name(request: web.Request, key: str) -> str:
    """A name from the request path, decoded whole. The router leaves %2F and %25 encoded in
    match_info, so a queue named "a/b" (sent as a%2Fb) was looked up as "a%2Fb" and not found."""
    return match_name(request.match_info, key)


def match_name(match: Mapping[str, str], key: str) -> str:
    value = match[key]
    return unquote(value) if "%" in value else value


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
