"""The log sink: logger ``resilient_llm.calls``.

One WARNING line per degraded or failed call, written from its
:class:`~.summary.CallSummary`, with enough to act on without a dashboard (requested and
serving model, reason, time against the budget, the caller's attributes, every attempt); one
DEBUG line per attempt and per fallback move. Lines carry the call's short id (see
:func:`~.summary.call_id`) and never a key, a header, or prompt or completion text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..events.bus import Event
from ..events.outcome import AttemptInfo, CallRecord
from .summary import CallSummary, call_id

__all__ = ["log", "log_attempt", "log_call", "log_move"]

log = logging.getLogger("resilient_llm.calls")


def served_text(summary: CallSummary) -> str | None:
    """The target that served a call, with its region when it has one (``model@eu-west-1``)."""
    region = summary.served_region
    return summary.served_by if region is None else f"{summary.served_by}@{region}"


def attempts_text(attempts: Iterable[AttemptInfo]) -> str:
    """``#1 gpt-4.1 server_error HTTP 500 0.001 s; #2 …``: every attempt on one line."""
    parts = []
    for attempt in attempts:
        status = f" HTTP {attempt.status}" if attempt.status is not None else ""
        waited = f" after {attempt.waited_before:.2f} s wait" \
            if attempt.waited_before >= 0.005 else ""
        result = attempt.failure or ("ok" if attempt.status is not None else "error")
        parts.append(f"#{attempt.number} {attempt.target or '?'} {result}"
                     f"{status} {attempt.duration:.3f} s{waited}")
    return "; ".join(parts) or "none sent"


def log_attempt(record: CallRecord, event: Event, failure: str | None = None) -> None:
    """The DEBUG line of an ``attempt_finished`` event (``failure``: its class, when the
    caller already knows it better than the event does)."""
    if failure is None and event.failure is not None:
        failure = event.failure.kind.value
    info = record.attempts[-1] if record.attempts else None
    duration = info.duration if info is not None and info.number == event.attempt else 0.0
    log.debug("resilient_llm: call %s attempt %d to %s: %s%s in %.3f s",
              call_id(record), event.attempt, event.target or record.requested, failure or "ok",
              f" (HTTP {event.status})" if event.status is not None else "", duration)


def log_move(record: CallRecord, source: str | None, target: str | None,
             reason: str | None) -> None:
    """The DEBUG line of a fallback move (``source`` ``None``: not known on this path)."""
    if source is None:
        log.debug("resilient_llm: call %s moves to %s (%s)", call_id(record), target, reason)
    else:
        log.debug("resilient_llm: call %s moves from %s to %s (%s)", call_id(record), source,
                  target, reason)


def log_call(summary: CallSummary) -> None:
    """The WARNING line of a degraded or failed call; nothing for a healthy one."""
    if summary.error is None and not summary.degraded:
        return
    if not log.isEnabledFor(logging.WARNING):
        return
    budget = summary.deadline_budget
    scope = " ".join(f"{k}={v}" for k, v in summary.attributes.items())
    scope = f" [{scope}]" if scope else ""
    of_budget = f" of a {budget:.2f} s budget" if budget is not None else ""
    n = len(summary.attempts)
    plural = "" if n == 1 else "s"
    if summary.error is None:
        log.warning(
            "resilient_llm: call %s for %s was served by %s (degraded, reason: %s) after %d "
            "attempt%s in %.2f s%s%s; attempts: %s",
            summary.call_id, summary.requested, served_text(summary),
            summary.reason or "unknown", n, plural, summary.elapsed, of_budget, scope,
            attempts_text(summary.attempts))
    elif summary.committed:
        log.warning(
            "resilient_llm: call %s for %s: stream from %s interrupted after output had "
            "started (%s) at %.2f s%s; the caller got StreamInterrupted with the partial text",
            summary.call_id, summary.requested, summary.served_by, summary.error,
            summary.elapsed, scope)
    else:
        reason = summary.reason
        log.warning(
            "resilient_llm: call %s for %s failed (%s%s) after %d attempt%s in %.2f s%s%s; "
            "attempts: %s",
            summary.call_id, summary.requested, summary.error,
            f", gave up: {reason}" if reason and reason != summary.error else "", n, plural,
            summary.elapsed, of_budget, scope, attempts_text(summary.attempts))
