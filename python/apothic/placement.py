"""Placement requirements: what capacity a function, class or sandbox asks for.

`placements_from_options` turns the decorator options (`gpu`, `gpu_count`, `min_vram_gb`,
`geolocation`, `max_cost_per_hour_usd`, `offer_filters`) into one `Placement` per GPU fallback,
and compiles each so that a bad field, operator or value fails when the decorator runs.
Matching itself happens in the Rust core (`apothic._bridge.placement`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from apothic._bridge.placement import OfferFilter
from apothic.exception import Error, InvalidError

# Modal's memory suffix: "A100-80GB", "A100_40GB", "A100 80GB".
_MEMORY_SUFFIX = re.compile(r"^(?P<name>.*?)[-_ ]?(?P<gb>\d+)\s*GB$", re.IGNORECASE)


@dataclass(frozen=True)
class Placement:
    """One requirement set. GPU fallbacks give several, tried in order."""

    gpu: str | None = None
    gpu_count: int | None = None
    min_vram_gb: float | None = None
    geolocation: str | list[str] | None = None
    max_cost_per_hour_usd: float | None = None
    offer_filters: dict[str, Any] | None = None

    def spec(self) -> dict[str, Any]:
        """The dict `OfferFilter.compile` takes."""
        return {
            "gpu": self.gpu,
            "gpu_count": self.gpu_count,
            "min_vram_gb": self.min_vram_gb,
            "geolocation": self.geolocation,
            "max_cost_per_hour_usd": self.max_cost_per_hour_usd,
            "offer_filters": self.offer_filters,
        }

    def compile(self) -> OfferFilter:
        return OfferFilter.compile(self.spec())


def _invalid(name: str, message: str, code: str = "placement.invalid_filter") -> InvalidError:
    return InvalidError(f"{name}: {message}", code=code)


def _parse_gpu(name: str, raw: Any) -> tuple[str, int | None, float | None]:
    """Modal's forms: "A100", "a100:2", "A100-80GB:4", "H100!" (no upgrade; Apothic never
    upgrades), "any". Returns (gpu name, count, vram in GB)."""
    if not isinstance(raw, str):
        raise _invalid(name, f"gpu: expected a GPU name such as 'A100' or 'A100:2', got {raw!r}")
    text, _, count_text = raw.strip().partition(":")
    count: int | None = None
    if count_text:
        if not count_text.strip().isdigit() or int(count_text) < 1:
            raise _invalid(name, f"gpu {raw!r}: the count after ':' must be a positive integer")
        count = int(count_text)
    text = text.strip().rstrip("!").strip()
    vram: float | None = None
    m = _MEMORY_SUFFIX.match(text)
    if m and m.group("name").strip():
        text, vram = m.group("name").strip(), float(m.group("gb"))
    if not text:
        raise _invalid(name, f"gpu {raw!r}: empty GPU name")
    return text, count, vram


def placements_from_options(
    name: str,
    *,
    gpu: str | list[str] | tuple[str, ...] | None = None,
    gpu_count: int | None = None,
    min_vram_gb: float | None = None,
    geolocation: str | list[str] | None = None,
    max_cost_per_hour_usd: float | None = None,
    offer_filters: dict[str, Any] | None = None,
) -> list[Placement]:
    """The placements asked for by a decorator on `name`, validated; [] when nothing was asked.

    Raises InvalidError (code `placement.invalid_filter`) naming the function and the field.
    """
    if all(
        v is None
        for v in (gpu, gpu_count, min_vram_gb, geolocation, max_cost_per_hour_usd, offer_filters)
    ):
        return []
    if isinstance(gpu, (list, tuple)):
        if not gpu:
            raise _invalid(name, "gpu: an empty list of fallbacks")
        choices = [_parse_gpu(name, g) for g in gpu]
    elif gpu is None:
        choices = [(None, None, None)]
    else:
        choices = [_parse_gpu(name, gpu)]
    if gpu_count is not None and (
        isinstance(gpu_count, bool) or not isinstance(gpu_count, int) or gpu_count < 1
    ):
        raise _invalid(name, f"gpu_count: expected a positive integer, got {gpu_count!r}")
    if offer_filters is not None and not isinstance(offer_filters, dict):
        raise _invalid(
            name, f"offer_filters: expected {{field: {{op: value}}}}, got {offer_filters!r}"
        )
    placements = []
    for gpu_name, count, vram in choices:
        if count is not None and gpu_count is not None and count != gpu_count:
            raise _invalid(
                name, f"gpu {gpu_name}:{count} conflicts with gpu_count={gpu_count}"
            )
        need_vram = min_vram_gb
        if vram is not None:
            if min_vram_gb is None:
                need_vram = vram
            elif isinstance(min_vram_gb, (int, float)) and not isinstance(min_vram_gb, bool):
                need_vram = max(float(min_vram_gb), vram)
        placement = Placement(
            gpu=gpu_name,
            gpu_count=count if count is not None else gpu_count,
            min_vram_gb=need_vram,
            geolocation=list(geolocation) if isinstance(geolocation, (list, tuple)) else geolocation,
            max_cost_per_hour_usd=max_cost_per_hour_usd,
            offer_filters=dict(offer_filters) if offer_filters is not None else None,
        )
        try:
            placement.compile()
        except Error as e:
            raise InvalidError(f"{name}: {e.message}", code=e.code) from None
        placements.append(placement)
    return placements


def no_match_message(name: str, flt: OfferFilter, nearest: list[tuple[dict[str, Any], list[str]]]) -> str:
    """The one-line `placement.no_match` message: what was asked, then the nearest offers
    (from `OfferTable.explain`) and the predicates each failed."""
    parts = []
    for offer, failed in nearest:
        price = offer.get("price_per_hour_usd")
        cost = f", ${price:g}/h" if isinstance(price, (int, float)) else ""
        parts.append(f"{offer.get('id')} ({offer.get('provider')}, {offer.get('gpu_name')}{cost}) failed "
                     + ", ".join(failed))
    near = "; nearest: " + "; ".join(parts) if parts else "; no offers to compare"
    return f"{name}: no capacity matches {flt.describe()}{near}"
