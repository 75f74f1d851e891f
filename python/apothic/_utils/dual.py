"""`obj.method(...)` blocks; `await obj.method.aio(...)` does not. One async implementation."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import update_wrapper
from typing import Any, Generic, TypeVar

from apothic import _loop

T = TypeVar("T")


class _Bound(Generic[T]):
    __slots__ = ("_fn", "_obj")

    def __init__(self, fn: Callable[..., Coroutine[Any, Any, T]], obj: Any) -> None:
        self._fn = fn
        self._obj = obj

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        return _loop.run(self._fn(self._obj, *args, **kwargs))

    async def aio(self, *args: Any, **kwargs: Any) -> T:
        return await _loop.run_async(self._fn(self._obj, *args, **kwargs))


class dual(Generic[T]):
    """Makes an `async def` method callable both ways."""

    def __init__(self, fn: Callable[..., Coroutine[Any, Any, T]]) -> None:
        self._fn = fn
        update_wrapper(self, fn)  # type: ignore[arg-type]

    def __get__(self, obj: Any, owner: type | None = None) -> _Bound[T]:
        return _Bound(self._fn, owner if obj is None else obj)


class _InlineBound(_Bound[T]):
    __slots__ = ()

    async def aio(self, *args: Any, **kwargs: Any) -> T:
        return await self._fn(self._obj, *args, **kwargs)


class dual_inline(dual[T]):
    """`dual` whose `.aio` form runs on the caller's own loop, over that loop's own connection
    (`get_client` gives each loop one). For methods that only make requests: handing each call to
    the SDK loop and its result back cost two thread switches, which under the GIL added 1.3 ms
    to each call of a client running 32 concurrent queue cycles (and a fifth of its CPU)."""

    def __get__(self, obj: Any, owner: type | None = None) -> _Bound[T]:
        return _InlineBound(self._fn, owner if obj is None else obj)
