"""The vast and fly clients against local servers that follow their documented APIs, and the
capacity manager over them: search with the local re-check, rent (a real start-script process),
list by label, destroy, reconcile after a restart, join tokens, and errors as codes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apothic.control.auth import Auth
from apothic.control.capacity import CapacityManager
from apothic.control.model import WorkerHandle
from apothic.control.providers.base import start_script
from apothic.control.providers.fly import FlyProvider
from apothic.control.providers.registry import LocalOffers, enabled_providers
from apothic.control.providers.vast import VastProvider, query_for
from apothic.control.store import Database, Store
from apothic.control.store.capacity import CapacityStore
from apothic.exception import AuthError, InvalidError, ProviderError
from tests.support import fake_fly, fake_vast
from tests.support.fake_vast import wait_for

# Nothing listens here: agents started by the fakes in these tests retry until stopped.
NOWHERE = "http://127.0.0.1:9"
A100_UNDER_2 = {"gpu": "A100", "max_cost_per_hour_usd": 2.0}


@pytest.fixture
def vast(tmp_path: Path) -> Iterator[fake_vast.FakeVast]:
    with fake_vast.running(tmp_path / "vast") as fake:
        yield fake


@pytest.fixture
def fly(tmp_path: Path) -> Iterator[fake_fly.FakeFly]:
    with fake_fly.running(tmp_path / "fly") as fake:
        yield fake


def vast_client(fake: fake_vast.FakeVast, key: str | None = None) -> VastProvider:
    return VastProvider(api_key=key or fake.api_key, base_url=fake.url)


def fly_client(fake: fake_fly.FakeFly, token: str | None = None, app: str | None = None) -> FlyProvider:
    return FlyProvider(token=token or fake.token, app=app or fake.app_name, base_url=fake.url)


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def ids(table: Any) -> list[str]:
    return [table.offer(i)["id"] for i in range(len(table))]


# ---- vast ----------------------------------------------------------------------------------

def test_vast_query_body_translates_units_and_names() -> None:
    query = query_for({"gpu": "a100", "gpu_count": 2, "min_vram_gb": 40, "geolocation": ["us", "CA"],
                       "max_cost_per_hour_usd": 2.5,
                       "offer_filters": {"reliability": {"gte": 0.98}, "inet_down": {"gt": 500},
                                         "vram_gb": {"lte": 80}, "gpu_name": {"in": ["A100_SXM4", "h100-sxm"]}}},
                      limit=100)
    # The family and the exact names both go to Vast in its own spelling; gpu_name merges both.
    assert query["gpu_name"] == {"in": ["A100 SXM4", "H100 SXM"]}
    assert query["num_gpus"] == {"gte": 2}
    assert query["gpu_ram"] == {"gte": 40_000}  # MB; the upper bound in GB is left to the local re-check
    assert query["geolocation"] == {"in": ["US", "CA"]}
    assert query["dph_total"] == {"lte": 2.5}
    assert query["reliability2"] == {"gte": 0.98}
    assert query["inet_down"] == {"gt": 500}
    assert query["rentable"] == {"eq": True} and query["rented"] == {"eq": False}
    assert query["order"] == [["dph_total", "asc"]] and query["limit"] == 100
    # A family Vast does not list is not sent at all: only the local filter decides it.
    assert "gpu_name" not in query_for({"gpu": "B200"}, 10)


def test_vast_search_rechecks_what_vast_returns(vast: fake_vast.FakeVast) -> None:
    async def go() -> tuple[list[str], list[str]]:
        client = vast_client(vast)
        try:
            raw = await client._bundles(query_for(A100_UNDER_2, 64))
            return ids(raw), ids(await client.search(A100_UNDER_2))
        finally:
            await client.close()

    raw, checked = asyncio.run(go())
    # The fake, like Vast, returned offers that violate the query (an RTX 3060, a $9 A100)...
    assert "108" in raw and "109" in raw
    # ...and only the ones that pass are kept, ranked by price.
    assert checked == ["102", "104", "101"]
    assert vast.queries[-1]["dph_total"] == {"lte": 2.0}


def test_vast_rent_runs_the_start_script_then_destroy_kills_it(vast: fake_vast.FakeVast) -> None:
    async def go() -> None:
        client = vast_client(vast)
        try:
            offer = (await client.search(A100_UNDER_2)).offer(0)
            instance_id = await client.rent(offer, server_url=NOWHERE, join_token="jt-test", label="apothic:cp-x/rt-1")
            instance = vast.instances[instance_id]
            assert instance.extra["offer"] == 102
            body = vast.create_bodies[-1]
            assert body["onstart"] == start_script() and body["label"] == "apothic:cp-x/rt-1"
            assert body["env"] == {"APOTHIC_SERVER_URL": NOWHERE, "APOTHIC_WORKER_TOKEN": "jt-test",
                                   "APOTHIC_PROVIDER": "vast"}
            pid = instance.pid
            assert alive(pid)
            # The agent from bootstrap.sh is up (apothic is importable here, so nothing is installed).
            log = vast.processes.root / f"host-{instance_id}" / "instance.log"
            wait_for(lambda: b"control plane unreachable" in log.read_bytes(), timeout=60)
            assert b"pip" not in log.read_bytes()
            listed = await client.instances("apothic:cp-x/")
            assert [i["id"] for i in listed] == [instance_id]
            await client.destroy(instance_id)
            assert instance_id not in vast.instances
            assert wait_for(lambda: not alive(pid) or instance.proc.poll() is not None, timeout=20)
            await client.destroy(instance_id)  # already gone: still fine
        finally:
            await client.close()

    asyncio.run(go())


def test_vast_lists_only_our_label(vast: fake_vast.FakeVast) -> None:
    ours = vast.add_instance("apothic:cp-a/rt-1")
    vast.add_instance("apothic:cp-b/rt-2")
    vast.add_instance("someone else's")

    async def go() -> list[dict[str, Any]]:
        client = vast_client(vast)
        try:
            return await client.instances("apothic:cp-a/")
        finally:
            await client.close()

    assert [i["id"] for i in asyncio.run(go())] == [ours.id]


def test_vast_errors_become_one_line_codes(vast: fake_vast.FakeVast, tmp_path: Path) -> None:
    async def go() -> list[ProviderError]:
        errors = []
        bad = vast_client(vast, key="wrong")
        good = vast_client(vast)
        down = VastProvider(api_key="k", base_url=NOWHERE)
        try:
            for call in (
                lambda: bad.search({}),
                lambda: _after(vast.fail_next("/api/v0/bundles/", 429, "rate_limited"), good.search({})),
                lambda: _after(vast.fail_next("/api/v0/bundles/", 500, "server_error"), good.search({})),
                lambda: good.rent({"id": "999"}, server_url=NOWHERE, join_token="jt", label="apothic:x/y"),
                lambda: down.search({}),
            ):
                with pytest.raises(ProviderError) as info:
                    await call()
                errors.append(info.value)
        finally:
            for client in (bad, good, down):
                await client.close()
        return errors

    refused, limited, failed, gone, unreachable = asyncio.run(go())
    assert refused.code == "provider.rejected" and "API key" in refused.message
    assert limited.code == "provider.unavailable" and "429" in limited.message
    assert failed.code == "provider.unavailable" and "500" in failed.message
    assert gone.code == "provider.rejected" and "no longer available" in gone.message
    assert unreachable.code == "provider.unavailable"
    for e in (refused, limited, failed, gone, unreachable):
        assert "\n" not in e.message and e.message.startswith("vast: ")


async def _after(_: None, awaitable: Any) -> Any:
    return await awaitable


# ---- fly -----------------------------------------------------------------------------------

def test_fly_offers_are_its_guest_sizes_filtered_in_rust(fly: fake_fly.FakeFly) -> None:
    async def go() -> tuple[list[str], list[str], list[str]]:
        client = fly_client(fly)
        try:
            a100 = await client.search({"gpu": "A100"})
            big = await client.search({"gpu": "A100", "min_vram_gb": 80, "geolocation": "NL"})
            cheap = await client.search({"gpu": "L40S", "max_cost_per_hour_usd": 1.5})
            return ids(a100), ids(big), ids(cheap)
        finally:
            await client.close()

    a100, big, cheap = asyncio.run(go())
    assert a100[0] == "ord/a100-pcie-40gb"  # $2.50 before the $3.50 80 GB ones
    assert set(a100[1:]) == {"iad/a100-sxm4-80gb", "sjc/a100-sxm4-80gb", "ams/a100-sxm4-80gb", "syd/a100-sxm4-80gb"}
    assert big == ["ams/a100-sxm4-80gb"]
    assert cheap == ["ord/l40s"]


def test_fly_rent_list_destroy(fly: fake_fly.FakeFly) -> None:
    async def go() -> None:
        client = fly_client(fly)
        try:
            offer = (await client.search({"gpu": "L40S"})).offer(0)
            machine_id = await client.rent(offer, server_url=NOWHERE, join_token="jt-fly", label="apothic:cp-f/rt-9")
            body = fly.create_bodies[-1]
            assert body["region"] == "ord"
            assert body["config"]["guest"] == {"cpu_kind": "performance", "cpus": 8, "memory_mb": 32768,
                                               "gpu_kind": "l40s", "gpus": 1}
            assert body["config"]["metadata"] == {"apothic_label": "apothic:cp-f/rt-9"}
            assert body["config"]["env"]["APOTHIC_WORKER_TOKEN"] == "jt-fly"
            assert body["config"]["init"]["exec"][-1] == start_script()
            pid = fly.machines[machine_id].pid
            assert alive(pid)
            fly.add_machine("apothic:cp-other/rt-1")
            assert [m["id"] for m in await client.instances("apothic:cp-f/")] == [machine_id]
            proc = fly.machines[machine_id].proc
            await client.destroy(machine_id)
            assert machine_id not in fly.machines and proc is not None and proc.poll() is not None
            await client.destroy(machine_id)  # 404: already gone
        finally:
            await client.close()

    asyncio.run(go())


def test_fly_errors_become_one_line_codes(fly: fake_fly.FakeFly) -> None:
    async def go() -> list[ProviderError]:
        errors = []
        offer = {"id": "ord/l40s"}
        clients = [fly_client(fly, token="nope"), fly_client(fly, app="not-mine"), fly_client(fly)]
        try:
            for client, prep in zip(clients, [None, None, ("POST /v1/apps/", 503, "capacity exhausted")], strict=True):
                if prep:
                    fly.fail_next(*prep)
                with pytest.raises(ProviderError) as info:
                    await client.rent(offer, server_url=NOWHERE, join_token="jt", label="apothic:a/b")
                errors.append(info.value)
            with pytest.raises(ProviderError) as info:
                await clients[2].rent({"id": "xyz/l40s"}, server_url=NOWHERE, join_token="jt", label="apothic:a/b")
            errors.append(info.value)
        finally:
            for client in clients:
                await client.close()
        return errors

    refused, no_app, busy, bad_offer = asyncio.run(go())
    assert refused.code == "provider.rejected" and "API key" in refused.message
    assert no_app.code == "provider.rejected" and "not found" in no_app.message
    assert busy.code == "provider.unavailable" and "capacity exhausted" in busy.message
    assert bad_offer.code == "provider.rejected"
    assert not fly.machines


# ---- the registry --------------------------------------------------------------------------

def test_registry_turns_providers_on_by_their_key(tmp_path: Path) -> None:
    assert list(enabled_providers(tmp_path, {})) == ["local"]
    on = enabled_providers(tmp_path, {"APOTHIC_VAST_API_KEY": "k", "APOTHIC_FLY_API_TOKEN": "t",
                                      "APOTHIC_FLY_APP": "a"})
    assert list(on) == ["local", "vast", "fly"]
    with pytest.raises(InvalidError, match="APOTHIC_FLY_APP"):
        enabled_providers(tmp_path, {"APOTHIC_FLY_API_TOKEN": "t"})
    with pytest.raises(InvalidError, match="APOTHIC_VAST_API_KEY"):
        enabled_providers(tmp_path, {"APOTHIC_VAST_API_URL": "http://x"})


# ---- the capacity manager ------------------------------------------------------------------

class Plane:
    """The parts of a control plane the capacity manager uses: a journal-backed store and auth."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.store = Store(Database("mem://", home / "journal" / "store.log"))
        self.auth = Auth(self.store, home)

    async def __aenter__(self) -> Plane:
        await self.store.open()
        await self.auth.bootstrap()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()

    async def manager(self, **providers: Any) -> CapacityManager:
        manager = CapacityManager(providers={"local": LocalOffers(self.home), **providers},
                                  store=CapacityStore(self.store.db), auth=self.auth, home=self.home,
                                  server_url=NOWHERE)
        await manager.open()
        return manager


