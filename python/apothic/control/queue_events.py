"""A queue's event log: revisions, a bounded history for resuming watches, live fan-out.

Every event takes the queue's next revision. The history keeps the last events so that a
watcher can resume from a revision with no gap and no duplicate; older ones are compacted and a
resume before them says so. The revision is saved with the queue on each tick; after a restart
it resumes well past the saved value (numbers are never reused) with an empty history.
"""

from __future__ import annotations

import base64
from collections import deque
from typing import Any

from apothic.control.hub import Hub
from apothic.exception import NotFoundError

HISTORY = 10_000
RESTART_GAP = 100_000  # more events than could happen between two saves of the revision


# An event as the history keeps it: (revision, type, item id, partition, delivery count, payload,
# detail). It becomes the dict watchers read only when one reads it: most events are never
# watched, and building each (with the payload in base64) was a tenth of a put's cost here.
_Kept = tuple[int, str, str, str, int, "bytes | None", dict[str, Any]]


def _event(kept: _Kept) -> dict[str, Any]:
    revision, kind, key, partition, deliveries, payload, detail = kept
    return {"revision": revision, "type": kind, "id": key, "partition": partition, "delivery_count": deliveries,
            "value": None if payload is None else base64.b64encode(payload).decode(), **detail}


class EventLog:
    def __init__(self, hub: Hub, topic: str, revision: int = 0) -> None:
        self.hub = hub
        self.topic = topic
        self.revision = revision
        self.saved_revision = revision
        self._history: deque[_Kept] = deque(maxlen=HISTORY)
        self._compacted = revision  # events at or below this revision are gone

    def emit(self, kind: str, key: str, partition: str, deliveries: int, payload: bytes | None = None,
             **detail: Any) -> None:
        self.revision += 1
        kept = (self.revision, kind, key, partition, deliveries, payload, detail)
        history = self._history
        if len(history) == HISTORY:
            self._compacted = history[0][0]
        history.append(kept)
        if self.hub.watched(self.topic):
            self.hub.publish(self.topic, _event(kept))

    def since(self, after: int) -> list[dict[str, Any]]:
        if after < self._compacted:
            raise NotFoundError(f"queue events after revision {after} are compacted; resume from "
                                f"{self._compacted} or later, or watch with a snapshot", code="queue.compacted")
        return [_event(kept) for kept in self._history if kept[0] > after]
