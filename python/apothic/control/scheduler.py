"""The scheduler actor: jobs, the function queues of the Rust core, containers and workers.

Everything here runs on the control plane's one event loop and is reached only through these
methods, so no state is shared with another task and nothing needs a lock. Each function's
pending calls live in a `QueueEngine` (Rust): a dispatch is a claim with a lease, a worker's
heartbeat renews it, and a worker that vanishes lets it expire so the call runs again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from apothic import _ids
from apothic.control.decided import finish_when_durable
from apothic.control.hub import Hub
from apothic.control.instances import Instances
from apothic.control.model import (
    DEFAULT_SCALEDOWN_S,
    TERMINAL,
    Container,
    FunctionRuntime,
    FunctionSpec,
    Job,
    WorkerHandle,
    summary_of_record,
)
from apothic.control.placement import Placer, compile_requirements, requirement_specs
from apothic.control.store import Store
from apothic.exception import Error, NotFoundError, OutputExpiredError

if TYPE_CHECKING:
    from apothic.control.capacity import CapacityManager, Rental

log = logging.getLogger("apothic.scheduler")
_RETIRE_EVERY_S = 5.0  # how often idle class variants are looked for (Instances.retire_idle)
# Ended jobs kept in memory for the gets and gathers that follow them (Scheduler._remember).
_ENDED_KEPT = 10_000
_ENDED_BYTES = 64 * 1024 * 1024  # of results


class Scheduler:
    def __init__(self, store: Store, hub: Hub, *, lease_ms: int) -> None:
        self.store = store
        self.hub = hub
        self.lease_ms = lease_ms
        self.functions: dict[str, FunctionRuntime] = {}
        self.jobs: dict[str, Job] = {}  # live: queued or running
        self.ended: OrderedDict[str, Job] = OrderedDict()  # recently ended, oldest first
        self._ended_bytes = 0
        self.workers: dict[str, WorkerHandle] = {}
        self.containers: dict[str, Container] = {}
        self.live_apps: dict[str, str] = {}  # app id -> mode (ephemeral | deployed)
        self.last_log_revision: dict[str, int] = {}  # app id -> revision of its latest log line
        self.capacity_wanted = asyncio.Event()
        self.placer = Placer()
        self.capacity: CapacityManager | None = None  # renting from providers; set by the app
        # Function id -> (when, error) of its last search for capacity that found nothing: calls
        # waiting then are failed with it; a web request reads it if it came after it began.
        self.no_match: dict[str, tuple[float, Error]] = {}
        # Told ("ready" | "failed" | "dropped", container, message) as containers come and go:
        # control/web.py routes requests to containers by these.
        self.container_listeners: list[Callable[[str, Container, str], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.instances = Instances(self)  # class variants and named instances
        self._next_retire = 0.0

    # ---- start-up: rebuild hot state from the store ------------------------------------
    async def restore(self) -> None:
        for app in await self.store.live_apps():
            self.live_apps[app["id"]] = app.get("mode", "ephemeral")
            for row in await self.store.functions_of(app["id"]):
                spec = FunctionSpec.from_record(row)
                self.functions[spec.id] = FunctionRuntime.create(spec)
        for row in await self.store.unfinished_jobs():
            fn = self.functions.get(row["function"])
            job = self._job_from_record(row)
            if fn is None:
                # Its app was stopped while the server was down; nothing will run it.
                await self._finish(job, "cancelled", error={"code": "function.cancelled",
                                                            "message": "the app was stopped"})
                continue
            self.jobs[job.id] = job
            job.status = "queued"
            job.item_id = fn.queue.restore(job.id.encode(), job.attempts)
        self.instances.restore()
        log.info("restored %d functions and %d unfinished jobs", len(self.functions), len(self.jobs))

    @staticmethod
    def _job_from_record(row: dict[str, Any]) -> Job:
        return Job(
            id=row["id"],
            function_id=row["function"],
            app_id=row["app"],
            account=row["account"],
            status=row["status"],
            attempts=int(row.get("attempts") or 0),
            created_at=float(row["created_at"]),
            args=row.get("args") or b"",
            updated_at=float(row.get("updated_at") or 0.0),
            events=list(row.get("events") or []),  # rewritten whole with each new event
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- apps --------------------------------------------------------------------------
    async def register_app(self, app: dict[str, Any], specs: list[FunctionSpec]) -> None:
        await self.store.save_app(app, [s.record() for s in specs])
        self.live_apps[app["id"]] = app["mode"]
        for spec in specs:
            self.functions[spec.id] = FunctionRuntime.create(spec)
            self._pump(self.functions[spec.id])

    async def stop_app(self, app_id: str) -> None:
        self.live_apps.pop(app_id, None)
        await self.store.set_app_state(app_id, "stopped")
        for fn in [f for f in self.functions.values() if f.spec.app_id == app_id]:
            fn.live = False
            # Containers first, gracefully: their @exit hooks run (a running call is interrupted
            # and its result ignored), and the calls they held are cancelled below.
            for ct in list(fn.containers.values()):
                self._stop_container(ct, graceful=True)
            for job in [j for j in self.jobs.values() if j.function_id == fn.spec.id and j.status not in TERMINAL]:
                await self._cancel(job, fn, "the app was stopped")
            del self.functions[fn.spec.id]
            self.placer.forget(fn.spec.id)

    # ---- jobs --------------------------------------------------------------------------
    async def submit(self, function_id: str, account: str, payloads: list[bytes], *,
                     acknowledge: bool = True) -> list[str]:
        """Queues calls. With `acknowledge`, their ids are returned only once the jobs are durable;
        a caller that waits for the result instead (`remote()`) is promised nothing until then,
        so its job record is written behind and lands with, or before, the result."""
        fn = self.functions.get(function_id) or await self.instances.reload(function_id)
        if fn is None or fn.spec.account != account:
            raise NotFoundError(f"function {function_id} is not running or deployed", code="function.not_found")
        if fn.spec.cls is not None:
            self.instances.check_callable(fn)
        fn.last_used = time.monotonic()
        now = time.time()
        jobs, records = [], []
        for payload in payloads:
            job = Job(
                id=_ids.new_id("function_call"),
                function_id=function_id,
                app_id=fn.spec.app_id,
                account=account,
                status="queued",
                attempts=0,
                created_at=now,
                args=payload,
                updated_at=now,
            )
            jobs.append(job)
            event = self._event(job, "queued")
            records.append({
                "id": job.id, "function": function_id, "app": job.app_id, "account": account,
                "status": "queued", "attempts": 0, "args": payload, "created_at": now, "updated_at": now,
                "events": [event],
            })
        try:
            await self.store.create_jobs(records, durable=acknowledge)
        except asyncio.CancelledError:
            # The caller went away (its session closed) while the records were on their way to
            # the journal. A call on record must run once they land, not only after a restart.
            finish_when_durable(self.store.db, lambda durable: self._enqueue(fn, jobs) if durable else None)
            raise
        self._enqueue(fn, jobs)
        return [job.id for job in jobs]

    def _enqueue(self, fn: FunctionRuntime, jobs: list[Job]) -> None:
        for job in jobs:
            self.jobs[job.id] = job
            job.item_id = fn.queue.put(job.id.encode())
            self.hub.publish(f"job:{job.id}", job.events[-1])
        self._pump(fn)

    def _event(self, job: Job, kind: str, **detail: Any) -> dict[str, Any]:
        event = {
            "job": job.id,
            "app": job.app_id,
            "type": kind,
            "revision": self.hub.next_revision(),
            "time": time.time(),
            "attempt": job.attempts,
            "worker": job.worker_id,
            "detail": detail or None,
        }
        job.events.append(event)
        return event

    async def job_history(self, job_id: str, after: int) -> list[dict[str, Any]]:
        """A job's events after a revision: from memory while it is live, else from the store
        (a finished job's events are all on disk: its last write was awaited, in order)."""
        job = self._known(job_id)
        if job is not None:
            return [e for e in job.events if e["revision"] > after]
        return await self.store.job_events(job_id, after)

    def _note(self, job: Job, kind: str, status: str, **detail: Any) -> None:
        """An intermediate event: published now, written behind (nobody was promised it)."""
        job.status = status
        job.updated_at = time.time()
        event = self._event(job, kind, **detail)
        self.store.record_event_nowait(job.id, list(job.events), {
            "status": status, "attempts": job.attempts, "worker": job.worker_id, "updated_at": job.updated_at,
        })
        self.hub.publish(f"job:{job.id}", event)

    async def _finish(self, job: Job, status: str, *, result: bytes | None = None,
                      error: dict[str, str] | None = None) -> None:
        await self._conclude(job, status, result=result, error=error)

    def _finish_soon(self, job: Job, status: str, *, result: bytes | None = None,
                     error: dict[str, str] | None = None) -> None:
        """Ends the job now, and makes that durable in the background: a worker's session goes
        on to its next frame instead of waiting for the journal, and the callers are told only
        once the ending is on disk."""
        self._spawn(self._conclude(job, status, result=result, error=error))

    def _conclude(self, job: Job, status: str, *, result: bytes | None,
                  error: dict[str, str] | None) -> Coroutine[Any, Any, None]:
        job.status = status
        job.result = result
        job.error = error
        job.updated_at = time.time()
        job.deadline = None
        event = self._event(job, status, **({"error": error} if error else {}))
        fields = {"status": status, "attempts": job.attempts, "worker": job.worker_id, "result": result,
                  "error": error, "updated_at": job.updated_at}
        return self._persist_end(job, event, fields)

    async def _persist_end(self, job: Job, event: dict[str, Any], fields: dict[str, Any]) -> None:
        await self.store.record_event(job.id, list(job.events), fields)
        job.done.set()
        for watcher in list(job.watchers):
            watcher()
        self.hub.publish(f"job:{job.id}", event)
        self.jobs.pop(job.id, None)
        self._remember(job)

    def _remember(self, job: Job) -> None:
        """Keeps an ended job at hand a while (its ending is durable by now). A gather or get
        that follows the calls reads it here; read from the store, it waited for the checkpoint
        to bring SurrealDB up to date first: measured with 2,000 calls spawned 64 at a time, one
        gather spent 0.63 s of CPU doing that for the 309 calls that had ended."""
        job.args = b""  # it will not run again
        self.ended[job.id] = job
        self._ended_bytes += len(job.result or b"")
        while len(self.ended) > _ENDED_KEPT or self._ended_bytes > _ENDED_BYTES:
            _, old = self.ended.popitem(last=False)
            self._ended_bytes -= len(old.result or b"")

    def _known(self, job_id: str) -> Job | None:
        """A live job, or one that ended recently."""
        return self.jobs.get(job_id) or self.ended.get(job_id)

    async def job_summary(self, job_id: str, account: str) -> dict[str, Any]:
        job = self._known(job_id)
        if job is not None and job.account == account:
            return job.summary()
        row = await self.store.get_job(job_id)
        if row is None or row.get("account") != account:
            raise NotFoundError(f"no job {job_id}", code="job.not_found")
        return summary_of_record(row)

    async def wait(self, job_id: str, account: str, timeout: float) -> dict[str, Any]:
        """Waits up to `timeout` for a job to end; returns its record (with result bytes)."""
        job = self._known(job_id)
        if job is not None and job.account == account:
            try:
                await asyncio.wait_for(job.done.wait(), timeout)
            except TimeoutError:
                raise OutputExpiredError(f"job {job_id} is still {job.status}") from None
            # Its final record was awaited onto disk before `done` was set: no need to re-read it.
            return {"id": job.id, "status": job.status, "result": job.result, "error": job.error}
        row = await self.store.get_job(job_id)
        if row is None or row.get("account") != account:
            raise NotFoundError(f"no job {job_id}", code="job.not_found")
        if row.get("status") not in TERMINAL:
            # Finished in memory but the record is behind, or not loaded: report as pending.
            raise OutputExpiredError(f"job {job_id} is still {row.get('status')}")
        return row

    async def wait_many(self, job_ids: list[str], account: str, timeout: float,
                        first: bool = False) -> list[dict[str, Any]]:
        """Waits up to `timeout` for all of the jobs to end (or, with `first`, for any one);
        returns the records of those that did."""
        live = [j for j in (self._known(i) for i in job_ids) if j is not None and j.account == account]
        live_ids = {j.id for j in live}
        waiting = [j for j in live if not j.done.is_set()]
        if waiting:
            # One future and a countdown, not a task per job: gather() may wait on thousands.
            enough = asyncio.get_running_loop().create_future()
            left = [1 if first else len(waiting)]

            def ended() -> None:
                left[0] -= 1
                if left[0] <= 0 and not enough.done():
                    enough.set_result(None)

            for job in waiting:
                job.watchers.append(ended)
            try:
                await asyncio.wait_for(enough, timeout)
            except TimeoutError:
                pass
            finally:
                for job in waiting:
                    job.watchers.remove(ended)
        rows = [{"id": j.id, "status": j.status, "result": j.result, "error": j.error}
                for j in live if j.done.is_set()]
        others = [i for i in job_ids if i not in live_ids]
        if others:
            found = {r["id"]: r for r in await self.store.get_jobs(others) if r.get("account") == account}
            missing = [i for i in others if i not in found]
            if missing:
                raise NotFoundError(f"no job {missing[0]}", code="job.not_found")
            rows.extend(r for r in found.values() if r.get("status") in TERMINAL)
        return rows

    async def cancel(self, job_id: str, account: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None or job.account != account or job.status in TERMINAL:
            return await self.job_summary(job_id, account)  # already ended, or not found
        fn = self.functions.get(job.function_id)
        await self._cancel(job, fn, "cancelled by the caller")
        return job.summary()

    async def _cancel(self, job: Job, fn: FunctionRuntime | None, why: str) -> None:
        if fn is not None and job.item_id is not None:
            try:
                fn.queue.remove(job.item_id)
            except NotFoundError:
                pass
        ct = self.containers.get(job.container_id) if job.container_id else None
        if ct is not None:
            if job.started:
                self._stop_container(ct)
            else:
                self._unassign(ct, job)
                self.workers[ct.worker_id].send({"t": "drop", "container": ct.id, "job": job.id}, b"")
        await self._finish(job, "cancelled", error={"code": "function.cancelled", "message": why})

    # ---- dispatch ----------------------------------------------------------------------
    def _pump(self, fn: FunctionRuntime) -> None:
        if not fn.live:
            return
        ready = [c for c in fn.containers.values() if c.state == "ready"]
        while ready:
            # Fill idle containers first, then give each one call to hold in reserve.
            ct = min(ready, key=lambda c: len(c.jobs))
            if len(ct.jobs) >= fn.slots:
                break
            claim, expired = fn.queue.claim(self.lease_ms)
            self._on_expired(fn, expired)
            if claim is None:
                break
            job = self.jobs.get(claim.payload.decode())
            if job is None or job.status in TERMINAL:
                fn.queue.ack(claim.claim_id)
                continue
            self._assign(job, ct, claim.claim_id)
        # Calls held in reserve behind a running one count as waiting when deciding to scale up.
        reserved = sum(max(0, len(c.jobs) - 1) for c in ready)
        waiting = len(fn.queue) - fn.queue.in_flight() + reserved
        total = len(fn.containers)
        starting = fn.count("starting")
        want = max(fn.spec.min_containers - total, min(waiting - starting, fn.spec.max_containers - total))
        for _ in range(max(0, want)):
            if not self._start_container(fn):
                break

    def _assign(self, job: Job, ct: Container, claim_id: int) -> None:
        worker = self.workers[ct.worker_id]
        ct.jobs.append(job.id)
        job.claim_id, job.container_id, job.worker_id = claim_id, ct.id, worker.id
        job.started, job.deadline = False, None  # the timeout runs from the start, not the hand-over
        job.attempts += 1
        self._note(job, "assigned", "running", container=ct.id)
        worker.send({"t": "run", "job": job.id, "claim": claim_id, "container": ct.id}, job.args)

    def _unassign(self, ct: Container, job: Job) -> None:
        if job.id in ct.jobs:
            ct.jobs.remove(job.id)
        if not ct.jobs:
            ct.idle_since = time.monotonic()

    def _requeue_unstarted(self, ct: Container) -> None:
        """Calls a container held in reserve go back to the queue, with no attempt counted."""
        fn = self.functions.get(ct.function_id)
        for job in [self.jobs[j] for j in ct.jobs if j in self.jobs]:
            if job.started or job.claim_id is None or fn is None:
                continue
            try:
                fn.queue.release(job.claim_id)
            except Exception:
                continue  # its lease is gone: the expiry path re-queued it already
            job.attempts -= 1
            job.claim_id, job.container_id = None, None
            self._note(job, "queued", "queued", reason=f"container {ct.id} stopped before it began")
        ct.jobs.clear()

    def _start_container(self, fn: FunctionRuntime) -> bool:
        candidates = self.placer.candidates(fn.spec, self.workers)
        if not candidates:
            self._want_capacity(fn)
            return False
        worker = candidates[0]
        ct = Container(id=_ids.new_id("container"), function_id=fn.spec.id, worker_id=worker.id)
        fn.containers[ct.id] = ct
        self.containers[ct.id] = ct
        worker.containers.add(ct.id)
        spec = fn.spec
        worker.send({
            "t": "start_container", "container": ct.id, "function": spec.id, "app": spec.app_id,
            "bundle": spec.bundle_hash, "module": spec.module, "qualname": spec.qualname, "cls": spec.cls,
        }, b"")
        return True

    def _stop_container(self, ct: Container, graceful: bool = False) -> None:
        """Stops a container: killed at once, or `graceful`ly (SIGTERM: its @exit hooks run within
        a grace period, then SIGKILL) when no call of its needs ending now."""
        self._requeue_unstarted(ct)
        self._drop_container(ct)
        worker = self.workers.get(ct.worker_id)
        if worker is not None:
            worker.send({"t": "stop_container", "container": ct.id, "graceful": graceful}, b"")

    def start_container_for(self, function_id: str) -> bool:
        """Starts one more container of a live function now (web services scale per request)."""
        fn = self.functions.get(function_id)
        return fn is not None and fn.live and self._start_container(fn)

    def _notify(self, event: str, ct: Container, message: str = "") -> None:
        for listener in self.container_listeners:
            listener(event, ct, message)

    def _drop_container(self, ct: Container) -> None:
        self._notify("dropped", ct)
        self.containers.pop(ct.id, None)
        fn = self.functions.get(ct.function_id)
        if fn is not None:
            fn.containers.pop(ct.id, None)
        worker = self.workers.get(ct.worker_id)
        if worker is not None:
            worker.containers.discard(ct.id)

    def _want_capacity(self, fn: FunctionRuntime) -> None:
        """No connected worker fits `fn`. The local provider starts an agent if none is connected;
        once some are, the capacity manager rents a matching host from a provider, or fails the
        function's waiting calls with `placement.no_match` when no provider has one."""
        self.capacity_wanted.set()
        if self.capacity is None or not self.workers:
            return  # until the first agent connects, what this host offers is unknown

        def failed(error: Error, fn: FunctionRuntime = fn) -> None:
            self.no_match[fn.spec.id] = (time.monotonic(), error)
            self._spawn(self._fail_waiting(fn, {"code": error.code, "message": error.message}))

        self.capacity.want(fn.spec.id, requirement_specs(fn.spec.options), failed)

    # ---- attempts ending ---------------------------------------------------------------
    async def _attempt_failed(self, job: Job, fn: FunctionRuntime | None, error: dict[str, str],
                              result: bytes | None) -> None:
        """Retries the call while retries remain, else ends it as failed."""
        claim_id, job.claim_id, job.container_id, job.deadline = job.claim_id, None, None, None
        policy = fn.spec.retry if fn is not None else None
        if fn is not None and policy is not None and claim_id is not None and job.attempts <= policy.max_retries:
            delay = policy.delay_after(job.attempts)
            try:
                fn.queue.release(claim_id, int(delay * 1000))
            except Exception:
                return  # lease already gone: the expiry path has re-queued it
            self._note(job, "retrying", "queued", error=error, delay=delay)
            return
        if fn is not None and claim_id is not None:
            try:
                fn.queue.ack(claim_id)
            except Exception:
                pass
        self._finish_soon(job, "failed", result=result, error=error)

    def _on_expired(self, fn: FunctionRuntime, expired: list[Any]) -> None:
        for e in expired:
            job = next((j for j in self.jobs.values() if j.claim_id == e.claim_id), None)
            if job is None:
                continue
            if job.container_id and job.container_id in self.containers:
                # The worker kept the container but stopped renewing: make sure it stops too,
                # so the call never runs twice at once.
                self._stop_container(self.containers[job.container_id])
            job.claim_id, job.container_id, job.deadline = None, None, None
            error = {"code": "execution.failed",
                     "message": f"lost worker {job.worker_id}: its lease expired after attempt {job.attempts}"}
            if e.dead_lettered:
                self._spawn(self._finish(job, "failed", error=error))
            else:
                self._note(job, "retrying", "queued", error=error, delay=0)

    # ---- events from worker sessions -------------------------------------------------
    def worker_connected(self, worker: WorkerHandle) -> None:
        self.workers[worker.id] = worker
        self.placer.workers_changed()
        self.no_match.clear()  # the new worker may be the match a search did not find
        for fn in list(self.functions.values()):
            self._pump(fn)

    def worker_disconnected(self, worker_id: str) -> None:
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return
        self.placer.workers_changed()
        for cid in list(worker.containers):
            ct = self.containers.get(cid)
            if ct is not None:
                self._drop_container(ct)
        # Calls it was running stay claimed until their leases expire (see tick).
        for fn in list(self.functions.values()):
            self._pump(fn)

    def heartbeat(self, worker_id: str, running: list[list[Any]]) -> None:
        worker = self.workers.get(worker_id)
        if worker is None:
            return
        worker.last_heartbeat = time.monotonic()
        for job_id, claim_id in running:
            job = self.jobs.get(job_id)
            fn = self.functions.get(job.function_id) if job else None
            if job is None or fn is None or job.claim_id != claim_id:
                continue
            try:
                fn.queue.renew(claim_id, self.lease_ms)
            except Exception:
                pass  # the lease is already lost; the expiry path handles the job

    def container_ready(self, container_id: str) -> None:
        ct = self.containers.get(container_id)
        if ct is None:
            return
        ct.state, ct.idle_since = "ready", time.monotonic()
        self._notify("ready", ct)
        fn = self.functions.get(ct.function_id)
        if fn is not None:
            self._pump(fn)

    async def container_failed(self, container_id: str, message: str) -> None:
        """The function's module could not be loaded: every waiting call fails with why."""
        ct = self.containers.get(container_id)
        if ct is None:
            return
        self._notify("failed", ct, message)
        self._drop_container(ct)
        fn = self.functions.get(ct.function_id)
        if fn is None:
            return
        await self._fail_waiting(fn, {"code": "execution.failed",
                                      "message": f"could not load {fn.spec.name}: {message}"})

    async def _fail_waiting(self, fn: FunctionRuntime, error: dict[str, str]) -> None:
        """Ends every call of `fn` that no container holds yet as failed, with `error`."""
        for job in [j for j in self.jobs.values()
                    if j.function_id == fn.spec.id and j.claim_id is None and j.status not in TERMINAL]:
            if job.item_id is not None:
                try:
                    fn.queue.remove(job.item_id)
                except NotFoundError:
                    pass
            await self._finish(job, "failed", error=error)

    async def container_exited(self, container_id: str, returncode: int | None) -> None:
        ct = self.containers.get(container_id)
        if ct is None:
            return
        fn = self.functions.get(ct.function_id)
        running = [self.jobs[j] for j in ct.jobs if j in self.jobs and self.jobs[j].started]
        self._requeue_unstarted(ct)
        self._drop_container(ct)
        for job in running:
            if job.container_id == ct.id:
                error = {"code": "execution.failed",
                         "message": f"container {ct.id} exited with code {returncode} during attempt {job.attempts}"}
                await self._attempt_failed(job, fn, error, None)
        if fn is not None:
            self._pump(fn)

    def job_started(self, job_id: str, container_id: str) -> None:
        job = self.jobs.get(job_id)
        fn = self.functions.get(job.function_id) if job is not None else None
        if job is not None and fn is not None and job.container_id == container_id:
            job.started = True
            job.deadline = time.monotonic() + fn.spec.timeout_s
            self._note(job, "started", "running", container=container_id)

    async def job_result(self, job_id: str, claim_id: int, container_id: str, ok: bool,
                         payload: bytes, error: dict[str, str] | None) -> None:
        ct = self.containers.get(container_id)
        job = self.jobs.get(job_id)
        if ct is not None and job_id in ct.jobs:
            ct.jobs.remove(job_id)
            if not ct.jobs:
                ct.idle_since = time.monotonic()
        fn = self.functions.get(ct.function_id) if ct else (self.functions.get(job.function_id) if job else None)
        if job is not None and job.claim_id == claim_id:
            if ok:
                claim, job.claim_id, job.deadline = job.claim_id, None, None
                if fn is not None and claim is not None:
                    fn.queue.ack(claim)
                self._finish_soon(job, "succeeded", result=payload)
            else:
                await self._attempt_failed(job, fn, error or {"code": "remote.error", "message": "failed"},
                                           payload)
        if fn is not None:
            self._pump(fn)

    def log(self, job_id: str | None, app_id: str | None, container_id: str, stream: str, text: str) -> None:
        job = self.jobs.get(job_id) if job_id else None
        app = app_id or (job.app_id if job else None)
        line = {
            "revision": self.hub.next_revision(), "job": job_id, "app": app, "container": container_id,
            "stream": stream, "text": text, "time": time.time(),
        }
        self.store.append_logs_nowait([line])
        if app:
            self.last_log_revision[app] = line["revision"]
            self.hub.publish(f"logs:{app}", line)

    # ---- the periodic tick -------------------------------------------------------------
    async def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_retire:
            self._next_retire = now + _RETIRE_EVERY_S
            busy = {j.function_id for j in self.jobs.values() if j.status not in TERMINAL}
            if retired := self.instances.retire_idle(now, busy):
                log.info("retired %d idle class variants from memory: %s", len(retired), ", ".join(retired))
        for fn in list(self.functions.values()):
            if fn.queue.in_flight():
                self._on_expired(fn, fn.queue.expire())
            self._pump(fn)
            idle = sorted((c for c in fn.containers.values() if c.state == "ready" and not c.jobs and not c.streams),
                          key=lambda c: c.idle_since)
            surplus = len(fn.containers) - fn.spec.min_containers
            for ct in idle:
                if surplus <= 0:
                    break
                if now - ct.idle_since >= fn.spec.scaledown_window_s:
                    self._stop_container(ct, graceful=True)
                    surplus -= 1
        for job in [j for j in self.jobs.values() if j.deadline is not None and j.deadline <= now]:
            await self._time_out(job)
        if self.capacity is not None:
            self.capacity.release_idle(self.workers, self._rental_window)

    def _rental_window(self, rental: Rental) -> float:
        """How long a rented host may idle: the scaledown window of the function it was rented for."""
        fn = self.functions.get(rental.function_id)
        return fn.spec.scaledown_window_s if fn is not None else DEFAULT_SCALEDOWN_S

    async def _time_out(self, job: Job) -> None:
        fn = self.functions.get(job.function_id)
        if job.container_id and job.container_id in self.containers:
            self._stop_container(self.containers[job.container_id])
        if fn is not None and job.claim_id is not None:
            try:
                fn.queue.ack(job.claim_id)
            except Exception:
                pass
        timeout = fn.spec.timeout_s if fn else 0
        await self._finish(job, "timed_out", error={
            "code": "function.timeout", "message": f"call {job.id} did not finish within its {timeout:g} s timeout"})

    def pending_work(self) -> bool:
        return any(len(fn.queue) or fn.spec.min_containers for fn in self.functions.values())

    def validate_options(self, options: dict[str, Any]) -> None:
        """Refuses requirements that do not compile (the SDK checks first; other clients may not)."""
        compile_requirements(options)
