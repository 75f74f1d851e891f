from __future__ import annotations

import orjson
from aiohttp import web

from apothic import _wire
from apothic.control import keys
from apothic.control.middlewares import account_of
from apothic.control.model import TERMINAL
from apothic.control.routes._body import field, float_param, json_body, json_response
from apothic.control.routes.streams import follow
from apothic.exception import MalformedRequestError, error_for

routes = web.RouteTableDef()

_LONG_POLL_MAX_S = 55.0
_MAX_CALL_BYTES = 64 * 1024 * 1024


def result_response(row: dict) -> web.Response:
    """A finished job as the caller gets it: its pickled outcome, or an error with a code."""
    status = row["status"]
    headers = {"X-Apothic-Job-Id": row["id"], "X-Apothic-Job-Status": status}
    if status == "succeeded" or (status == "failed" and row.get("result")):
        return web.Response(body=row.get("result") or b"", headers=headers,
                            content_type="application/octet-stream")
    error = row.get("error") or {"code": "execution.failed", "message": f"job {row['id']} {status}"}
    exc = error_for(error["code"], error["message"])
    body = orjson.dumps({"error": {"code": error["code"], "message": error["message"]}})
    return web.Response(body=body, status=exc.http_status, headers=headers, content_type="application/json")


@routes.post("/v1/functions/{function}/calls")
async def create_call(request: web.Request) -> web.StreamResponse:
    """One call. Body: the pickled (args, kwargs). `?wait=S` holds the response for the result."""
    payload = await request.read()
    if not payload or len(payload) > _MAX_CALL_BYTES:
        raise MalformedRequestError("call body must be the pickled arguments (1 byte to 64 MiB)")
    account = account_of(request)
    scheduler = request.app[keys.SCHEDULER]
    wait = min(float_param(request, "wait", 0), _LONG_POLL_MAX_S)
    [job_id] = await scheduler.submit(request.match_info["function"], account, [payload], acknowledge=wait <= 0)
    if wait > 0:
        try:
            return result_response(await scheduler.wait(job_id, account, wait))
        except Exception as e:
            if getattr(e, "code", "") != "job.pending":
                raise
        await request.app[keys.STORE].db.sync()  # the id below is a promise: make the job durable first
    return json_response({"job_id": job_id, "status": "queued"}, status=202)


@routes.post("/v1/functions/{function}/calls:batch")
async def create_calls(request: web.Request) -> web.Response:
    """Many calls at once (`.map`, `.spawn_map`). Body: u32-length-prefixed pickled inputs."""
    raw = await request.read()
    payloads, offset = [], 0
    while offset < len(raw):
        size = int.from_bytes(raw[offset : offset + 4], "big")
        chunk = raw[offset + 4 : offset + 4 + size]
        if size == 0 or len(chunk) != size:
            raise MalformedRequestError("batch body is not a sequence of length-prefixed inputs")
        payloads.append(chunk)
        offset += 4 + size
    if not payloads:
        raise MalformedRequestError("batch body holds no inputs")
    ids = await request.app[keys.SCHEDULER].submit(request.match_info["function"], account_of(request), payloads)
    return json_response({"job_ids": ids})


@routes.post("/v1/jobs/outcomes")
async def wait_job_outcomes(request: web.Request) -> web.Response:
    """The outcomes of many jobs (`gather`, `map`): waits up to `timeout` for all of them, then
    answers with those that ended, each as a u32-length-prefixed wire frame."""
    body = await json_body(request)
    ids = field(body, "ids", list)
    if not ids or not all(isinstance(i, str) for i in ids) or len(ids) > 10_000:
        raise MalformedRequestError("ids must be a list of 1 to 10,000 job ids")
    timeout = min(max(float(field(body, "timeout", (int, float), required=False) or 0), 0), _LONG_POLL_MAX_S)
    first = bool(body.get("first"))
    rows = await request.app[keys.SCHEDULER].wait_many(ids, account_of(request), timeout, first)
    frames = []
    for row in rows:
        frame = _wire.pack({"id": row["id"], "status": row["status"], "error": row.get("error")},
                           row.get("result") or b"")
        frames.append(len(frame).to_bytes(4, "big") + frame)
    return web.Response(body=b"".join(frames), content_type="application/octet-stream")


@routes.get("/v1/jobs/{job}")
async def get_job(request: web.Request) -> web.Response:
    summary = await request.app[keys.SCHEDULER].job_summary(request.match_info["job"], account_of(request))
    return json_response(summary)


@routes.get("/v1/jobs/{job}/result")
async def get_job_result(request: web.Request) -> web.Response:
    timeout = min(max(float_param(request, "timeout", 0), 0), _LONG_POLL_MAX_S)
    row = await request.app[keys.SCHEDULER].wait(request.match_info["job"], account_of(request), timeout)
    return result_response(row)


@routes.post("/v1/jobs/{job}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    summary = await request.app[keys.SCHEDULER].cancel(request.match_info["job"], account_of(request))
    return json_response(summary)


@routes.get("/v1/jobs/{job}/logs")
async def get_job_logs(request: web.Request) -> web.Response:
    job_id = request.match_info["job"]
    await request.app[keys.SCHEDULER].job_summary(job_id, account_of(request))
    lines = await request.app[keys.STORE].job_logs(job_id)
    return json_response(lines)


@routes.get("/v1/jobs/{job}/events")
async def job_events(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job"]
    scheduler = request.app[keys.SCHEDULER]
    await scheduler.job_summary(job_id, account_of(request))  # not_found, or another account's

    async def history(after: int) -> list[dict]:
        return await scheduler.job_history(job_id, after)

    return await follow(request, f"job:{job_id}", history, ends=lambda e: e["type"] in TERMINAL)
