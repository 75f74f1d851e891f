"""Functions the end-to-end tests call. Each does one observable thing."""

import os
import signal
import time
from pathlib import Path

import apothic

app = apothic.App("e2e-basic")


class CustomError(Exception):
    pass


@app.function()
def add(a, b=0):
    return a + b


@app.function()
async def add_async(a, b):
    return a + b


@app.function()
def shout(text):
    print(f"shouting {text}")
    return text.upper()


@app.function()
def fail(message):
    raise CustomError(message)


@app.function(timeout=1)
def sleepy(seconds):
    time.sleep(seconds)
    return seconds


@app.function(retries=apothic.Retries(max_retries=2, initial_delay=0.1, backoff_coefficient=1.0))
def die_once(marker_dir):
    """SIGKILLs its own container on the first attempt."""
    marker = Path(marker_dir) / "died"
    if not marker.exists():
        marker.write_text("1")
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@app.function(retries=apothic.Retries(max_retries=2, initial_delay=0.1, backoff_coefficient=1.0))
def slow_once(marker_dir):
    """Blocks on the first attempt (the test kills the agent meanwhile); quick after."""
    marker = Path(marker_dir) / "started"
    if not marker.exists():
        marker.write_text(str(os.getppid()))
        time.sleep(60)
    return "second attempt"


@app.function(retries=1)
def always_fail():
    raise RuntimeError("always")


@app.function()
def wait_for(seconds):
    time.sleep(seconds)
    return "done"


@app.function(scaledown_window=0.5)
def quick_scaledown(x):
    return x


@app.function(cpu=100_000)
def too_big():
    return "never"


@app.function(max_containers=1)
def one_at_a_time(seconds, marker_dir=None):
    """With one container, a second call waits in reserve behind the first."""
    time.sleep(seconds)
    if marker_dir is not None:
        marker = Path(marker_dir) / "killed"
        if not marker.exists():
            marker.write_text("1")
            os.kill(os.getpid(), signal.SIGKILL)
    return seconds
