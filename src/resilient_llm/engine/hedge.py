"""Hedged first token: when a stream's first output is late, race another attempt.

Opt-in (``RESILIENT_LLM_HEDGE=true``; async clients, streaming calls). After the hedge delay
without a first output, a second attempt starts on the next target of the chain (or the same
target when there is none); if neither has output one delay later, a third may start
(``MAX_RACERS``), since a hedge on the same slow tail is itself slow once in twenty. The first
to produce output wins and the others are cancelled, their connections closed. Semantics follow
gRPC hedging: the call's deadline covers all, hedges spend budget, losers are cancelled.

* **Delay**: ``Policy.hedge_delay``, else twice the p90 of the target's recent times to first
  output, from at least 5 samples (with fewer no hedge is sent: a guess could double the load;
  with few samples the p90 index is the maximum, a cautious estimate). Twice the p90 keeps the
  fast mass of calls from spending the budget, so it goes to the slow tail; the budget, not the
  quantile, bounds the extra load.
* **Budget**: like gRPC retry throttling it starts full (10 hedges, for bursts of slow
  calls); each streaming call deposits ``Policy.hedge_budget`` tokens (default 0.05) and a hedge
  spends 1, so extra attempts stay ≤ 10 + 5 % of calls however slow the tail gets.
"""

from __future__ import annotations

import threading
from collections import deque

from cachetools import LRUCache

from .pressure import TargetKey

__all__ = ["MAX_RACERS", "HedgeStats", "hedge_stats"]

MAX_RACERS = 3
"""Attempts racing for one first output: the original and at most two hedges."""
_MIN_SAMPLES = 5
_TOKEN_CAP = 10.0


class HedgeStats:
    """Time-to-first-output samples and the hedge budget of one target (thread-safe)."""

    __slots__ = ("_lock", "_samples", "hedges", "requests", "tokens")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: deque[float] = deque(maxlen=200)
        self.tokens = _TOKEN_CAP
        self.requests = 0
        self.hedges = 0

    def record(self, time_to_first_output: float) -> None:
        with self._lock:
            self._samples.append(time_to_first_output)

    def delay(self, configured: float | None) -> float | None:
        """Seconds to wait before hedging, or ``None`` when too little is known to hedge."""
        if configured is not None:
            return configured
        with self._lock:
            if len(self._samples) < _MIN_SAMPLES:
                return None
            ordered = sorted(self._samples)
        return 2.0 * ordered[min(len(ordered) - 1, int(0.90 * len(ordered)))]

    def deposit(self, share: float) -> None:
        """One streaming call: earn ``share`` of a hedge."""
        with self._lock:
            self.requests += 1
            self.tokens = min(_TOKEN_CAP, self.tokens + share)

    def try_spend(self) -> bool:
        """Take one hedge from the budget, if there is one."""
        with self._lock:
            if self.tokens < 1.0:
                return False
            self.tokens -= 1.0
            self.hedges += 1
            return True

    def refund(self) -> None:
        """Return a hedge taken by ``try_spend`` that could not be sent after all."""
        with self._lock:
            self.tokens = min(_TOKEN_CAP, self.tokens + 1.0)
            self.hedges -= 1


_stats: LRUCache[TargetKey, HedgeStats] = LRUCache(maxsize=1024)
_stats_lock = threading.Lock()


def hedge_stats(key: TargetKey) -> HedgeStats:
    """The hedge state of ``key`` (bounded: least recently used targets are dropped)."""
    with _stats_lock:
        stats = _stats.get(key)
        if stats is None:
            stats = _stats[key] = HedgeStats()
        return stats


def clear() -> None:
    """Forget every target's samples and budget (tests, reconfiguration)."""
    with _stats_lock:
        _stats.clear()
