"""A clock and random source for tests: time moves only when something sleeps or you advance it."""

from __future__ import annotations

import math
import random
import threading

__all__ = ["FakeClock", "FakeRandom"]


class FakeClock:
    """A monotonic clock whose ``sleep`` and ``asleep`` advance virtual time instantly.

    Every sleep is recorded in ``sleeps`` so tests can assert the exact waits the engine chose.
    Thread-safe: concurrent sleepers each advance the clock by their own wait.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` without recording a sleep."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        _check_finite(seconds)
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        _check_finite(seconds)
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(seconds, 0.0)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:.6f})"


def _check_finite(seconds: float) -> None:
    if not math.isfinite(seconds):  # a nan would make every later now() nan
        raise ValueError(f"seconds must be finite, got {seconds!r}")


class FakeRandom(random.Random):
    """A seeded ``random.Random``; ``FakeRandom(fixed=0.5)`` makes ``random()`` always 0.5."""

    def __init__(self, seed: int = 0, *, fixed: float | None = None) -> None:
        super().__init__(seed)
        if fixed is not None and not 0.0 <= fixed < 1.0:
            raise ValueError("fixed must be in [0, 1)")
        self._fixed = fixed

    def random(self) -> float:
        return self._fixed if self._fixed is not None else super().random()

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()
