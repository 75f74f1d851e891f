"""Placement end to end: the compiled filter reuses connected workers, and a requirement no
worker or provider can meet fails with `placement.no_match` naming the nearest offers."""

from __future__ import annotations

import json

import pytest

from apothic.exception import Error
from tests.e2e.apps import placed


@pytest.fixture(scope="module")
def running(server: dict):
    with placed.app.run(show_output=False):
        yield placed


def test_a_worker_whose_metadata_passes_the_filter_is_reused(running) -> None:
    assert running.on_this_host.remote() > 0


def test_no_worker_and_no_provider_matches(running) -> None:
    with pytest.raises(Error) as info:
        running.nowhere.remote()
    message = info.value.message
    assert info.value.code == "placement.no_match"
    assert "geolocation" in message and "ZZ" in message and "nearest: local" in message


def test_every_gpu_fallback_is_tried_before_no_match(running) -> None:
    with pytest.raises(Error) as info:
        running.needs_gpus.remote()
    assert info.value.code == "placement.no_match"
    assert "H100" in info.value.message and "B200" in info.value.message


def test_offers_search_cli(cli) -> None:
    everything = json.loads(cli("offers", "search", "--json").stdout)
    assert [o["provider"] for o in everything] == ["local"]  # no rented provider is enabled here
    assert everything[0]["cpu"] >= 1
    assert json.loads(cli("offers", "search", "--gpu", "H100", "--json").stdout) == []
    cheap = cli("offers", "search", "--filter", '{"cpu": {"gte": 1}}', "--max-cost", "1")
    assert "local" in cheap.stdout
    bad = cli("offers", "search", "--filter", '{"cpu": {"between": 1}}', expect=None)
    assert bad.returncode != 0 and "placement.invalid_filter" in bad.stderr and "cpu" in bad.stderr
    unknown = cli("offers", "search", "--provider", "nimbus", expect=None)
    assert unknown.returncode != 0 and "nimbus" in unknown.stderr


def test_worker_list_shows_offer_metadata(cli) -> None:
    workers = json.loads(cli("worker", "list", "--json").stdout)
    assert workers and all(w["offer"]["provider"] == "local" for w in workers)
    table = cli("worker", "list").stdout
    assert "local" in table


def test_sandboxes_are_placed_by_the_same_filter_language(server: dict) -> None:
    import apothic

    app = apothic.App("placed-sandboxes")
    sb = apothic.Sandbox.create(app=app, offer_filters={"provider": {"eq": "local"}, "cpu": {"gte": 1}})
    try:
        assert sb.exec("echo", "placed").stdout.read().strip() == "placed"
    finally:
        sb.terminate()
    with pytest.raises(Error) as info:
        apothic.Sandbox.create(app=app, gpu="A100:2")
    assert info.value.code == "placement.no_match" and "A100" in info.value.message
    with pytest.raises(Error) as bad:
        apothic.Sandbox.create(app=app, offer_filters={"inet_down": {"gt": "fast"}})
    assert bad.value.code == "placement.invalid_filter" and "inet_down" in bad.value.message


def test_a_web_request_nothing_can_serve_gets_no_match_not_a_timeout(running) -> None:
    import time
    import urllib.error
    import urllib.request

    started = time.monotonic()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(running.gpu_page.get_web_url(), timeout=100)
    body = json.loads(info.value.read())
    assert body["error"]["code"] == "placement.no_match" and "B200" in body["error"]["message"]
    assert time.monotonic() - started < 60  # the search's answer, well before the 120 s timeout
