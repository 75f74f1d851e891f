"""The `local` provider: worker agents as child processes of the control plane on this host.

It keeps `local_workers` agents running ahead of need (an agent imports aiohttp, about 0.5 s
here, so starting one per call would blow the cold-start budget), starts one when work waits
and none is connected, and replaces agents that die. Agents exit when the server does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("apothic.local_provider")


class LocalProvider:
    def __init__(self, *, home: Path, target: int, connected: Callable[[], int]) -> None:
        self.home = home
        self.target = target
        self._connected = connected
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.server_url = ""
        self.token = ""
        self._closing = False

    def start_agent(self) -> int:
        log_path = self.home / "logs" / "worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "apothic", "worker", "start", "--server", self.server_url,
                 "--token", self.token, "--provider", "local", "--exit-with-parent"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                env=os.environ | {"APOTHIC_PARENT_PID": str(os.getpid())},
            )
        self.processes[proc.pid] = proc
        log.info("started local worker agent pid %d", proc.pid)
        return proc.pid

    def reap(self) -> None:
        for pid, proc in list(self.processes.items()):
            code = proc.poll()
            if code is not None:
                log.warning("local worker agent pid %d exited with %s", pid, code)
                del self.processes[pid]

    async def run(self, wanted: asyncio.Event) -> None:
        """Keeps the pool at its target, and adds an agent when work waits and none is connected."""
        while not self._closing:
            self.reap()
            if len(self.processes) < self.target:
                self.start_agent()
            elif wanted.is_set() and self._connected() == 0 and not self.processes:
                self.start_agent()
            wanted.clear()
            try:
                await asyncio.wait_for(wanted.wait(), 0.5)
            except TimeoutError:
                pass

    async def close(self) -> None:
        self._closing = True
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _ in range(50):
            if all(p.poll() is not None for p in self.processes.values()):
                break
            await asyncio.sleep(0.1)
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.processes.clear()
