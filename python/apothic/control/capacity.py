"""The capacity manager: rents new workers from providers when no connected worker can run a
function, and gives them back.

`acquire` searches every enabled provider with the function's compiled placement filters (GPU
fallbacks in order), rents the cheapest offer that passes (the cost cap is part of the filter),
and hands the new host a one-time join token bound to that offer's metadata, so the worker
registers as what was sold. A rental is written to the store (through the journal) before the
provider is asked, and its instance is labelled `apothic:<server id>/<rental id>`; after a
restart `reconcile` lists each provider's instances by that label, keeps the ones it still knows
(their agents reconnect with their per-worker keys and are re-adopted) and destroys the rest.
One rental per function boots at a time, so a burst of calls does not rent a fleet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from apothic._bridge.placement import OfferFilter, OfferTable
from apothic.control import keys
from apothic.control.auth import Auth
from apothic.control.model import WorkerHandle
from apothic.control.providers.base import LABEL_PREFIX, Provider, label_for, rental_of
from apothic.control.providers.registry import enabled_providers
from apothic.control.store.capacity import CapacityStore
from apothic.exception import Error, InvalidError, ProviderError

log = logging.getLogger("apothic.capacity")

MAX_OFFERS_TRIED = 5  # per acquire, cheapest first (dstack tries 25; an offer taken since the search fails fast)
RETRY_AFTER_S = 10.0  # after providers failed, how long one function waits before asking again
_PENDING = "pending"


def boot_timeout_s() -> float:
    """How long a rented host may take to join before it is given back and another is rented."""
    return float(os.environ.get("APOTHIC_RENTAL_BOOT_S", "900"))


def server_id(home: Path) -> str:
    """This control plane's stable id, the owner part of its instances' labels."""
    path = home / "server_id"
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = "cp-" + secrets.token_hex(6)
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)
    return value


@dataclass(slots=True)
class Rental:
    id: str
    provider: str
    function_id: str
    offer: dict[str, Any]
    label: str
    created_at: float = field(default_factory=time.time)
    instance_id: str | None = None
    worker_id: str | None = None
    state: str = "renting"  # renting (asked the provider) | booting (instance made) | running (worker joined)

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "provider": self.provider, "function": self.function_id, "offer": self.offer,
                "label": self.label, "created_at": self.created_at, "instance_id": self.instance_id,
                "worker": self.worker_id, "state": self.state}

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> Rental:
        return cls(id=row["id"], provider=row["provider"], function_id=row.get("function") or "",
                   offer=row.get("offer") or {}, label=row["label"], created_at=float(row["created_at"]),
                   instance_id=row.get("instance_id"), worker_id=row.get("worker"), state=row.get("state") or "renting")

    def summary(self) -> dict[str, Any]:
        return {**self.record(), "price_per_hour_usd": self.offer.get("price_per_hour_usd")}


class CapacityManager:
    def __init__(self, *, providers: dict[str, Provider], store: CapacityStore, auth: Auth, home: Path,
                 server_url: str = "") -> None:
        self.providers = providers
        self.store = store
        self.auth = auth
        self.home = home
        self.server_id = server_id(home)
        self.server_url = server_url
        self.rentals: dict[str, Rental] = {}
        self._booting: dict[str, str] = {}  # function id -> its booting rental id (or _PENDING)
        self._retry_at: dict[str, float] = {}  # function id -> monotonic time it may ask again
        self._workers: dict[str, WorkerHandle] = {}  # rental id -> its connected worker
        self._idle_since: dict[str, float] = {}  # rental id -> monotonic time its worker went idle
        self._releasing: set[str] = set()
        self._wanting: set[str] = set()  # functions with a `want` in flight
        self._gone_since: dict[str, float] = {}  # rental id -> monotonic time its worker was last missed
        self._tasks: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        await self.store.open()
        for row in await self.store.rentals():
            rental = Rental.from_record(row)
            self.rentals[rental.id] = rental
        if self.rentals:
            log.info("restored %d rentals", len(self.rentals))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for provider in self.providers.values():
            await provider.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def public_url(self) -> str:
        """Where a rented host reaches this control plane: APOTHIC_PUBLIC_URL when set (a
        rented host cannot reach 127.0.0.1), else the URL the server wrote when it bound."""
        url = self.server_url or os.environ.get("APOTHIC_PUBLIC_URL", "")
        if not url:
            try:
                url = orjson.loads((self.home / "server.json").read_bytes()).get("url", "")
            except (OSError, orjson.JSONDecodeError):
                url = ""
        if not url:
            raise InvalidError("cannot rent capacity: the control plane's URL is not known yet "
                               "(set APOTHIC_PUBLIC_URL to the address rented hosts can reach)")
        return url

    # ---- searching -------------------------------------------------------------------------
    def _chosen(self, provider: str | None) -> dict[str, Provider]:
        if provider is None:
            return self.providers
        if provider not in self.providers:
            on = ", ".join(self.providers)
            raise InvalidError(f"provider {provider!r} is not enabled on this server (enabled: {on}); vast and fly "
                               "are on when APOTHIC_VAST_API_KEY or APOTHIC_FLY_API_TOKEN is set")
        return {provider: self.providers[provider]}

    async def _search_all(self, providers: dict[str, Provider], spec: dict[str, Any],
                          limit: int) -> tuple[OfferTable | None, list[ProviderError]]:
        """Every provider's matches for `spec` in one table ranked by the same filter, and the
        providers that failed."""
        flt = OfferFilter.compile(spec)  # a bad spec fails here, once, naming the field
        results = await asyncio.gather(*(p.search(spec, limit) for p in providers.values()), return_exceptions=True)
        rows: list[dict[str, Any]] = []
        failed: list[ProviderError] = []
        for result in results:
            if isinstance(result, ProviderError):
                failed.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                # At most `limit` already-matched rows per provider: merged here, ranked in Rust.
                rows.extend(result.offer(i) for i in range(len(result)))
        if not rows:
            return None, failed
        merged = OfferTable.from_offers(rows)
        return OfferTable.from_offers([merged.offer(i) for i in merged.match(flt, limit)]), failed

    async def search(self, spec: dict[str, Any], provider: str | None = None, limit: int = 64) -> list[dict[str, Any]]:
        """Offers matching `spec` from every enabled provider (or one), cheapest first: what
        `apothic offers search` shows. A provider that fails is an error naming it."""
        table, failed = await self._search_all(self._chosen(provider), spec, limit)
        if failed and (table is None or provider is not None):
            raise failed[0]
        for error in failed:
            log.warning("offer search skipped a provider: %s", error.message)
        return [] if table is None else [table.offer(i) for i in range(len(table))]

    async def nearest(self, placements: list[dict[str, Any]], limit: int = 3) -> list[str]:
        """The offers that came closest to the first placement, each with the requirements it
        failed: the body of a `placement.no_match` message."""
        flt = OfferFilter.compile(placements[0] if placements else {})
        scored: list[tuple[int, float, str]] = []
        for name, provider in self.providers.items():
            try:
                table = await provider.catalog()
            except ProviderError as e:
                scored.append((1 << 30, 0.0, f"{name}: {e.message}"))
                continue
            for offer, failed in table.explain(flt, limit):
                scored.append((len(failed), float(offer.get("price_per_hour_usd") or 0.0),
                               f"{_describe(offer)}: {'; '.join(failed) or 'matches'}"))
        scored.sort(key=lambda s: (s[0], s[1]))
        return [line for _, _, line in scored[:limit]]

    # ---- renting ---------------------------------------------------------------------------
    def want(self, function_id: str, placements: list[dict[str, Any]],
             on_error: Callable[[Error], None]) -> None:
        """`acquire` in the background, for the scheduler: a provider that fails is retried on a
        later call (after RETRY_AFTER_S); an error that no retry can fix (`placement.no_match`,
        an invalid filter) goes to `on_error`, which fails the function's waiting calls."""
        if function_id in self._wanting:
            return  # one acquire per function in flight, however often the scheduler asks
        if function_id in self._booting or time.monotonic() < self._retry_at.get(function_id, 0.0):
            if not self._boot_expired(function_id):
                return
        self._wanting.add(function_id)

        async def run() -> None:
            try:
                await self.acquire(function_id, placements)
            except ProviderError as e:
                log.warning("could not rent capacity for %s (retrying in %.0f s): %s", function_id,
                            RETRY_AFTER_S, e.message)
            except Error as e:
                on_error(e)
            except Exception:
                log.exception("renting capacity for %s failed", function_id)
            finally:
                self._wanting.discard(function_id)

        self._spawn(run())

    def _boot_expired(self, function_id: str) -> bool:
        rental = self.rentals.get(self._booting.get(function_id, ""))
        return rental is not None and rental.worker_id is None and time.time() - rental.created_at > boot_timeout_s()

    def booting(self, function_id: str) -> Rental | None:
        rental = self.rentals.get(self._booting.get(function_id, ""))
        return rental if rental is not None and rental.worker_id is None else None

    async def acquire(self, function_id: str, placements: list[dict[str, Any]]) -> Rental | None:
        """Rents the cheapest offer, across providers, that passes one of `placements` (tried in
        order). Returns the rental, the one already booting for this function, or None while
        another acquire for it is in flight or it waits to retry. Raises `placement.no_match`
        when no provider has a matching offer, and `ProviderError` when providers failed."""
        current = self._booting.get(function_id)
        if current == _PENDING:
            return None
        if current is not None:
            rental = self.rentals.get(current)
            if rental is not None and rental.worker_id is None:
                if time.time() - rental.created_at <= boot_timeout_s():
                    return rental
                log.warning("rental %s (%s) did not join within %.0f s; giving it back", rental.id,
                            rental.provider, boot_timeout_s())
                await self._end(rental)
            self._booting.pop(function_id, None)
        if time.monotonic() < self._retry_at.get(function_id, 0.0):
            return None
        self._booting[function_id] = _PENDING  # set before any await: one acquire per function
        rental = None
        try:
            rental = await self._rent_cheapest(function_id, placements or [{}])
        except ProviderError:
            self._retry_at[function_id] = time.monotonic() + RETRY_AFTER_S
            raise
        finally:
            if rental is None:
                self._booting.pop(function_id, None)
            else:
                self._booting[function_id] = rental.id
        return rental

    async def _rent_cheapest(self, function_id: str, placements: list[dict[str, Any]]) -> Rental:
        rentable = {name: p for name, p in self.providers.items() if p.rentable}
        failures: list[ProviderError] = []
        for spec in placements:
            if not rentable:
                break
            table, failed = await self._search_all(rentable, spec, MAX_OFFERS_TRIED)
            failures.extend(failed)
            offers = [table.offer(i) for i in range(len(table))] if table is not None else []
            for offer in offers:  # at most MAX_OFFERS_TRIED, already matched and ranked
                try:
                    return await self._rent(function_id, rentable[offer["provider"]], offer)
                except ProviderError as e:
                    log.warning("renting %s offer %s failed, trying the next: %s", offer["provider"], offer["id"],
                                e.message)
                    failures.append(e)
        if failures:
            raise ProviderError(f"could not rent capacity for {function_id}: {failures[-1].message}",
                                code=failures[-1].code)
        what = " or ".join(OfferFilter.compile(s).describe() for s in placements)
        if not rentable:
            why = "no provider can rent capacity (set APOTHIC_VAST_API_KEY or APOTHIC_FLY_API_TOKEN to enable one)"
        else:
            why = f"no offer from {', '.join(rentable)} matches"
        near = await self.nearest(placements)
        raise InvalidError(f"{why}: {what}" + (f"; nearest: {' | '.join(near)}" if near else ""),
                           code="placement.no_match")

    async def _rent(self, function_id: str, provider: Provider, offer: dict[str, Any]) -> Rental:
        url = self.public_url
        rental_id = "rt-" + secrets.token_hex(8)
        rental = Rental(id=rental_id, provider=provider.name, function_id=function_id, offer=offer,
                        label=label_for(self.server_id, rental_id))
        # On disk before the provider is asked: a crash in between leaves a labelled instance
        # that the next start recognises, never one nobody knows about.
        await self.store.save_rental(rental.record())
        self.rentals[rental.id] = rental
        token = await self.auth.issue_join_token(rental=rental.id, provider=provider.name, metadata=offer)
        try:
            instance_id = await provider.rent(offer, server_url=url, join_token=token, label=rental.label)
        except BaseException:
            await self._forget(rental)
            raise
        rental.instance_id = instance_id
        if rental.state == "renting":
            rental.state = "booting"
        await self.store.update_rental(rental.id, {"instance_id": instance_id, "state": rental.state})
        worker = self._workers.get(rental.id)
        if worker is not None:  # its agent was quicker than the provider's answer
            worker.instance_id = instance_id
        log.info("rented %s offer %s ($%.3f/h) as instance %s for %s", provider.name, offer.get("id"),
                 float(offer.get("price_per_hour_usd") or 0.0), instance_id, function_id)
        return rental

    # ---- workers joining and leaving -------------------------------------------------------
    async def worker_joined(self, rental_id: str, worker: WorkerHandle) -> bool:
        """A rented host's agent said hello. False when the rental is no longer known (it was
        given back), in which case the session should be refused."""
        rental = self.rentals.get(rental_id)
        if rental is None:
            return False
        worker.instance_id = rental.instance_id
        self._workers[rental.id] = worker
        if rental.worker_id != worker.id or rental.state != "running":
            rental.worker_id, rental.state = worker.id, "running"
            await self.store.update_rental(rental.id, {"worker": worker.id, "state": "running"})
        if self._booting.get(rental.function_id) == rental.id:
            self._booting.pop(rental.function_id, None)
        return True

    def worker_left(self, worker_id: str) -> None:
        for rental_id, worker in list(self._workers.items()):
            if worker.id == worker_id:
                del self._workers[rental_id]

    def rental_of_worker(self, worker_id: str) -> Rental | None:
        return next((r for r in self.rentals.values() if r.worker_id == worker_id), None)

    async def release(self, worker_id: str) -> bool:
        """Destroys the instance a rented worker runs on (the scheduler scaled it down) and
        forgets the rental. False when the worker was not rented (a local agent)."""
        rental = self.rental_of_worker(worker_id)
        if rental is None:
            return False
        await self._end(rental)
        return True

    def release_idle(self, workers: Mapping[str, WorkerHandle], window_s: Callable[[Rental], float]) -> list[str]:
        """Gives back, in the background, every rented worker that has run no container for
        its window (the scheduler's tick calls this with its workers and, say, the scaledown
        window of the function the host was rented for); and every rental whose host never
        joined, or whose worker has been gone, for longer than the boot timeout (we pay for
        it either way). Returns the ids of the rentals being given back."""
        now = time.monotonic()
        released = []
        for rental in list(self.rentals.values()):
            if rental.id in self._releasing or rental.instance_id is None:
                continue  # already going, or still being rented
            worker = workers.get(rental.worker_id or "")
            if worker is None:
                self._idle_since.pop(rental.id, None)
                if rental.worker_id is None:
                    lost = time.time() - rental.created_at > boot_timeout_s()
                else:
                    lost = now - self._gone_since.setdefault(rental.id, now) > boot_timeout_s()
                if not lost:
                    continue
                log.warning("giving back %s instance %s: its worker %s", rental.provider, rental.instance_id,
                            "never joined" if rental.worker_id is None else "has been gone too long")
            else:
                self._gone_since.pop(rental.id, None)
                if worker.containers:
                    self._idle_since.pop(rental.id, None)
                    continue
                if now - self._idle_since.setdefault(rental.id, now) < window_s(rental):
                    continue
            self._releasing.add(rental.id)
            released.append(rental.id)
            self._spawn(self._release_in_background(rental))
        return released

    async def _release_in_background(self, rental: Rental) -> None:
        try:
            await self._end(rental)
        except ProviderError as e:
            log.warning("could not give back %s instance %s (will retry): %s", rental.provider, rental.instance_id,
                        e.message)
        finally:
            self._releasing.discard(rental.id)
            self._idle_since.pop(rental.id, None)
            self._gone_since.pop(rental.id, None)

    async def _end(self, rental: Rental) -> None:
        provider = self.providers.get(rental.provider)
        if rental.instance_id is not None and provider is not None:
            await provider.destroy(rental.instance_id)  # a failure keeps the record: reconcile retries
            log.info("destroyed %s instance %s (rental %s)", rental.provider, rental.instance_id, rental.id)
        await self._forget(rental)

    async def _forget(self, rental: Rental) -> None:
        self.rentals.pop(rental.id, None)
        self._workers.pop(rental.id, None)
        if self._booting.get(rental.function_id) == rental.id:
            self._booting.pop(rental.function_id, None)
        await self.auth.revoke_rental(rental.id)

    # ---- after a restart -------------------------------------------------------------------
    async def reconcile(self) -> dict[str, list[str]]:
        """Matches each provider's instances labelled as ours against the rentals on record:
        known ones are kept (their agents rejoin with their keys), unknown ones destroyed, and
        rentals whose instance is gone forgotten. A provider that cannot be listed is left as
        it is, to be reconciled on the next start."""
        report: dict[str, list[str]] = {"kept": [], "destroyed": [], "forgotten": [], "errors": []}
        prefix = f"{LABEL_PREFIX}{self.server_id}/"
        for name, provider in self.providers.items():
            if not provider.rentable:
                continue
            try:
                found = await provider.instances(prefix)
            except ProviderError as e:
                log.warning("could not reconcile %s: %s", name, e.message)
                report["errors"].append(e.message)
                continue
            seen: set[str] = set()
            for instance in found:
                rental_id = rental_of(instance["label"], self.server_id)
                rental = self.rentals.get(rental_id or "")
                if rental is None or rental.provider != name:
                    try:
                        await provider.destroy(instance["id"])
                        report["destroyed"].append(f"{name}:{instance['id']}")
                        log.info("destroyed %s instance %s: no rental of ours knows it", name, instance["id"])
                    except ProviderError as e:
                        report["errors"].append(e.message)
                    continue
                seen.add(rental.id)
                report["kept"].append(f"{name}:{instance['id']}")
                if rental.instance_id != instance["id"]:
                    # The provider made it, but we stopped before recording its id.
                    rental.instance_id = instance["id"]
                    rental.state = "booting" if rental.worker_id is None else rental.state
                    await self.store.update_rental(rental.id, {"instance_id": rental.instance_id,
                                                               "state": rental.state})
            for rental in [r for r in self.rentals.values() if r.provider == name and r.id not in seen]:
                if self._booting.get(rental.function_id) == _PENDING and rental.instance_id is None:
                    continue  # an acquire of this process is renting it right now
                report["forgotten"].append(rental.id)
                await self._forget(rental)
        return report


