"""Offer search across every enabled provider: what `apothic offers search` shows."""

from __future__ import annotations

from aiohttp import web

from apothic._bridge.placement import OfferFilter, OfferTable
from apothic.control.capacity import CAPACITY
from apothic.control.routes._body import field, json_body, json_response
from apothic.exception import MalformedRequestError

routes = web.RouteTableDef()

_MAX_LIMIT = 1000


@routes.post("/v1/offers/search")
async def search(request: web.Request) -> web.Response:
    """Body: {provider?, placements: [spec, ...], limit?}. The offers passing any placement,
    ranked (price, then reliability, then id) across providers."""
    body = await json_body(request)
    provider = field(body, "provider", str, required=False)
    placements = field(body, "placements", list, required=False) or [{}]
    limit = field(body, "limit", int, required=False) or 20
    if not 1 <= limit <= _MAX_LIMIT:
        raise MalformedRequestError(f"limit must be between 1 and {_MAX_LIMIT}")
    if not all(isinstance(p, dict) for p in placements):
        raise MalformedRequestError("each placement must be an object")
    manager = request.app[CAPACITY]
    found: dict[tuple[str, str], dict] = {}
    for spec in placements:
        for offer in await manager.search(spec, provider, limit):
            found.setdefault((str(offer.get("provider")), str(offer.get("id"))), offer)
    offers = list(found.values())
    if len(placements) > 1:
        # Several fallbacks: rank their union once more, in Rust, so the cheapest come first.
        table = OfferTable.from_offers(offers)
        offers = [table.offer(i) for i in table.match(OfferFilter.compile({}), limit)]
    return json_response(offers[:limit])