def _worker(worker_id: str) -> WorkerHandle:
    return WorkerHandle(id=worker_id, send=lambda h, p=b"": None, capacity={}, pid=None, provider="vast")


def test_capacity_rents_the_cheapest_match_across_providers_once(tmp_path: Path, vast: fake_vast.FakeVast,
                                                                 fly: fake_fly.FakeFly) -> None:
    async def go() -> None:
        async with Plane(tmp_path) as plane:
            manager = await plane.manager(vast=vast_client(vast), fly=fly_client(fly))
            try:
                # A100 under $2/h: Vast's $0.95 offer beats Fly's $2.50 one (and the $0.05 RTX
                # 3060 Vast slipped into its answer is never rented).
                rental = await manager.acquire("fn-a", [A100_UNDER_2])
                assert rental is not None and rental.provider == "vast" and rental.offer["id"] == "102"
                assert vast.instances[rental.instance_id].label == f"apothic:{manager.server_id}/{rental.id}"
                # While it boots, the same need rents nothing more.
                assert await manager.acquire("fn-a", [A100_UNDER_2]) is rental
                assert len(vast.create_bodies) == 1
                # Fallbacks in order: no H200 anywhere, then an L40S only Fly sells.
                fly_rental = await manager.acquire("fn-b", [{"gpu": "H200"}, {"gpu": "L40S"}])
                assert fly_rental is not None and fly_rental.provider == "fly"
                assert fly_rental.offer["id"] == "ord/l40s"
                # Nothing can ever match: placement.no_match naming the nearest offers.
                with pytest.raises(InvalidError) as info:
                    await manager.acquire("fn-c", [{"gpu": "A100", "max_cost_per_hour_usd": 0.5}])
                assert info.value.code == "placement.no_match"
                assert "nearest" in info.value.message and "price_per_hour_usd" in info.value.message
            finally:
                await manager.close()

    asyncio.run(go())


