"""The HTTP API directly: auth and malformed requests get `{"error": {code, message}}`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path


def _call(server: dict, method: str, path: str, body: bytes | None, key: str | None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(server["url"] + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _key(home: Path) -> str:
    return (home / "api_key").read_text().strip()


def test_every_route_needs_a_key(server: dict) -> None:
    status, body = _call(server, "GET", "/v1/apps", None, None)
    assert status == 401 and body["error"]["code"] == "auth.missing_key"
    status, body = _call(server, "GET", "/v1/apps", None, "ak-nope")
    assert status == 401 and body["error"]["code"] == "auth.invalid_key"


def test_malformed_bodies(server: dict, home: Path) -> None:
    key = _key(home)
    status, body = _call(server, "POST", "/v1/apps", b"{not json", key)
    assert status == 400 and body["error"]["code"] == "request.malformed"
    status, body = _call(server, "POST", "/v1/apps", b'{"mode": "weird", "bundle_hash": "x", "functions": []}', key)
    assert status == 400 and body["error"]["code"] == "request.malformed"
    status, body = _call(server, "POST", "/v1/functions/fn-x/calls:batch", b"\x00\x00\x00\x09ab", key)
    assert status == 400 and body["error"]["code"] == "request.malformed"


def test_unknown_ids_and_routes(server: dict, home: Path) -> None:
    key = _key(home)
    status, body = _call(server, "POST", "/v1/functions/fn-missing/calls", b"x", key)
    assert status == 404 and body["error"]["code"] == "function.not_found"
    status, body = _call(server, "GET", "/v1/nothing-here", None, key)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = _call(server, "GET", "/v1/jobs/fc-00000000000000000000000000", None, key)
    assert status == 404 and body["error"]["code"] == "job.not_found"


def test_the_sdk_works_over_plain_http_too(server: dict, home: Path) -> None:
    import subprocess
    import sys

    from tests.support import servers

    script = ("import apothic\n"
              "with apothic.Queue.ephemeral() as q:\n"
              "    q.put_many([1, 2]); print(q.get_many(2))\n"
              "with apothic.Dict.ephemeral() as d:\n"
              "    d['k'] = 'v'; print(d['k'])\n")
    out = subprocess.run([sys.executable, "-c", script], env=servers.env_for(home, APOTHIC_TRANSPORT="http"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[1, 2]", "v"]


def test_streams_are_refused_over_the_multiplexed_socket(server: dict) -> None:
    import pytest

    import apothic
    from apothic import _loop
    from apothic._client import get_client

    async def ask() -> None:
        client = await get_client()
        await client.request("GET", "/v1/jobs/fc-00000000000000000000000000/events")

    with pytest.raises(apothic.exception.Error) as info:
        _loop.run(ask())
    assert info.value.code == "request.malformed" and "over HTTP" in info.value.message
