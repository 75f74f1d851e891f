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
    rows = [[w["id"], w["status"], w["provider"], w["pid"], w["capacity"].get("cpu"),
             w["capacity"].get("memory_mb"), len(w["capacity"].get("gpus", [])), w["containers"]] for w in workers]
    print_table("Workers", ["id", "status", "provider", "pid", "cpu", "memory MiB", "gpus", "containers"], rows)