def _describe(offer: dict[str, Any]) -> str:
    gpu = f"{offer.get('gpu_count') or 0}x {offer['gpu_name']}" if offer.get("gpu_name") else "no GPU"
    price = offer.get("price_per_hour_usd")
    cost = f", ${float(price):.2f}/h" if price is not None else ""
    where = f", {offer['geolocation']}" if offer.get("geolocation") else ""
    return f"{offer.get('provider')} offer {offer.get('id')} ({gpu}{cost}{where})"


# ---- wiring into the control plane's aiohttp app ----------------------------------------------
CAPACITY = web.AppKey("capacity", CapacityManager)


async def capacity_context(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context that builds the manager once the store and auth are up (it goes after
    the context that makes them), reconciles in the background (a slow provider must not hold
    the server's start), and closes the providers' sessions at shutdown."""
    home = app[keys.CONFIG].home
    manager = CapacityManager(providers=enabled_providers(home), store=CapacityStore(app[keys.STORE].db),
                              auth=app[keys.AUTH], home=home)
    await manager.open()
    app[CAPACITY] = manager
    manager._spawn(_reconcile_logged(manager))
    yield
    await manager.close()


async def _reconcile_logged(manager: CapacityManager) -> None:
    try:
        report = await manager.reconcile()
    except Exception:
        log.exception("reconcile failed")
        return
    if any(report.values()):
        log.info("reconciled rented capacity: %s", report)
