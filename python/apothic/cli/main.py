from __future__ import annotations

from typing import Annotated

import typer

from apothic.cli.app import app_cli
from apothic.cli.dict import dict_cli
from apothic.cli.job import job_cli
from apothic.cli.offers import offers_cli
from apothic.cli.queue import queue_cli
from apothic.cli.run import deploy, run
from apothic.cli.sandbox import sandbox_cli
from apothic.cli.server import server_cli
from apothic.cli.worker import worker_cli

cli = typer.Typer(name="apothic", help="Apothic: serverless Python on your own machines.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        from apothic import __version__

        typer.echo(f"apothic {__version__}")
        raise typer.Exit()


@cli.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


cli.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(run)
cli.command("deploy")(deploy)
cli.add_typer(app_cli, rich_help_panel="Apps")
cli.add_typer(job_cli, rich_help_panel="Apps")
cli.add_typer(sandbox_cli, rich_help_panel="Apps")
cli.add_typer(queue_cli, rich_help_panel="Storage")
cli.add_typer(dict_cli, rich_help_panel="Storage")
cli.add_typer(worker_cli, rich_help_panel="Infrastructure")
cli.add_typer(offers_cli, rich_help_panel="Infrastructure")
cli.add_typer(server_cli, rich_help_panel="Infrastructure")


def main() -> None:
    cli()
