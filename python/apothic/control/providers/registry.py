"""Which capacity providers are on: `local` always; `vast` and `fly` when their key variable is
set in the environment of `apothic server start`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apothic._bridge.placement import OfferFilter, OfferTable
from apothic._worker.capacity import capacity, offer_row
from apothic.control.providers.base import Provider
from apothic.control.providers.fly import FlyProvider
from apothic.control.providers.vast import VastProvider
from apothic.exception import InvalidError, ProviderError

NAMES = ("local", "vast", "fly")


def host_offer(home: Path) -> dict[str, Any]:
    """This host as an offer row: what the local provider's agents report."""
    return offer_row(capacity(home), offer_id="local", provider="local")


class LocalOffers:
    """The `local` provider as offers: one row, this host. It rents nothing: the control plane's
    local agent pool (providers/local.py) already runs on every host it could offer."""

    name = "local"
    rentable = False

    def __init__(self, home: Path) -> None:
        self.home = home

    async def search(self, spec: dict[str, Any], limit: int = 64) -> OfferTable:
        table = await self.catalog()
        return OfferTable.from_offers([table.offer(i) for i in table.match(OfferFilter.compile(spec), limit)])

    async def catalog(self, limit: int = 256) -> OfferTable:
        return OfferTable.from_offers([host_offer(self.home)])

    async def rent(self, offer: dict[str, Any], *, server_url: str, join_token: str, label: str) -> str:
        raise ProviderError("local: this host is not rented; its agents are started by the server itself",
                            code="provider.rejected")

    async def destroy(self, instance_id: str) -> None:
        raise ProviderError("local: there are no rented instances to destroy", code="provider.rejected")

    async def instances(self, label_prefix: str) -> list[dict[str, Any]]:
        return []

    async def close(self) -> None:
        return None


def enabled_providers(home: Path, env: Mapping[str, str] | None = None) -> dict[str, Provider]:
    """The providers this server may use, by name. A half-configured provider is an error at
    start, not a provider that silently never rents."""
    env = dict(os.environ if env is None else env)
    providers: dict[str, Provider] = {"local": LocalOffers(home)}
    if env.get("APOTHIC_VAST_API_KEY"):
        providers["vast"] = VastProvider.from_env(env)
    elif env.get("APOTHIC_VAST_API_URL"):
        raise InvalidError("APOTHIC_VAST_API_URL is set but APOTHIC_VAST_API_KEY is not: the vast provider "
                           "needs its API key")
    if env.get("APOTHIC_FLY_API_TOKEN"):
        if not env.get("APOTHIC_FLY_APP"):
            raise InvalidError("APOTHIC_FLY_API_TOKEN is set but APOTHIC_FLY_APP is not: the fly provider "
                               "creates machines in that app")
        providers["fly"] = FlyProvider.from_env(env)
    return providers
