"""The `vast` provider: Vast.ai's REST API (search offers, create and destroy instances).

Search sends Vast's query body (`{field: {op: value}}`, the same operators as offer_filters)
built from the spec, so that the market is narrowed on Vast's side; but Vast can return offers
that violate the query, so every returned offer is re-checked here with the compiled filter
(`OfferTable.match`) before it can be rented. Vast's units (MB, "City, CC") are normalized when
the response is read into the offer table. Only requirements whose translation is exact, or
looser than the local filter, are sent: the local re-check is the authority.
"""

from __future__ import annotations

import os
import re
from typing import Any

from apothic._bridge.placement import OfferFilter, OfferTable
from apothic.control.providers.base import HttpProvider, agent_env, start_script
from apothic.exception import ProviderError

DEFAULT_URL = "https://console.vast.ai/api/v0"
_MAX_SEARCH = 1000  # gpuhunt asks for 3000 when it wants "everything"; we always narrow first

# Family names Vast sells under several names (as gpuhunt maps them). A family not listed here is
# not sent to Vast at all: an exact-name query would miss variants that the local filter accepts.
_FAMILIES: dict[str, list[str]] = {
    "A100": ["A100 PCIE", "A100 SXM4", "A100X"],
    "H100": ["H100 PCIE", "H100 SXM", "H100 NVL"],
    "H200": ["H200", "H200 NVL"],
    "A10": ["A10"],
    "A40": ["A40"],
    "L4": ["L4"],
    "L40": ["L40"],
    "L40S": ["L40S"],
    "T4": ["Tesla T4"],
    "V100": ["Tesla V100"],
    "RTX4090": ["RTX 4090"],
    "RTX3090": ["RTX 3090"],
    "RTX5090": ["RTX 5090"],
    "A6000": ["RTX A6000"],
    "RTXA6000": ["RTX A6000"],
}
_KNOWN_NAMES = {re.sub(r"[\s_-]", "", n).upper(): n for names in _FAMILIES.values() for n in names}

# offer_filters fields forwarded to Vast: normalized field -> (Vast field, factor, ops allowed).
# Fields in other units go only as lower bounds scaled so that Vast's side is never stricter
# (1 GB sent as 1000 MB where the table reads 1024): the local re-check does the exact test.
_ALL_OPS = frozenset({"eq", "neq", "gt", "lt", "gte", "lte", "in", "notin"})
_LOWER = frozenset({"gt", "gte"})
_FORWARD: dict[str, tuple[str, float, frozenset[str]]] = {
    "gpu_count": ("num_gpus", 1, _ALL_OPS),
    "price_per_hour_usd": ("dph_total", 1, _ALL_OPS),
    "reliability": ("reliability2", 1, _ALL_OPS),
    "inet_down": ("inet_down", 1, _ALL_OPS),
    "inet_up": ("inet_up", 1, _ALL_OPS),
    "cuda": ("cuda_max_good", 1, _ALL_OPS),
    "disk_gb": ("disk_space", 1, _LOWER),
    "verified": ("verified", 1, frozenset({"eq", "neq"})),
    "geolocation": ("geolocation", 1, frozenset({"eq", "neq", "in", "notin"})),
    "vram_gb": ("gpu_ram", 1000, _LOWER),
    "memory_gb": ("cpu_ram", 1000, _LOWER),
    "cpu": ("cpu_cores_effective", 1, _LOWER),
}


def _norm(name: str) -> str:
    return re.sub(r"[\s_-]", "", name).upper()


def _gpu_names(gpu: str) -> list[str] | None:
    """Vast's spellings for a requested GPU, or None when it is safer not to ask Vast."""
    key = _norm(gpu)
    if key in _FAMILIES:
        return _FAMILIES[key]
    if key in _KNOWN_NAMES:
        return [_KNOWN_NAMES[key]]
    return None


def _merge(query: dict[str, Any], field: str, ops: dict[str, Any]) -> None:
    query.setdefault(field, {}).update(ops)


def query_for(spec: dict[str, Any], limit: int) -> dict[str, Any]:
    """Vast's search body for a placement spec (validated already by OfferFilter.compile)."""
    query: dict[str, Any] = {"rentable": {"eq": True}, "rented": {"eq": False}}
    gpu = spec.get("gpu")
    if gpu:
        names = _gpu_names(str(gpu))
        if names:
            _merge(query, "gpu_name", {"in": names})
    if spec.get("gpu_count") is not None:
        _merge(query, "num_gpus", {"gte": int(spec["gpu_count"])})
    if spec.get("min_vram_gb") is not None:
        _merge(query, "gpu_ram", {"gte": float(spec["min_vram_gb"]) * 1000})
    geo = spec.get("geolocation")
    if geo:
        codes = [geo] if isinstance(geo, str) else list(geo)
        _merge(query, "geolocation", {"in": [str(c).upper() for c in codes]})
    if spec.get("max_cost_per_hour_usd") is not None:
        _merge(query, "dph_total", {"lte": float(spec["max_cost_per_hour_usd"])})
    for field, ops in (spec.get("offer_filters") or {}).items():
        if field == "gpu_name":
            _forward_gpu_names(query, ops)
            continue
        target = _FORWARD.get(field)
        if target is None:
            continue
        vast_field, factor, allowed = target
        sent = {op: _scaled(value, factor) for op, value in ops.items() if op in allowed}
        if field == "geolocation":
            sent = {op: (v.upper() if isinstance(v, str) else [str(c).upper() for c in v]) for op, v in sent.items()}
        if sent:
            _merge(query, vast_field, sent)
    query["order"] = [["dph_total", "asc"]]
    query["type"] = "on-demand"
    query["limit"] = limit
    return query


