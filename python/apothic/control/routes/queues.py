"""Named queues under /v1/queues. Items travel as opaque bytes: u32-length-prefixed frames."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from aiohttp import web

from apothic import _wire
from apothic.control import keys
from apothic.control.middlewares import account_of
from apothic.control.plans import OCTETS, Answer, Plan
from apothic.control.queues import DEFAULT_PARTITION, Item, NamedQueue
from apothic.control.routes._body import (
    field,
    float_param,
    float_query,
    json_body,
    json_response,
    match_name,
    path_name,
)
from apothic.control.routes._planned import planned
from apothic.control.routes.streams import replay_then_follow
from apothic.exception import MalformedRequestError

routes = web.RouteTableDef()

_LONG_POLL_MAX_S = 55.0


def _queue(request: web.Request) -> NamedQueue:
    return _find(request.app, account_of(request), request.match_info)


def _find(app: web.Application, account: str, match: Mapping[str, str]) -> NamedQueue:
    return app[keys.QUEUES].find(account, match_name(match, "queue"))


def _partition(query: Mapping[str, str]) -> str:
    partition = query.get("partition", DEFAULT_PARTITION)
    if len(partition.encode()) > 64:
        raise MalformedRequestError("a partition key is at most 64 bytes")
    return partition


def _optional_partition(query: Mapping[str, str]) -> str | None:
    return _partition(query) if "partition" in query else None


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise MalformedRequestError(f"query parameter {name!r} must be an integer") from None
    if not low <= value <= high:
        raise MalformedRequestError(f"query parameter {name!r} must be between {low} and {high}")
    return value


def _claim(request: web.Request) -> int:
    return _claim_id(request.match_info)


def _claim_id(match: Mapping[str, str]) -> int:
    try:
        return int(match["claim"])
    except ValueError:
        raise MalformedRequestError("a claim id is an integer") from None


def _frames(entries: list[tuple[dict, bytes]]) -> web.Response:
    body, content_type = _frames_answer(entries)
    return web.Response(body=body, content_type=content_type)


def _frames_answer(entries: list[tuple[dict, bytes]]) -> Answer:
    return _wire.join_frames([_wire.pack(header, payload) for header, payload in entries]), OCTETS


def _claims_answer(taken: list[tuple[int, Item, float]]) -> Answer:
    return _frames_answer([({**_item_header(item), "claim_id": claim_id, "lease_expires_at": expires}, item.payload)
                           for claim_id, item, expires in taken])


def _items_answer(items: list[Item]) -> Answer:
    return _frames_answer([(_item_header(i), i.payload) for i in items])


def _split(raw: bytes) -> list[bytes]:
    payloads, offset = [], 0
    while offset < len(raw):
        size = int.from_bytes(raw[offset : offset + 4], "big")
        chunk = raw[offset + 4 : offset + 4 + size]
        if len(chunk) != size:
            raise MalformedRequestError("body is not a sequence of length-prefixed items")
        payloads.append(chunk)
        offset += 4 + size
    if not payloads:
        raise MalformedRequestError("body holds no items")
    return payloads


def _item_header(item: Item) -> dict:
    return {"id": item.key, "partition": item.partition, "delivery_count": item.deliveries,
            "put_at": item.put_at, "history": item.history}


@routes.post("/v1/queues")
async def create_queue(request: web.Request) -> web.Response:
    body = await json_body(request)
    q = await request.app[keys.QUEUES].ensure(
        account_of(request), field(body, "name", str),
        create=bool(body.get("create_if_missing", False)),
        max_deliveries=int(field(body, "max_deliveries", int, required=False) or 0),
        dead_letter=field(body, "dead_letter", str, required=False),
    )
    return json_response(q.summary())


@routes.get("/v1/queues")
async def list_queues(request: web.Request) -> web.Response:
    return json_response(request.app[keys.QUEUES].list(account_of(request)))


@routes.delete("/v1/queues/{queue}")
async def delete_queue(request: web.Request) -> web.Response:
    await request.app[keys.QUEUES].delete(account_of(request), path_name(request, "queue"))
    return json_response({"deleted": path_name(request, "queue")})


@routes.post("/v1/queues/{queue}/items")
@planned()
def put_items(app: web.Application, account: str, match: Mapping[str, str], query: Mapping[str, str],
              raw: bytes) -> Plan:
    q = _find(app, account, match)
    return app[keys.QUEUES].plan_put(q, _partition(query), _split(raw))


@routes.get("/v1/queues/{queue}/items")
async def peek_items(request: web.Request) -> web.Response:
    limit = _int_param(request.query, "limit", 100, 1, 10_000)
    items = request.app[keys.QUEUES].peek(_queue(request), _optional_partition(request.query), limit)
    return _frames([(_item_header(i), i.payload) for i in items])


@routes.get("/v1/queues/{queue}/len")
async def queue_len(request: web.Request) -> web.Response:
    return json_response({"len": request.app[keys.QUEUES].length(_queue(request), _optional_partition(request.query))})


@routes.post("/v1/queues/{queue}/clear")
async def clear_queue(request: web.Request) -> web.Response:
    await request.app[keys.QUEUES].clear(_queue(request), _optional_partition(request.query))
    return json_response({"cleared": True})


async def _get_waiting(request: web.Request) -> web.Response:
    n = _int_param(request.query, "n", 1, 1, 5000)
    timeout = min(max(float_param(request, "timeout", 0), 0), _LONG_POLL_MAX_S)
    items = await request.app[keys.QUEUES].take(_queue(request), _partition(request.query), n=n, timeout=timeout)
    return _frames([(_item_header(i), i.payload) for i in items])


@routes.post("/v1/queues/{queue}/get")
@planned(slow=_get_waiting)
def get_items(app: web.Application, account: str, match: Mapping[str, str], query: Mapping[str, str],
              raw: bytes) -> Plan | None:
    """Claim and ack in one step: Modal's get / get_many."""
    n = _int_param(query, "n", 1, 1, 5000)
    float_query(query, "timeout", 0)  # a malformed timeout is refused whether or not it is needed
    return app[keys.QUEUES].plan_take(_find(app, account, match), _partition(query), n=n, answer=_items_answer)


