"""What this host offers: CPUs, memory, disk, and GPUs read with pynvml."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def gpus() -> list[dict[str, Any]]:
    """GPUs seen by NVML; a host without GPUs or without the NVIDIA library has none."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            found.append({
                "index": index,
                "name": name.decode() if isinstance(name, bytes) else name,
                "memory_mb": int(memory.total // (1024 * 1024)),
                "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
            })
        return found
    except pynvml.NVMLError:
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def memory_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))
    except (ValueError, OSError):
        return 0


def capacity(home: Path) -> dict[str, Any]:
    home.mkdir(parents=True, exist_ok=True)
    disk = shutil.disk_usage(home)
    return {
        "cpu": os.cpu_count() or 1,
        "memory_mb": memory_mb(),
        "disk_free_mb": int(disk.free // (1024 * 1024)),
        "gpus": gpus(),
    }


def offer_row(cap: dict[str, Any], *, offer_id: str, provider: str) -> dict[str, Any]:
    """A host's measured capacity as a row of the placement offer schema, so that placement
    filters treat it like anything a provider sells."""
    gpus = cap.get("gpus") or []
    return {
        "id": offer_id,
        "provider": provider,
        "gpu_name": gpus[0]["name"] if gpus else None,
        "gpu_count": len(gpus),
        "vram_gb": min(g["memory_mb"] for g in gpus) / 1024 if gpus else None,
        "cpu": float(cap.get("cpu", 0)),
        "memory_gb": int(cap.get("memory_mb", 0)) / 1024,
        "disk_gb": int(cap.get("disk_free_mb", 0)) / 1024,
        "price_per_hour_usd": 0.0,  # this host is already paid for
        "reliability": 1.0,
        "geolocation": cap.get("geolocation") or os.environ.get("APOTHIC_GEOLOCATION") or None,
        "verified": True,
    }
