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
