"""The service's last predictions (HTTP and --watch), newest first, for the page."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

RECENT = 30  # predictions kept for the page's "last predictions"


class RecentPredictions:
    """A thread-safe ring of the last `size` prediction records."""

    def __init__(self, size: int = RECENT) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any], source: str, image: str | None) -> None:
        """Keep one prediction (its `top_k` left out), stamped with the time and its source."""
        entry = {"time": time.time(), "source": source, "image": image, **record}
        entry.pop("top_k", None)
        with self._lock:
            self._entries.appendleft(entry)

    def list(self) -> list[dict[str, Any]]:
        """The kept predictions, newest first."""
        with self._lock:
            return list(self._entries)
