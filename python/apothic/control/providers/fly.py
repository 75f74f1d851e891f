"""The `fly` provider: Fly Machines (create, list, stop and destroy machines in one app).

Fly has no offer market to search: what it sells is a fixed set of guest sizes in a set of
regions at list prices. Those are the offers here, as normalized rows in the Rust offer table,
filtered and ranked with the same compiled filter as every other provider's. Renting creates a
machine whose init command runs the worker start script, with the rental's label in the
machine's metadata so that a restart can find it again.
"""

from __future__ import annotations

import os
from typing import Any

from apothic._bridge.placement import OfferFilter, OfferTable
from apothic.control.providers.base import HttpProvider, agent_env, start_script
from apothic.exception import ProviderError

DEFAULT_URL = "https://api.machines.dev"
LABEL_KEY = "apothic_label"

# Region -> (ISO country, city). Fly's GPU regions, plus a few CPU-only ones.
_REGIONS: dict[str, tuple[str, str]] = {
    "ord": ("US", "Chicago"),
    "iad": ("US", "Ashburn"),
    "sjc": ("US", "San Jose"),
    "ams": ("NL", "Amsterdam"),
    "syd": ("AU", "Sydney"),
    "fra": ("DE", "Frankfurt"),
    "lhr": ("GB", "London"),
}

# Fly's GPU kinds as the Machines API names them (guest.gpu_kind), the name our GPU matching
# uses, memory per GPU, the regions that carry them, and Fly's list price per GPU-hour
# (fly.io/docs/about/pricing; the L40S was cut to $1.25 in 2024, the A10's price). Each GPU
# machine gets the performance-8x guest (8 dedicated CPUs, 32 GB) Fly pairs them with.
_GPU_KINDS: list[tuple[str, str, float, tuple[str, ...], float]] = [
    ("a10", "A10", 24.0, ("ord",), 1.25),
    ("l40s", "L40S", 48.0, ("ord",), 1.25),
    ("a100-pcie-40gb", "A100 PCIE", 40.0, ("ord",), 2.50),
    ("a100-sxm4-80gb", "A100 SXM4", 80.0, ("iad", "sjc", "ams", "syd"), 3.50),
]
_GPU_GUEST = {"cpu_kind": "performance", "cpus": 8, "memory_mb": 32768}
# CPU-only presets (cpus, memory GB, $/hour from Fly's per-second prices of dedicated CPUs).
_CPU_PRESETS: list[tuple[str, int, int, float]] = [
    ("performance-2x", 2, 4, 0.0861),
    ("performance-4x", 4, 8, 0.1721),
    ("performance-8x", 8, 16, 0.3445),
]


def catalog_rows() -> list[dict[str, Any]]:
    """Every guest size in every region that sells it, as normalized offer rows."""
    rows: list[dict[str, Any]] = []
    for region, (country, city) in _REGIONS.items():
        for kind, gpu_name, vram, regions, price in _GPU_KINDS:
            if region in regions:
                rows.append(_row(f"{region}/{kind}", region, country, city, gpu_name=gpu_name, gpu_count=1,
                                 vram_gb=vram, cpu=_GPU_GUEST["cpus"], memory_gb=_GPU_GUEST["memory_mb"] / 1024,
                                 price=price))
        for preset, cpus, memory_gb, price in _CPU_PRESETS:
            rows.append(_row(f"{region}/{preset}", region, country, city, gpu_name=None, gpu_count=0,
                             vram_gb=None, cpu=cpus, memory_gb=memory_gb, price=price))
    return rows


def _row(offer_id: str, region: str, country: str, city: str, *, gpu_name: str | None, gpu_count: int,
         vram_gb: float | None, cpu: int, memory_gb: float, price: float) -> dict[str, Any]:
    return {
        "id": offer_id, "provider": "fly", "gpu_name": gpu_name, "gpu_count": gpu_count, "vram_gb": vram_gb,
        "cpu": float(cpu), "memory_gb": float(memory_gb), "disk_gb": 8.0, "price_per_hour_usd": price,
        "reliability": 0.99, "geolocation": country, "city": city, "region": region, "verified": True,
    }


