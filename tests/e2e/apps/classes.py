"""Classes the end-to-end tests call (tests/e2e/test_classes.py). Lifecycle hooks write lines to
`marker_dir/events`, so a test can see what ran in a container, and in which process."""

import asyncio
import os
import signal
import time
from pathlib import Path

import apothic

app = apothic.App("e2e-classes")


def _note(marker_dir: str, line: str) -> None:
    if marker_dir:
        with open(Path(marker_dir) / "events", "a") as f:
            f.write(line + "\n")


@app.cls(scaledown_window=1)
class Counter:
    start: int = apothic.parameter(default=0)
    marker_dir: str = apothic.parameter(default="")

    @apothic.enter()
    def setup(self):
        self.value = self.start
        self.calls = []
        _note(self.marker_dir, f"enter {os.getpid()}")

    @apothic.method()
    def add(self, n=1):
        self.value += n
        return self.value

    @apothic.method()
    async def add_async(self, n):
        await asyncio.sleep(0)
        self.value += n
        return self.value

    @apothic.method()
    def echo(self, a, b=0):
        return (self.start, a + b)

    @apothic.method()
    def state(self):
        return {"value": self.value, "start": self.start, "pid": os.getpid()}

    @apothic.method()
    def record(self, i, seconds=0.0):
        began = time.monotonic()
        time.sleep(seconds)
        self.calls.append((i, began, time.monotonic()))
        return i

    @apothic.method()
    def history(self):
        return list(self.calls)

    @apothic.method()
    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds

    @apothic.method()
    def die(self):
        os.kill(os.getpid(), signal.SIGKILL)

    @apothic.exit()
    def teardown(self):
        _note(self.marker_dir, f"exit {os.getpid()} {self.value}")


@app.cls()
class Greeter:
    name: str = apothic.parameter()
    greeting: bytes = apothic.parameter(default=b"hello")
    loud: bool = apothic.parameter(default=False)

    @apothic.method()
    def greet(self):
        text = f"{self.greeting.decode()} {self.name}"
        return text.upper() if self.loud else text


@app.function()
def plain(x):
    return x


ephemeral = apothic.App("e2e-classes-ephemeral")


@ephemeral.cls()
class Tidy:
    marker_dir: str = apothic.parameter()
    hang: bool = apothic.parameter(default=False)

    @apothic.method()
    def pid(self):
        return os.getpid()

    @apothic.exit()
    def bye(self):
        _note(self.marker_dir, f"exit {os.getpid()}")
        if self.hang:
            time.sleep(600)  # the agent must SIGKILL it after the grace period
