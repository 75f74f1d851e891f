"""Python twin of `crates/apothic-py/src/placement.rs`: the columnar offer table and the
compiled offer filter. The only importer of the placement classes of `apothic._core`; nothing
in Python loops over offers."""

from __future__ import annotations

from typing import Any

from apothic import _core
from apothic._bridge.errors import translated

# field -> "number" | "integer" | "string" | "bool", in the schema's order.
FIELDS: dict[str, str] = dict(_core.offer_fields())


class OfferFilter:
    """A placement spec compiled once; reused for every offer table and every worker."""

    __slots__ = ("_ref",)

    def __init__(self, ref: Any) -> None:
        self._ref = ref

    @staticmethod
    @translated
    def compile(spec: dict[str, Any]) -> OfferFilter:
        """`spec` keys: gpu, gpu_count, min_vram_gb, geolocation, max_cost_per_hour_usd,
        offer_filters; all optional. Raises InvalidError (code placement.invalid_filter)
        naming the offending field."""
        return OfferFilter(_core.OfferFilterRef.compile(spec))

    @translated
    def matches(self, offer: dict[str, Any]) -> bool:
        return bool(self._ref.matches(offer))

    @translated
    def failures(self, offer: dict[str, Any]) -> list[str]:
        """The predicates `offer` fails, each rendered with the value it had."""
        return list(self._ref.failures(offer))

    def describe(self) -> str:
        return str(self._ref.describe())

    def __repr__(self) -> str:
        return f"OfferFilter({self.describe()})"


class OfferTable:
    """Offers held in columns by the Rust core; rows are in the normalized offer schema."""

    __slots__ = ("_ref",)

    def __init__(self, ref: Any) -> None:
        self._ref = ref

    @staticmethod
    @translated
    def from_offers(offers: list[dict[str, Any]]) -> OfferTable:
        return OfferTable(_core.OfferTableRef.from_offers(offers))

    @staticmethod
    @translated
    def from_vast_json(body: bytes) -> OfferTable:
        """A Vast.ai `/bundles/` search response (`{"offers": [...]}`), normalized at ingest."""
        return OfferTable(_core.OfferTableRef.from_vast_json(body))

    def __len__(self) -> int:
        return len(self._ref)

    def offer(self, index: int) -> dict[str, Any]:
        return dict(self._ref.offer(index))

    def match(self, flt: OfferFilter, limit: int = 64) -> list[int]:
        """Indices of matching rows, best first: price, then reliability (descending), then id."""
        return list(self._ref.match(flt._ref, limit))

    def explain(self, flt: OfferFilter, limit: int = 3) -> list[tuple[dict[str, Any], list[str]]]:
        """The nearest misses: offers failing the fewest predicates, with what each failed."""
        return [(dict(offer), list(failed)) for offer, failed in self._ref.explain(flt._ref, limit)]
