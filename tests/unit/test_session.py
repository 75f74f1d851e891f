"""The multiplexed session through `apothic._bridge.session`: two in-process Sessions wired back
to back, then `SessionChannel` over a real aiohttp websocket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from apothic._bridge.session import (
    CANCEL,
    STREAM_WINDOW,
    Session,
    SessionChannel,
    SessionConfig,
    SessionEvent,
    SessionStream,
)
from apothic.exception import ConnectionError, Error, InvalidError, MalformedRequestError


def pump(src: Session, dst: Session) -> list[SessionEvent]:
    return dst.receive(src.outgoing())


def data_len(events: list[SessionEvent], stream_id: int) -> int:
    return sum(len(e.payload) for e in events if e.kind == "data" and e.stream_id == stream_id)


# ---- the binding, in-process ------------------------------------------------------------------
def test_round_trip_between_two_sessions() -> None:
    a, b = Session(dialer=True), Session(dialer=False)
    sid = a.open_stream(b"hdr")
    assert sid == 1
    a.send(sid, b"hello")
    a.close(sid)
    assert pump(a, b) == [("opened", 1, b"hdr"), ("data", 1, b"hello"), ("closed", 1, None)]
    b.send(sid, b"back")
    b.close(sid)
    events = pump(b, a)
    assert events == [("data", 1, b"back"), ("closed", 1, None)]
    assert events[0].payload == b"back" and events[0].code is None
    a.consumed(sid, 4)
    b.consumed(sid, 5)
    assert a.stream_count() == b.stream_count() == 0


def test_flow_control_holds_data_until_the_receiver_consumes() -> None:
    a, b = Session(dialer=True), Session(dialer=False)
    sid = a.open_stream()
    a.send(sid, b"x" * (STREAM_WINDOW + 5000))
    events = pump(a, b)
    assert data_len(events, sid) == STREAM_WINDOW
    assert a.queued(sid) == 5000 and a.send_window(sid) == 0
    assert a.outgoing() == b""
    assert b.consumed(sid, STREAM_WINDOW) is True
    assert pump(b, a) == [("window_opened", sid, None)]
    assert data_len(pump(a, b), sid) == 5000


def test_reset_carries_its_code() -> None:
    a, b = Session(dialer=True), Session(dialer=False)
    sid = a.open_stream()
    pump(a, b)
    b.reset(sid, 99)
    (event,) = pump(b, a)
    assert event.kind == "reset" and event.stream_id == sid and event.code == 99
    with pytest.raises(InvalidError) as info:
        a.send(sid, b"late")
    assert info.value.code == "session.stream_closed"


def test_malformed_bytes_raise_a_clear_error_with_a_code() -> None:
    b = Session(dialer=False)
    with pytest.raises(MalformedRequestError) as info:
        b.receive(b"\x09" + b"\x00" * 9)
    assert info.value.code == "session.protocol"
    assert "unknown frame type 0x09" in str(info.value)
    assert "\n" not in str(info.value)
    # The session is over; it left a GOAWAY in outgoing() to tell the peer why.
    with pytest.raises(ConnectionError) as closed:
        b.receive(b"")
    assert closed.value.code == "session.closed"
    a = Session(dialer=True)
    assert [e.kind for e in pump(b, a)] == ["goaway"]


def test_large_reads_and_bad_arguments() -> None:
    a, b = Session(dialer=True), Session(dialer=False)
    sid = a.open_stream()
    a.send(sid, bytes(range(256)) * 1000)  # one read well above the GIL-release threshold
    events = pump(a, b)
    assert b"".join(e.payload for e in events if e.kind == "data") == bytes(range(256)) * 1000
    with pytest.raises(InvalidError) as info:
        b.consumed(sid, 10**9)
    assert info.value.code == "invalid_argument"
    with pytest.raises(InvalidError):
        Session(dialer=True, config=SessionConfig(ping_interval_ms=100, dead_timeout_ms=50))


def test_dead_peer_is_reported_by_tick() -> None:
    a = Session(dialer=True, config=SessionConfig(ping_interval_ms=100, dead_timeout_ms=300))
    assert a.tick(1000)
    assert a.tick(1200)
    assert not a.tick(1300)
    assert a.events() == [("dead", 0, None)]
    with pytest.raises(ConnectionError) as info:
        a.open_stream()
    assert info.value.code == "session.dead"


# ---- SessionChannel over a real websocket -----------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/session", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/session"


async def digest_back(stream: SessionStream) -> None:
    h, n = hashlib.sha256(), 0
    while chunk := await stream.read():
        h.update(chunk)
        n += len(chunk)
    stream.write(f"{n}:{h.hexdigest()}".encode())
    stream.close()


async def session_server(request: web.Request) -> web.WebSocketResponse:
    """Answers `hello` on the control stream, digests every fast stream, and reads the stream
    named `slow` only when the control stream says so."""
    ws = web.WebSocketResponse(max_msg_size=0, compress=False)
    await ws.prepare(request)
    async with SessionChannel(ws, dialer=False) as channel:
        slow: asyncio.Future[SessionStream] = asyncio.get_running_loop().create_future()
        tasks: set[asyncio.Task[None]] = set()

        async def control_loop() -> None:
            control = await channel.control()
            while (frame := await control.read_frame()) is not None:
                header, payload = frame
                if header["t"] == "hello":
                    control.write_frame({"t": "welcome"}, payload)
                elif header["t"] == "read_slow":
                    stream = await slow
                    total = 0
                    while chunk := await stream.read():
                        total += len(chunk)
                    control.write_frame({"t": "slow_done", "bytes": total})

        tasks.add(asyncio.create_task(control_loop()))
        while True:
            try:
                stream = await channel.accept()
            except Error:
                break
            if stream.headers == b"slow":
                slow.set_result(stream)
            else:
                tasks.add(asyncio.create_task(digest_back(stream)))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return ws


async def fast_stream(channel: SessionChannel, payload: bytes) -> None:
    stream = channel.open(b"fast")
    for i in range(0, len(payload), 64 * 1024):
        stream.write(payload[i : i + 64 * 1024])
        await stream.drain()
    stream.close()
    answer = b""
    while chunk := await stream.read():
        answer += chunk
    assert answer.decode() == f"{len(payload)}:{hashlib.sha256(payload).hexdigest()}"


async def slow_and_fast_streams() -> None:
    runner, url = await serve(session_server)
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0, compress=0) as ws:
            async with SessionChannel(ws, dialer=True) as channel:
                control = await channel.control()
                assert control.id == 1
                control.write_frame({"t": "hello"}, b"\x00payload")
                assert await control.read_frame() == ({"t": "welcome"}, b"\x00payload")

                # The slow stream: 2 MiB written, nobody reads it on the other side yet.
                slow = channel.open(b"slow")
                slow_size = 2 * 1024 * 1024
                slow.write(b"s" * slow_size)
                slow.close()
                slow_drained = asyncio.create_task(slow.drain())

                # Twenty fast streams, each twice a window, all finish meanwhile.
                payloads = [bytes([i]) * (2 * STREAM_WINDOW) + i.to_bytes(4, "big") for i in range(20)]
                async with asyncio.timeout(60):
                    await asyncio.gather(*(fast_stream(channel, p) for p in payloads))
                await asyncio.sleep(0.2)
                assert not slow_drained.done(), "the slow stream is held back by its window"
                assert channel.session.queued(slow.id) > slow_size - 2 * STREAM_WINDOW

                control.write_frame({"t": "read_slow"})
                async with asyncio.timeout(60):
                    assert await control.read_frame() == ({"t": "slow_done", "bytes": slow_size}, b"")
                    await slow_drained
    finally:
        await runner.cleanup()


def test_channel_slow_stream_does_not_stall_fast_ones() -> None:
    asyncio.run(slow_and_fast_streams())


async def silent_peer() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for _ in ws:  # takes the session's bytes and never answers
            pass
        return ws

    runner, url = await serve(handler)
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
            config = SessionConfig(ping_interval_ms=50, dead_timeout_ms=400)
            async with SessionChannel(ws, dialer=True, config=config) as channel:
                stream = channel.open(b"anyone?")
                async with asyncio.timeout(30):
                    reason = await channel.wait_closed()
                assert reason.code == "session.dead"
                with pytest.raises(ConnectionError) as info:
                    await stream.read()
                assert info.value.code == "session.dead"
    finally:
        await runner.cleanup()


def test_channel_declares_a_silent_peer_dead() -> None:
    asyncio.run(silent_peer())


async def garbage_and_reset() -> None:
    reasons: asyncio.Queue[Error] = asyncio.Queue()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async with SessionChannel(ws, dialer=False) as channel:
            if request.query.get("mode") == "reset":
                stream = await channel.accept()
                stream.reset(1234)
            await reasons.put(await channel.wait_closed())
        return ws

    runner, url = await serve(handler)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url, max_msg_size=0) as ws:
                await ws.send_bytes(b"\xff" * 10)
                async with asyncio.timeout(30):
                    reason = await reasons.get()
                    goaway = await ws.receive_bytes()
                assert isinstance(reason, MalformedRequestError) and reason.code == "session.protocol"
                assert Session(dialer=True).receive(goaway)[0].kind == "goaway"

            async with http.ws_connect(url + "?mode=reset", max_msg_size=0) as ws:
                async with SessionChannel(ws, dialer=True) as channel:
                    stream = channel.open(b"to be reset")
                    stream.write(b"x")
                    with pytest.raises(ConnectionError) as info:
                        async with asyncio.timeout(30):
                            await stream.read()
                    assert info.value.code == "session.stream_reset"
                    assert "code 1234" in str(info.value)
                    other = channel.open(b"dropped here")
                    other.reset(CANCEL)
                    with pytest.raises(ConnectionError):
                        other.write(b"after reset")
    finally:
        await runner.cleanup()


def test_channel_protocol_error_and_reset() -> None:
    asyncio.run(garbage_and_reset())
