"""The rpc websocket's framing: batched messages for a client that offers the subprotocol, one
frame per message for one that does not (an older SDK)."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from apothic import _config, _wire
from apothic._wire import join_frames, split_frames
from apothic.control.routes.rpc import BATCHED


def _request(request_id: int, path: str) -> bytes:
    return _wire.pack({"id": request_id, "method": "GET", "path": path, "query": {}})


async def _exchange(url: str, protocols: tuple[str, ...], messages: list[bytes],
                    answers: int) -> tuple[str | None, list]:
    headers = {"Authorization": f"Bearer {_config.api_key()}"}
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
