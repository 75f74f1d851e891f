from __future__ import annotations

import datetime

import typer

from apothic import _loop
from apothic._client import get_client
from apothic.cli._output import JsonOpt, console, handles_errors, print_json, print_table

app_cli = typer.Typer(name="app", help="List and stop apps.", no_args_is_help=True)


@app_cli.command("list")
@handles_errors
def list_(json: JsonOpt = False) -> None:
    """Apps of this account, ephemeral and deployed."""

    async def fetch() -> list:
        return await (await get_client()).json("GET", "/v1/apps")

    apps = _loop.run(fetch())
    if json:
        print_json(apps)
        return
    rows = [[a["id"], a["name"], a["mode"], a["state"],
             datetime.datetime.fromtimestamp(a["created_at"]).isoformat(timespec="seconds")] for a in apps]
    print_table("Apps", ["id", "name", "mode", "state", "created"], rows)


@app_cli.command("stop")
@handles_errors
def stop(app: str = typer.Argument(help="App id or name.")) -> None:
    """Stop an app: its containers stop and its pending calls are cancelled."""

    async def post() -> dict:
        return await (await get_client()).json("POST", f"/v1/apps/{app}/stop")

    result = _loop.run(post())
    console.print(f"stopped {result['id']}")
