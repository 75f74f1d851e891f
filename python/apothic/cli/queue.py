from __future__ import annotations

import json as jsonlib
from typing import Annotated, Any

import typer

from apothic import _loop
from apothic._client import get_client
from apothic.cli._output import JsonOpt, console, handles_errors, print_json, print_table
from apothic.queue import Queue

queue_cli = typer.Typer(name="queue", help="Create, inspect and use named queues.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="The queue's name.")]
PartitionOpt = Annotated[str | None, typer.Option(help="Partition key (default: the default partition).")]


def _value(raw: str) -> Any:
    """Values on the command line are JSON when they parse as JSON, else plain strings."""
    try:
        return jsonlib.loads(raw)
    except ValueError:
        return raw


@queue_cli.command("create")
@handles_errors
def create(name: Name, max_deliveries: Annotated[int, typer.Option(help="Dead-letter after this many.")] = 0,
           dead_letter: Annotated[str | None, typer.Option(help="Dead-letter queue name.")] = None) -> None:
    """Create a queue (no error if it exists)."""
    info = Queue.from_name(name, create_if_missing=True, max_deliveries=max_deliveries,
                           dead_letter=dead_letter).hydrate().info()
    console.print(f"{info['name']} ({info['id']})")


@queue_cli.command("list")
@handles_errors
def list_(json: JsonOpt = False) -> None:
    """Queues of this account."""

    async def fetch() -> list:
        return await (await get_client()).json("GET", "/v1/queues")

    queues = _loop.run(fetch())
    if json:
        print_json(queues)
        return
    print_table("Queues", ["name", "id", "len", "in flight", "max deliveries", "dead letter"],
                [[q["name"], q["id"], q["len"], q["in_flight"], q["max_deliveries"] or "-", q["dead_letter"] or "-"]
                 for q in queues])


@queue_cli.command("put")
@handles_errors
def put(name: Name, values: Annotated[list[str], typer.Argument(help="Values (JSON, or plain text).")],
        partition: PartitionOpt = None) -> None:
    """Put values on a queue."""
    Queue.from_name(name).put_many([_value(v) for v in values], partition=partition)
    console.print(f"put {len(values)}")


@queue_cli.command("get")
@handles_errors
def get(name: Name, n: Annotated[int, typer.Option(help="How many.")] = 1,
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the first.")] = 0.0,
        partition: PartitionOpt = None, json: JsonOpt = False) -> None:
    """Take values off a queue (they are removed)."""
    values = Queue.from_name(name).get_many(n, block=timeout > 0, timeout=timeout or None, partition=partition)
    if json:
        print_json(values)
    else:
        for value in values:
            console.print(repr(value))


@queue_cli.command("peek")
@handles_errors
def peek(name: Name, limit: Annotated[int, typer.Option(help="How many.")] = 10,
         partition: PartitionOpt = None, json: JsonOpt = False) -> None:
    """Show the next values without removing them."""
    values = Queue.from_name(name).peek(limit, partition=partition)
    if json:
        print_json(values)
    else:
        for value in values:
            console.print(repr(value))


@queue_cli.command("len")
@handles_errors
def len_(name: Name, partition: PartitionOpt = None,
         total: Annotated[bool, typer.Option(help="Count every partition.")] = False) -> None:
    """How many items a queue holds (claimed ones included)."""
    console.print(Queue.from_name(name).len(partition=partition, total=total))


@queue_cli.command("clear")
@handles_errors
def clear(name: Name, partition: PartitionOpt = None,
          all_partitions: Annotated[bool, typer.Option("--all", help="Every partition.")] = False) -> None:
    """Remove every item (of a partition)."""
    Queue.from_name(name).clear(partition=partition, all=all_partitions)
    console.print("cleared")


@queue_cli.command("delete")
@handles_errors
def delete(name: Name) -> None:
    """Delete a queue and its items."""
    Queue.from_name(name).delete_queue()
    console.print(f"deleted {name}")


@queue_cli.command("watch")
@handles_errors
def watch(name: Name, snapshot: Annotated[bool, typer.Option(help="Start with the queued items.")] = False,
          start_revision: Annotated[int | None, typer.Option(help="Replay from this revision.")] = None) -> None:
    """Follow a queue's events as they happen (Ctrl-C to stop)."""
    for event in Queue.from_name(name).watch(snapshot=snapshot, start_revision=start_revision):
        shown = "" if event.value is None else f" {event.value!r}"
        console.print(f"{event.revision:>8}  {event.type:<14} {event.id or ''}{shown}", highlight=False)
