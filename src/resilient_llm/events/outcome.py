"""What happened to a call: ``outcome(response)``.

Works on the official SDK's own return values (``ChatCompletion``, ``Message``, streams, raw
responses) without changing their types: the drop-in clients register each result here against
the call's record, which the engine's events keep current. For a stream the outcome is
``finished=False`` until the stream has been read to its end (or failed).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._fastinit import fast_frozen_init
from .event import Event

if TYPE_CHECKING:
    from ..engine.failure import Failure

__all__ = ["AttemptInfo", "CallRecord", "Outcome", "StreamRecovery", "Timings", "outcome",
           "register"]


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One attempt: its target, how it ended, and when (seconds since the call started)."""

    number: int
    target: str | None
    failure: str | None
    status: int | None
    started_at: float
    duration: float
    waited_before: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the attempt produced the answer."""
        return self.failure is None


fast_frozen_init(AttemptInfo)


@dataclass(frozen=True, slots=True)
class StreamRecovery:
    """A stream that broke after its first output and went on (``Outcome.recoveries``).

    ``offset`` is the number of text characters the caller had received when it broke;
    ``failure`` the class of the break; ``target`` the model that continued; ``mode``
    ``prefill`` (the target continued the delivered text) or ``restart`` (it regenerated the
    answer, verified against what was delivered); ``regenerated_tokens`` the content events the
    continuation produced again and that were withheld (0 for a prefill, unless trailing white
    space had to be verified); ``attempt`` the attempt that continued.
    """

    offset: int
    failure: str
    target: str | None
    mode: str
    regenerated_tokens: int
    attempt: int


@dataclass(frozen=True, slots=True)
class Timings:
    """Where a call's time went, in seconds (``Outcome.timings``).

    ``elapsed``: the whole call, to the end of its stream for a stream read to the end;
    ``time_to_first_token``: to the first output of a stream (``None`` otherwise);
    ``queue_wait``: waiting for admission (the pacer, the concurrency limit); ``backoff``:
    the other waits between attempts; ``attempts``: each attempt's duration, in order.
    """

    elapsed: float
    time_to_first_token: float | None
    queue_wait: float
    backoff: float
    attempts: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The resilience facts of one logical call.

    ``served_by`` is the model that produced the answer and ``served_region`` the region of
    the target that did (``None`` when the chain names no regions); ``degraded`` is true when
    that is not the model asked for, or a fallback to another region of the same model
    (``model@eu-west-1``) served it. ``elapsed`` and ``time_to_first_token`` are seconds.
    """

    requested: str | None
    served_by: str | None
    attempts: tuple[AttemptInfo, ...]
    degraded: bool
    reason: str | None
    finished: bool
    error: str | None
    elapsed: float
    time_to_first_token: float | None
    queue_wait: float
    deadline_budget: float | None
    idempotency_key: str | None
    usage: Any
    findings: tuple[Any, ...] = ()
    pressure: float | None = None
    cost: Any = None  # a resilient_llm.telemetry.pricing.Cost when a price table is configured
    #: Each time the stream broke after its first output and was resumed.
    recoveries: tuple[StreamRecovery, ...] = ()
    served_region: str | None = None

    @property
    def retries(self) -> int:
        """Attempts beyond the first."""
        return max(0, len(self.attempts) - 1)

    @property
    def timings(self) -> Timings:
        """The call's time, split: to its end and first output, queued, backing off, and
        each attempt's own."""
        waited = sum(attempt.waited_before for attempt in self.attempts)
        return Timings(
            elapsed=self.elapsed,
            time_to_first_token=self.time_to_first_token,
            queue_wait=self.queue_wait,
            backoff=max(0.0, waited - self.queue_wait),
            attempts=tuple(attempt.duration for attempt in self.attempts),
        )


