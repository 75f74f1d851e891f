"""`apothic sandbox`: list, inspect, exec in and terminate sandboxes."""

from __future__ import annotations

import asyncio
import datetime
import sys
from typing import Annotated

import typer

from apothic.cli._output import JsonOpt, console, handles_errors, print_json, print_table
from apothic.sandbox import Sandbox

sandbox_cli = typer.Typer(name="sandbox", help="List, inspect, exec in and terminate sandboxes.",
                          no_args_is_help=True)

SandboxId = Annotated[str, typer.Argument(help="The sandbox id (sb-...).")]


def _when(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds") if ts else "-"


@sandbox_cli.command("list")
@handles_errors
def list_(app: Annotated[str, typer.Option("--app", help="The app's name.")], json: JsonOpt = False) -> None:
    """The sandboxes of an app, newest first (running and ended)."""
    from apothic import _loop
    from apothic._client import get_client

    async def fetch() -> list[dict]:
        client = await get_client()
        return await client.json("GET", "/v1/sandboxes", params={"app": app})

    rows = _loop.run(fetch())
    if json:
        print_json(rows)
        return
    print_table(f"sandboxes of {app}", ["id", "name", "status", "isolation", "created", "reason"],
                [[r["id"], r["name"], r["status"], r["isolation"], _when(r["created_at"]), r["reason"]] for r in rows])


@sandbox_cli.command("get")
@handles_errors
def get(sandbox_id: SandboxId, json: JsonOpt = False) -> None:
    """One sandbox's record: status, isolation, worker, timeout, how it ended."""
    info = Sandbox.from_id(sandbox_id).info()
    if json:
        print_json(info)
        return
    console.print(f"{info['id']}  [bold]{info['status']}[/bold]  isolation={info['isolation']}  "
                  f"worker={info['worker']}  timeout={info['timeout']:g}s  created={_when(info['created_at'])}",
                  highlight=False)
    if info.get("reason"):
        console.print(f"  {info['reason']}", highlight=False)


@sandbox_cli.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handles_errors
def exec_(sandbox_id: SandboxId, command: Annotated[list[str], typer.Argument(help="The command and its arguments.")],
          workdir: Annotated[str | None, typer.Option(help="Working directory in the sandbox.")] = None,
          timeout: Annotated[float | None, typer.Option(help="Kill the command after this many seconds.")] = None,
          ) -> None:
    """Run a command in a sandbox; prints its output and exits with its exit code."""
    sb = Sandbox.from_id(sandbox_id)
    process = sb.exec(*command, workdir=workdir, timeout=timeout, text=False)

    async def pump() -> None:
        # Both streams at once: one left unread would stop the command once its window fills.
        async def copy(reader: object, out: object) -> None:
            async for chunk in reader:  # type: ignore[attr-defined]
                out.buffer.write(chunk)  # type: ignore[attr-defined]
                out.buffer.flush()  # type: ignore[attr-defined]

        await asyncio.gather(copy(process.stdout, sys.stdout), copy(process.stderr, sys.stderr))

    asyncio.run(pump())
    raise typer.Exit(process.wait() & 0xFF)


@sandbox_cli.command("terminate")
@handles_errors
def terminate(sandbox_id: SandboxId) -> None:
    """Terminate a sandbox: its processes are killed and its files removed."""
    sb = Sandbox.from_id(sandbox_id)
    sb.terminate()
    console.print(f"{sandbox_id} {sb.info()['status']}", highlight=False)
