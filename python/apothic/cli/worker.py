from __future__ import annotations

from typing import Annotated

import typer

from apothic import _config, _loop
from apothic._client import get_client
from apothic.cli._output import JsonOpt, handles_errors, print_json, print_table

worker_cli = typer.Typer(name="worker", help="Run and inspect worker agents.", no_args_is_help=True)


@worker_cli.command("start")
def start(
    server: Annotated[str, typer.Option(help="Control plane URL, e.g. http://127.0.0.1:7878")],
    token: Annotated[str, typer.Option(help="Worker join token.")],
    provider: Annotated[str, typer.Option(help="Which provider started this agent.")] = "manual",
    exit_with_parent: Annotated[bool, typer.Option("--exit-with-parent", hidden=True)] = False,
) -> None:
    """Run a worker agent that dials out to the control plane."""
    from apothic._worker.agent import run_agent

    run_agent(server, token, home=_config.home(), provider=provider, exit_with_parent=exit_with_parent)


@worker_cli.command("list")
@handles_errors
def list_(json: JsonOpt = False) -> None:
    """Connected workers."""

    async def fetch() -> list:
        return await (await get_client()).json("GET", "/v1/workers")

    workers = _loop.run(fetch())
    if json:
        print_json(workers)
        return
    rows = []
    for w in workers:
        offer = w.get("offer") or {}
        gpu = f"{offer.get('gpu_count')}x {offer['gpu_name']}" if offer.get("gpu_name") else "-"
        price = offer.get("price_per_hour_usd")
        rows.append([w["id"], w["provider"], w.get("instance_id") or w["pid"], offer.get("cpu"),
                     _gb(offer.get("memory_gb")), gpu, _gb(offer.get("vram_gb")),
                     None if price is None else f"{float(price):.3f}", offer.get("reliability"),
                     offer.get("geolocation"), w["containers"]])
    print_table("Workers", ["id", "provider", "instance/pid", "cpu", "memory GB", "gpus", "vram GB", "$/hour",
                            "reliability", "geo", "containers"], rows)


def _gb(value: float | None) -> str | None:
    return None if value is None else f"{float(value):.1f}"
