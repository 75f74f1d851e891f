from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from apothic import _core
from apothic.exception import error_for

P = ParamSpec("P")
T = TypeVar("T")


def translated(fn: Callable[P, T]) -> Callable[P, T]:
    """Turns the core's one exception into the public class for its code."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except _core.CoreError as e:
            code, message = e.args
            raise error_for(code, message) from None

    return wrapper


def core_error_codes() -> list[str]:
    return list(_core.error_codes())
