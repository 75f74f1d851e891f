from __future__ import annotations

import datetime
import sys
from typing import Annotated

import typer

from apothic import _loop
from apothic._client import get_client
from apothic.cli._output import JsonOpt, console, handles_errors, print_json
from apothic.job import Job

job_cli = typer.Typer(name="job", help="Inspect, follow and cancel jobs.", no_args_is_help=True)

JobId = Annotated[str, typer.Argument(help="The job id (a FunctionCall's object_id).")]


@job_cli.command("status")
@handles_errors
def status(job_id: JobId, json: JsonOpt = False) -> None:
    """A job's status and attempts."""
    info = Job.from_id(job_id).info()
    if json:
        print_json(info)
    else:
        console.print(f"{info['id']}  [bold]{info['status']}[/bold]  attempts={info['attempts']}  "
                      f"worker={info['worker_id'] or '-'}")
        if info.get("error"):
            console.print(f"  {info['error']['code']}: {info['error']['message']}", highlight=False)


@job_cli.command("logs")
@handles_errors
def logs(job_id: JobId) -> None:
    """The output a job has printed so far."""
    sys.stdout.write(Job.from_id(job_id).logs())


@job_cli.command("wait")
@handles_errors
def wait(job_id: JobId, timeout: Annotated[float | None, typer.Option(help="Seconds to wait.")] = None) -> None:
    """Wait for a job to end; the exit code is 0 only if it succeeded."""
    final = Job.from_id(job_id).wait(timeout)
    console.print(final)
    if final != "succeeded":
        raise typer.Exit(1)


@job_cli.command("watch")
@handles_errors
def watch(job_id: JobId, json: JsonOpt = False) -> None:
    """Print a job's events so far, then live ones until it ends."""
    for event in Job.from_id(job_id).events():
        if json:
            print_json(event.__dict__)
            continue
        when = datetime.datetime.fromtimestamp(event.time).isoformat(timespec="milliseconds")
        console.print(f"{event.revision:>8}  {when}  [bold]{event.type:<10}[/bold] attempt={event.attempt} "
                      f"worker={event.worker_id or '-'}", highlight=False)


@job_cli.command("cancel")
@handles_errors
def cancel(job_id: JobId) -> None:
    """Cancel a queued or running job."""
    job = Job.from_id(job_id)

    async def post() -> dict:
        return await (await get_client()).json("POST", f"/v1/jobs/{job.object_id}/cancel")

    console.print(_loop.run(post())["status"])
