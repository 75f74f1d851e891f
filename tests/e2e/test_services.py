"""Web services end to end: a real control plane proxies real HTTP (aiohttp client) through the
worker session to real container processes serving each kind of web function."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import apothic
from apothic.exception import InvalidError
from tests.e2e.apps import web
from tests.support import servers

ROOT = Path(__file__).resolve().parents[2]

Check = Callable[[aiohttp.ClientSession], Awaitable[Any]]


def http(check: Check) -> Any:
    """Runs `check` with a fresh aiohttp client session on its own loop."""

    async def go() -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            return await check(session)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def running(server: dict):
    with web.app.run(show_output=False):
        yield web


def test_endpoint_get_and_post_json(running) -> None:
    async def check(s: aiohttp.ClientSession) -> None:
        url = running.hello.get_web_url()
        async with s.get(url, params={"name": "ada", "times": "3"}) as r:
            assert r.status == 200 and r.content_type == "application/json"
            body = await r.json()
            assert body["greeting"] == "hello ada" and body["times"] == 3
        async with s.post(running.add_numbers.get_web_url(), json={"a": 2, "b": 40}) as r:
            assert r.status == 200 and await r.json() == {"sum": 42}
        async with s.get(url, params={"nonsense": "1"}) as r:  # an argument the function does not take
            assert r.status == 400 and (await r.json())["error"]["code"] == "request.malformed"
        async with s.post(url) as r:
            assert r.status == 405

    http(check)


def test_web_url_is_stable_and_public(running, server: dict) -> None:
    url = running.add_numbers.get_web_url()
    assert url == f"{server['url']}/web/{running.app.app_id}/sum/"  # the label names it
    assert url == running.add_numbers.get_web_url()

    async def check(s: aiohttp.ClientSession) -> None:
        # No API key is sent: web endpoints are public unless they ask for proxy auth.
        async with s.post(url.rstrip("/"), json={"a": 1, "b": 1}) as r:
            assert r.status == 200 and await r.json() == {"sum": 2}

    http(check)


def test_fastapi_endpoint_takes_a_json_body(running) -> None:
    async def check(s: aiohttp.ClientSession) -> None:
        async with s.post(running.square.get_web_url(), json={"x": 12}) as r:
            assert r.status == 200 and await r.json() == {"square": 144}
        async with s.get(running.square.get_web_url()) as r:
            assert r.status == 405  # FastAPI's own answer for the wrong method

    http(check)


def test_asgi_streaming_response_and_streaming_request(running) -> None:
    async def check(s: aiohttp.ClientSession) -> None:
        base = running.streaming.get_web_url()
        async with s.get(base + "stream", params={"n": "6"}) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            assert r.headers.get("Transfer-Encoding") == "chunked"
            events = [line async for line in r.content if line.startswith(b"data:")]
        assert events == [f"data: {i}\n".encode() for i in range(6)]

        async def body() -> Any:  # a chunked upload larger than one frame
            for _ in range(40):
                yield b"abcdefgh" * 8192

        async with s.post(base + "echo", data=body()) as r:
            assert r.status == 200 and await r.json() == {"bytes": 40 * 65536, "head": "abcdefgh"}

    http(check)


def test_the_app_is_mounted_at_its_url(running) -> None:
    """Frameworks see root_path /web/{app}/{label}, so the links they build lead back through the proxy."""

    async def check(s: aiohttp.ClientSession) -> None:
        base = running.streaming.get_web_url()
        async with s.get(base + "where/x") as r:
            assert r.status == 200
            body = await r.json()
        assert body["url"] == base + "where/x" and base.endswith(body["root_path"] + "/")

    http(check)


def test_a_client_that_goes_away_stops_the_apps_stream(running, markers: Path) -> None:
    marker = markers / "stopped"

    async def check(s: aiohttp.ClientSession) -> None:
        async with s.get(running.streaming.get_web_url() + "forever", params={"marker": str(marker)}) as r:
            assert r.status == 200
            assert (await r.content.readline()).startswith(b"data: tick")
        # Leaving the block closed the connection mid-stream: the reset reaches the container.
        for _ in range(200):
            if marker.exists():
                return
            await asyncio.sleep(0.1)

    http(check)
    assert marker.read_text() == "stopped"


def test_wsgi_app(running) -> None:
    async def check(s: aiohttp.ClientSession) -> None:
        async with s.post(running.classic.get_web_url() + "some/path?q=1", data=b"payload") as r:
            assert r.status == 200 and r.headers["X-Kind"] == "wsgi"
            assert await r.text() == "POST /some/path q=1 payload"

    http(check)


def test_web_server_port(running) -> None:
    async def check(s: aiohttp.ClientSession) -> None:
        async with s.get(running.plain_server.get_web_url() + "deep/file.txt") as r:
            assert r.status == 200
            text = await r.text()
        assert text.startswith("/deep/file.txt from ") and int(text.split()[-1]) != os.getpid()

    http(check)


def test_websocket_echo_through_the_proxy(running) -> None:
    async def check(s: aiohttp.ClientSession) -> None:
        async with s.ws_connect(running.streaming.get_web_url() + "ws") as ws:
            for i in range(20):
                await ws.send_str(f"m{i}")
                assert (await ws.receive_str(timeout=30)) == f"echo m{i}"
            await ws.send_str("bye")
            closing = await ws.receive(timeout=30)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1000
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(running.streaming.get_web_url() + "refuse")
        assert refused.value.status == 403

    http(check)


def test_many_requests_in_flight_each_get_their_own_answer(running) -> None:
    """Frames of many streams share session messages (batches): every answer must reach its own request."""

    async def check(s: aiohttp.ClientSession) -> None:
        base = running.streaming.get_web_url()
        gate = asyncio.Semaphore(24)

        async def one(i: int) -> None:
            async with gate, s.get(f"{base}where/n{i}") as r:
                assert r.status == 200
                assert (await r.json())["url"] == f"{base}where/n{i}"

        await asyncio.gather(*(one(i) for i in range(300)))

    http(check)


def test_batches_round_trip() -> None:
    from apothic._wire import join_frames, pack, pack_joinable, split_frames, unpack_frames

    frames = [b"", b"a", bytes(range(256)) * 300]
    assert split_frames(join_frames(frames)) == frames
    # The one-pass forms read and write the same bytes as the frame-by-frame ones.
    entries = [({"id": 1}, b""), ({"id": 2, "t": "x"}, b"payload"), ({}, bytes(range(256)) * 300)]
    message = b"".join([pack_joinable(header, payload) for header, payload in entries])
    assert message == join_frames([pack(header, payload) for header, payload in entries])
    assert unpack_frames(message) == entries


def test_concurrent_requests_overlap_in_one_container(running) -> None:
    """max_inputs=4: four slow requests run at once in the same container process."""

    async def check(s: aiohttp.ClientSession) -> list[dict]:
        url = running.streaming.get_web_url() + "wait"
        async with s.get(url, params={"seconds": "0"}) as r:  # warm: the container is up before the burst
            assert r.status == 200

        async def one() -> dict:
            async with s.get(url, params={"seconds": "2"}) as r:
                assert r.status == 200
                return await r.json()

        return await asyncio.gather(*(one() for _ in range(4)))

    results = http(check)
    assert len({r["pid"] for r in results}) == 1
    # Every request began before any of them ended: they ran at the same time.
    assert max(r["started"] for r in results) < min(r["ended"] for r in results)


def test_idle_container_scales_down_and_the_next_request_cold_starts(running) -> None:
    async def pid(s: aiohttp.ClientSession) -> int:
        async with s.get(running.brief.get_web_url()) as r:
            assert r.status == 200
            return (await r.json())["pid"]

    async def check(s: aiohttp.ClientSession) -> tuple[int, int, int]:
        first, again = await pid(s), await pid(s)
        await asyncio.sleep(5)  # scaledown_window=1: the idle container is stopped meanwhile
        return first, again, await pid(s)

    first, again, later = http(check)
    assert first == again != later


def test_a_scaled_down_asgi_app_runs_its_lifespan_shutdown(running) -> None:
    """The agent stops an idle container with SIGTERM; the app's lifespan shutdown runs before
    it exits (it was killed outright, shutdown handlers never ran)."""
    async def check(s: aiohttp.ClientSession) -> str:
        async with s.get(running.with_lifespan.get_web_url().rstrip("/") + "/marker") as r:
            assert r.status == 200
            return (await r.json())["path"]

    marker = Path(http(check))
    try:
        deadline = time.monotonic() + 15  # scaledown_window=1, then the scheduler's next tick
        while "shutdown" not in marker.read_text():
            assert time.monotonic() < deadline, marker.read_text()
            time.sleep(0.2)
        assert marker.read_text().split() == ["startup", "shutdown"]
    finally:
        marker.unlink(missing_ok=True)


def test_error_shapes_404_502_504(running, server: dict) -> None:
    async def check(s: aiohttp.ClientSession) -> None:
        async with s.get(f"{server['url']}/web/no-such-app/hello/") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "web.not_found"
        async with s.get(running.hello.get_web_url().replace("/hello/", "/nope/")) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "web.not_found"
        async with s.get(running.broken.get_web_url()) as r:  # the app raises while starting
            error = (await r.json())["error"]
            assert r.status == 502 and error["code"] == "web.upstream_failed"
            assert "this app cannot start" in error["message"]
        async with s.get(running.crash.get_web_url()) as r:  # the container dies mid-request
            assert r.status == 502 and (await r.json())["error"]["code"] == "web.upstream_failed"
        async with s.get(running.slow.get_web_url(), params={"seconds": "30"}) as r:  # timeout=2
            assert r.status == 504 and (await r.json())["error"]["code"] == "web.timeout"

    http(check)


def test_proxy_auth(running, server: dict) -> None:
    from apothic import _config

    key = _config.api_key()
    assert key

    async def check(s: aiohttp.ClientSession) -> None:
        url = running.private.get_web_url()
        async with s.get(url) as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "auth.missing_key"
        async with s.get(url, headers={"Apothic-Key": "ak-wrong"}) as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "auth.invalid_key"
        async with s.get(url, headers={"Apothic-Key": key, "X-Seen": "1"}) as r:
            assert r.status == 200
            seen = (await r.text()).split(",")
        assert "x-seen" in seen and "apothic-key" not in seen  # the key never reaches the app

    http(check)


def test_deployed_url_survives_a_redeploy(server: dict, cli) -> None:
    web.deployed.deploy()
    try:
        url = web.deployed_ping.get_web_url()
        assert url == f"{server['url']}/web/e2e-web-deployed/ping/"

        async def ping(s: aiohttp.ClientSession) -> dict:
            async with s.get(url) as r:
                assert r.status == 200
                return await r.json()

        first = http(ping)
        web.deployed.deploy()  # a new deployment replaces the old one at the same URL
        assert web.deployed_ping.get_web_url() == url
        # Looked up by name from anywhere, the same URL.
        assert apothic.Function.from_name("e2e-web-deployed", "deployed_ping").get_web_url() == url
        second = http(ping)
        assert first["pong"] and second["pong"] and first["pid"] != second["pid"]
    finally:
        cli("app", "stop", "e2e-web-deployed")


_DEPLOY = """
import sys
sys.path.insert(0, {root!r})
from tests.e2e.apps import web
web.deployed.deploy()
print(web.deployed_ping.get_web_url())
"""


def test_deployed_url_path_survives_a_control_plane_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"  # a surrealkv store on disk: the deployment must outlive the process
    info = servers.start(home)
    try:
        deployed = subprocess.run([sys.executable, "-c", _DEPLOY.format(root=str(ROOT))], env=servers.env_for(home),
                                  capture_output=True, text=True, timeout=120)
        assert deployed.returncode == 0, deployed.stderr
        url = deployed.stdout.strip()
        path = url[len(info["url"]):]
        assert path == "/web/e2e-web-deployed/ping/"

        async def ping(s: aiohttp.ClientSession, base: str) -> int:
            async with s.get(base + path) as r:
                assert r.status == 200, await r.text()
                return (await r.json())["pid"]

        before = http(lambda s: ping(s, info["url"]))
        servers.stop(home, info["pid"])
        info = servers.start(home)
        after = http(lambda s: ping(s, info["url"]))  # a cold start on the restarted control plane
        assert before != after
    finally:
        servers.stop(home, info["pid"])


def test_decorators_refuse_what_they_cannot_honour() -> None:
    scratch = apothic.App("scratch")
    with pytest.raises(InvalidError, match="only to web functions"):
        scratch.function()(apothic.concurrent(max_inputs=2)(_module_level))
    with pytest.raises(InvalidError, match="custom_domains"):
        apothic.asgi_app(custom_domains=["x.example"])
    with pytest.raises(InvalidError, match="retries"):
        scratch.function(retries=2)(apothic.asgi_app()(_module_level))
    with pytest.raises(InvalidError, match="port"):
        apothic.web_server(0)
    with pytest.raises(InvalidError, match="method"):
        apothic.fastapi_endpoint(method="BREW")
    with pytest.raises(InvalidError, match="already"):
        scratch.function()(apothic.asgi_app(label="same")(_module_level))
        scratch.function(name="other")(apothic.asgi_app(label="same")(_module_level))
    with pytest.raises(InvalidError, match="web function"):
        web.hello.remote()


def _module_level() -> None:
    pass
