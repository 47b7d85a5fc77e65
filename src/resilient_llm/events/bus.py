"""The engine's single event hook: every transition of a call is one event.

``outcome()`` and telemetry are both built from these events, so what a user sees and what a
dashboard shows cannot disagree. Listeners must be fast and must not raise; one that raises is
logged and dropped from that emission, never allowed to break the call. When no listener wants
an event of a call (see :func:`needed`), the engine folds it into the call's record through the
same ``CallRecord`` code, without building the :class:`Event`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .event import ALL_KINDS, Event, EventKind

if TYPE_CHECKING:
    from .outcome import CallRecord

__all__ = ["ALL_KINDS", "Event", "EventKind", "Listener", "emit", "needed", "set_builtin", "start",
           "subscribe"]

log = logging.getLogger("resilient_llm")


Listener = Callable[["CallRecord", Event], None]


_listeners: tuple[Listener, ...] = ()
# The built-in listener (telemetry) and its per-call decision of which kinds it needs.
_builtin: Listener | None = None
_quiet_for: Callable[[CallRecord], frozenset[str]] | None = None
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


def set_builtin(listener: Listener | None,
                quiet_for: Callable[[CallRecord], frozenset[str]] | None = None) -> None:
    """Install (or remove, with ``None``) the built-in listener (telemetry).

    Unlike a subscribed listener it decides, when a call starts, which event kinds it can do
    without for that call (``quiet_for``); those are not delivered to it, and when no subscribed
    listener exists either, the hottest of them (``call_started``, ``attempt_started``) are
    folded into the call's record without an :class:`Event` being built. A call that started
    while no built-in listener was installed stays unseen by one installed later.
    """
    global _builtin, _quiet_for
    with _lock:
        _builtin, _quiet_for = listener, quiet_for


def start(record: CallRecord) -> None:
    """A call begins: let the built-in listener say which of its events it needs."""
    quiet_for = _quiet_for
    if quiet_for is not None:
        try:
            record.quiet = quiet_for(record)
        except Exception:
            log.exception("resilient_llm built-in listener failed to open a call")
    elif _builtin is None:
        record.quiet = ALL_KINDS


def needed(record: CallRecord, kind: str) -> bool:
    """Does any listener want this event of this call? (Else the caller only folds it into
    the record.) A call started with no built-in listener has every kind quiet."""
    return bool(_listeners) or kind not in record.quiet


def emit(record: CallRecord, event: Event) -> None:
    """Apply ``event`` to its call record, then tell the listeners that want it."""
    record.apply(event)
    builtin = _builtin
    if builtin is not None and event.kind not in record.quiet:
        try:
            builtin(record, event)
        except Exception:
            log.exception("resilient_llm built-in listener failed; event dropped for it")
    for listener in _listeners:
        try:
            listener(record, event)
        except Exception:
            log.exception("resilient_llm event listener %r failed; event dropped for it", listener)
