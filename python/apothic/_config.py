"""Where the SDK and CLI find the control plane and their API key."""

from __future__ import annotations

import os
from pathlib import Path

import orjson


def home() -> Path:
    return Path(os.environ.get("APOTHIC_HOME") or Path.home() / ".apothic")


def server_info() -> dict | None:
    """The embedded server this home last started, as written in server.json."""
    try:
        return orjson.loads((home() / "server.json").read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def explicit_server_url() -> str | None:
    return os.environ.get("APOTHIC_SERVER_URL") or None


def api_key() -> str | None:
    key = os.environ.get("APOTHIC_API_KEY")
    if key:
        return key
    try:
        return (home() / "api_key").read_text().strip() or None
    except FileNotFoundError:
        return None
