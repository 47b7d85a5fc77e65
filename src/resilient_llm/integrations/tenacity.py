"""tenacity strategies that share the call's deadline, backoff and failure classification.

Install with ``pip install 'resilient-llm[tenacity]'``. Users' own tools (HTTP APIs, databases,
search) are usually retried with tenacity; these strategies make those retries obey the same
rules as the drop-in clients' attempts::

    from tenacity import retry, stop_after_attempt
    from resilient_llm.integrations.tenacity import (
        record_attempts, retry_if_transient, stop_at_deadline, wait_backoff,
    )

    @retry(
        stop=stop_at_deadline() | stop_after_attempt(5),
        wait=wait_backoff(),
        **record_attempts(retry_if_transient(), name="search"),
    )
    def search(query: str) -> dict[str, object]: ...

* :class:`stop_at_deadline` stops before a sleep that would leave no time for another attempt
  inside the innermost deadline (``deadline()``, ``@resilient``, an anyio cancel scope);
* :class:`wait_backoff` is the library's jittered backoff (``engine/backoff.py``), floored by a
  server's ``Retry-After`` / ``retry-after-ms`` and clipped to the time left;
* :class:`retry_if_transient` retries what the library's classification (``engine/classify.py``)
  calls retryable: timeouts, resets, 429, 5xx, 529; never 4xx or programming errors;
* :func:`record_attempts` makes each run of the retried function a logical call of its own
  (an ``execute_tool`` call): its attempts are in ``outcome()`` of what the function returned
  or raised, in its telemetry span (one child span per attempt, attributed like the drop-in
  clients' attempts) and in the events that ``subscribe()`` delivers.

They are ordinary tenacity strategies: they compose with tenacity's own (``|``, ``&``, ``+``)
and work unchanged with ``AsyncRetrying`` and ``@retry`` on coroutine functions.
"""

from __future__ import annotations

import contextvars
import inspect
import math
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from tenacity import RetryCallState
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from .. import _clock
from .._clock import SYSTEM_RANDOM, Clock, RandomSource
from ..context.deadline import remaining
from ..context.tools import current_policy
from ..engine.backoff import backoff_delay
from ..engine.call import MIN_ATTEMPT
from ..engine.classify import Failure, FailureClass, classify_error, classify_response
from ..events.bus import Event, emit, start
from ..events.outcome import CallRecord, Outcome, register

__all__ = [
    "RecordAttempts",
    "fit_wait",
    "last_outcome",
    "record_attempts",
    "retry_if_transient",
    "stop_at_deadline",
    "wait_backoff",
]

#: Slack in stop_at_deadline for the microseconds between tenacity's ``wait`` and ``stop``
#: calls, so a wait that :func:`fit_wait` cut to fit is not refused a moment later.
_SLACK = 0.001

#: The class a retried result (``retry_if_result``) or an unclassified error is backed off as.
_TRANSIENT = Failure(FailureClass.SERVER_ERROR, True)

# The run record_attempts began most recently in this context (thread or task).
_LAST: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar(
    "resilient_llm_last_tool_call", default=None
)

# Runs that stop_at_deadline ended, so record_attempts can say why the run gave up.
_deadline_stops: weakref.WeakSet[RetryCallState] = weakref.WeakSet()
_deadline_stops_lock = threading.Lock()


