"""The fleet's process-wide counters: Redis round trips per admission, outages, rejoins."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

__all__ = ["COUNTERS", "Counters", "FleetStats", "fleet_stats"]


@dataclass(frozen=True, slots=True)
class FleetStats:
    """Process-wide fleet counters (for telemetry and dashboards; monotonic except ``redis_up``).

    ``round_trips / admissions`` is the admission overhead: Redis round trips per admitted
    attempt while coordinated (leases make it ``≈ 1/(d·τ)``).
    """

    redis_up: bool
    round_trips: int
    admissions: int
    local_admissions: int
    refills: int
    empty_refills: int
    fallbacks: int
    errors: int
    skipped: int
    rejoins: int
    throttles_shared: int
    probes: int

    @property
    def round_trips_per_call(self) -> float:
        return self.round_trips / self.admissions if self.admissions else 0.0


class Counters:
    """The process's fleet counters, and which Redis links are down (thread-safe)."""

    __slots__ = ("_down", "_lock", "values")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down: weakref.WeakSet[object] = weakref.WeakSet()
        self.values: dict[str, int] = dict.fromkeys(
            ("round_trips", "admissions", "local_admissions", "refills", "empty_refills",
             "fallbacks", "errors", "skipped", "rejoins", "throttles_shared", "probes"), 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] += n

    def link_state(self, link: object, *, up: bool) -> None:
        """Note that ``link`` went down or came back (``redis_up`` is every link up)."""
        with self._lock:
            if up:
                self._down.discard(link)
            else:
                self._down.add(link)

    def reset(self) -> None:
        with self._lock:
            for name in self.values:
                self.values[name] = 0
            self._down.clear()

    def snapshot(self) -> FleetStats:
        with self._lock:
            return FleetStats(redis_up=not len(self._down), **self.values)


COUNTERS = Counters()


def fleet_stats() -> FleetStats:
    """A snapshot of this process's fleet counters."""
    return COUNTERS.snapshot()
