"""Placement on the control plane: which connected workers may run a function, and why none can.

A function's requirements (cpu, memory, gpu, the convenience fields and `offer_filters`) are
compiled once into filters of the Rust placement core, one per GPU fallback, in order. Connected
workers are rows of one offer table: a rented worker's row is what its provider sold, a local
worker's row is what its agent measured. The same compiled filter that searches providers for
new capacity decides here whether an existing worker can be reused, so the two never disagree.
"""

from __future__ import annotations

from typing import Any

from apothic._bridge.placement import OfferFilter, OfferTable
from apothic._worker.capacity import offer_row
from apothic.control.model import FunctionSpec, WorkerHandle

_RANKED = 64  # workers considered per decision; the least loaded of the best-ranked wins


def requirement_specs(options: dict[str, Any]) -> list[dict[str, Any]]:
    """The filter specs of a function's options: one per GPU fallback (at least one), each
    also holding the cpu and memory it asked for."""
    placements = options.get("placements") or [{}]
    sizing: dict[str, Any] = {}
    if options.get("cpu") is not None:
        sizing["cpu"] = {"gte": float(options["cpu"])}
    if options.get("memory") is not None:
        sizing["memory_gb"] = {"gte": int(options["memory"]) / 1024}
    specs = []
    for placement in placements:
        spec = dict(placement)
        if sizing:
            spec["offer_filters"] = {**sizing, **(spec.get("offer_filters") or {})}
        specs.append(spec)
    return specs


def compile_requirements(options: dict[str, Any]) -> list[OfferFilter]:
    return [OfferFilter.compile(spec) for spec in requirement_specs(options)]


def worker_offer(worker: WorkerHandle) -> dict[str, Any]:
    """A connected worker as an offer row: what its provider sold, else what its agent measured."""
    sold = worker.metadata
    if sold:
        return {**sold, "id": worker.id}
    return offer_row(worker.capacity, offer_id=worker.id, provider=worker.provider)


_MAX_FILTERS = 4096
BY_OPTIONS = "sandbox:"  # the prefix of filter keys made from options rather than a function id


class Placer:
    """Compiled requirements per function and the offer table of connected workers."""

    def __init__(self) -> None:
        self._filters: dict[str, list[OfferFilter]] = {}
        self._table: OfferTable | None = None
        self._rows: list[str] = []  # worker id of each table row

    def filters(self, spec: FunctionSpec) -> list[OfferFilter]:
        return self._compiled(spec.id, spec.options)

    def _compiled(self, key: str, options: dict[str, Any]) -> list[OfferFilter]:
        found = self._filters.get(key)
        if found is None:
            if len(self._filters) >= _MAX_FILTERS:
                # Functions' filters go with them (forget); others are keyed by their options
                # (every distinct sandbox requirement), so they are dropped and compiled again.
                for other in [k for k in self._filters if k.startswith(BY_OPTIONS)]:
                    del self._filters[other]
            found = self._filters[key] = compile_requirements(options)
        return found

    def forget(self, function_id: str) -> None:
        self._filters.pop(function_id, None)

    def workers_changed(self) -> None:
        self._table = None

    def _workers_table(self, workers: dict[str, WorkerHandle]) -> OfferTable:
        if self._table is None:
            self._rows = list(workers)
            self._table = OfferTable.from_offers([worker_offer(workers[w]) for w in self._rows])
        return self._table

    def candidates(self, spec: FunctionSpec, workers: dict[str, WorkerHandle]) -> list[WorkerHandle]:
        """Connected workers that may run `spec`, best first: the first GPU fallback that any
        worker satisfies wins; among its matches the least loaded, then the best ranked."""
        return self.candidates_for(spec.id, spec.options, workers)

    def candidates_for(self, key: str, options: dict[str, Any], workers: dict[str, WorkerHandle],
                       load: dict[str, int] | None = None) -> list[WorkerHandle]:
        """`candidates` for any options (a sandbox's too), with filters cached under `key` and
        load counted as containers unless `load` says otherwise."""
        if not workers:
            return []
        table = self._workers_table(workers)
        for flt in self._compiled(key, options):
            ranked = [workers[self._rows[i]] for i in table.match(flt, _RANKED) if self._rows[i] in workers]
            if ranked:
                order = {w.id: n for n, w in enumerate(ranked)}
                busy = load if load is not None else {w.id: len(w.containers) for w in ranked}
                return sorted(ranked, key=lambda w: (busy.get(w.id, 0), order[w.id]))
        return []

    def nearest_for(self, key: str, options: dict[str, Any], workers: dict[str, WorkerHandle],
                    limit: int = 3) -> list[str]:
        """The connected workers that came closest, each with the requirements it failed."""
        if not workers:
            return []
        table = self._workers_table(workers)
        lines = []
        for offer, failed in table.explain(self._compiled(key, options)[0], limit):
            lines.append(f"worker {offer['id']} ({offer.get('provider')}): " + "; ".join(failed))
        return lines

    def describe_for(self, key: str, options: dict[str, Any]) -> str:
        return " or ".join(f.describe() for f in self._compiled(key, options))