def _seconds(value: float | timedelta, name: str) -> float:
    """A non-negative, finite number of seconds (or a ``timedelta``), or a clear error."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, not {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite number of seconds ≥ 0, not {value!r}")
    return float(seconds)


def _clock_of(clock: Clock | None) -> Clock:
    # Read at call time, so a test that swaps the system clock swaps it here too.
    return clock if clock is not None else _clock.SYSTEM_CLOCK


def _failure_of(retry_state: RetryCallState) -> Failure | None:
    """How the attempt that just ended failed; ``None`` when it succeeded.

    An exception is classified with :func:`classify_error`; a returned HTTP response with an
    error status (``requests`` does not raise) with :func:`classify_response`.
    """
    attempt = retry_state.outcome
    if attempt is None:
        return None
    if attempt.failed:
        exc = attempt.exception()
        assert exc is not None
        return classify_error(exc) or Failure(
            FailureClass.APPLICATION_ERROR, False, message=type(exc).__name__
        )
    return classify_response(attempt.result())


def fit_wait(delay: float, *, hint: float, left: float | None) -> float:
    """Clip a backoff ``delay`` to the ``left`` seconds of the deadline (``None``: unbounded).

    ``ceiling = left − MIN_ATTEMPT`` is the longest wait after which an attempt still has
    time to run. A retry that fits is taken: the jitter and the spread the client adds after
    a server's hint are cut to ``ceiling``. When the server's own ``hint`` (``Retry-After``)
    is beyond ``ceiling`` no retry can honour it, and the wait is cut to ``left`` instead,
    which :class:`stop_at_deadline` refuses: the run stops at once rather than sleeping.
    """
    if left is None:
        return delay
    ceiling = max(0.0, left - MIN_ATTEMPT)
    if hint > ceiling:
        return min(delay, max(left, 0.0))
    return min(delay, ceiling)


class stop_at_deadline(stop_base):
    """Stop when the next sleep and ``reserve`` leave no time for another attempt.

    Stops when ``upcoming_sleep + reserve + MIN_ATTEMPT > remaining() + 1 ms``, where
    ``remaining()`` is the time left on the innermost deadline (``deadline()``,
    ``@resilient(deadline=...)``, ``@tool``, and in async code any anyio cancel scope) and
    ``MIN_ATTEMPT`` (50 ms) the shortest attempt worth starting, as in the drop-in clients.
    ``reserve`` (seconds or a ``timedelta``) is kept for the caller to use the answer or the
    failure. Never stops without a deadline: combine it with ``stop_after_attempt(n)``. The
    millisecond of slack absorbs the time between tenacity's ``wait`` and ``stop`` calls.

    tenacity asks ``stop`` after ``wait``, so the sleep it checks is the one
    :class:`wait_backoff` (or any wait) chose, a server's ``Retry-After`` included.
    """

    def __init__(self, reserve: float | timedelta = 0.0, *, clock: Clock | None = None) -> None:
        self.reserve = _seconds(reserve, "reserve")
        self.clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        left = remaining(clock=_clock_of(self.clock))
        if left is None:
            return False
        stop = retry_state.upcoming_sleep + self.reserve + MIN_ATTEMPT > left + _SLACK
        if stop:
            with _deadline_stops_lock:
                _deadline_stops.add(retry_state)
        return stop

    def __repr__(self) -> str:
        return f"stop_at_deadline(reserve={self.reserve:g})"


class wait_backoff(wait_base):
    """The library's jittered backoff, floored by the server's hint, clipped to the deadline.

    For retry ``n`` (tenacity's ``attempt_number``) after a failure classified like the
    drop-in clients' (:func:`~resilient_llm.engine.classify.classify_error`)::

        cap   = min(max_backoff, base · 2^(n−1))      base 1 s for 429/503/529, else 0.25 s
        delay = U(0, cap)                             full jitter
        delay = max(delay, hint + U(0, min(cap, 5)))  when Retry-After / retry-after-ms = hint

    then :func:`fit_wait` clips it to the time left. The hint is read from the exception's
    response (openai, anthropic, httpx, httpx2, requests, urllib errors) or from a returned
    response. ``max_backoff`` defaults to the policy in force (``RESILIENT_LLM_MAX_BACKOFF``,
    ``@resilient(max_backoff=...)``); ``rng`` and ``clock`` are for tests.
    """

    def __init__(
        self,
        *,
        max_backoff: float | timedelta | None = None,
        rng: RandomSource | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.max_backoff = None if max_backoff is None else _seconds(max_backoff, "max_backoff")
        self.rng = rng if rng is not None else SYSTEM_RANDOM
        self.clock = clock

    def __call__(self, retry_state: RetryCallState) -> float:
        failure = _failure_of(retry_state)
        if failure is None or failure.kind is FailureClass.APPLICATION_ERROR:
            failure = _TRANSIENT  # the user's own predicate chose to retry this
        cap = self.max_backoff if self.max_backoff is not None else current_policy().max_backoff
        delay = backoff_delay(retry=max(1, retry_state.attempt_number), failure=failure,
                              rng=self.rng, max_backoff=cap)
        left = remaining(clock=_clock_of(self.clock))
        return fit_wait(delay, hint=failure.retry_after or 0.0, left=left)

    def __repr__(self) -> str:
        return f"wait_backoff(max_backoff={self.max_backoff})"


class retry_if_transient(retry_base):
    """Retry what the library classifies as transient, like the drop-in clients do.

    Retried: timeouts, connection errors and resets, 408, 409, 429 (not a quota or spend
    cap), 5xx, 529, and any status a server marks ``x-should-retry: true``. Not retried:
    other 4xx, ``x-should-retry: false``, resilient-llm's own errors (their retries already
    happened), and every other exception (a bug is not fixed by trying again). A returned
    response-like value (an integer ``status_code`` and ``headers``) with an error status is
    classified too, for clients such as ``requests`` that do not raise.
    """

    def __call__(self, retry_state: RetryCallState) -> bool:
        failure = _failure_of(retry_state)
        return failure is not None and failure.retryable

    def __repr__(self) -> str:
        return "retry_if_transient()"


# --- recording --------------------------------------------------------------------------------


class _Run:
    """One run of a retried function, folded into a :class:`CallRecord` through the events."""

    __slots__ = ("clock", "ended", "last_end", "name", "open", "record", "t0")

    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self.t0 = clock.now()
        self.last_end: float | None = None
        self.open: int | None = None  # the attempt started and not finished yet
        self.ended = False
        policy = current_policy()
        if policy.telemetry:  # spans and metrics, as a drop-in client's transport wires them
            from ..telemetry.otel import install

            install()
        self.record = CallRecord(requested=name, deadline_budget=remaining(clock=clock),
                                 policy=policy, operation="execute_tool")
        start(self.record)
        self._emit(Event("call_started", 0.0, 0, name))

    def _emit(self, event: Event) -> None:
        emit(self.record, event)

    def at(self, now: float) -> float:
        return max(0.0, now - self.t0)

    def attempt_started(self, number: int, now: float) -> None:
        if self.last_end is not None:
            self._emit(Event("waited", self.at(self.last_end), number, self.name,
                             seconds=max(0.0, now - self.last_end), detail="backoff"))
        self.open = number
        self._emit(Event("attempt_started", self.at(now), number, self.name))

    def attempt_finished(self, number: int, failure: Failure | None, status: int | None,
                         now: float) -> None:
        self.last_end = now
        self.open = None
        self._emit(Event("attempt_finished", self.at(now), number, self.name, failure, status))

    def end(self, *, failure: Failure | None, reason: str, now: float) -> None:
        if self.ended:
            return
        self.ended = True
        if failure is None:
            self._emit(Event("succeeded", self.at(now), 0, self.name))
        else:
            self._emit(Event("gave_up", self.at(now), 0, self.name, failure, detail=reason))


def _status_of(retry_state: RetryCallState, failure: Failure | None) -> int | None:
    if failure is not None:
        return failure.status
    attempt = retry_state.outcome
    if attempt is None or attempt.failed:
        return None
    status = getattr(attempt.result(), "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _result_of(retry_state: RetryCallState) -> Any:
    attempt = retry_state.outcome
    if attempt is None:
        return None
    return attempt.exception() if attempt.failed else attempt.result()


def _is_async(func: Any) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(func):
        return True
    return callable(func) and inspect.iscoroutinefunction(type(func).__call__)


class _RecordedRetry(retry_base):
    """The ``retry=`` strategy of :class:`RecordAttempts`: records, then lets ``inner`` decide."""

    def __init__(self, owner: RecordAttempts, inner: Callable[[RetryCallState], bool]) -> None:
        self.owner = owner
        self.inner = inner

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.owner._attempt_ended(retry_state, self.inner)

    def __repr__(self) -> str:
        return f"record_attempts({self.inner!r})"


class RecordAttempts(Mapping[str, Any]):
    """tenacity keyword arguments that record every attempt: ``@retry(..., **record_attempts())``.

    The mapping holds ``before``, ``retry`` and ``retry_error_callback``: tenacity calls no
    hook after the last attempt of a run, so the only places that see every attempt end are
    the ``retry`` predicate (after each attempt) and ``retry_error_callback`` (when ``stop``
    ends the run). The recorder wraps the predicate you give it, which still decides, and
    re-raises exactly what tenacity would (``RetryError``, or the last exception with
    ``reraise=True``) unless you pass a ``retry_error_callback`` of your own, which it calls.
    """

    def __init__(
        self,
        retry: Callable[[RetryCallState], bool],
        *,
        name: str | None = None,
        before: Callable[[RetryCallState], None] | None = None,
        retry_error_callback: Callable[[RetryCallState], Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        for label, hook in (("retry", retry), ("before", before),
                            ("retry_error_callback", retry_error_callback)):
            if hook is not None and (not callable(hook) or _is_async(hook)):
                raise TypeError(
                    f"record_attempts({label}=...) needs a plain (not async) callable taking "
                    f"tenacity's RetryCallState, not {hook!r}"
                )
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"record_attempts(name=...) must be a non-empty string, not {name!r}")
        self.name = name
        self.clock = clock
        self._user_before = before
        self._user_callback = retry_error_callback
        self._runs: weakref.WeakKeyDictionary[RetryCallState, _Run] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._kwargs: dict[str, Any] = {
            "before": self._before,
            "retry": _RecordedRetry(self, retry),
            "retry_error_callback": self._gave_up,
        }

    # Mapping: what ``**record_attempts()`` spreads into tenacity.
    def __getitem__(self, key: str) -> Any:
        return self._kwargs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kwargs)

    def __len__(self) -> int:
        return len(self._kwargs)

    def __repr__(self) -> str:
        return f"record_attempts({self._kwargs['retry'].inner!r}, name={self.name!r})"

    def _name_of(self, retry_state: RetryCallState) -> str:
        if self.name is not None:
            return self.name
        fn = retry_state.fn
        return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or "tool")

    def _run(self, retry_state: RetryCallState) -> _Run:
        with self._lock:
            run = self._runs.get(retry_state)
            if run is None:
                run = _Run(self._name_of(retry_state), _clock_of(self.clock))
                self._runs[retry_state] = run
                register(retry_state, run.record)  # outcome(attempt.retry_state)
                _LAST.set(run.record)
            return run

    def _before(self, retry_state: RetryCallState) -> None:
        run = self._run(retry_state)
        run.attempt_started(retry_state.attempt_number, run.clock.now())
        if self._user_before is not None:
            self._user_before(retry_state)

    def _attempt_ended(self, retry_state: RetryCallState,
                       inner: Callable[[RetryCallState], bool]) -> bool:
        run = self._run(retry_state)
        now = run.clock.now()
        number = retry_state.attempt_number
        if run.open != number:  # ``before`` was not wired in: the attempt is seen at its end
            run.attempt_started(number, now)
        failure = _failure_of(retry_state)
        run.attempt_finished(number, failure, _status_of(retry_state, failure), now)
        decision = bool(inner(retry_state))
        if not decision:
            result = _result_of(retry_state)
            if result is not None:
                register(result, run.record)
            run.end(failure=failure, reason="not_retryable", now=now)
        return decision

    def _gave_up(self, retry_state: RetryCallState) -> Any:
        run = self._run(retry_state)
        with _deadline_stops_lock:
            by_deadline = retry_state in _deadline_stops
        failure = _failure_of(retry_state) or _TRANSIENT
        end = run.last_end if run.last_end is not None else run.clock.now()
        run.end(failure=failure, reason="deadline" if by_deadline else "stopped", now=end)
        if self._user_callback is not None:
            value = self._user_callback(retry_state)
            if value is not None:
                register(value, run.record)
            return value
        # What tenacity raises when it stops and no callback is set, reproduced exactly.
        retrying = retry_state.retry_object
        attempt = retry_state.outcome
        assert attempt is not None
        error = retrying.retry_error_cls(attempt)
        register(error, run.record)
        last = attempt.exception() if attempt.failed else None
        if last is not None:
            register(last, run.record)
        if retrying.reraise:
            error.reraise()
        raise error from last


def record_attempts(
    retry: Callable[[RetryCallState], bool] | None = None,
    *,
    name: str | None = None,
    before: Callable[[RetryCallState], None] | None = None,
    retry_error_callback: Callable[[RetryCallState], Any] | None = None,
    clock: Clock | None = None,
) -> RecordAttempts:
    """Record every attempt of each run as a call of its own: ``**record_attempts(...)``.

    ``retry`` is the predicate that decides (default :class:`retry_if_transient`); ``name``
    names the tool (default: the function's qualified name); ``before`` and
    ``retry_error_callback`` are your own tenacity hooks, called after the recording.

    Each run of the decorated function becomes one logical call (``execute_tool``), built
    from the same events as a drop-in client's call: ``outcome()`` of the value it returned
    (when weak-referenceable), of the exception it raised, or of tenacity's ``RetryError``
    lists every attempt (failure class, HTTP status, duration, wait before it); its span
    ``execute_tool <name>`` has one ``attempt <name>`` child per attempt with the drop-in
    clients' attributes, and opens inside whatever span is current (an ``@resilient`` step,
    an agent span); ``subscribe()`` listeners see every event. The call's budget is the time
    left on the enclosing deadline when the run started.
    """
    return RecordAttempts(retry if retry is not None else retry_if_transient(), name=name,
                          before=before, retry_error_callback=retry_error_callback, clock=clock)


def last_outcome() -> Outcome:
    """The outcome of the latest run :func:`record_attempts` recorded in this thread or task.

    For results ``outcome()`` cannot look up: values that are not weak-referenceable (a
    ``dict``, a ``str``), and the ``for attempt in Retrying(...)`` form, where tenacity never
    sees the result (``outcome(attempt.retry_state)`` works there too). Raises
    ``LookupError`` when no run was recorded in this context.
    """
    record = _LAST.get()
    if record is None:
        raise LookupError(
            "no tool call was recorded in this context: pass **record_attempts() to tenacity"
        )
    return record.outcome()
