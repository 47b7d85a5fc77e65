"""The engine's single event hook: every transition of a call is one event.

``outcome()`` and telemetry are both built from these events, so what a user sees and what a
dashboard shows cannot disagree. Listeners must be fast and must not raise; one that raises is
logged and dropped from that emission, never allowed to break the call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ._fastinit import fast_frozen_init

if TYPE_CHECKING:
    from ._classify import Failure
    from ._outcome import CallRecord

__all__ = ["Event", "EventKind", "Listener", "emit", "subscribe"]

log = logging.getLogger("resilient_llm")

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

Listener = Callable[["CallRecord", Event], None]

_listeners: tuple[Listener, ...] = ()
_lock = threading.Lock()


def subscribe(listener: Listener) -> Callable[[], None]:
    """Register ``listener`` for every event of every call; returns a function that removes it."""
    global _listeners
    with _lock:
        _listeners = (*_listeners, listener)

    def unsubscribe() -> None:
        global _listeners
        with _lock:
            _listeners = tuple(item for item in _listeners if item is not listener)

    return unsubscribe


def emit(record: CallRecord, event: Event) -> None:
    """Apply ``event`` to its call record, then tell the listeners."""
    record.apply(event)
    for listener in _listeners:
        try:
            listener(record, event)
        except Exception:
            log.exception("resilient_llm event listener %r failed; event dropped for it", listener)