def guest_of(offer_id: str) -> tuple[str, dict[str, Any]]:
    """The region and the Machines API guest for one of our offer ids ("ord/l40s")."""
    region, _, size = offer_id.partition("/")
    if region not in _REGIONS:
        raise ProviderError(f"fly: no region {region!r} in offer {offer_id}", code="provider.rejected")
    for kind, _name, _vram, regions, _price in _GPU_KINDS:
        if kind == size and region in regions:
            return region, {**_GPU_GUEST, "gpu_kind": kind, "gpus": 1}
    for preset, cpus, memory_gb, _price in _CPU_PRESETS:
        if preset == size:
            return region, {"cpu_kind": "performance", "cpus": cpus, "memory_mb": memory_gb * 1024}
    raise ProviderError(f"fly: offer {offer_id} is not a guest size Fly sells", code="provider.rejected")


class FlyProvider(HttpProvider):
    name = "fly"
    rentable = True

    def __init__(self, *, token: str, app: str, base_url: str = DEFAULT_URL, image: str | None = None) -> None:
        super().__init__(base_url.rstrip("/") + "/v1", token)
        self.app = app
        self.image = image or os.environ.get("APOTHIC_WORKER_IMAGE") or "python:3.11-slim"
        self._catalog = OfferTable.from_offers(catalog_rows())  # built once: the list never changes

    @classmethod
    def from_env(cls, env: dict[str, str]) -> FlyProvider:
        return cls(token=env["APOTHIC_FLY_API_TOKEN"], app=env["APOTHIC_FLY_APP"],
                   base_url=env.get("APOTHIC_FLY_API_URL") or DEFAULT_URL)

    async def search(self, spec: dict[str, Any], limit: int = 64) -> OfferTable:
        ranked = self._catalog.match(OfferFilter.compile(spec), limit)
        return OfferTable.from_offers([self._catalog.offer(i) for i in ranked])

    async def catalog(self, limit: int = 256) -> OfferTable:
        return self._catalog

    async def rent(self, offer: dict[str, Any], *, server_url: str, join_token: str, label: str) -> str:
        region, guest = guest_of(str(offer["id"]))
        body = {
            "name": "apothic-" + label.rsplit("/", 1)[-1].lower(),
            "region": region,
            "config": {
                "image": self.image,
                "guest": guest,
                "env": agent_env(server_url=server_url, join_token=join_token, provider=self.name),
                "metadata": {LABEL_KEY: label},
                "init": {"exec": ["/bin/bash", "-c", start_script()]},
                # The agent is the machine: when it exits, the machine is done; never restarted
                # with a join token that was already used.
                "restart": {"policy": "no"},
                "auto_destroy": True,
            },
        }
        data = await self.request("POST", f"/apps/{self.app}/machines", f"create machine for offer {offer['id']}",
                                  json=body)
        machine_id = (data or {}).get("id")
        if not machine_id:
            raise ProviderError(f"fly: create machine for offer {offer['id']} answered without a machine id",
                                code="provider.unavailable")
        return str(machine_id)

    async def destroy(self, instance_id: str) -> None:
        what = f"destroy machine {instance_id}"
        status, body = await self.send("DELETE", f"/apps/{self.app}/machines/{instance_id}", what,
                                       params={"force": "true"})
        if status == 404:
            return  # already gone
        self.decode(status, body, what)

    async def instances(self, label_prefix: str) -> list[dict[str, Any]]:
        data = await self.request("GET", f"/apps/{self.app}/machines", "list machines")
        found = []
        for machine in data or []:
            label = str(((machine.get("config") or {}).get("metadata") or {}).get(LABEL_KEY) or "")
            if label.startswith(label_prefix) and machine.get("state") != "destroyed":
                found.append({"id": str(machine["id"]), "label": label, "state": machine.get("state") or "unknown"})
        return found
