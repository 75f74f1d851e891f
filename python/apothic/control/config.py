from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def apothic_home() -> Path:
    return Path(os.environ.get("APOTHIC_HOME") or Path.home() / ".apothic")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    home: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port; the chosen one is written to server.json
    db_url: str = ""
    lease_ms: int = 15_000
    local_workers: int = 1
    tick_s: float = 0.1

    @classmethod
    def from_env(cls, *, host: str | None = None, port: int | None = None) -> ServerConfig:
        home = apothic_home()
        return cls(
            home=home,
            host=host or os.environ.get("APOTHIC_HOST", "127.0.0.1"),
            port=int(port if port is not None else os.environ.get("APOTHIC_PORT", "0")),
            db_url=os.environ.get("APOTHIC_DB_URL") or f"surrealkv://{home / 'state'}",
            lease_ms=int(os.environ.get("APOTHIC_LEASE_MS", "15000")),
            local_workers=int(os.environ.get("APOTHIC_LOCAL_WORKERS", "1")),
        )
