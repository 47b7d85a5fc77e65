"""One transition of a call: the value the event stream carries and call records fold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .._fastinit import fast_frozen_init

if TYPE_CHECKING:
    from ..engine.failure import Failure

__all__ = ["ALL_KINDS", "Event", "EventKind"]

EventKind = Literal[
    "call_started",
    "attempt_started",
    "attempt_finished",
    "waited",
    "fell_back",
    "breaker_changed",
    "stream_committed",
    "succeeded",
    "gave_up",
    "stream_finished",
    "stream_interrupted",
    "stream_recovered",
    "stream_broke",
]


@dataclass(frozen=True, slots=True)
class Event:
    """One transition. ``at`` is seconds since the call started (monotonic)."""

    kind: EventKind
    at: float
    attempt: int = 0
    target: str | None = None
    failure: Failure | None = None
    status: int | None = None
    seconds: float = 0.0
    detail: str = ""


fast_frozen_init(Event)

#: Every event kind (a call's ``quiet`` set may name any of them).
ALL_KINDS: frozenset[str] = frozenset(EventKind.__args__)  # type: ignore[attr-defined]
