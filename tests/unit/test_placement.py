"""Placement through the bridge: filters compiled by the Rust core, the columnar offer table,
Vast ingest, and the decorator-option parsing in apothic.placement."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apothic._bridge.placement import FIELDS, OfferFilter, OfferTable
from apothic.exception import InvalidError, exit_code_for
from apothic.placement import Placement, no_match_message, placements_from_options


def offer(id: str, gpu: str, count: int, price: float, reliability: float | None = 0.99,
          geo: str = "US", **extra: Any) -> dict[str, Any]:
    row = {
        "id": id, "provider": "vast", "gpu_name": gpu, "gpu_count": count, "vram_gb": 80.0,
        "cpu": 32.0, "memory_gb": 256.0, "disk_gb": 500.0, "price_per_hour_usd": price,
        "reliability": reliability, "inet_down": 900.0, "inet_up": 400.0, "geolocation": geo,
        "city": "Austin", "region": None, "cuda": 12.4, "verified": True,
    }
    row.update(extra)
    return row


ISSUE_SPEC = {
    "gpu": "A100", "gpu_count": 2, "min_vram_gb": 40, "geolocation": "US",
    "max_cost_per_hour_usd": 2.5,
    "offer_filters": {"reliability": {"gte": 0.98}, "gpu_name": {"in": ["A100_SXM4", "H100_SXM"]},
                      "inet_down": {"gt": 500}},
}


def test_fields_follow_the_agreed_schema() -> None:
    assert FIELDS == {
        "id": "string", "provider": "string", "gpu_name": "string", "gpu_count": "integer",
        "vram_gb": "number", "cpu": "number", "memory_gb": "number", "disk_gb": "number",
        "price_per_hour_usd": "number", "reliability": "number", "inet_down": "number",
        "inet_up": "number", "geolocation": "string", "city": "string", "region": "string",
        "cuda": "number", "verified": "bool",
    }


def test_the_issue_filter_compiles_describes_and_matches() -> None:
    f = OfferFilter.compile(ISSUE_SPEC)
    assert f.describe() == (
        'gpu "A100" and gpu_count gte 2 and vram_gb gte 40 and geolocation in ["US"] and '
        'price_per_hour_usd lte 2.5 and reliability gte 0.98 and '
        'gpu_name in ["A100_SXM4","H100_SXM"] and inet_down gt 500'
    )
    assert f.matches(offer("1", "A100 SXM4", 2, 2.0))
    assert not f.matches(offer("2", "A100 PCIE", 2, 2.0))
    assert not f.matches(offer("3", "A100 SXM4", 2, 2.0, reliability=None))
    assert f.failures(offer("4", "A100 SXM4", 2, 2.0, geo="de")) == ['geolocation in ["US"] (was "DE")']
    # Worker metadata carries more than the schema; the extra keys do not matter.
    assert f.matches({**offer("5", "a100_sxm4", 4, 1.0), "labels": {"team": "ml"}})


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"offer_filters": {"gpu_nam": {"eq": "A100"}}}, "gpu_nam"),
        ({"offer_filters": {"geolocation": {"gt": "US"}}}, "geolocation"),
        ({"offer_filters": {"reliability": {"gte": "high"}}}, "reliability"),
        ({"offer_filters": {"inet_down": {"gte": True}}}, "inet_down"),
        ({"offer_filters": {"gpu_name": {"in": "A100"}}}, "gpu_name"),
        ({"offer_filters": {"verified": {"eq": "yes"}}}, "verified"),
        ({"offer_filters": {"cuda": {"about": 12}}}, "cuda"),
        ({"offer_filters": {"cuda": {"gte": object()}}}, "unsupported value"),
        ({"gpu_count": 1.5}, "gpu_count"),
        ({"zone": "a"}, "zone"),
    ],
)
def test_invalid_filters_raise_invalid_error_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidError) as info:
        OfferFilter.compile(spec)
    assert info.value.code == "placement.invalid_filter"
    assert field in info.value.message
    assert "\n" not in info.value.message
    assert exit_code_for("placement.invalid_filter") == 11


def test_table_ranks_by_price_then_reliability_then_id_and_gives_rows_back() -> None:
    rows = [
        offer("d", "A100 SXM4", 2, 2.0),
        offer("c", "A100 PCIE", 2, 1.0, reliability=0.9),
        offer("b", "A100 SXM4 80GB", 4, 1.0, reliability=0.99),
        offer("a", "A100 PCIE", 2, 1.0, reliability=0.9),
        offer("z", "RTX 4090", 1, 0.2),
        offer("y", "A10", 2, 0.5),
    ]
    table = OfferTable.from_offers(rows)
    assert len(table) == 6
    a100 = OfferFilter.compile({"gpu": "A100", "gpu_count": 2})
    assert [table.offer(i)["id"] for i in table.match(a100)] == ["b", "a", "c", "d"]
    assert [table.offer(i)["id"] for i in table.match(a100, limit=2)] == ["b", "a"]
    assert table.offer(0) == rows[0]
    with pytest.raises(IndexError):
        table.offer(6)


def test_explain_gives_the_nearest_misses_and_what_each_failed() -> None:
    table = OfferTable.from_offers([
        offer("4090", "RTX 4090", 1, 0.4),
        offer("a100-de", "A100 SXM4", 2, 1.5, geo="DE"),
        offer("a100-1", "A100 PCIE", 1, 1.2),
    ])
    f = OfferFilter.compile({"gpu": "A100", "gpu_count": 2, "geolocation": ["us", "ca"]})
    assert table.match(f) == []
    near = table.explain(f)
    assert [(o["id"], failed) for o, failed in near] == [
        ("a100-1", ["gpu_count gte 2 (was 1)"]),
        ("a100-de", ['geolocation in ["US","CA"] (was "DE")']),
        ("4090", ['gpu "A100" (was "RTX 4090")', "gpu_count gte 2 (was 1)"]),
    ]
    assert len(table.explain(f, limit=1)) == 1


def test_a_large_table_matches_the_same_as_row_by_row() -> None:
    gpus = ["RTX 4090", "RTX 3090", "A100 SXM4", "H100 SXM", "L40S"]
    rows = [offer(f"o{i:05d}", gpus[i % 5], 1 + i % 8, (i * 37 % 400) / 100, (i % 7) / 7,
                  geo=["US", "DE", "SE"][i % 3]) for i in range(20_000)]
    table = OfferTable.from_offers(rows)
    for spec in ({"gpu": "H100", "geolocation": "SE"}, {"max_cost_per_hour_usd": 3.0},
                 {"offer_filters": {"id": {"in": ["o00017", "o19999", "nope"]}}}):
        f = OfferFilter.compile(spec)
        expected = sorted((r for r in rows if f.matches(r)),
                          key=lambda r: (r["price_per_hour_usd"], -r["reliability"], r["id"]))[:64]
        assert [table.offer(i)["id"] for i in table.match(f)] == [r["id"] for r in expected]


def test_bad_rows_are_refused_with_the_row_and_field() -> None:
    with pytest.raises(InvalidError) as info:
        OfferTable.from_offers([offer("a", "A100", 1, 1.0), offer("b", "A100", 1, "cheap")])  # type: ignore[arg-type]
    assert info.value.code == "invalid_argument"
    assert "offer 1" in info.value.message and "price_per_hour_usd" in info.value.message
    with pytest.raises(InvalidError, match="id is required"):
        OfferTable.from_offers([{"gpu_name": "A100"}])


def test_vast_search_json_is_normalised_at_ingest() -> None:
    body = json.dumps({"offers": [
        {"id": 9001, "gpu_name": "RTX 4090", "num_gpus": 2, "gpu_ram": 24564, "cpu_ram": 64000,
         "cpu_cores": 16, "cpu_cores_effective": 8.0, "disk_space": 120.0, "dph_total": 0.71,
         "reliability2": 0.991, "inet_down": 812.5, "inet_up": 402.1, "geolocation": "Oslo, NO",
         "cuda_max_good": 12.6, "verified": True, "rentable": True},
        {"id": 9002, "gpu_name": "H100 SXM", "num_gpus": 8, "gpu_ram": 81559, "dph_total": 19.2,
         "reliability": 0.97, "geolocation": "Quebec, CA", "verified": False},
    ]}).encode()
    table = OfferTable.from_vast_json(body)
    assert table.offer(0) == {
        "id": "9001", "provider": "vast", "gpu_name": "RTX 4090", "gpu_count": 2, "vram_gb": 24.564,
        "cpu": 8.0, "memory_gb": 64.0, "disk_gb": 120.0, "price_per_hour_usd": 0.71,
        "reliability": 0.991, "inet_down": 812.5, "inet_up": 402.1, "geolocation": "NO",
        "city": "Oslo", "region": None, "cuda": 12.6, "verified": True,
    }
    f = OfferFilter.compile({"gpu": "h100", "min_vram_gb": 80, "geolocation": "ca"})
    assert [table.offer(i)["id"] for i in table.match(f)] == ["9002"]
    with pytest.raises(InvalidError):
        OfferTable.from_vast_json(b'{"bundles": []}')


def test_placements_parse_modal_gpu_forms() -> None:
    assert placements_from_options("f") == []
    assert placements_from_options("f", gpu="A100") == [Placement(gpu="A100")]
    assert placements_from_options("f", gpu="a100:2") == [Placement(gpu="a100", gpu_count=2)]
    assert placements_from_options("f", gpu="A100:2", gpu_count=2) == [Placement(gpu="A100", gpu_count=2)]
    assert placements_from_options("f", gpu="A100-80GB:4") == [
        Placement(gpu="A100", gpu_count=4, min_vram_gb=80.0)]
    assert placements_from_options("f", gpu="A100-40GB", min_vram_gb=48) == [
        Placement(gpu="A100", min_vram_gb=48.0)]
    assert placements_from_options("f", gpu="H100!") == [Placement(gpu="H100")]
    assert placements_from_options("f", gpu=["H100", "A100:2"], geolocation=["US", "CA"]) == [
        Placement(gpu="H100", geolocation=["US", "CA"]),
        Placement(gpu="A100", gpu_count=2, geolocation=["US", "CA"]),
    ]
    any_gpu = placements_from_options("f", gpu="any", max_cost_per_hour_usd=1.0)
    assert any_gpu == [Placement(gpu="any", max_cost_per_hour_usd=1.0)]
    assert any_gpu[0].compile().describe() == "gpu_count gte 1 and price_per_hour_usd lte 1"
    only_filters = placements_from_options("f", offer_filters={"verified": {"eq": True}})
    assert only_filters[0].spec() == {
        "gpu": None, "gpu_count": None, "min_vram_gb": None, "geolocation": None,
        "max_cost_per_hour_usd": None, "offer_filters": {"verified": {"eq": True}},
    }


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"gpu": "A100:2", "gpu_count": 4}, "conflicts with gpu_count=4"),
        ({"gpu": "A100:x"}, "positive integer"),
        ({"gpu": "A100:0"}, "positive integer"),
        ({"gpu": []}, "empty list"),
        ({"gpu": 3}, "GPU name"),
        ({"gpu_count": 0}, "gpu_count"),
        ({"gpu": "A100", "offer_filters": {"reliabilty": {"gte": 0.9}}}, "reliabilty"),
        ({"gpu": ["H100", "A100"], "offer_filters": {"geolocation": {"lt": "US"}}}, "geolocation"),
        ({"min_vram_gb": "lots"}, "min_vram_gb"),
        ({"geolocation": 7}, "geolocation"),
        ({"offer_filters": [("gpu_name", "A100")]}, "offer_filters"),
    ],
)
def test_bad_options_fail_naming_the_function_and_the_field(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidError) as info:
        placements_from_options("train_model", **options)
    assert info.value.code == "placement.invalid_filter"
    assert info.value.message.startswith("train_model: ")
    assert fragment in info.value.message


def test_no_match_message_names_the_filter_and_the_nearest_offers() -> None:
    table = OfferTable.from_offers([offer("77", "RTX 4090", 1, 0.4), offer("78", "A100 PCIE", 1, 1.2)])
    f = OfferFilter.compile({"gpu": "A100", "gpu_count": 2})
    message = no_match_message("train", f, table.explain(f, limit=2))
    assert message == (
        'train: no capacity matches gpu "A100" and gpu_count gte 2; nearest: '
        "78 (vast, A100 PCIE, $1.2/h) failed gpu_count gte 2 (was 1); "
        '77 (vast, RTX 4090, $0.4/h) failed gpu "A100" (was "RTX 4090"), gpu_count gte 2 (was 1)'
    )
    assert no_match_message("train", f, []).endswith("gpu_count gte 2; no offers to compare")


def test_filters_compiled_from_options_are_bounded() -> None:
    """Sandbox requirements are compiled under a key made of their options; a stream of distinct
    ones must not grow the cache without end (function filters are forgotten with the function)."""
    from apothic.control import placement

    placer = placement.Placer()
    for memory in range(placement._MAX_FILTERS + 10):
        placer._compiled(f"{placement.BY_OPTIONS}{memory}", {"cpu": 1.0, "memory": memory + 1, "placements": None})
    assert len(placer._filters) <= placement._MAX_FILTERS