def _forward_gpu_names(query: dict[str, Any], ops: dict[str, Any]) -> None:
    wanted = ops.get("in") if "in" in ops else ([ops["eq"]] if "eq" in ops else None)
    if not wanted:
        return
    names = [_KNOWN_NAMES.get(_norm(str(n))) for n in wanted]
    if all(names):
        _merge(query, "gpu_name", {"in": names})


def _scaled(value: Any, factor: float) -> Any:
    if factor == 1 or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return value * factor


class VastProvider(HttpProvider):
    name = "vast"
    rentable = True

    def __init__(self, *, api_key: str, base_url: str = DEFAULT_URL, image: str | None = None,
                 disk_gb: float | None = None) -> None:
        super().__init__(base_url, api_key)
        self.image = image or os.environ.get("APOTHIC_WORKER_IMAGE") or "python:3.11-slim"
        self.disk_gb = float(disk_gb or os.environ.get("APOTHIC_VAST_DISK_GB") or 16)

    @classmethod
    def from_env(cls, env: dict[str, str]) -> VastProvider:
        return cls(api_key=env["APOTHIC_VAST_API_KEY"], base_url=env.get("APOTHIC_VAST_API_URL") or DEFAULT_URL)

    def error_of(self, data: Any) -> tuple[str | None, str]:
        # Vast answers {"success": false, "error": "<name>", "msg": "<text>"}.
        if isinstance(data, dict) and (data.get("success") is False or data.get("error")):
            return str(data.get("error") or "error"), str(data.get("msg") or data.get("error") or "")
        return None, ""

    async def _bundles(self, query: dict[str, Any]) -> OfferTable:
        # The body goes as bytes straight into the offer table: no Python pass over offers.
        status, body = await self.send("POST", "/bundles/", "search offers", json=query)
        if status != 200:
            self.decode(status, body, "search offers")  # raises with the code the answer deserves
            raise ProviderError(f"vast: search offers failed: HTTP {status}", code="provider.unavailable")
        try:
            return OfferTable.from_vast_json(body)
        except Exception as e:
            raise ProviderError(f"vast: search offers answered with an unreadable body: {e}",
                                code="provider.unavailable") from None

    async def search(self, spec: dict[str, Any], limit: int = 64) -> OfferTable:
        flt = OfferFilter.compile(spec)
        market = await self._bundles(query_for(spec, min(_MAX_SEARCH, max(64, limit * 4))))
        ranked = market.match(flt, limit)
        return OfferTable.from_offers([market.offer(i) for i in ranked])

    async def catalog(self, limit: int = 256) -> OfferTable:
        return await self._bundles({"rentable": {"eq": True}, "rented": {"eq": False},
                                    "order": [["dph_total", "asc"]], "type": "on-demand", "limit": limit})

    async def rent(self, offer: dict[str, Any], *, server_url: str, join_token: str, label: str) -> str:
        body = {
            "client_id": "me",
            "image": self.image,
            "disk": max(self.disk_gb, 1.0),
            "label": label,
            "runtype": "ssh",  # onstart runs for the ssh and jupyter runtypes
            "onstart": start_script(),
            "env": agent_env(server_url=server_url, join_token=join_token, provider=self.name),
            "target_state": "running",
            "cancel_unavail": True,  # an offer taken since the search fails instead of queueing
        }
        # Vast may create the instance even when the call fails (dstack's lesson); the instance
        # carries our label, so the reconcile by label destroys such a leftover.
        data = await self.request("PUT", f"/asks/{offer['id']}/", f"create instance from offer {offer['id']}",
                                  json=body)
        contract = (data or {}).get("new_contract")
        if contract is None:
            raise ProviderError(f"vast: create instance from offer {offer['id']} answered without an instance id",
                                code="provider.unavailable")
        return str(contract)

    async def destroy(self, instance_id: str) -> None:
        await self.request("DELETE", f"/instances/{instance_id}/", f"destroy instance {instance_id}",
                           ok_errors=("no_such_instance",))

    async def instances(self, label_prefix: str) -> list[dict[str, Any]]:
        data = await self.request("GET", "/instances/", "list instances", params={"owner": "me"})
        rows = (data or {}).get("instances") or []
        return [{"id": str(r["id"]), "label": r.get("label") or "", "state": r.get("actual_status") or "unknown"}
                for r in rows if str(r.get("label") or "").startswith(label_prefix)]
