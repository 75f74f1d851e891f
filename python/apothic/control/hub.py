"""The global revision counter and in-process fan-out of events to live streams.

Every event and log line gets the next revision. A stream first reads history from the store
(revision > after), then follows live events here, skipping any revision it already sent, so a
reader that resumes from a revision sees no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any


class Hub:
    def __init__(self, revision: int = 0) -> None:
        self.revision = revision
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    def next_revision(self) -> int:
        self.revision += 1
        return self.revision

    def watched(self, topic: str) -> bool:
        """Whether a live stream follows the topic (else a publisher may skip making its event)."""
        return topic in self._subscribers

    def publish(self, topic: str, message: dict[str, Any]) -> None:
        for q in self._subscribers.get(topic, ()):
            q.put_nowait(message)

    def subscribe(self, topic: str) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers[topic].add(q)
        return q

    def unsubscribe(self, topic: str, q: asyncio.Queue[dict[str, Any]]) -> None:
        subs = self._subscribers.get(topic)
        if subs is not None:
            subs.discard(q)
            if not subs:
                del self._subscribers[topic]
