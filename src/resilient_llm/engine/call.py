"""The decision core: what to do next in a call, decided without I/O.

A logical call is a :class:`Call`: the policy in force, one absolute deadline, the attempts so
far. The request's plan (:mod:`.plan`) asks it two questions and the drivers perform the
answer:

* :meth:`Call.next_attempt` → :class:`Send` (with every timeout clipped to the time left) or
  :class:`GiveUp`;
* :meth:`Call.after_failure` → :class:`Wait` (a jittered backoff that fits in the deadline) or
  :class:`GiveUp`.

Both are pure functions of the call's state, the injected clock and the injected random
source; every transition is emitted as one event (``_events``), which ``outcome()`` and
telemetry read. Nothing here sleeps, reads a socket or imports a provider SDK.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .._clock import SYSTEM_CLOCK, SYSTEM_RANDOM, Clock, RandomSource
from .._errors import DeadlineExceeded
from .._fastinit import fast_frozen_init
from .._policy import Policy
from .._sdk_errors import as_sdk_error, request_of
from ..context.deadline import cancel_scope_deadline, current_deadline
from ..events.bus import Event, EventKind, emit, needed, start
from ..events.outcome import CallRecord
from .backoff import backoff_delay, clipped
from .classify import Failure

__all__ = [
    "MIN_ATTEMPT",
    "Call",
    "GiveUp",
    "Send",
    "Wait",
    "clip_timeouts",
    "current_call",
    "start_call",
]

#: An attempt with less time than this left is not started: it could not finish.
MIN_ATTEMPT = 0.05
#: How far past the time left a requested connect, write or pool timeout may be and still be
#: sent unchanged (the SDK's 600 s under a 600 s deadline). Nothing else stops a sync connect
#: or pool wait at the deadline, so this is the overshoot they allow.
_CLIP_TOLERANCE = 0.05
#: The same for the read timeout. Reads are stopped at the deadline by other means (the sync
#: watchdog, async cancel scopes), so the read timeout can be left as the SDK computed it
#: across the client's own work since the call began: first-call imports or a busy CPU take
#: tens of ms, and hundreds in a spike on a loaded machine, which 50 ms did not cover.
_READ_TOLERANCE = 1.0
#: A backoff clipped to fit the deadline leaves at least this long for the retry itself.
_RETRY_RESERVE = 0.2


GiveUpReason = Literal["deadline", "attempts", "not_retryable", "not_replayable", "budget"]


@dataclass(frozen=True, slots=True)
class Send:
    """Send attempt ``attempt`` with these timeouts (seconds; each already fits the deadline)."""

    attempt: int
    timeouts: dict[str, float | None]
    first_token_timeout: float
    idle_timeout: float
    target: str | None = None


fast_frozen_init(Send)


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep ``seconds`` before the next attempt."""

    seconds: float
    reason: str = "backoff"


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop: ``deadline`` (no time for another attempt or wait), ``attempts`` (cap reached),
    ``not_retryable`` (the failure class forbids a retry), ``not_replayable`` (the request body
    was a one-shot stream), ``budget`` (the target's retry budget is spent)."""

    reason: GiveUpReason
    failure: Failure | None = None


def clip_timeouts(
    requested: Mapping[str, float | None] | None, remaining: float | None
) -> dict[str, float | None]:
    """Each phase timeout (connect, read, write, pool) clipped to ``remaining`` seconds.

    ``None`` (no limit) becomes ``remaining``: inside a deadline nothing waits unbounded. A
    requested value within 50 ms of ``remaining`` (1 s for the read timeout, whose waits the
    drivers stop at the deadline themselves) is kept as it is, so the SDK's own timeout (600 s
    under a 600 s deadline) reaches the transport unchanged.
    """
    given = requested or _NO_TIMEOUTS  # unrolled: this runs on every attempt
    connect, read = given.get("connect"), given.get("read")
    write, pool = given.get("write"), given.get("pool")
    if remaining is not None:
        limit = remaining + _CLIP_TOLERANCE
        if connect is None or connect > limit:
            connect = remaining
        if read is None or read > remaining + _READ_TOLERANCE:
            read = remaining
        if write is None or write > limit:
            write = remaining
        if pool is None or pool > limit:
            pool = remaining
    return {"connect": connect, "read": read, "write": write, "pool": pool}


_NO_TIMEOUTS: Mapping[str, float | None] = {}

#: The statuses with which an HTTP client follows a ``Location``.
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Call:
    """The state of one logical call, and the decisions over it.

    Created by :func:`start_call` when a drop-in client method is entered (that is when the
    deadline's clock starts), or by the transport for a request made outside a drop-in client.
    """

    __slots__ = (
        "_clipped",
        "_last_attempt_end",
        "attempts",
        "clock",
        "deadline_at",
        "last_error",
        "last_failure",
        "max_attempts",
        "policy",
        "record",
        "rng",
        "scope_cancels",
        "started_at",
        "target",
    )

    def __init__(
        self,
        *,
        policy: Policy,
        target: str | None,
        deadline_at: float | None,
        max_attempts: int,
        clock: Clock = SYSTEM_CLOCK,
        rng: RandomSource = SYSTEM_RANDOM,
        record: CallRecord | None = None,
        started_at: float | None = None,
        scope_cancels: bool = False,
    ) -> None:
        self.policy = policy
        #: The deadline is an enclosing anyio cancel scope's (``move_on_after``,
        #: ``fail_after``): the scope, not this call, ends it there (see ``start_call``).
        self.scope_cancels = scope_cancels
        self.target = target
        self.clock = clock
        self.rng = rng
        self.started_at = clock.now() if started_at is None else started_at
        self.deadline_at = deadline_at
        self.max_attempts = max_attempts
        self.attempts = 0
        self.last_failure: Failure | None = None
        self.last_error: BaseException | None = None
        self._last_attempt_end = self.started_at
        self._clipped = False
        budget = None if deadline_at is None else max(0.0, deadline_at - self.started_at)
        if record is None:
            record = CallRecord(requested=target, deadline_budget=budget, policy=policy)
        elif record.policy is None:
            record.policy = policy
        self.record = record
        start(record)
        if needed(record, "call_started"):
            emit(record, Event("call_started", self.elapsed(), 0, target))

    # --- time ---------------------------------------------------------------------------------

    def remaining(self) -> float | None:
        """Seconds left on the call's deadline, or ``None`` when unbounded."""
        if self.deadline_at is None:
            return None
        return self.deadline_at - self.clock.now()

    def elapsed(self) -> float:
        return self.clock.now() - self.started_at

    def emit(self, kind: EventKind, **fields: object) -> None:
        event = Event(kind, self.elapsed(), **fields)  # type: ignore[arg-type]
        if needed(self.record, kind):
            emit(self.record, event)
        else:
            self.record.apply(event)

    def succeeded(self, target: str | None) -> None:
        """``emit("succeeded", target=target)`` without the keyword dict (hot path)."""
        emit(self.record, Event("succeeded", self.elapsed(), 0, target))

    # --- decisions ----------------------------------------------------------------------------

    def route_to(self, model: str) -> None:
        """The call's next attempts go to ``model`` (a fallback of the one it asked for)."""
        self.target = model

    def note_error(self, error: BaseException) -> None:
        """Keep ``error`` as the cause a later :meth:`deadline_error` reports."""
        self.last_error = error

    def next_attempt(
        self, requested: Mapping[str, float | None] | None, *, share: float = 1.0,
        target: str | None = None,
    ) -> Send | GiveUp:
        """Plan the next attempt, or give up when the deadline or the attempt cap forbids one.

        ``share`` < 1 caps this attempt to that share of the time left (a fallback is ready and
        must keep a budget of its own). ``target`` names another model than the call's for
        this one attempt (a hedge on the next target of the chain).
        """
        if self.attempts >= self.max_attempts:
            return GiveUp("attempts", self.last_failure)
        left = self.remaining()
        if left is not None and left < MIN_ATTEMPT:
            return GiveUp("deadline", self.last_failure)
        self.attempts += 1
        return self._send(self.attempts, requested, share, self.target if target is None
                          else target)

    def reclip(self, send: Send, requested: Mapping[str, float | None] | None, *,
               share: float = 1.0) -> Send | GiveUp:
        """``send`` with its timeouts clipped again to the time left now: the attempt waited
        for admission after it was planned, and must still end by the deadline."""
        left = self.remaining()
        if left is not None and left < MIN_ATTEMPT:
            return GiveUp("deadline", self.last_failure)
        return self._send(send.attempt, requested, share, send.target)

    def _send(self, attempt: int, requested: Mapping[str, float | None] | None, share: float,
              target: str | None) -> Send:
        left = self.remaining()
        if left is not None:
            left *= share
        policy = self.policy
        first = policy.first_token_timeout
        idle = policy.stream_idle_timeout
        if left is not None:
            first = min(first, left)
            idle = min(idle, left)
        return Send(attempt, clip_timeouts(requested, left), first, idle, target)

    def withdraw(self, send: Send) -> None:
        """The attempt ``send`` was planned but will never be made (a hedge not admitted)."""
        if send.attempt == self.attempts:
            self.attempts -= 1

    def after_failure(
        self,
        failure: Failure,
        error: BaseException | None = None,
        *,
        replayable: bool = True,
        pressure: float = 0.0,
        floor: float = 0.0,
        budget_ok: bool = True,
        queued: bool = False,
        retry: int | None = None,
    ) -> Wait | GiveUp:
        """Decide what follows a failed attempt: a bounded backoff, or the end of the call.

        ``pressure`` (0–1) widens the backoff window; ``floor`` is the pacer's time until
        capacity (the wait is never shorter); ``budget_ok`` is the target's retry budget;
        ``queued``: the retry will queue for a slot, so it waits only ``max(hint, floor)``;
        ``retry``: which retry of its target this is (default: of the call), for the backoff
        window. A retry that fits after the server's hint is always taken: the jitter and
        spread are clipped so that 0.2 s remain for the attempt.
        """
        self.last_failure = failure
        if error is not None:
            self.last_error = error
        if not failure.retryable:
            return GiveUp("not_retryable", failure)
        if not replayable:
            return GiveUp("not_replayable", failure)
        if self.attempts >= self.max_attempts:
            return GiveUp("attempts", failure)
        if not budget_ok:
            return GiveUp("budget", failure)
        left = self.remaining()
        retry = self.attempts if retry is None else retry
        if queued:
            wait = max(failure.retry_after or 0.0, floor)
            if left is not None and wait + MIN_ATTEMPT > left:
                return GiveUp("deadline", failure)
            return Wait(wait)
        if left is not None and clipped(retry=retry, failure=failure,
                                        max_backoff=self.policy.max_backoff,
                                        limit=left - _RETRY_RESERVE, pressure=pressure):
            # The deadline clips this wait. Once is the retry that fits; twice in a row is a
            # burst of ever quicker retries as the time runs out, which only adds load.
            if self._clipped:
                return GiveUp("deadline", failure)
            self._clipped = True
        delay = backoff_delay(
            retry=retry,
            failure=failure,
            rng=self.rng,
            max_backoff=self.policy.max_backoff,
            pressure=pressure,
            floor=floor,
            limit=None if left is None else max(0.0, left - _RETRY_RESERVE),
        )
        if left is not None and delay + MIN_ATTEMPT > left:
            return GiveUp("deadline", failure)
        return Wait(delay)

    # --- events the drivers report ------------------------------------------------------------

    def attempt_started(self, send: Send) -> None:
        record, target = self.record, send.target or self.target
        if needed(record, "attempt_started"):
            emit(record, Event("attempt_started", self.elapsed(), send.attempt, target))
        else:
            record.attempt_began(send.attempt, target, self.elapsed())

    def attempt_finished(
        self, failure: Failure | None, status: int | None, send: Send | None = None
    ) -> None:
        """Report how an attempt ended (``send`` names it when attempts overlap: hedging).

        A redirect served (3xx) gives the call one more exchange: the client that follows it
        sends the next request through the transport within this call, and a redirect is not
        a retry (the SDKs never count it as one; httpx2 bounds how many it follows).
        """
        if failure is None and status in _REDIRECTS:
            self.max_attempts += 1
        emit(self.record, Event(
            "attempt_finished", self.elapsed(),
            send.attempt if send is not None else self.attempts,
            (send.target if send is not None else None) or self.target, failure, status,
        ))

    def waited(self, seconds: float, reason: str = "backoff") -> None:
        self.emit("waited", seconds=seconds, detail=reason)

    def deadline_error(self, cause: BaseException | None = None) -> DeadlineExceeded:
        """The error that ends a call whose budget cannot cover what comes next."""
        cause = cause if cause is not None else self.last_error
        budget = self.record.deadline_budget
        what = f" after {self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        last = f"; last failure: {self.last_failure.describe()}" if self.last_failure else ""
        shown = f" of {budget:.3g} s" if budget is not None else ""
        self.emit("gave_up", failure=self.last_failure, detail="deadline")
        error = DeadlineExceeded(
            f"deadline{shown} exceeded{what}{last}",
            cause=cause,
            attempts=self.record.attempts,
            budget=budget,
        )
        # Also the SDK's timeout error (a stream's reads raise it past the drop-in's
        # translation): handlers written for the official client catch it.
        return as_sdk_error(error, provider=self.record.provider, request=request_of(cause))


class _Running:
    """The running call, in a slot the call empties when it ends.

    Every context copied while the call runs keeps the slot: asyncio's timers keep theirs,
    cancelled, until the loop purges them (up to a few hundred), tasks until they are
    collected. Empty, it keeps nothing of the finished call (its record, its response's
    usage) alive, and leaves nothing for the garbage collector to promote.
    """

    __slots__ = ("call",)

    def __init__(self, call: Call) -> None:
        self.call: Call | None = call


_CALL: contextvars.ContextVar[_Running | None] = contextvars.ContextVar(
    "resilient_llm_call", default=None
)


def current_call() -> Call | None:
    """The call a drop-in client method is running, if any (read by the transport)."""
    running = _CALL.get()
    return None if running is None else running.call


def start_call(
    policy: Policy,
    *,
    target: str | None,
    max_attempts: int | None = None,
    clock: Clock = SYSTEM_CLOCK,
    rng: RandomSource = SYSTEM_RANDOM,
) -> tuple[Call, contextvars.Token[_Running | None]]:
    """Begin a logical call: its deadline is the earlier of the policy's budget and any scope.

    When an enclosing anyio cancel scope's deadline is the earliest, that scope ends the call
    (``scope_cancels``): the async driver waits for its cancellation instead of raising
    :class:`DeadlineExceeded`, which would escape a ``move_on_after`` that expects to swallow
    its own cancellation (the official client is cancelled there, silently)."""
    now = clock.now()
    at = now + policy.deadline
    scoped = current_deadline(clock=clock, include_anyio=False)
    if scoped is not None:
        at = min(at, scoped)
    ambient = cancel_scope_deadline(clock)
    # (an async ``deadline()`` opens a cancel scope at its own instant: that one is ours)
    scope_cancels = ambient is not None and ambient < at - _SAME_INSTANT
    if scope_cancels:
        assert ambient is not None
        at = ambient
    call = Call(
        policy=policy,
        target=target,
        deadline_at=at,
        max_attempts=max_attempts or policy.max_attempts,
        clock=clock,
        rng=rng,
        started_at=now,
        scope_cancels=scope_cancels,
    )
    return call, _CALL.set(_Running(call))


#: Two deadlines this close (seconds) are one: the same instant read through two clocks.
_SAME_INSTANT = 0.001


def end_call(token: contextvars.Token[_Running | None]) -> None:
    running = _CALL.get()
    _CALL.reset(token)
    if running is not None:
        running.call = None
