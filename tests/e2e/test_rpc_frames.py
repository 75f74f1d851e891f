"""The rpc websocket's framing: batched messages for a client that offers the subprotocol, one
frame per message for one that does not (an older SDK); planned frames (hot Queue and Dict
calls) decided in batches and journaled in the order they were decided."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson

import apothic
from apothic import _config, _wire
from apothic._wire import join_frames, split_frames
from apothic.control.routes.rpc import BATCHED
from apothic.dict import _dump, encode_key
from tests.support import servers


def _request(request_id: int, path: str) -> bytes:
    return _wire.pack({"id": request_id, "method": "GET", "path": path, "query": {}})


async def _exchange(url: str, protocols: tuple[str, ...], messages: list[bytes],
                    answers: int, key: str | None = None) -> tuple[str | None, list]:
    headers = {"Authorization": f"Bearer {key or _config.api_key()}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.ws_connect(f"{url}/v1/rpc", protocols=protocols) as ws:
            for message in messages:
                await ws.send_bytes(message)
            got = []
            while len(got) < answers:
                msg = await asyncio.wait_for(ws.receive(), 30)
                frames = split_frames(msg.data) if ws.protocol == BATCHED else [msg.data]
                got += [_wire.unpack(frame) for frame in frames]
            return ws.protocol, got


def test_batched_messages_carry_many_requests_and_answers(server: dict) -> None:
    message = join_frames([_request(1, "/v1/queues"), _request(2, "/v1/dicts"), _request(3, "/v1/nope")])
    protocol, got = asyncio.run(_exchange(server["url"], (BATCHED,), [message], 3))
    assert protocol == BATCHED
    by_id = {header["id"]: (header, payload) for header, payload in got}
    assert by_id[1][0]["status"] == 200 and isinstance(orjson.loads(by_id[1][1]), list)
    assert by_id[2][0]["status"] == 200
    assert by_id[3][0]["status"] == 404
    assert orjson.loads(by_id[3][1])["error"]["code"] == "not_found"


def test_a_client_without_the_subprotocol_gets_one_frame_per_message(server: dict) -> None:
    protocol, got = asyncio.run(_exchange(server["url"], (), [_request(7, "/v1/queues"), _request(8, "/v1/dicts")], 2))
    assert protocol is None
    assert sorted(header["id"] for header, _ in got) == [7, 8]
    assert all(header["status"] == 200 for header, _ in got)


def _put(request_id: int, dict_name: str, key: str, value: Any) -> bytes:
    body = {"key": base64.b64encode(encode_key(key)).decode(), "value": base64.b64encode(_dump(value)).decode()}
    return _wire.pack({"id": request_id, "method": "POST", "path": f"/v1/dicts/{dict_name}/put", "query": {}},
                      orjson.dumps(body))


def test_planned_frames_of_one_message_are_decided_in_order_and_each_answered(server: dict) -> None:
    apothic.Dict.from_name("planned", create_if_missing=True).hydrate()
    frames = [_put(i, "planned", "k", i) for i in range(40)]  # past two 16-frame turns
    frames.append(_put(100, "no-such-dict", "k", 0))
    frames.append(_wire.pack({"id": 101, "method": "POST", "path": "/v1/dicts/planned/put", "query": {}},
                             orjson.dumps({"key": "not base64!", "value": ""})))
    frames.append(_wire.pack({"id": 102, "method": "POST", "path": "/v1/queues/planned-q/claims", "query": {}}))
    _, got = asyncio.run(_exchange(server["url"], (BATCHED,), [join_frames(frames)], len(frames)))
    by_id = {header["id"]: (header, payload) for header, payload in got}
    revisions = [orjson.loads(by_id[i][1])["revision"] for i in range(40)]
    assert all(by_id[i][0]["status"] == 200 for i in range(40))
    assert revisions == sorted(revisions) and len(set(revisions)) == 40
    assert orjson.loads(by_id[100][1])["error"]["code"] == "dict.not_found"
    assert orjson.loads(by_id[101][1])["error"]["code"] == "request.malformed"
    assert orjson.loads(by_id[102][1])["error"]["code"] == "queue.not_found"
    entry = apothic.Dict.from_name("planned").entry("k")
    assert entry is not None and entry.value == 39 and entry.version == 40


_READ_K = """
import apothic
e = apothic.Dict.from_name("planned").entry("k")
print(e.value, e.version)
"""


def test_planned_writes_answered_before_a_sigkill_survive_it_in_order(tmp_path: Path) -> None:
    """40 writes of one key in one message, journaled in three writes: after a SIGKILL and a
    restart the key holds the last of them (the checkpoint keeps the last write of a row)."""
    home = tmp_path / "home"
    info = servers.start(home)
    env = servers.env_for(home)
    try:
        subprocess.run([sys.executable, "-c", "import apothic; apothic.Dict.from_name('planned', "
                        "create_if_missing=True).hydrate()"], env=env, check=True, timeout=60)
        key = (home / "api_key").read_text().strip()
        frames = [_put(i, "planned", "k", i) for i in range(40)]
        _, got = asyncio.run(_exchange(info["url"], (BATCHED,), [join_frames(frames)], 40, key=key))
        assert all(header["status"] == 200 for header, _ in got)
        os.kill(info["pid"], signal.SIGKILL)  # before the checkpoint's lag is up: the journal has them
        assert servers.wait_dead(info["pid"])
        info = servers.start(home)
        read = subprocess.run([sys.executable, "-c", _READ_K], env=env, capture_output=True, text=True, timeout=60)
        assert read.returncode == 0, read.stderr
        assert read.stdout.split() == ["39", "40"]
    finally:
        servers.stop(home, info["pid"])
