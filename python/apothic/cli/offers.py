from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer

from apothic import _loop
from apothic._client import get_client
from apothic.cli._output import JsonOpt, handles_errors, print_json, print_table
from apothic.exception import InvalidError

offers_cli = typer.Typer(name="offers", help="Search the capacity providers can rent.", no_args_is_help=True)


@offers_cli.command("search")
@handles_errors
def search(
    provider: Annotated[str | None, typer.Option(help="Only this provider (local, vast, fly).")] = None,
    gpu: Annotated[str | None, typer.Option(help='GPU as in @app.function: "A100", "H100:2".')] = None,
    gpu_count: Annotated[int | None, typer.Option(help="At least this many GPUs.")] = None,
    min_vram_gb: Annotated[float | None, typer.Option(help="At least this much memory per GPU.")] = None,
    geolocation: Annotated[str | None, typer.Option(help="Country code, e.g. US.")] = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", help="Most USD per hour.")] = None,
    filter_json: Annotated[str | None, typer.Option("--filter", help='offer_filters as JSON, e.g. '
                                                    '\'{"reliability": {"gte": 0.98}}\'')] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many offers.")] = 20,
    json: JsonOpt = False,
) -> None:
    """Offers that match, cheapest first, from every enabled provider."""
    from apothic.placement import placements_from_options

    offer_filters: Any = None
    if filter_json:
        try:
            offer_filters = orjson.loads(filter_json)
        except orjson.JSONDecodeError as e:
            raise InvalidError(f"--filter is not valid JSON: {e}") from None
    placements = placements_from_options("offers search", gpu=gpu, gpu_count=gpu_count, min_vram_gb=min_vram_gb,
                                         geolocation=geolocation, max_cost_per_hour_usd=max_cost,
                                         offer_filters=offer_filters)
    specs = [p.spec() for p in placements] or [{}]

    async def fetch() -> list[dict[str, Any]]:
        client = await get_client()
        return await client.json("POST", "/v1/offers/search",
                                 json={"provider": provider, "placements": specs, "limit": limit})

    offers = _loop.run(fetch())
    if json:
        print_json(offers)
        return
    rows = [[o.get("provider"), o.get("id"), o.get("gpu_name"), o.get("gpu_count"), _num(o.get("vram_gb")),
             o.get("cpu"), _num(o.get("memory_gb")), _num(o.get("price_per_hour_usd"), 3),
             _num(o.get("reliability"), 3), o.get("geolocation")] for o in offers]
    print_table("Offers", ["provider", "id", "gpu", "count", "vram GB", "cpu", "memory GB", "$/hour", "reliability",
                           "geo"], rows)


def _num(value: Any, digits: int = 1) -> str | None:
    return None if value is None else f"{float(value):.{digits}f}"
