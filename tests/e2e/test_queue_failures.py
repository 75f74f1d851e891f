"""Queue failure tests: a consumer killed while holding a claim, and a control plane killed
during a stream of puts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import apothic
from tests.support import servers

_CONSUMER = """
import sys, time, apothic
claim = apothic.Queue.from_name(sys.argv[1]).claim(lease=1, timeout=30)
print(claim.delivery_count, flush=True)
time.sleep(120)
"""


def test_consumer_killed_while_holding_a_claim(server: dict, home: Path) -> None:
    name = f"consumer-kill-{os.getpid()}"
    q = apothic.Queue.from_name(name, create_if_missing=True, max_deliveries=2)
    q.put("work")
    consumer = subprocess.Popen([sys.executable, "-c", _CONSUMER, name], env=servers.env_for(home),
                                stdout=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout is not None and consumer.stdout.readline().strip() == "1"
        os.kill(consumer.pid, signal.SIGKILL)
        consumer.wait(timeout=10)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        consumer.stdout.close()
    again = q.claim(timeout=10, lease=0.5)  # back after the dead consumer's lease ran out
    assert again.value == "work" and again.delivery_count == 2
    # This consumer dies too (its lease runs out): max_deliveries=2 sends it to the dead letters.
    dead = q.dead_letters().claim(timeout=10)
    assert dead.value == "work" and [a["outcome"] for a in dead.history] == ["expired", "expired"]
    q.delete_queue()
    q.dead_letters().delete_queue()


_PRODUCER = """
import apothic
q = apothic.Queue.from_name("durable", create_if_missing=True)
for i in range(100000):
    q.put(i)
    print(i, flush=True)
"""

_DRAIN = """
import apothic
q = apothic.Queue.from_name("durable")
print(q.get_many(5000, block=False))
"""


def test_control_plane_sigkill_keeps_every_acknowledged_put(tmp_path: Path) -> None:
    home = tmp_path / "home"
    info = servers.start(home)
    env = servers.env_for(home)
    producer = subprocess.Popen([sys.executable, "-c", _PRODUCER], env=env, stdout=subprocess.PIPE, text=True)
    acknowledged: list[int] = []
    try:
        assert producer.stdout is not None
        for line in producer.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) == 300:
                os.kill(info["pid"], signal.SIGKILL)
                break
        producer.kill()
        producer.wait()
        # Puts acknowledged before the kill reached the server are still in the pipe.
        acknowledged += [int(line) for line in producer.stdout]
        producer.stdout.close()
        assert servers.wait_dead(info["pid"])
        info = servers.start(home)
        drained = subprocess.run([sys.executable, "-c", _DRAIN], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert drained.returncode == 0, drained.stderr
        values = eval(drained.stdout)
        # Every acknowledged put is there, once, in order; at most one more (in flight when killed).
        assert values[: len(acknowledged)] == acknowledged
        assert len(values) - len(acknowledged) in (0, 1)
    finally:
        servers.stop(home, info["pid"])