def test_capacity_without_rentable_providers_says_how_to_enable_one(tmp_path: Path) -> None:
    async def go() -> InvalidError:
        async with Plane(tmp_path) as plane:
            manager = await plane.manager()
            try:
                with pytest.raises(InvalidError) as info:
                    await manager.acquire("fn-a", [{"gpu": "A100"}])
                return info.value
            finally:
                await manager.close()

    error = asyncio.run(go())
    assert error.code == "placement.no_match" and "APOTHIC_VAST_API_KEY" in error.message
    assert "local offer local" in error.message  # this host, and why it does not fit


def test_provider_failure_is_retried_later_not_a_no_match(tmp_path: Path, vast: fake_vast.FakeVast) -> None:
    async def go() -> None:
        async with Plane(tmp_path) as plane:
            manager = await plane.manager(vast=vast_client(vast))
            try:
                vast.fail_next("/api/v0/bundles/", 503, "unavailable")
                with pytest.raises(ProviderError) as info:
                    await manager.acquire("fn-a", [A100_UNDER_2])
                assert info.value.code == "provider.unavailable"
                assert await manager.acquire("fn-a", [A100_UNDER_2]) is None  # waits to retry
                assert not manager.rentals and not vast.instances
            finally:
                await manager.close()

    asyncio.run(go())


