"""Fixtures only. The suite starts a real control plane (which starts real worker agents) in a
temporary APOTHIC_HOME; the SDK in this process talks to it over loopback HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import servers

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("apothic-home")


@pytest.fixture(scope="session")
def server(home: Path) -> Iterator[dict]:
    info = servers.start(home, APOTHIC_DB_URL="mem://")
    saved = {k: os.environ.get(k) for k in ("APOTHIC_HOME", "APOTHIC_SERVER_URL", "APOTHIC_API_KEY")}
    os.environ.update(servers.env_for(home))
    try:
        yield info
    finally:
        servers.stop(home, info["pid"])
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def cli(server: dict, home: Path):
    """Runs the apothic CLI in a subprocess against the test server."""

    def run(*args: str, expect: int | None = 0, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "apothic", *args], env=servers.env_for(home, **env),
                                capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if expect is not None:
            assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
        return result

    return run


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    """A folder shared with remote functions, for once-only behaviour across attempts."""
    return tmp_path
