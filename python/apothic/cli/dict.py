from __future__ import annotations

import json as jsonlib
from typing import Annotated, Any

import typer

from apothic import _loop
from apothic._client import get_client
from apothic.cli._output import JsonOpt, console, handles_errors, print_json, print_table
from apothic.dict import Dict

dict_cli = typer.Typer(name="dict", help="Create, inspect and use named dicts.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="The dict's name.")]
Key = Annotated[str, typer.Argument(help="A (string) key.")]


def _value(raw: str) -> Any:
    """Values on the command line are JSON when they parse as JSON, else plain strings."""
    try:
        return jsonlib.loads(raw)
    except ValueError:
        return raw


@dict_cli.command("create")
@handles_errors
def create(name: Name) -> None:
    """Create a dict (no error if it exists)."""
    Dict.from_name(name, create_if_missing=True).hydrate()
    console.print(f"created {name}")


@dict_cli.command("list")
@handles_errors
def list_(json: JsonOpt = False) -> None:
    """Dicts of this account."""

    async def fetch() -> list:
        return await (await get_client()).json("GET", "/v1/dicts")

    dicts = _loop.run(fetch())
    if json:
        print_json(dicts)
        return
    print_table("Dicts", ["name", "id", "len", "revision"], [[d["name"], d["id"], d["len"], d["revision"]]
                                                              for d in dicts])


@dict_cli.command("put")
@handles_errors
def put(name: Name, key: Key, value: Annotated[str, typer.Argument(help="The value (JSON, or plain text).")]) -> None:
    """Set a key."""
    Dict.from_name(name).put(key, _value(value))
    console.print("ok")


@dict_cli.command("get")
@handles_errors
def get(name: Name, key: Key, json: JsonOpt = False) -> None:
    """A key's value, version and revisions."""
    entry = Dict.from_name(name).entry(key)
    if entry is None:
        from apothic.exception import NotFoundError

        raise NotFoundError(f"dict {name!r} has no key {key!r}", code="dict.key_not_found")
    if json:
        print_json(entry.__dict__)
    else:
        console.print(f"{entry.value!r}  version={entry.version} create_revision={entry.create_revision} "
                      f"mod_revision={entry.mod_revision}", highlight=False)


@dict_cli.command("len")
@handles_errors
def len_(name: Name) -> None:
    """How many keys."""
    console.print(Dict.from_name(name).len())


@dict_cli.command("peek")
@handles_errors
def peek(name: Name, prefix: Annotated[str | None, typer.Option(help="Only keys with this prefix.")] = None,
         json: JsonOpt = False) -> None:
    """Every (string) key and its value."""
    items = Dict.from_name(name).items(prefix=prefix)
    if json:
        print_json({str(k): v for k, v in items})
    else:
        for k, v in items:
            console.print(f"{k!r}: {v!r}", highlight=False)


@dict_cli.command("watch")
@handles_errors
def watch(name: Name, prefix: Annotated[str | None, typer.Option(help="Only keys with this prefix.")] = None,
          snapshot: Annotated[bool, typer.Option(help="Start with the current entries.")] = False,
          start_revision: Annotated[int | None, typer.Option(help="Replay from this revision.")] = None) -> None:
    """Follow changes as they happen (Ctrl-C to stop)."""
    for event in Dict.from_name(name).watch(prefix=prefix, snapshot=snapshot, start_revision=start_revision):
        console.print(f"{event.revision:>8}  {event.type:<12} {event.key!r}: {event.value!r}", highlight=False)


@dict_cli.command("clear")
@handles_errors
def clear(name: Name) -> None:
    """Remove every key."""
    console.print(f"cleared {Dict.from_name(name).clear()}")


@dict_cli.command("delete")
@handles_errors
def delete(name: Name) -> None:
    """Delete a dict and its keys."""
    Dict.from_name(name).delete_dict()
    console.print(f"deleted {name}")
