from __future__ import annotations

import os
import signal
import time
from typing import Annotated

import typer

from apothic import _config, _embedded
from apothic.cli._output import JsonOpt, console, handles_errors, print_json
from apothic.exception import ConnectionError

server_cli = typer.Typer(name="server", help="Start, stop and inspect the control plane.", no_args_is_help=True)


@server_cli.command("start")
@handles_errors
def start(
    foreground: Annotated[bool, typer.Option("--foreground", help="Stay attached instead of daemonizing.")] = False,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default: any free port).")] = None,
) -> None:
    """Start the control plane (daemonized by default)."""
    if foreground:
        from apothic.control.app import run_forever
        from apothic.control.config import ServerConfig

        run_forever(ServerConfig.from_env(host=host, port=port))
        return
    running = _embedded.running_server()
    if running:
        console.print(f"already running at {running['url']} (pid {running['pid']})")
        return
    extra = [*(["--host", host] if host else []), *(["--port", str(port)] if port is not None else [])]
    info = _embedded.start_daemon(extra)
    console.print(f"started at {info['url']} (pid {info['pid']}); state in {_config.home()}")


@server_cli.command("stop")
@handles_errors
def stop() -> None:
    """Stop the control plane started from this APOTHIC_HOME."""
    info = _config.server_info()
    if not info:
        raise ConnectionError("no server is running for this APOTHIC_HOME")
    pid = int(info["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        (_config.home() / "server.json").unlink(missing_ok=True)
        console.print("the server was not running")
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            console.print(f"stopped (pid {pid})")
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    console.print(f"killed (pid {pid}) after it ignored SIGTERM for 20 s")


@server_cli.command("status")
@handles_errors
def status(json: JsonOpt = False) -> None:
    """Whether the control plane is running, and where."""
    info = _embedded.running_server()
    if not info:
        raise ConnectionError("no server is running for this APOTHIC_HOME")
    if json:
        print_json({"status": "running", **info})
    else:
        console.print(f"running at {info['url']} (pid {info['pid']})")
