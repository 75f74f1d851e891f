"""Execution images. Until images are built (a later issue), only the host's own Python
environment can be honoured: `Image.debian_slim()` with no build steps. Any build step is a
clear error when the decorator runs, never silently skipped."""

from __future__ import annotations

from typing import Any

from apothic.exception import InvalidError


class Image:
    def __init__(self, base: str, steps: tuple[tuple[str, Any], ...] = ()) -> None:
        self.base = base
        self.steps = steps

    @classmethod
    def debian_slim(cls, python_version: str | None = None) -> Image:
        return cls(f"debian_slim:{python_version or 'host'}")

    def _step(self, name: str, *args: Any) -> Image:
        return Image(self.base, (*self.steps, (name, args)))

    def pip_install(self, *packages: str, **_: Any) -> Image:
        return self._step("pip_install", *packages)

    def uv_pip_install(self, *packages: str, **_: Any) -> Image:
        return self._step("uv_pip_install", *packages)

    def apt_install(self, *packages: str, **_: Any) -> Image:
        return self._step("apt_install", *packages)

    def run_commands(self, *commands: str, **_: Any) -> Image:
        return self._step("run_commands", *commands)

    def env(self, variables: dict[str, str]) -> Image:
        return self._step("env", variables)

    @classmethod
    def from_registry(cls, tag: str, **_: Any) -> Image:
        return cls(f"registry:{tag}")

    def check_supported(self) -> None:
        if not self.base.startswith("debian_slim:"):
            raise InvalidError(f"image base {self.base!r} cannot be honoured yet: only Image.debian_slim() "
                               "(the worker's own Python environment) runs today")
        if self.steps:
            names = ", ".join(name for name, _ in self.steps)
            raise InvalidError(f"image build steps cannot be honoured yet ({names}): images are not built "
                               "yet, so code would run without them")
