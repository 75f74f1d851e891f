"""Plan functions (control/plans.py) as aiohttp handlers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from apothic.control import keys
from apothic.control.middlewares import account_of
from apothic.control.plans import PlanFn, commit

Handler = Callable[[web.Request], Any]


def planned(slow: Handler | None = None) -> Callable[[PlanFn], Handler]:
    """Makes a plan function an aiohttp handler (`handler.plan` is the function itself, for the
    rpc route). `slow` serves the requests the plan leaves undecided."""

    def wrap(plan_fn: PlanFn) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            plan = plan_fn(request.app, account_of(request), request.match_info, request.query,
                           await request.read())
            if plan is None:
                if slow is None:
                    raise RuntimeError(f"{plan_fn.__name__} left a request undecided and has no slow path")
                return await slow(request)
            [outcome] = await commit(request.app[keys.STORE].db, [plan])
            if isinstance(outcome, BaseException):
                raise outcome
            body, content_type = outcome
            return web.Response(body=body, content_type=content_type)

        handler.plan = plan_fn  # type: ignore[attr-defined]
        handler.__name__ = plan_fn.__name__
        handler.__doc__ = plan_fn.__doc__
        return handler

    return wrap