@dataclass(slots=True)
class CallRecord:
    """The mutable per-call state the engine's events update; snapshot it with :meth:`outcome`."""

    requested: str | None
    deadline_budget: float | None
    idempotency_key: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    provider: str | None = None
    server_address: str | None = None
    server_port: int | None = None
    path: str | None = None
    #: What the call does: ``None`` for a drop-in client's request (read from ``path``),
    #: ``"execute_tool"`` for users' own code recorded by ``resilient_llm.integrations``.
    operation: str | None = None
    pressure: float | None = None
    attempts: list[AttemptInfo] = field(default_factory=list)
    served_by: str | None = None
    #: The region of the call's first target, of the attempt under way, and of the target
    #: that served the call (set by the plan; a same-model fallback to another region
    #: differs only here).
    requested_region: str | None = None
    attempt_region: str | None = None
    served_region: str | None = None
    reason: str | None = None
    finished: bool = False
    error: str | None = None
    elapsed: float = 0.0
    time_to_first_token: float | None = None
    queue_wait: float = 0.0
    usage: Any = None
    cost: Any = None
    breaker_state: str | None = None
    findings: list[Any] = field(default_factory=list)
    recoveries: list[StreamRecovery] = field(default_factory=list)
    #: The call's policy (read by listeners such as telemetry; set by the engine).
    policy: Any = None
    #: Event kinds the built-in listener does not need for this call (see ``_events.start``).
    quiet: frozenset[str] = frozenset()
    _pending: dict[int, tuple[str | None, float, float]] = field(default_factory=dict)
    _waited: float = 0.0

    def apply(self, event: Event) -> None:
        """Fold one event into the record (the kinds every call has come first)."""
        kind = event.kind
        if kind == "call_started":
            return
        if kind == "attempt_started":
            self.attempt_began(event.attempt, event.target, event.at)
        elif kind == "attempt_finished":
            target, started, waited = self._pending.pop(
                event.attempt, (event.target, event.at, 0.0)
            )
            failure = event.failure
            self.attempts.append(AttemptInfo(
                number=event.attempt,
                target=event.target or target,
                failure=failure.kind.value if failure else None,
                status=event.status,
                started_at=started,
                duration=max(0.0, event.at - started),
                waited_before=waited,
                detail=failure.describe() if failure else "",
            ))
            if failure is None:
                self.served_by = event.target or target
                self.served_region = self.attempt_region
        elif kind == "succeeded":
            self.elapsed = event.at
            self.served_by = event.target or self.served_by
            self.served_region = self.attempt_region
            self.finished = event.detail != "stream"
        elif kind == "waited":
            self._waited += event.seconds
            if event.detail == "admission":
                self.queue_wait += event.seconds
        elif kind == "breaker_changed":
            self.breaker_state = event.detail
        elif kind == "fell_back":
            if self.reason is None:
                self.reason = event.detail
        elif kind == "stream_committed":
            if self.time_to_first_token is None:  # a recovered stream commits again
                self.time_to_first_token = event.at
        elif kind == "stream_finished":
            self.elapsed = event.at
            self.finished = True
        elif kind == "stream_broke":
            self.attempt_broke(event.failure)
        elif kind in ("gave_up", "stream_interrupted"):
            self.elapsed = event.at
            self.finished = True
            self.error = event.detail or (event.failure.describe() if event.failure else None)
            if event.detail:
                self.reason = event.detail

    def attempt_began(self, attempt: int, target: str | None, at: float) -> None:
        """Fold an ``attempt_started`` (also called directly when nobody needs the event)."""
        self._pending[attempt] = (target, at, self._waited)
        self._waited = 0.0

    def attempt_broke(self, failure: Failure | None) -> None:
        """The stream of the latest attempt broke after its first output: it did not produce
        the answer after all (a recovery's continuation, if any, is an attempt of its own)."""
        last = self.attempts[-1] if self.attempts else None
        if failure is None or last is None or last.failure is not None:
            return  # reported already, or nothing streamed
        self.attempts[-1] = dataclasses.replace(last, failure=failure.kind.value,
                                                detail=failure.describe())

    def degraded_by(self, served: str | None) -> bool:
        """Is an answer by ``served`` degraded: another model than the one asked for, or the
        same model in another region than the call's first target's?"""
        if not served:
            return False
        return bool(self.requested and served != self.requested) \
            or self.served_region != self.requested_region

    def outcome(self) -> Outcome:
        """An immutable snapshot."""
        served = self.served_by
        degraded = self.degraded_by(served)
        return Outcome(
            requested=self.requested,
            served_by=served,
            attempts=tuple(self.attempts),
            degraded=degraded,
            reason=self.reason,
            finished=self.finished,
            error=self.error,
            elapsed=self.elapsed,
            time_to_first_token=self.time_to_first_token,
            queue_wait=self.queue_wait,
            deadline_budget=self.deadline_budget,
            idempotency_key=self.idempotency_key,
            usage=self.usage,
            findings=tuple(self.findings),
            pressure=self.pressure,
            cost=self.cost,
            recoveries=tuple(self.recoveries),
            served_region=self.served_region,
        )


class _Entry(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a call's result that carries the call's record and its own key
    (one object per call: no closure, cell or tuple around it)."""

    __slots__ = ("key", "record")

    key: int
    record: CallRecord


_registry: dict[int, _Entry] = {}
_registry_lock = threading.Lock()


def register(result: Any, record: CallRecord) -> None:
    """Remember which call produced ``result`` (kept only as long as ``result`` lives)."""
    try:
        entry = _Entry(result, _forget)
    except TypeError:  # not weak-referenceable (e.g. a plain str): nothing to attach to
        return
    entry.key = key = id(result)
    entry.record = record
    with _registry_lock:
        _registry[key] = entry


def _forget(entry: weakref.ref[Any]) -> None:
    assert isinstance(entry, _Entry)
    with _registry_lock:
        if _registry.get(entry.key) is entry:
            del _registry[entry.key]


def lookup(result: Any) -> CallRecord | None:
    """The record registered for ``result``, if any (stream helpers: their raw stream's)."""
    entry = _registry.get(id(result))
    if entry is None or entry() is not result:
        raw = getattr(result, "_raw_stream", None)  # MessageStream, ChatCompletionStream
        return lookup(raw) if raw is not None and raw is not result else None
    return entry.record


def outcome(result: Any) -> Outcome:
    """What happened to the call that produced ``result``: attempts, timings, who served it.

    ``result`` is what a drop-in client returned (a parsed response, a stream or a stream
    helper, or a raw response). Objects the SDK builds from those later (``raw.parse()``, a
    helper's ``get_final_message()``) are not linked: pass the raw response or the stream.
    Raises ``LookupError`` for objects no resilient-llm call produced, e.g. when
    ``RESILIENT_LLM_ENABLED=false``.
    """
    record = lookup(result)
    if record is None:
        raise LookupError(
            f"no resilient-llm call produced this {type(result).__name__}: outcome() works on "
            "what a resilient_llm drop-in client returned while RESILIENT_LLM_ENABLED is true"
        )
    return record.outcome()
