"""Rented workers end to end: a real control plane with the vast provider pointed at a local
Vast API (tests/support/fake_vast.py) whose instances are real processes running the worker
start script. A GPU function that no local worker can run makes the scheduler rent the cheapest
matching offer; the agent joins with a one-time token as that offer; the call runs there; the
idle worker is given back (its instance destroyed); and a restarted control plane reconciles
its instances by label, re-adopting the one it knows and destroying the one it does not."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from apothic import _client, _loop
from tests.support import fake_fly, fake_vast, servers
from tests.support.fake_vast import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _sdk_env(home: Path) -> Iterator[None]:
    """Points this process's SDK at the test's own control plane, then puts everything back:
    the environment and the process's endpoint and clients (the session's server's)."""
    wanted = servers.env_for(home)
    names = ("APOTHIC_HOME", "APOTHIC_SERVER_URL", "APOTHIC_API_KEY")
    saved = {k: os.environ.get(k) for k in names}
    saved_clients = _client.swap()
    for k in names:
        os.environ.pop(k, None)
        if k in wanted:
            os.environ[k] = wanted[k]
    try:
        yield
    finally:
        _, ours, _ = _client.swap(saved_clients)
        if ours is not None:
            with contextlib.suppress(Exception):
                _loop.run(ours.close())
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _workers(url: str, home: Path) -> list[dict[str, Any]]:
    key = (home / "api_key").read_text().strip()
    request = urllib.request.Request(url + "/v1/workers", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def _rented(url: str, home: Path) -> list[dict[str, Any]]:
    return [w for w in _workers(url, home) if w["provider"] == "vast"]


def _alive(pid: int | None) -> bool:
    return pid is not None and servers._alive(pid)


def test_rent_run_release_and_reconcile_after_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with fake_vast.running(tmp_path / "vast") as vast:
        env = {
            # On disk, so that rentals and worker keys survive the restart below.
            "APOTHIC_DB_URL": f"surrealkv://{home / 'state'}",
            "APOTHIC_PORT": str(_free_port()),  # the same address after the restart: agents redial it
            "APOTHIC_VAST_API_KEY": vast.api_key,
            "APOTHIC_VAST_API_URL": vast.url,
        }
        info = servers.start(home, **env)
        try:
            with _sdk_env(home):
                from tests.e2e.apps import rented

                with rented.app.run(show_output=False):
                    # No local GPU: the scheduler rents the cheapest A100 under $2/h, which is
                    # Vast's $0.95 offer 102 (its $0.05 RTX 3060 and $9 A100 are never taken).
                    ran = rented.where.remote()
                    assert ran["provider"] == "vast"
                    [first_id] = [i for i, inst in vast.instances.items() if inst.extra["offer"] == 102]
                    assert ran["home"] == str(vast.processes.root / f"host-{first_id}")
                    [worker] = _rented(info["url"], home)
                    assert worker["metadata"]["id"] == "102" and worker["metadata"]["gpu_name"] == "A100 PCIE"
                    assert worker["instance_id"] == first_id
                    assert len(vast.create_bodies) == 1
                    first_pid = vast.instances[first_id].pid

                    # After its scaledown window the idle rented worker is given back.
                    wait_for(lambda: first_id not in vast.instances, timeout=90)
                    wait_for(lambda: not _alive(first_pid), timeout=30)
                    wait_for(lambda: not _rented(info["url"], home), timeout=30)

                    # An H100 worker that stays (long scaledown window) across a restart.
                    assert rented.where_h100.remote()["provider"] == "vast"
                    [kept_id] = [i for i, inst in vast.instances.items() if inst.extra["offer"] == 105]
                    [kept_worker] = _rented(info["url"], home)

                server_id = (home / "server_id").read_text().strip()
                stray = vast.add_instance(f"apothic:{server_id}/rt-left-behind")
                foreign = vast.add_instance("apothic:cp-another-server/rt-1")
                servers.stop(home, info["pid"])
                info = servers.start(home, **env)

                # The known instance is kept and its agent rejoins with its own key, as the same
                # worker with the same offer metadata; the unknown one of ours is destroyed; the
                # other server's is left alone. Nothing new is rented.
                wait_for(lambda: stray.id not in vast.instances, timeout=60)
                rejoined = wait_for(lambda: _rented(info["url"], home), timeout=60)
                assert [w["id"] for w in rejoined] == [kept_worker["id"]]
                assert rejoined[0]["metadata"] == kept_worker["metadata"]
                assert rejoined[0]["instance_id"] == kept_id
                assert set(vast.instances) == {kept_id, foreign.id}
                assert len(vast.create_bodies) == 2
        finally:
            servers.stop(home, info["pid"])


def test_fly_machine_is_rented_when_only_fly_sells_the_gpu(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with fake_vast.running(tmp_path / "vast") as vast, fake_fly.running(tmp_path / "fly") as fly:
        env = {
            "APOTHIC_DB_URL": "mem://",
            "APOTHIC_VAST_API_KEY": vast.api_key, "APOTHIC_VAST_API_URL": vast.url,
            "APOTHIC_FLY_API_TOKEN": fly.token, "APOTHIC_FLY_API_URL": fly.url, "APOTHIC_FLY_APP": fly.app_name,
        }
        info = servers.start(home, **env)
        try:
            with _sdk_env(home):
                from tests.e2e.apps import rented

                with rented.app.run(show_output=False):
                    # Vast's market has no L40S; Fly sells one in ord.
                    ran = rented.where_l40s.remote()
                    assert ran["provider"] == "fly"
                    [machine_id] = list(fly.machines)
                    assert ran["home"] == str(fly.processes.root / f"host-{machine_id}")
                    [worker] = [w for w in _workers(info["url"], home) if w["provider"] == "fly"]
                    assert worker["metadata"]["id"] == "ord/l40s" and worker["instance_id"] == machine_id
                    assert not vast.create_bodies
                    wait_for(lambda: not fly.machines, timeout=90)  # given back after its scaledown window
        finally:
            servers.stop(home, info["pid"])