def test_join_token_is_exchanged_once_for_a_worker_key(tmp_path: Path) -> None:
    async def go() -> None:
        async with Plane(tmp_path) as plane:
            offer = {"id": "102", "provider": "vast", "gpu_name": "A100 PCIE"}
            token = await plane.auth.issue_join_token(rental="rt-1", provider="vast", metadata=offer)
            grant = await plane.auth.worker_grant(f"Bearer {token}")
            twin = await plane.auth.worker_grant(f"Bearer {token}")  # a second agent with the same token
            assert grant is not None and grant.one_time and grant.metadata == offer and grant.rental == "rt-1"
            assert twin is not None
            key, lost = await asyncio.gather(plane.auth.exchange(grant, "wk-1"), plane.auth.exchange(twin, "wk-2"),
                                             return_exceptions=True)
            assert isinstance(key, str) and isinstance(lost, AuthError)  # one hello wins
            with pytest.raises(AuthError):
                await plane.auth.worker_grant(f"Bearer {token}")  # spent
            with pytest.raises(AuthError):
                await plane.auth.exchange(grant, "wk-2")
            again = await plane.auth.worker_grant(f"Bearer {key}")
            assert again is not None and again.worker == "wk-1" and not again.one_time and again.metadata == offer
            # The key is a worker credential (bundle fetches), never a user's.
            await plane.auth.authenticate(f"Bearer {key}", kind="worker")
            with pytest.raises(AuthError):
                await plane.auth.authenticate(f"Bearer {key}", kind="user")
            assert await plane.auth.worker_grant(f"Bearer {plane.auth.worker_token}") is None
            await plane.auth.revoke_rental("rt-1")
            with pytest.raises(AuthError):
                await plane.auth.worker_grant(f"Bearer {key}")
            with pytest.raises(AuthError):
                await plane.auth.authenticate(f"Bearer {key}", kind="worker")

    asyncio.run(go())


