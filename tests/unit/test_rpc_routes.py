"""The rpc route index resolves every route as aiohttp's router does."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from urllib.parse import unquote

from apothic.control.app import create_app
from apothic.control.config import ServerConfig
from apothic.control.routes.rpc import ROUTE_INDEX, RpcRequest


def test_the_index_agrees_with_the_router_on_every_route(tmp_path: Path) -> None:
    app = create_app(ServerConfig(home=tmp_path))
    app.router.freeze()
    index = app[ROUTE_INDEX]

    async def check() -> int:
        matched = 0
        paths = [re.sub(r"\{[A-Za-z_]+\}", "x-1", r.resource.canonical) for r in app.router.routes() if r.resource]
        paths += ["/v1/queues/a%2Fb%20c/claims/7/ack", "/v1/nope", "/v1/queues//items", "/web/app/label/tail"]
        for path in paths:
            for method in ("GET", "HEAD", "POST", "PUT", "DELETE"):
                ours = index.resolve(method, path)
                if ours is None:
                    continue  # left to the router
                theirs = await app.router.resolve(RpcRequest(app, method, path, {}, b"", None))  # type: ignore[arg-type]
                assert theirs.http_exception is None, (method, path)
                # Names are read through path_name, which decodes what either left encoded.
                assert ours.handler is theirs.handler, (method, path)
                assert {k: unquote(v) for k, v in ours.items()} == {k: unquote(v) for k, v in theirs.items()}
                matched += 1
        return matched

    assert asyncio.run(check()) > 60  # nearly every route is served by the index
    assert dict(index.resolve("POST", "/v1/queues/a%2Fb%20c/claims/7/ack") or {}) == {"queue": "a%2Fb c", "claim": "7"}
    assert index.resolve("POST", "/v1/queues//items") is None  # an empty name is the router's 404
