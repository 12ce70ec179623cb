"""The service's last predictions (HTTP and --watch), newest first, for the page."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

RECENT = 30  # predictions kept for the page's "last predictions"


def printable_name(name: str | None) -> str | None:
    """A file name safe to store, encode as UTF-8 and show: bytes that are not UTF-8 (a
    `caf\\xe9.png` from a Latin-1 camera, kept by `os.fsdecode` as surrogates) become `\\xe9`."""
    if name is None:
        return None
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


class RecentPredictions:
    """A thread-safe ring of the last `size` prediction records."""

    def __init__(self, size: int = RECENT) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any], source: str, image: str | None) -> None:
        """Keep one prediction (its `top_k` left out), stamped with the time and its source."""
        entry = {"time": time.time(), "source": source, "image": printable_name(image), **record}
        entry.pop("top_k", None)
        with self._lock:
            self._entries.appendleft(entry)

    def list(self) -> list[dict[str, Any]]:
        """The kept predictions, newest first."""
        with self._lock:
            return list(self._entries)
