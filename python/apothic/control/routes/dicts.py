"""Named dicts under /v1/dicts. Keys and values are opaque bytes, base64 in JSON bodies."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from apothic.control import keys
from apothic.control.dicts import NamedDict, watch_event, wire_entry
from apothic.control.middlewares import account_of
from apothic.control.plans import Plan, answered
from apothic.control.routes._body import field, json_body, json_response, match_name, parse_json, path_name
from apothic.control.routes._planned import planned
from apothic.control.routes.streams import replay_then_follow
from apothic.exception import MalformedRequestError

routes = web.RouteTableDef()

_LONG_POLL_MAX_S = 55.0


def _b64(body: dict[str, Any], name: str, *, required: bool = True) -> bytes | None:
    raw = field(body, name, str, required=required)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequestError(f"field {name!r} must be base64") from None


def _dict(request: web.Request) -> NamedDict:
    return request.app[keys.DICTS].find(account_of(request), path_name(request, "dict"))


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = field(body, name, (int, float), required=False)
    return default if value is None else float(value)


@routes.post("/v1/dicts")
async def create_dict(request: web.Request) -> web.Response:
    body = await json_body(request)
    d = await request.app[keys.DICTS].ensure(account_of(request), field(body, "name", str),
                                             create=bool(body.get("create_if_missing", False)))
    return json_response(d.summary())


@routes.get("/v1/dicts")
async def list_dicts(request: web.Request) -> web.Response:
    return json_response(request.app[keys.DICTS].list(account_of(request)))


@routes.delete("/v1/dicts/{dict}")
async def delete_dict(request: web.Request) -> web.Response:
    await request.app[keys.DICTS].delete(account_of(request), path_name(request, "dict"))
    return json_response({"deleted": path_name(request, "dict")})


async def _get_once_settled(request: web.Request) -> web.Response:
    body = await json_body(request)
    d = _dict(request)
    entry = await request.app[keys.DICTS].get(d, _b64(body, "key"))
    return json_response({"entry": wire_entry(entry), "revision": d.engine.revision()})


@routes.post("/v1/dicts/{dict}/get")
@planned(slow=_get_once_settled)
def get_entry(app: web.Application, account: str, match: Mapping[str, str], query: Mapping[str, str],
              raw: bytes) -> Plan | None:
    """An entry, at once when every change is durable; else once it is (no dirty reads)."""
    body = parse_json(raw)
    d = app[keys.DICTS].find(account, match_name(match, "dict"))
    key = _b64(body, "key")
    if not app[keys.DICTS].is_settled(d):
        return None
    return answered({"entry": wire_entry(d.engine.get(key)), "revision": d.engine.revision()})


@routes.post("/v1/dicts/{dict}/range")
async def range_entries(request: web.Request) -> web.Response:
    body = await json_body(request)
    d = _dict(request)
    pairs = await request.app[keys.DICTS].range(d, _b64(body, "prefix", required=False) or b"")
    return json_response({"entries": [[base64.b64encode(k).decode(), wire_entry(e)] for k, e in pairs],
                          "revision": d.engine.revision()})


@routes.get("/v1/dicts/{dict}/len")
async def dict_len(request: web.Request) -> web.Response:
    d = _dict(request)
    await request.app[keys.DICTS].settled(d)
    return json_response({"len": len(d.engine)})


@routes.post("/v1/dicts/{dict}/put")
@planned()
def put_entry(app: web.Application, account: str, match: Mapping[str, str], query: Mapping[str, str],
              raw: bytes) -> Plan:
    body = parse_json(raw)
    fence = field(body, "fence", dict, required=False)
    guard = None
    if fence is not None:
        lock = field(fence, "lock", str)
        guard = (lock.encode(), int(field(fence, "fence", int)))
    dicts = app[keys.DICTS]
    d = dicts.find(account, match_name(match, "dict"))
    m = dicts.decide_put(d, _b64(body, "key"), _b64(body, "value"), lease=field(body, "lease", int, required=False),
                         skip_if_exists=bool(body.get("skip_if_exists", False)), fence=guard)
    written, entry = m.value
    return dicts.plan(d, m, lambda: {"written": written, "entry": wire_entry(entry), "revision": m.revision})


@routes.post("/v1/dicts/{dict}/put_many")
async def put_entries(request: web.Request) -> web.Response:
    body = await json_body(request)
    items = field(body, "items", list)
    pairs = []
    for item in items:
        if not isinstance(item, list) or len(item) != 2:
            raise MalformedRequestError("items are [key, value] pairs")
        pairs.append((_b64({"k": item[0]}, "k"), _b64({"v": item[1]}, "v")))
    count = await request.app[keys.DICTS].put_many(_dict(request), pairs)
    return json_response({"written": count})


@routes.post("/v1/dicts/{dict}/delete")
async def delete_entry(request: web.Request) -> web.Response:
    body = await json_body(request)
    prev = await request.app[keys.DICTS].delete_key(_dict(request), _b64(body, "key"))
    return json_response({"entry": wire_entry(prev)})


@routes.post("/v1/dicts/{dict}/cas")
async def cas_entry(request: web.Request) -> web.Response:
    body = await json_body(request)
    expect: dict[str, Any] = {}
    if "expected_value" in body:
        expect["expected_value"] = _b64(body, "expected_value")
    elif "expected_version" in body:
        expect["expected_version"] = int(field(body, "expected_version", int))
    else:
        raise MalformedRequestError("cas needs expected_value or expected_version")
    succeeded, entry = await request.app[keys.DICTS].cas(
        _dict(request), _b64(body, "key"), _b64(body, "value"), lease=field(body, "lease", int, required=False),
        **expect)
    return json_response({"succeeded": succeeded, "entry": wire_entry(entry)})


@routes.post("/v1/dicts/{dict}/clear")
async def clear_dict(request: web.Request) -> web.Response:
    return json_response({"cleared": await request.app[keys.DICTS].clear(_dict(request))})


@routes.post("/v1/dicts/{dict}/leases")
async def grant_lease(request: web.Request) -> web.Response:
    body = await json_body(request)
    lease = await request.app[keys.DICTS].grant(_dict(request), _number(body, "ttl", 10))
    return json_response({"lease": lease})


@routes.post("/v1/dicts/{dict}/leases/{lease}/keepalive")
async def keepalive_lease(request: web.Request) -> web.Response:
    ttl = request.app[keys.DICTS].keepalive(_dict(request), _lease(request))
    return json_response({"ttl": ttl})


@routes.post("/v1/dicts/{dict}/leases/{lease}/revoke")
async def revoke_lease(request: web.Request) -> web.Response:
    deleted = await request.app[keys.DICTS].revoke(_dict(request), _lease(request))
    return json_response({"deleted_keys": deleted})


def _lease(request: web.Request) -> int:
    try:
        return int(request.match_info["lease"])
    except ValueError:
        raise MalformedRequestError("a lease id is an integer") from None


@routes.post("/v1/dicts/{dict}/locks/{lock}/acquire")
async def acquire_lock(request: web.Request) -> web.Response:
    body = await json_body(request)
    timeout = min(max(_number(body, "timeout", _LONG_POLL_MAX_S), 0), _LONG_POLL_MAX_S)
    fence, lease = await request.app[keys.DICTS].acquire(
        _dict(request), request.match_info["lock"].encode(), str(body.get("owner", "")).encode(),
        _number(body, "ttl", 10), timeout)
    return json_response({"fence": fence, "lease": lease})


@routes.post("/v1/dicts/{dict}/locks/{lock}/release")
async def release_lock(request: web.Request) -> web.Response:
    body = await json_body(request)
    await request.app[keys.DICTS].release(_dict(request), request.match_info["lock"].encode(),
                                          int(field(body, "fence", int)))
    return json_response({"released": True})


@routes.get("/v1/dicts/{dict}/watch")
async def watch_dict(request: web.Request) -> web.StreamResponse:
    """NDJSON events for keys under `prefix` (base64): with `snapshot=1`, the current entries
    first and a `snapshot_end` marker; with `start_revision=R`, every event from R on (or
    `dict.compacted`); then live events, each once, in revision order."""
    d = _dict(request)
    service = request.app[keys.DICTS]
    hub = request.app[keys.HUB]
    try:
        prefix = base64.b64decode(request.query.get("prefix", ""), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequestError("prefix must be base64") from None
    snapshot = request.query.get("snapshot") in ("1", "true")
    start = request.query.get("start_revision")
    topic = f"dict:{d.id}"
    live = hub.subscribe(topic)
    try:
        await service.settled(d)
        durable = last = d.durable_revision
        if snapshot:
            first = [watch_event(e.mod_revision, k, e, snapshot=True) for k, e in d.engine.range(prefix)]
            first.append({"revision": durable, "type": "snapshot_end", "key": None, "entry": None})
        elif start is not None:
            try:
                after = int(start) - 1
            except ValueError:
                raise MalformedRequestError("start_revision must be an integer") from None
            first = [watch_event(rev, k, e) for rev, _, k, e in d.engine.events_since(max(0, after), prefix)
                     if rev <= durable]
            last = max(durable, after)
        else:
            first = []
        return await replay_then_follow(request, live, first, last,
                                        keep=lambda e: base64.b64decode(e["key"]).startswith(prefix))
    finally:
        hub.unsubscribe(topic, live)


@routes.post("/v1/dicts/{dict}/elections/{election}/campaign")
async def campaign(request: web.Request) -> web.Response:
    body = await json_body(request)
    timeout = min(max(_number(body, "timeout", _LONG_POLL_MAX_S), 0), _LONG_POLL_MAX_S)
    revision, lease = await request.app[keys.DICTS].campaign(
        _dict(request), request.match_info["election"].encode(), str(body.get("candidate", "")).encode(),
        _b64(body, "value"), _number(body, "ttl", 10), timeout)
    return json_response({"revision": revision, "lease": lease})


@routes.post("/v1/dicts/{dict}/elections/{election}/proclaim")
async def proclaim(request: web.Request) -> web.Response:
    body = await json_body(request)
    await request.app[keys.DICTS].proclaim(_dict(request), request.match_info["election"].encode(),
                                           int(field(body, "revision", int)), _b64(body, "value"))
    return json_response({"proclaimed": True})


@routes.post("/v1/dicts/{dict}/elections/{election}/resign")
async def resign(request: web.Request) -> web.Response:
    body = await json_body(request)
    await request.app[keys.DICTS].resign(_dict(request), request.match_info["election"].encode(),
                                         int(field(body, "revision", int)))
    return json_response({"resigned": True})


@routes.post("/v1/dicts/{dict}/elections/{election}/leader")
async def election_leader(request: web.Request) -> web.Response:
    body = await json_body(request)
    timeout = min(max(_number(body, "timeout", 0), 0), _LONG_POLL_MAX_S)
    seen = field(body, "seen", list, required=False)
    if seen is not None and (len(seen) != 2 or not all(isinstance(x, int) for x in seen)):
        raise MalformedRequestError("seen is [candidacy revision, value revision]")
    found = await request.app[keys.DICTS].leader(_dict(request), request.match_info["election"].encode(),
                                                 seen=None if seen is None else (seen[0], seen[1]), timeout=timeout)
    if found is None:
        return json_response({"leader": None})
    candidate, value, revision, mod_revision = found
    return json_response({"leader": {"candidate": candidate.decode(errors="replace"),
                                     "value": base64.b64encode(value).decode(), "revision": revision,
                                     "mod_revision": mod_revision}})
