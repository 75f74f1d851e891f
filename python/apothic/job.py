"""Jobs: every call is a durable job whose id is its FunctionCall's object_id."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from apothic import _ids, _stream
from apothic._client import get_client
from apothic._utils.dual import dual
from apothic.exception import Error, InvalidError, NotFoundError, TimeoutError

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
EVENT_TYPES = ("queued", "assigned", "started", "retrying", *TERMINAL)


@dataclass(frozen=True)
class JobEvent:
    """One typed event of a job, with the global revision it was committed at."""

    type: str
    revision: int
    time: float
    job_id: str
    attempt: int
    worker_id: str | None
    detail: dict[str, Any] | None

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> JobEvent:
        return cls(type=raw["type"], revision=raw["revision"], time=raw["time"], job_id=raw["job"],
                   attempt=raw.get("attempt") or 0, worker_id=raw.get("worker"), detail=raw.get("detail"))


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _ids.is_valid("function_call", job_id):
        raise NotFoundError(f"{job_id!r} is not a job id (they look like fc-01J...)", code="job.not_found")
    return job_id


class Job:
    """A durable handle to one call: status, attempts, logs, wait and typed events."""

    def __init__(self, job_id: str) -> None:
        self.object_id = check_job_id(job_id)

    @classmethod
    def from_id(cls, job_id: str) -> Job:
        return cls(job_id)

    def __repr__(self) -> str:
        return f"Job({self.object_id!r})"

    @dual
    async def info(self) -> dict[str, Any]:
        client = await get_client()
        return await client.json("GET", f"/v1/jobs/{self.object_id}")

    def status(self) -> str:
        return self.info()["status"]

    def attempts(self) -> int:
        return self.info()["attempts"]

    @dual
    async def logs(self) -> str:
        client = await get_client()
        lines = await client.json("GET", f"/v1/jobs/{self.object_id}/logs")
        return "".join(line["text"] for line in lines)

    @dual
    async def wait(self, timeout: float | None = None) -> str:
        """Waits until the job ends; returns its final status. Raises TimeoutError on timeout."""
        if timeout is not None and timeout < 0:
            raise InvalidError("timeout must be >= 0")
        client = await get_client()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 50.0 if deadline is None else max(0.0, min(50.0, deadline - time.monotonic()))
            try:
                await client.request("GET", f"/v1/jobs/{self.object_id}/result", params={"timeout": f"{left:.3f}"})
            except Error as e:
                if e.code != "job.pending":
                    if e.code in ("job.not_found", "auth.invalid_key", "server.unreachable"):
                        raise
                elif deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {self.object_id} is still running after {timeout} s") from None
                else:
                    continue
            info = await client.json("GET", f"/v1/jobs/{self.object_id}")
            return info["status"]

    def events(self, after: int = 0, follow: bool = True) -> Iterator[JobEvent]:
        """Yields the events so far, then live ones until the job ends."""
        for raw in _stream.follow(lambda: self._open_events(after, follow)):
            yield JobEvent.from_wire(raw)

    async def _open_events(self, after: int, follow: bool) -> Any:
        client = await get_client()
        params = {"after": str(after), "follow": "1" if follow else "0"}
        return await client.open_stream(f"/v1/jobs/{self.object_id}/events", params)
