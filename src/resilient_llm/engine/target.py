"""The value types of a target's state: its key, an admission's answer, a snapshot.

``engine.pressure`` holds the state itself and re-exports these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .._fastinit import fast_frozen_init
from .parts import SharedView

__all__ = ["Admission", "PressureSnapshot", "TargetKey"]


@dataclass(frozen=True, slots=True)
class TargetKey:
    """What a provider throttles on: the endpoint, the credential (hashed), the model."""

    endpoint: str
    credential: str
    model: str | None

    @classmethod
    def of(cls, endpoint: str, credential: str | None, model: str | None) -> TargetKey:
        digest = hashlib.sha256((credential or "").encode()).hexdigest()[:12]
        return cls(endpoint, digest, model)

    def __str__(self) -> str:
        return f"{self.endpoint}|{self.credential}|{self.model or '-'}"


# --- per-target state -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to "may this attempt start now?"; ``wait`` is ``None`` when unknown.
    ``turn``, for a waiter behind others: the soonest the pace lets its turn come (seconds),
    what a call with a fallback ready weighs against moving on."""

    granted: bool
    wait: float | None = None
    pressure: float = 0.0
    turn: float | None = None


fast_frozen_init(Admission)


@dataclass(frozen=True, slots=True)
class PressureSnapshot:
    """A read-only view of one target's state, for dashboards and ``pressure_snapshot()``."""

    target: str
    pressure: float
    concurrency_limit: float
    inflight: int
    waiting: int
    request_rate: float | None
    token_rate: float | None
    retry_tokens: float
    throttles: int
    latency_baseline: float | None
    #: The fleet view (mode, shared rate, lease, counters) when ``RESILIENT_LLM_REDIS_URL`` is set.
    fleet: SharedView | None = None
