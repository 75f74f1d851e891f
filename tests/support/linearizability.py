"""A Wing & Gong linearizability checker (with Lowe's memoisation) for a register history.

Each operation has an invocation time, a response time and its observed outcome. A history is
linearizable when the operations can be put in one order that respects real time (an operation
that ended before another began comes first) and in which every outcome is what a single
register would have returned. Linearizability is compositional, so a dict is checked one key at
a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ABSENT = object()


@dataclass(frozen=True)
class Op:
    kind: str  # "put" (value) | "get" (-> output) | "cas" (expected, value -> ok)
    invoked: float
    returned: float
    value: Any = None  # what put/cas wrote
    expected: Any = None  # what cas compared against
    output: Any = None  # what get returned, or whether cas succeeded


def step(state: Any, op: Op) -> tuple[bool, Any]:
    """The register model: whether `op`'s outcome is possible in `state`, and the next state."""
    if op.kind == "put":
        return True, op.value
    if op.kind == "get":
        return op.output == (None if state is ABSENT else state), state
    if op.kind == "cas":
        matches = state is not ABSENT and state == op.expected
        if op.output != matches:
            return False, state
        return True, op.value if matches else state
    raise ValueError(op.kind)


def linearizable(history: list[Op], initial: Any = ABSENT,
                 model: Callable[[Any, Op], tuple[bool, Any]] = step) -> bool:
    ops = sorted(history, key=lambda o: o.invoked)
    seen: set[tuple[frozenset[int], Any]] = set()

    def search(remaining: frozenset[int], state: Any) -> bool:
        if not remaining:
            return True
        marker = (remaining, state if state is not ABSENT else "<absent>")
        if marker in seen:
            return False
        seen.add(marker)
        # Only an operation invoked before every remaining operation has returned can go first.
        earliest_return = min(ops[i].returned for i in remaining)
        for i in remaining:
            if ops[i].invoked > earliest_return:
                continue
            ok, next_state = model(state, ops[i])
            if ok and search(remaining - {i}, next_state):
                return True
        return False

    return search(frozenset(range(len(ops))), initial)
