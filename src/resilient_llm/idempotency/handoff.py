"""A worker thread's answer, and a caller that may stop waiting for it."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

__all__ = ["Handoff"]

T = TypeVar("T")


class Handoff(Generic[T]):
    """A worker thread's answer and a caller that may have stopped waiting for it: exactly one
    of them ends up holding it (the caller, or the thread when the caller left first)."""

    __slots__ = ("_answer", "_gone", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gone = False
        self._answer: T | None = None

    def deliver(self, answer: T) -> bool:
        """From the thread: ``False`` when the caller left (the answer stays the thread's)."""
        with self._lock:
            if self._gone:
                return False
            self._answer = answer
            return True

    def leave(self) -> T | None:
        """From the caller that stops waiting: an answer already delivered, now its own."""
        with self._lock:
            self._gone = True
            return self._answer
