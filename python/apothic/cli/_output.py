"""Shared CLI output and error handling: a domain error is one line and an exit code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from apothic.exception import Error, exit_code_for

console = Console()
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Error as e:
            fail(e)

    return wrapper  # type: ignore[return-value]


def fail(e: Error) -> None:
    err_console.print(f"[red]Error[/red] [bold]{e.code}[/bold]: {e.message.splitlines()[0] if e.message else ''}",
                      highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code_for(e.code)) from None


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
