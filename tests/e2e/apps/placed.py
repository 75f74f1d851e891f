"""Functions with placement requirements, for tests/e2e/test_placement.py."""

from __future__ import annotations

import os

import apothic

app = apothic.App("placed")


@app.function(offer_filters={"provider": {"eq": "local"}, "cpu": {"gte": 1}, "reliability": {"gte": 0.5}})
def on_this_host() -> int:
    return os.getpid()


@app.function(geolocation="ZZ", offer_filters={"reliability": {"gte": 0.98}})
def nowhere() -> None:
    raise AssertionError("no worker should ever run this")


@app.function(gpu=["H100:8", "B200"])
def needs_gpus() -> None:
    raise AssertionError("this host has no GPUs")


@app.endpoint(method="GET", gpu="B200:8", timeout=120)
def gpu_page() -> dict:
    return {"never": True}
