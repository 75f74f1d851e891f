"""Containers scale down after scaledown_window; min_containers keeps them warm."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from tests.e2e.apps import basic


def _containers(server: dict, home: Path) -> int:
    key = (home / "api_key").read_text().strip()
    request = urllib.request.Request(server["url"] + "/v1/workers", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return sum(w["containers"] for w in json.loads(r.read()))


def test_scaledown_window_stops_idle_containers(server: dict, home: Path) -> None:
    with basic.app.run(show_output=False):
        before = _containers(server, home)
        assert basic.quick_scaledown.remote(3) == 3
        deadline = time.monotonic() + 10
        while _containers(server, home) > before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _containers(server, home) == before
