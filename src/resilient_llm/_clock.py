"""Time and randomness, injected so every decision can be tested without sleeping."""

from __future__ import annotations

import random
import time
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "RandomSource", "SystemClock"]


class Clock(Protocol):
    """A monotonic clock with matching sync and async sleeps."""

    def now(self) -> float:
        """Monotonic seconds; only differences are meaningful."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the task for ``seconds``."""
        ...


class RandomSource(Protocol):
    """The part of :class:`random.Random` the engine uses."""

    def random(self) -> float: ...

    def uniform(self, a: float, b: float) -> float: ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.sleep`` and ``anyio.sleep``."""

    __slots__ = ()

    #: ``time.monotonic`` itself: read a dozen times per call, so no Python frame around it.
    now = staticmethod(time.monotonic)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        import anyio

        await anyio.sleep(max(seconds, 0.0))

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: Clock = SystemClock()
SYSTEM_RANDOM: RandomSource = random.SystemRandom()
