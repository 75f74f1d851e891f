"""The control plane's in-memory records of functions, jobs, containers and workers."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apothic._bridge.queue import QueueEngine
from apothic.job import TERMINAL as JOB_TERMINAL_STATES

TERMINAL = frozenset(JOB_TERMINAL_STATES)
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_SCALEDOWN_S = 60.0
DEFAULT_MAX_CONTAINERS = max(2, os.cpu_count() or 2)
CONTAINER_SLOTS = 2  # one running call plus one waiting in the agent


@dataclass(slots=True)
class RetryPolicy:
    max_retries: int = 0
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def delay_after(self, attempt: int) -> float:
        return min(self.max_delay, self.initial_delay * self.backoff_coefficient ** max(0, attempt - 1))

    @classmethod
    def from_options(cls, raw: Any) -> RetryPolicy:
        if raw is None:
            return cls()
        if isinstance(raw, int):
            return cls(max_retries=raw)
        return cls(
            max_retries=int(raw.get("max_retries", 0)),
            backoff_coefficient=float(raw.get("backoff_coefficient", 2.0)),
            initial_delay=float(raw.get("initial_delay", 1.0)),
            max_delay=float(raw.get("max_delay", 60.0)),
        )


@dataclass(slots=True)
class FunctionSpec:
    id: str
    app_id: str
    account: str
    name: str
    module: str
    qualname: str
    bundle_hash: str
    options: dict[str, Any]
    # A class (control/instances.py): {"role": "template" | "variant", "methods", "params", ...}.
    cls: dict[str, Any] | None = None

    @property
    def dispatchable(self) -> bool:
        """Whether calls may run: a class template never runs calls itself, its variants do
        (until a named instance is stopped)."""
        return self.cls is None or (self.cls.get("role") == "variant" and self.cls.get("status") != "stopped")

    @property
    def timeout_s(self) -> float:
        return float(self.options.get("timeout") or DEFAULT_TIMEOUT_S)

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy.from_options(self.options.get("retries"))

    @property
    def min_containers(self) -> int:
        return int(self.options.get("min_containers") or 0)

    @property
    def max_containers(self) -> int:
        value = self.options.get("max_containers")
        return int(value) if value else DEFAULT_MAX_CONTAINERS

    @property
    def scaledown_window_s(self) -> float:
        value = self.options.get("scaledown_window")
        return float(value) if value is not None else DEFAULT_SCALEDOWN_S

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "app": self.app_id,
            "account": self.account,
            "name": self.name,
            "module": self.module,
            "qualname": self.qualname,
            "bundle_hash": self.bundle_hash,
            "options": self.options,
            "cls": self.cls,
        }

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> FunctionSpec:
        return cls(
            id=row["id"],
            app_id=row["app"],
            account=row["account"],
            name=row["name"],
            module=row["module"],
            qualname=row["qualname"],
            bundle_hash=row["bundle_hash"],
            options=row.get("options") or {},
            cls=row.get("cls"),
        )


@dataclass(slots=True)
class Container:
    id: str
    function_id: str
    worker_id: str
    state: str = "starting"  # starting | ready
    # Calls handed to it, in order: the first runs, the rest wait in the agent so the container
    # never idles for a round trip between calls.
    jobs: list[str] = field(default_factory=list)
    idle_since: float = field(default_factory=time.monotonic)
    streams: int = 0  # web requests it is serving now (control/web.py): busy, not idle


@dataclass(slots=True)
class FunctionRuntime:
    spec: FunctionSpec
    queue: QueueEngine
    containers: dict[str, Container] = field(default_factory=dict)
    live: bool = True
    last_used: float = field(default_factory=time.monotonic)  # its last call (or creation)

    @classmethod
    def create(cls, spec: FunctionSpec) -> FunctionRuntime:
        # A lease that runs out counts as a delivery: after max_retries + 1 of them the call is
        # dead-lettered, which for a function call means it failed.
        return cls(spec=spec, queue=QueueEngine(max_deliveries=spec.retry.max_retries + 1),
                   live=spec.dispatchable)

    @property
    def slots(self) -> int:
        # A named instance is an actor: nothing waits in its agent, so calls stay in arrival order
        # in the queue even when one fails or its container dies.
        return 1 if self.spec.cls is not None and self.spec.cls.get("instance") else CONTAINER_SLOTS

    def count(self, state: str) -> int:
        return sum(1 for c in self.containers.values() if c.state == state)


@dataclass(slots=True)
class Job:
    id: str
    function_id: str
    app_id: str
    account: str
    status: str
    attempts: int
    created_at: float
    args: bytes
    item_id: int | None = None
    claim_id: int | None = None
    worker_id: str | None = None
    container_id: str | None = None
    deadline: float | None = None
    started: bool = False  # whether the current attempt has begun running in its container
    result: bytes | None = None
    error: dict[str, str] | None = None
    updated_at: float = 0.0
    # Every event of the job while it is live: intermediate events are written behind, so a
    # stream that starts now reads its history here rather than from the store.
    events: list[dict[str, Any]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    watchers: list[Callable[[], None]] = field(default_factory=list)  # called once `done` is set

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "function_id": self.function_id,
            "app_id": self.app_id,
            "status": self.status,
            "attempts": self.attempts,
            "worker_id": self.worker_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "error": self.error,
        }


def summary_of_record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "function_id": row.get("function"),
        "app_id": row.get("app"),
        "status": row.get("status"),
        "attempts": row.get("attempts", 0),
        "worker_id": row.get("worker"),
        "created_at": row.get("created_at"),
        "updated_at": row.get("updated_at"),
        "error": row.get("error"),
    }


@dataclass(slots=True)
class WorkerHandle:
    id: str
    send: Callable[[dict[str, Any], bytes], None]
    capacity: dict[str, Any]
    pid: int | None
    provider: str
    connected_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.monotonic)
    containers: set[str] = field(default_factory=set)
    # A rented worker's offer as its provider sold it (normalized offer fields), which is what
    # placement matches; empty for local and manual agents, which are matched by `capacity`.
    metadata: dict[str, Any] = field(default_factory=dict)
    instance_id: str | None = None  # the provider's instance, for a rented worker

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": "connected",
            "provider": self.provider,
            "pid": self.pid,
            "capacity": self.capacity,
            "containers": len(self.containers),
            "connected_at": self.connected_at,
            "metadata": self.metadata,
            "instance_id": self.instance_id,
        }