async def _claim_waiting(request: web.Request) -> web.Response:
    n = _int_param(request.query, "n", 1, 1, 5000)
    timeout = min(max(float_param(request, "timeout", 0), 0), _LONG_POLL_MAX_S)
    lease = float_param(request, "lease", 30)
    taken = await request.app[keys.QUEUES].claim(_queue(request), _partition(request.query), n=n, lease_s=lease,
                                                  timeout=timeout, consumer=request.query.get("consumer"))
    body, content_type = _claims_answer(taken)
    return web.Response(body=body, content_type=content_type)


@routes.post("/v1/queues/{queue}/claims")
@planned(slow=_claim_waiting)
def claim_items(app: web.Application, account: str, match: Mapping[str, str], query: Mapping[str, str],
                raw: bytes) -> Plan | None:
    n = _int_param(query, "n", 1, 1, 5000)
    float_query(query, "timeout", 0)
    lease = float_query(query, "lease", 30)
    return app[keys.QUEUES].plan_claim(_find(app, account, match), _partition(query), n=n, lease_s=lease,
                                       consumer=query.get("consumer"), answer=_claims_answer)


@routes.post("/v1/queues/{queue}/claims/{claim}/ack")
@planned()
def ack_claim(app: web.Application, account: str, match: Mapping[str, str], query: Mapping[str, str],
              raw: bytes) -> Plan:
    q = _find(app, account, match)
    return app[keys.QUEUES].plan_ack(q, _claim_id(match))


@routes.post("/v1/queues/{queue}/claims/{claim}/renew")
async def renew_claim(request: web.Request) -> web.Response:
    expires = request.app[keys.QUEUES].renew(_queue(request), _claim(request), float_param(request, "lease", 30))
    return json_response({"lease_expires_at": expires})


@routes.post("/v1/queues/{queue}/claims/{claim}/release")
async def release_claim(request: web.Request) -> web.Response:
    went = await request.app[keys.QUEUES].release(_queue(request), _claim(request),
                                                  delay_s=max(0.0, float_param(request, "delay", 0)),
                                                  outcome="released")
    return json_response({"went_to": went})


@routes.post("/v1/queues/{queue}/claims/{claim}/fail")
async def fail_claim(request: web.Request) -> web.Response:
    body = await json_body(request)
    went = await request.app[keys.QUEUES].release(_queue(request), _claim(request), delay_s=0, outcome="failed",
                                                  error=str(body.get("error", ""))[:4000])
    return json_response({"went_to": went})


@routes.post("/v1/queues/{queue}/claims/{claim}/reject")
async def reject_claim(request: web.Request) -> web.Response:
    body = await json_body(request)
    await request.app[keys.QUEUES].reject(_queue(request), _claim(request), str(body.get("reason", ""))[:4000])
    return json_response({"went_to": "dead_letter"})


@routes.post("/v1/queues/{queue}/redrive")
async def redrive_queue(request: web.Request) -> web.Response:
    body = await json_body(request)
    moved = await request.app[keys.QUEUES].redrive(_queue(request), field(body, "to", str))
    return json_response({"moved": moved})


@routes.get("/v1/queues/{queue}/watch")
async def watch_queue(request: web.Request) -> web.StreamResponse:
    """NDJSON queue events (put, claimed, acked, taken, released, failed, expired, dead_lettered,
    redriven), each with the queue's revision: with `snapshot=1` the queued items first and a
    `snapshot_end` marker; with `start_revision=R` every event from R on (or `queue.compacted`)."""
    q = _queue(request)
    hub = request.app[keys.HUB]
    topic = q.events.topic
    live = hub.subscribe(topic)
    try:
        last = q.events.revision
        if request.query.get("snapshot") in ("1", "true"):
            items = request.app[keys.QUEUES].peek(q, None, 1_000_000)
            first = [{"revision": last, "type": "put", "id": i.key, "partition": i.partition,
                      "delivery_count": i.deliveries, "value": base64.b64encode(i.payload).decode(), "snapshot": True}
                     for i in items]
            first.append({"revision": last, "type": "snapshot_end", "id": None})
        elif "start_revision" in request.query:
            after = _int_param(request.query, "start_revision", 1, 1, 1 << 62) - 1
            first = q.events.since(after)
            last = max(last, after)
        else:
            first = []
        return await replay_then_follow(request, live, first, last)
    finally:
        hub.unsubscribe(topic, live)