def test_release_destroys_and_reconcile_after_restart(tmp_path: Path, vast: fake_vast.FakeVast) -> None:
    async def go() -> None:
        async with Plane(tmp_path) as plane:
            first = await plane.manager(vast=vast_client(vast))
            kept = await first.acquire("fn-a", [A100_UNDER_2])
            released = await first.acquire("fn-b", [{"gpu": "H100"}])
            assert kept is not None and released is not None
            assert await first.worker_joined(kept.id, _worker("wk-kept"))
            worker = _worker("wk-released")
            assert await first.worker_joined(released.id, worker)
            assert worker.instance_id == released.instance_id
            released_pid = vast.instances[released.instance_id].pid
            assert await first.release("wk-released")
            assert released.instance_id not in vast.instances and not alive_soon(released_pid)
            assert not await first.release("wk-local")  # not rented: nothing to give back
            await first.close()

            # Meanwhile: a leftover of ours nobody recorded, another server's instance, and a
            # recorded rental whose instance vanished.
            stray = vast.add_instance(f"apothic:{first.server_id}/rt-stray")
            foreign = vast.add_instance("apothic:cp-someone-else/rt-1")
            vanished = await plane.manager(vast=vast_client(vast))
            lost = await vanished.acquire("fn-c", [{"gpu": "A100", "geolocation": "DE"}])
            assert lost is not None
            del vast.instances[lost.instance_id]
            await vanished.close()

            second = await plane.manager(vast=vast_client(vast))  # the restart: same store, same home
            try:
                assert second.server_id == first.server_id
                assert set(second.rentals) == {kept.id, lost.id}
                report = await second.reconcile()
                assert report["kept"] == [f"vast:{kept.instance_id}"]
                assert report["destroyed"] == [f"vast:{stray.id}"]
                assert report["forgotten"] == [lost.id]
                assert set(vast.instances) == {kept.instance_id, foreign.id}
                assert set(second.rentals) == {kept.id}
                assert second.rental_of_worker("wk-kept") is not None  # re-adopted when it reconnects
            finally:
                await second.close()

    asyncio.run(go())


