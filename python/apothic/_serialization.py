"""Arguments and results travel pickled with cloudpickle; the control plane never unpickles."""

from __future__ import annotations

from typing import Any

import cloudpickle

from apothic.exception import RemoteError, SerializationError


def dump_args(function_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    try:
        return cloudpickle.dumps((args, kwargs))
    except Exception as e:
        raise SerializationError(f"could not pickle the arguments of {function_name}: {e}") from None


def load_outcome(payload: bytes) -> Any:
    """The value of a finished call, or its exception raised as its own type."""
    try:
        outcome = cloudpickle.loads(payload)
    except Exception as e:
        raise SerializationError(f"could not unpickle the result: {e}") from None
    if outcome[0] == "ok":
        return outcome[1]
    _, exc, remote_tb = outcome
    if exc is None:
        last = remote_tb.strip().splitlines()[-1] if remote_tb.strip() else "remote error"
        raise RemoteError(f"{last}\n\nRemote traceback:\n{remote_tb}")
    exc.add_note(f"\nRemote traceback:\n{remote_tb}")
    raise exc
