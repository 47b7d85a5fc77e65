"""The telemetry listener: the engine's events in, the sinks fed.

Installed as the event bus's built-in listener (see :func:`install`). When a call starts it
decides how much work the call gets, once:

* **off** (``Policy(telemetry=False)``): no event is delivered at all;
* **lean** (no OpenTelemetry SDK, no price table, no capture: the common library case): only
  the events that can produce a log line are delivered, and a call that ends degraded or failed
  is summarised for its WARNING line; nothing is kept between events;
* **deep**: a :class:`_CallState` keeps what the sinks need between events (the call's base
  attributes, its open spans, the tapped exchange, backoff tallies), feeds the span and metric
  sinks per event, and when the call ends builds its :class:`~.summary.CallSummary` once and
  hands it to every sink (spans, metrics, the log line, the capture file, ``outcome().cost``).

Nothing is stored on the engine's :class:`~resilient_llm.events.outcome.CallRecord` but what
``outcome()`` reports (the caller's attributes, the cost). Deep calls are tracked by record in
a bounded table, so a call that never ends (cancelled, a stream never closed) cannot leak.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..context.attributes import current_attributes
from ..events.bus import ALL_KINDS, Event, set_builtin, start
from ..events.outcome import CallRecord
from .capture import capture_line
from .conventions import (
    TOOL_OPERATION,
    Conventions,
    conventions,
    operation_name,
    provider_name,
    target_attribute,
)
from .logs import log, log_attempt, log_call, log_move
from .metrics import Instruments
from .providers import instruments_for, meter_provider, tracer_for, tracer_provider
from .settings import Settings, settings_for
from .spans import MIN_EVENT_WAIT, CallSpans
from .summary import summarize
from .tap import AsyncTap, Exchange, SyncTap, arm, disarm

__all__ = ["attach", "install", "installed", "open_calls", "uninstall"]

_MAX_OPEN_CALLS = 10_000

Attributes = dict[str, Any]


class _CallState:
    """What the listener keeps about one deep call between its events (also the tap's owner:
    the tap stores the attempt's exchange here, and copies streamed bytes when ``tee``)."""

    __slots__ = (
        "backoff_total", "base", "committed", "complete", "conv", "deferred", "exchange",
        "instruments", "last_failure", "pending_wait", "record", "settings", "spans", "t0_ns",
        "target", "tee",
    )

    def __init__(self, record: CallRecord, t0_ns: int, settings: Settings) -> None:
        self.record = record
        self.t0_ns = t0_ns
        self.settings = settings
        self.tee = settings.keeps_stream_bytes
        self.conv: Conventions | None = None
        self.spans: CallSpans | None = None
        self.instruments: Instruments | None = None
        self.base: Attributes | None = None
        self.deferred: list[Callable[[Attributes], None]] = []
        self.exchange: Exchange | None = None
        self.target = record.requested
        self.last_failure: str | None = None
        self.pending_wait = 0.0
        self.backoff_total = 0.0
        self.committed = False
        self.complete: bool | None = None

    @property
    def live(self) -> bool:
        """Do spans or metric points of this call go somewhere?"""
        return self.spans is not None or self.instruments is not None


_states: dict[int, _CallState] = {}


def _state_of(record: CallRecord) -> _CallState | None:
    state = _states.get(id(record))
    return state if state is not None and state.record is record else None


def open_calls() -> int:
    """How many deep calls the listener is tracking (tests check that ended calls are gone)."""
    return len(_states)


# --- opening a call ------------------------------------------------------------------------------


#: The only events the lean path can write a log line for.
_LEAN_KINDS = frozenset({"attempt_finished", "succeeded", "gave_up", "stream_interrupted",
                         "fell_back"})


def _open(record: CallRecord) -> frozenset[str]:
    """The bus's question when a call starts: how much work does the call get, that is, which
    of its events can telemetry do without?"""
    if _states and _state_of(record) is not None:  # started twice: keep what is open
        return _QUIET_DEEP
    attrs = current_attributes()
    if attrs and not record.attributes:
        record.attributes = attrs
    settings = settings_for(record.policy)
    if not settings.enabled:
        return _QUIET_OFF
    traces = tracer_provider()
    points = meter_provider()
    if traces is None and points is None and not settings.keeps_stream_bytes \
            and settings.prices is None:
        return _QUIET_LEAN
    state = _CallState(record, time.time_ns(), settings)
    if traces is not None or points is not None:
        conv = state.conv = conventions()
        if traces is not None:
            state.spans = CallSpans(tracer_for(traces, conv), state.t0_ns)
        if points is not None:
            state.instruments = instruments_for(points, conv)
    if len(_states) >= _MAX_OPEN_CALLS:
        _evict()
    _states[id(record)] = state
    return _QUIET_DEEP


def _build_base(state: _CallState) -> Attributes:
    """The attributes every span and metric point of the call carries.

    Built once the first attempt has been prepared (the server is known then); work that
    happened before it (admission waits, skipped targets) was deferred until now.
    """
    record = state.record
    base: Attributes = {"gen_ai.operation.name": record.operation or operation_name(record.path)}
    if record.operation != TOOL_OPERATION:
        base["gen_ai.provider.name"] = provider_name(record.provider, record.server_address)
    if record.requested:
        base[target_attribute(base)] = record.requested
    if record.server_address:
        base["server.address"] = record.server_address
        if record.server_port is not None:
            base["server.port"] = record.server_port
    base.update(record.attributes)
    state.base = base
    deferred, state.deferred = state.deferred, []
    for work in deferred:
        work(base)
    return base


def _later(state: _CallState, work: Callable[[Attributes], None]) -> None:
    """Run ``work(base)`` now if the call's attributes are known, else once they are."""
    if state.base is not None:
        work(state.base)
    else:
        state.deferred.append(work)


# --- the listener --------------------------------------------------------------------------------


def _on_event(record: CallRecord, event: Event) -> None:
    if record.quiet is _QUIET_LEAN:  # decided when the call opened: no state kept for it
        _lean(record, event)
        return
    state = _state_of(record)
    if state is None and not record.quiet:  # a record that never went through a call's start
        start(record)
        if record.quiet is _QUIET_OFF:
            return
        state = _state_of(record)
    if state is not None:
        handler = _HANDLERS.get(event.kind)
        if handler is not None:
            handler(state, event)
    elif event.kind in _LEAN_KINDS:  # lean, or a deep call that ended or was evicted
        _lean(record, event)


def _lean(record: CallRecord, event: Event) -> None:
    """Calls with no span, metric, price or capture to feed: log lines from the record alone.

    This is the whole cost of telemetry when no OpenTelemetry SDK is configured.
    """
    kind = event.kind
    if kind == "attempt_finished":
        if event.failure is None and event.status is None and record.operation is None:
            # re-raised as is: the call ends
            log_call(summarize(record, at=event.at, error="exception"))
        elif log.isEnabledFor(logging.DEBUG):
            log_attempt(record, event)
    elif kind == "succeeded":
        served = record.served_by
        if served and record.requested and served != record.requested:
            log_call(summarize(record, at=event.at, error=None))
    elif kind == "gave_up":
        if record.time_to_first_token is None:  # else the interruption was logged already
            log_call(summarize(record, at=event.at, error=_error_of(event),
                               give_up=event.detail or "unknown"))
    elif kind == "stream_interrupted":
        failure = event.failure
        log_call(summarize(record, at=event.at, committed=True,
                           error=failure.kind.value if failure is not None
                           else "stream_interrupted"))
    elif kind == "fell_back" and log.isEnabledFor(logging.DEBUG):
        log_move(record, None, event.target, event.detail)


def _evict() -> None:
    """Too many calls never ended (cancelled mid-attempt, streams never closed): end the
    oldest tenth, so a leak in user code cannot grow this table without bound."""
    for key in list(_states)[: _MAX_OPEN_CALLS // 10]:
        old = _states.get(key)
        if old is not None:
            _finish(old, max(old.record.elapsed, _elapsed_now(old)), "abandoned")


def _elapsed_now(state: _CallState) -> float:
    return max(0.0, (time.time_ns() - state.t0_ns) / 1e9)


def _attempt_started(state: _CallState, event: Event) -> None:
    target = event.target or state.target
    state.target = target
    state.exchange = None
    arm(state)
    if not state.live:
        return
    base = state.base if state.base is not None else _build_base(state)
    if state.instruments is not None and event.attempt > 1:
        state.instruments.retry(base, state.last_failure)
    if state.spans is not None:
        state.spans.attempt_started(base, number=event.attempt, target=target,
                                    backoff=state.pending_wait, at=event.at)
    state.pending_wait = 0.0


def _attempt_finished(state: _CallState, event: Event) -> None:
    disarm()
    record = state.record
    failure = event.failure
    kind = failure.kind.value if failure is not None else None
    # An exception no class covers ends a drop-in's call (the transport re-raises it as is);
    # users' own code recorded as a tool keeps going.
    unclassified = failure is None and event.status is None and record.operation is None
    if unclassified:  # an exception no class covers: the transport re-raises it as is
        error = state.exchange.error if state.exchange is not None else None
        kind = type(error).__name__ if error is not None else "exception"
    if state.spans is not None:
        state.spans.attempt_finished(status=event.status, failure=kind, at=event.at)
    if state.instruments is not None and state.base is not None:
        info = record.attempts[-1] if record.attempts else None
        duration = info.duration if info is not None and info.number == event.attempt else 0.0
        state.instruments.attempt(state.base, event.target or state.target or "unknown", kind,
                                  duration)
    if log.isEnabledFor(logging.DEBUG):
        log_attempt(record, event, kind)
    if kind is not None:
        state.last_failure = kind
    if unclassified:
        _finish(state, event.at, kind)


def _call_event(state: _CallState, name: str, facts: Attributes, at: float,
                count: Callable[[Instruments, Attributes], None], *, span: bool = True) -> None:
    """A fact of the whole call: ``count`` it in the metrics and, with ``span``, add it as
    the span event ``name``; both wait for the call's base attributes."""
    instruments, spans = state.instruments, state.spans

    def work(base: Attributes) -> None:
        if instruments is not None:
            count(instruments, base)
        if spans is not None and span:
            spans.event(base, name, facts, at)

    _later(state, work)


def _waited(state: _CallState, event: Event) -> None:
    seconds = event.seconds
    reason = event.detail or "backoff"
    if reason != "admission":  # admission waits are the call's queue_wait
        state.pending_wait += seconds
        state.backoff_total += seconds
    if state.live:
        facts = {"resilient_llm.wait.reason": reason, "resilient_llm.wait.seconds": seconds}
        _call_event(state, "resilient_llm.wait", facts, event.at,
                    lambda instruments, base: instruments.wait(base, reason, seconds),
                    span=reason != "admission" or seconds >= MIN_EVENT_WAIT)


def _fell_back(state: _CallState, event: Event) -> None:
    """The router moved to the next target of the chain (after a failure, or skipping one)."""
    source = state.target or "unknown"
    target = event.target or "unknown"
    reason = event.detail or state.last_failure or "unknown"
    state.target = event.target or state.target
    if log.isEnabledFor(logging.DEBUG):
        log_move(state.record, source, target, reason)
    if state.live:
        facts = {"resilient_llm.fallback.from": source, "resilient_llm.fallback.to": target,
                 "resilient_llm.fallback.reason": reason}
        _call_event(state, "resilient_llm.fallback", facts, event.at,
                    lambda instruments, base: instruments.fallback(base, facts))


def _breaker_changed(state: _CallState, event: Event) -> None:
    """A target's circuit breaker changed state."""
    if state.live:
        facts = {target_attribute(state.base or {}): event.target or "unknown",
                 "resilient_llm.circuit.state": event.detail or "unknown"}
        _call_event(state, "resilient_llm.circuit", facts, event.at,
                    lambda instruments, base: instruments.circuit_change(base, facts))


def _stream_committed(state: _CallState, event: Event) -> None:
    state.committed = True


def _succeeded(state: _CallState, event: Event) -> None:
    if event.detail == "stream":
        state.committed = True  # the call ends when the stream does
        return
    _finish(state, event.at, None)


def _stream_finished(state: _CallState, event: Event) -> None:
    state.complete = event.detail != "closed_by_caller"
    _finish(state, event.at, None)


def _stream_recovered(state: _CallState, event: Event) -> None:
    """A stream that broke after its first output was resumed: a span event (no metric)."""
    recoveries = state.record.recoveries
    if not state.live or not recoveries:
        return
    recovery = recoveries[-1]
    facts = {"resilient_llm.recovery.mode": recovery.mode,
             "resilient_llm.recovery.target": recovery.target or "unknown",
             "resilient_llm.recovery.failure": recovery.failure,
             "resilient_llm.recovery.offset": recovery.offset,
             "resilient_llm.recovery.regenerated_tokens": recovery.regenerated_tokens}
    _call_event(state, "resilient_llm.stream.recovered", facts, event.at,
                lambda instruments, base: None)


def _stream_interrupted(state: _CallState, event: Event) -> None:
    failure = event.failure
    state.complete = False
    _finish(state, event.at, failure.kind.value if failure is not None else "stream_interrupted")


def _error_of(event: Event) -> str:
    """``error.type`` of a give-up: ``deadline_exceeded``, else the last failure class."""
    reason = event.detail or "unknown"
    if reason == "deadline":
        return "deadline_exceeded"
    return event.failure.kind.value if event.failure is not None else reason


def _gave_up(state: _CallState, event: Event) -> None:
    _finish(state, event.at, _error_of(event), give_up=event.detail or "unknown")


_HANDLERS: dict[str, Callable[[_CallState, Event], None]] = {
    "attempt_started": _attempt_started,
    "attempt_finished": _attempt_finished,
    "waited": _waited,
    "fell_back": _fell_back,
    "breaker_changed": _breaker_changed,
    "stream_committed": _stream_committed,
    "succeeded": _succeeded,
    "stream_finished": _stream_finished,
    "stream_interrupted": _stream_interrupted,
    "stream_recovered": _stream_recovered,
    "gave_up": _gave_up,
}
# Per path, the events the listener never reads (the bus does not deliver them).
_QUIET_OFF = ALL_KINDS
_QUIET_LEAN = ALL_KINDS - _LEAN_KINDS
_QUIET_DEEP = ALL_KINDS - frozenset(_HANDLERS)


# --- the end of a call ---------------------------------------------------------------------------


def _finish(state: _CallState, at: float, error: str | None, *, give_up: str | None = None) -> None:
    """End the call: one summary, then every sink, exactly once."""
    record = state.record
    if _states.pop(id(record), None) is not state:
        return
    disarm()
    settings = state.settings
    base = state.base
    if base is None and state.live:
        base = _build_base(state)
    summary = summarize(
        record, at=at, error=error, give_up=give_up, committed=state.committed,
        complete=state.complete, last_failure=state.last_failure,
        backoff_total=state.backoff_total, exchange=state.exchange, prices=settings.prices)
    if summary.cost is not None:
        record.cost = summary.cost  # outcome().cost
    if base is not None and state.conv is not None:
        if state.spans is not None:
            state.spans.end(base, summary, state.conv, content=settings.capture_content)
        if state.instruments is not None:
            state.instruments.call_ended(base, summary)
    log_call(summary)
    if settings.sink is not None and record.operation != TOOL_OPERATION:  # LLM exchanges only
        settings.sink.write(capture_line(summary))


# --- wiring --------------------------------------------------------------------------------------

_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Install the listener as the event bus's built-in one (idempotent)."""
    global _installed
    with _install_lock:
        if not _installed:
            set_builtin(_on_event, _open)
            _installed = True


def installed() -> bool:
    """Is the listener installed (tests restore what they found)?"""
    return _installed


def uninstall() -> None:
    """Remove the listener and forget every open call (for tests and benchmarks)."""
    global _installed
    with _install_lock:
        if _installed:
            set_builtin(None)
            _installed = False
        _states.clear()


def attach(inner: Any, policy: Any, *, asynchronous: bool) -> Any:
    """The client layer's seam: install the listener and put a tap over ``inner``.

    The drop-in clients call it for each transport they wrap, and put the resilient transport
    over what it returns, so the listener exists from the first drop-in client on and the tap
    sees every attempt as sent. ``Policy(telemetry=False)`` leaves ``inner`` untouched and
    installs nothing.
    """
    if policy is not None and not getattr(policy, "telemetry", True):
        return inner
    install()
    if isinstance(inner, (SyncTap, AsyncTap)):
        return inner
    return AsyncTap(inner) if asynchronous else SyncTap(inner)


def _at_exit() -> None:
    """End calls still open at exit so their spans reach the exporter before it shuts down."""
    for state in list(_states.values()):
        _finish(state, max(state.record.elapsed, _elapsed_now(state)), "abandoned")


atexit.register(_at_exit)
