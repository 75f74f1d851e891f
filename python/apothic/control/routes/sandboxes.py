"""Sandboxes under /v1/sandboxes: create, look up, exec with its streams, the filesystem,
named sessions, terminate and wait. Every route is a plain request (long polls at most), so
all of them also ride the SDK's multiplexed /v1/rpc socket."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from apothic import _wire
from apothic.control import keys
from apothic.control.middlewares import account_of
from apothic.control.placement import compile_requirements
from apothic.control.routes._body import field, float_param, json_body, json_response
from apothic.control.sandboxes import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, summary
from apothic.exception import MalformedRequestError

routes = web.RouteTableDef()

_LONG_POLL_MAX_S = 55.0
_FS_OPS = {"read_bytes", "write_bytes", "list_files", "stat", "make_directory", "remove"}


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedRequestError(f"{what} must be a list of strings")
    return value


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise MalformedRequestError("env must map strings to strings")
    return value


def _timeout(value: Any, default: float | None) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT_S:
        raise MalformedRequestError(f"timeout must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]")
    return float(value)


def _wait(request: web.Request) -> float:
    return min(max(float_param(request, "timeout", 0), 0), _LONG_POLL_MAX_S)


def _frame(header: dict[str, Any], payload: bytes = b"") -> web.Response:
    return web.Response(body=_wire.pack(header, payload), content_type="application/octet-stream")


@routes.post("/v1/sandboxes")
async def create_sandbox(request: web.Request) -> web.Response:
    body = await json_body(request)
    app_name = field(body, "app_name", str)
    name = field(body, "name", str, required=False)
    if not 0 < len(app_name) <= 128 or (name is not None and not 0 < len(name) <= 64):
        raise MalformedRequestError("app_name is 1 to 128 characters, and name 1 to 64")
    cmd = body.get("cmd")
    cpu, memory = body.get("cpu"), body.get("memory")
    if cpu is not None and (isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or cpu <= 0):
        raise MalformedRequestError("cpu must be a positive number")
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0):
        raise MalformedRequestError("memory must be a positive number of MiB")
    spec = {"app_name": app_name, "app_id": field(body, "app_id", str, required=False), "name": name,
            "cmd": _strings(cmd, "cmd") if cmd else None, "workdir": field(body, "workdir", str, required=False),
            "env": _env(body.get("env")), "timeout": _timeout(body.get("timeout"), DEFAULT_TIMEOUT_S),
            "cpu": cpu, "memory": memory, "placements": field(body, "placements", list, required=False)}
    if spec["placements"] is not None and not all(isinstance(p, dict) for p in spec["placements"]):
        raise MalformedRequestError("each placement must be an object")
    compile_requirements(spec)  # a bad filter is refused here, with the field it names
    record = await request.app[keys.SANDBOXES].create(account_of(request), spec)
    return json_response(summary(record), status=201)


@routes.get("/v1/sandboxes")
async def list_sandboxes(request: web.Request) -> web.Response:
    app_name = request.query.get("app")
    if not app_name:
        raise MalformedRequestError("query parameter 'app' (the app's name) is required")
    rows = await request.app[keys.SANDBOXES].find(account_of(request), app_name, request.query.get("name"))
    return json_response([summary(r) for r in rows])


@routes.get("/v1/sandboxes/{sandbox}")
async def get_sandbox(request: web.Request) -> web.Response:
    record = await request.app[keys.SANDBOXES].record(account_of(request), request.match_info["sandbox"])
    return json_response(summary(record))


@routes.post("/v1/sandboxes/{sandbox}/terminate")
async def terminate_sandbox(request: web.Request) -> web.Response:
    record = await request.app[keys.SANDBOXES].terminate(account_of(request), request.match_info["sandbox"])
    return json_response(summary(record))


@routes.get("/v1/sandboxes/{sandbox}/wait")
async def wait_sandbox(request: web.Request) -> web.Response:
    record = await request.app[keys.SANDBOXES].wait(account_of(request), request.match_info["sandbox"],
                                                    _wait(request))
    return json_response(summary(record))


@routes.post("/v1/sandboxes/{sandbox}/processes")
async def create_sandbox_process(request: web.Request) -> web.Response:
    body = await json_body(request)
    args = _strings(body.get("args"), "args")
    if not args:
        raise MalformedRequestError("args must name a command")
    proc = await request.app[keys.SANDBOXES].exec(
        account_of(request), request.match_info["sandbox"], args, field(body, "workdir", str, required=False),
        _env(body.get("env")), _timeout(body.get("timeout"), None))
    return json_response({"process": proc}, status=201)


def _fd(request: web.Request) -> int:
    fd = request.query.get("fd", "1")
    if fd not in ("1", "2"):
        raise MalformedRequestError("fd is 1 (stdout) or 2 (stderr)")
    return int(fd)


@routes.get("/v1/sandboxes/{sandbox}/processes/{process}/output")
async def read_sandbox_output(request: web.Request) -> web.Response:
    """Output from `offset` on (which acknowledges what came before), as one wire frame:
    header {offset, eof}, payload the bytes."""
    offset = int(float_param(request, "offset", 0))
    min_bytes = int(float_param(request, "min_bytes", 1))
    start, eof, data = await request.app[keys.SANDBOXES].read(
        account_of(request), request.match_info["sandbox"], request.match_info["process"], _fd(request),
        offset, _wait(request), min_bytes)
    return _frame({"offset": start, "eof": eof}, data)


@routes.post("/v1/sandboxes/{sandbox}/processes/{process}/stdin")
async def write_sandbox_stdin(request: web.Request) -> web.Response:
    data = await request.read()
    eof = request.query.get("eof", "0") in ("1", "true")
    await request.app[keys.SANDBOXES].write_stdin(account_of(request), request.match_info["sandbox"],
                                                  request.match_info["process"], data, eof)
    return json_response({"written": len(data), "eof": eof})


@routes.get("/v1/sandboxes/{sandbox}/processes/{process}/wait")
async def wait_sandbox_process(request: web.Request) -> web.Response:
    result = await request.app[keys.SANDBOXES].wait_process(
        account_of(request), request.match_info["sandbox"], request.match_info["process"], _wait(request))
    return json_response(result)


@routes.post("/v1/sandboxes/{sandbox}/filesystem")
async def sandbox_filesystem(request: web.Request) -> web.Response:
    """One filesystem call. Body: a wire frame, header {op, path, options...}, payload the data
    to write; the answer is a wire frame too, header {result}, payload the data read."""
    raw = await request.read()
    try:
        header, payload = _wire.unpack(raw)
    except Exception:
        raise MalformedRequestError("body must be a wire frame: u32 header length, JSON header, payload") from None
    if not isinstance(header, dict) or header.get("op") not in _FS_OPS or not isinstance(header.get("path"), str):
        raise MalformedRequestError(f"op must be one of {sorted(_FS_OPS)} and path a string")
    allowed = {"op", "path", "recursive", "create_parents"}
    result, data = await request.app[keys.SANDBOXES].filesystem(
        account_of(request), request.match_info["sandbox"], {k: v for k, v in header.items() if k in allowed},
        payload)
    return _frame({"result": result}, data)


@routes.post("/v1/sandboxes/{sandbox}/sessions/{session}")
async def sandbox_session(request: web.Request) -> web.Response:
    """Opens (or attaches to) a named session; with `cmd`, runs it there and answers its
    stdout, stderr and exit code."""
    body = await json_body(request)
    name = request.match_info["session"]
    if not 0 < len(name) <= 64:
        raise MalformedRequestError("a session name is 1 to 64 characters")
    cmd = field(body, "cmd", str, required=False)
    result = await request.app[keys.SANDBOXES].session(
        account_of(request), request.match_info["sandbox"], name, op="run" if cmd is not None else "open",
        cmd=cmd, timeout=_timeout(body.get("timeout"), None), create=bool(body.get("create", True)))
    return json_response(result)