def alive_soon(pid: int | None) -> bool:
    try:
        wait_for(lambda: not alive(pid), timeout=20)
    except AssertionError:
        return True
    return False


def test_release_idle_gives_back_only_workers_idle_for_their_window(tmp_path: Path, vast: fake_vast.FakeVast) -> None:
    async def go() -> None:
        async with Plane(tmp_path) as plane:
            manager = await plane.manager(vast=vast_client(vast))
            try:
                busy_rental = await manager.acquire("fn-a", [A100_UNDER_2])
                idle_rental = await manager.acquire("fn-b", [{"gpu": "H100"}])
                assert busy_rental is not None and idle_rental is not None
                busy, idle = _worker("wk-busy"), _worker("wk-idle")
                busy.containers.add("ct-1")
                await manager.worker_joined(busy_rental.id, busy)
                await manager.worker_joined(idle_rental.id, idle)
                workers = {w.id: w for w in (busy, idle, _worker("wk-local"))}
                never = await manager.acquire("fn-c", [{"gpu": "A100", "geolocation": "DE"}])
                assert never is not None  # its host never joins
                assert manager.release_idle(workers, lambda r: 3600.0) == []  # not idle long enough yet
                assert manager.release_idle(workers, lambda r: 0.0) == [idle_rental.id]
                assert manager.release_idle(workers, lambda r: 0.0) == []  # already on its way
                await asyncio.gather(*manager._tasks)
                assert set(vast.instances) == {busy_rental.instance_id, never.instance_id}
                # Past the boot timeout, a host that never joined is given back too, and so is
                # one whose worker left and stayed away.
                os.environ["APOTHIC_RENTAL_BOOT_S"] = "0"
                try:
                    del workers["wk-busy"]
                    assert manager.release_idle(workers, lambda r: 3600.0) == [never.id]
                    await asyncio.sleep(0.01)
                    assert busy_rental.id in manager.release_idle(workers, lambda r: 3600.0)
                    await asyncio.gather(*manager._tasks)
                finally:
                    del os.environ["APOTHIC_RENTAL_BOOT_S"]
                assert not vast.instances and not manager.rentals
            finally:
                await manager.close()

    asyncio.run(go())


def test_want_rents_once_in_the_background_and_reports_no_match(tmp_path: Path, vast: fake_vast.FakeVast) -> None:
    async def go() -> list[Any]:
        errors: list[Any] = []
        async with Plane(tmp_path) as plane:
            manager = await plane.manager(vast=vast_client(vast))
            try:
                for _ in range(5):  # the scheduler asks on every pump
                    manager.want("fn-a", [A100_UNDER_2], errors.append)
                manager.want("fn-z", [{"gpu": "B200"}], errors.append)
                while manager._tasks:
                    await asyncio.gather(*manager._tasks)
                assert len(vast.create_bodies) == 1
                assert manager.booting("fn-a") is not None
                manager.want("fn-a", [A100_UNDER_2], errors.append)  # still booting: nothing new
                await asyncio.gather(*manager._tasks)
                assert len(vast.create_bodies) == 1
            finally:
                await manager.close()
        return errors

    [error] = asyncio.run(go())
    assert error.code == "placement.no_match" and "B200" in error.message
