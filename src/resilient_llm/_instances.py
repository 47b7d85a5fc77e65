"""One object per key per process, made on first use: Redis links, ledgers, capture files.

Each of them owns a connection or a file handle that concurrent callers must share (one lock
per capture file, one connection pool per store), and tests close them all between cases.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Instances"]

K = TypeVar("K")
V = TypeVar("V")


class Instances(Generic[K, V]):
    """The process's instances, keyed; ``make(key)`` builds a missing one under the lock (so
    two threads asking at once get the same object)."""

    __slots__ = ("_items", "_lock", "_make")

    def __init__(self, make: Callable[[K], V]) -> None:
        self._make = make
        self._items: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V:
        """The instance of ``key``, made now if there is none."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                item = self._items[key] = self._make(key)
            return item

    def drain(self) -> list[V]:
        """Forget every instance and hand them back (for the caller to close, outside the lock)."""
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        return items
