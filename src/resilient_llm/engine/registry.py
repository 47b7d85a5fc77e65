"""Every target's pressure state in one process: the registry the drivers look states up in.

Bounded (least recently used targets are dropped). With ``RESILIENT_LLM_REDIS_URL`` set, a
target's state is built by the factory the drivers pass (``resilient_llm.fleet.fleet_pressure``):
the engine never imports the fleet.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from cachetools import LRUCache

from .pressure import TargetPressure
from .target import PressureSnapshot, TargetKey

__all__ = ["PressureRegistry", "SharedStates", "pressure_snapshot", "registry"]


#: Builds the state of a target a fleet shares: ``(key, now, url) -> state`` for the fleet
#: setting's URL (``resilient_llm.fleet.fleet_pressure``). The layer that knows the fleet passes
#: it to :meth:`PressureRegistry.get`, so the engine never imports the fleet.
SharedStates = Callable[[TargetKey, float, str], "TargetPressure"]


class PressureRegistry:
    """All targets' state in one process: bounded (least recently used targets are dropped)."""

    def __init__(self, maxsize: int = 1024) -> None:
        self._targets: LRUCache[TargetKey | tuple[TargetKey, str], TargetPressure] = LRUCache(
            maxsize=maxsize)
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, key: TargetKey, now: float, *, redis_url: str | None = None,
            shared: SharedStates | None = None) -> TargetPressure:
        """The state of ``key``; with ``redis_url`` (the fleet setting) it is fleet-backed,
        built by ``shared`` (``resilient_llm.fleet.fleet_pressure``) with the same interface.
        """
        slot: TargetKey | tuple[TargetKey, str] = key if redis_url is None else (key, redis_url)
        with self._lock:
            state = self._targets.get(slot)
            if state is None:
                if redis_url is None:
                    state = TargetPressure(key, now)
                elif shared is None:
                    raise ValueError(
                        "registry.get(redis_url=...) builds a fleet-backed state and needs "
                        "shared=, the fleet's factory (resilient_llm.fleet.fleet_pressure)")
                else:
                    state = shared(key, now, redis_url)
                self._targets[slot] = state
            return state

    def __len__(self) -> int:
        with self._lock:
            return len(self._targets)

    def snapshots(self, now: float) -> list[PressureSnapshot]:
        with self._lock:
            states = list(self._targets.values())
        return [state.snapshot(now) for state in states]

    def forked(self) -> None:
        """In a child process just forked: the parent's states belong to its threads (calls
        queued or in flight that will never end here) and a lock may have been held by one
        of them at the fork. Kept, a child's every call to a target the parent was busy with
        queued behind those ghosts until its deadline. The child starts afresh, as a new
        process would."""
        self._lock = threading.Lock()
        self._targets = LRUCache(maxsize=self._targets.maxsize)
        self.generation += 1

    def clear(self) -> None:
        """Forget every target (tests, reconfiguration); cached lookups notice by generation."""
        with self._lock:
            self._targets.clear()
            self.generation += 1


registry = PressureRegistry()
if hasattr(os, "register_at_fork"):  # (not on Windows, which has no fork)
    os.register_at_fork(after_in_child=registry.forked)


def pressure_snapshot() -> list[PressureSnapshot]:
    """A read-only snapshot of every target's pressure state in this process (for dashboards)."""
    import time

    return registry.snapshots(time.monotonic())
