"""The drivers: httpx2 transports that run every request through the engine.

This is the public seam the drop-in clients use (``http_client=`` with a custom transport), so
one retry layer sits under the official SDKs, whose own retries are turned off. The sync and
async drivers perform I/O only; every decision comes from :class:`~resilient_llm.engine.call.Call`.

Deadlines are enforced where the time is spent:

* before the response: each phase timeout (connect, write, pool, read) is clipped to the time
  left, so a hung upstream costs at most the deadline;
* while a body or a stream is read: in async code a cancel scope bounds every read; in sync
  code a watchdog thread shuts the socket down when the deadline, the first-token limit or the
  idle limit passes, so a server that drips bytes cannot hold a call past its deadline.

Streams are inspected with the same bytes the SDK parses: a failure before the first output
(error event, cut, stall, malformed event) is retried; after it, the caller gets
:class:`StreamInterrupted` with the partial text, and a stream that ends without its terminal
event never looks complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import math
import operator
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, NoReturn

import httpx2

from .._clock import SYSTEM_CLOCK, SYSTEM_RANDOM, Clock, RandomSource
from .._errors import AllTargetsFailed, CircuitOpen, RetryBudgetExhausted, StreamInterrupted
from .._policy import Policy
from ..context.deadline import on_asyncio
from ..engine.call import MIN_ATTEMPT, Call, GiveUp, Send, Wait, current_call
from ..engine.classify import Failure, FailureClass, classify_exception, classify_status
from ..engine.hedge import MAX_RACERS, hedge_stats
from ..engine.pressure import TargetKey, TargetPressure, estimate_tokens, registry
from ..engine.routing import FALLBACK_PATIENCE, Router, Target
from ..providers import StreamScanner, Wire, wire_for
from ..providers._ratelimits import parse_rate_limits

__all__ = ["AsyncResilientTransport", "ForeignTransportError", "ResilientTransport"]

_IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Failures that cut the concurrency limit (besides 429s).
_DROPS = frozenset({FailureClass.TIMEOUT, FailureClass.OVERLOADED})


# --- shared, I/O-free helpers -----------------------------------------------------------------


def _header(headers: httpx2.Headers, *names: bytes) -> str | None:
    """``headers.get(a) or headers.get(b) ...`` for lower-case names, found by C-level scans and
    without the KeyError a miss costs ``Headers.get`` (same values: repeated headers joined
    with ", "); an empty value is returned only when no later name has a value.

    Reads httpx2's private ``Headers._list`` (stable across its 2.x line, like ``_mounts``);
    should that ever change, the public lookup is used instead.
    """
    raw = getattr(headers, "_list", None)
    keys = None if raw is None else list(map(_LOWER_KEY, raw))
    found: str | None = None
    for name in names:
        if keys is None:
            value = headers.get(name.decode("ascii"))
        elif (count := keys.count(name)) == 1:
            value = raw[keys.index(name)][2].decode(headers.encoding)  # type: ignore[index]
        elif count:
            encoding = headers.encoding
            value = ", ".join(v.decode(encoding) for _, key, v in raw if key == name)  # type: ignore[union-attr]
        else:
            continue
        if value:
            return value
        found = value
    return found


def _add_header(headers: httpx2.Headers, name: str, value: str) -> None:
    """``headers[name] = value`` for a header known to be absent, without the rescan
    ``Headers.__setitem__`` makes to remove duplicates (same private ``_list`` as above)."""
    raw = getattr(headers, "_list", None)
    if raw is None:
        headers[name] = value
        return
    encoding = getattr(headers, "_encoding", None) or "utf-8"  # as __setitem__ encodes
    key = name.encode(encoding)
    raw.append((key, key.lower(), value.encode(encoding)))


_LOWER_KEY = operator.itemgetter(1)  # httpx2 keeps (raw key, lower-case key, value)


def _content_type(response: httpx2.Response) -> str:
    return _header(response.headers, b"content-type") or ""


def _is_event_stream(content_type: str) -> bool:
    return content_type.startswith("text/event-stream")


def _is_json(content_type: str) -> bool:
    return "json" in content_type


def _streaming(request: httpx2.Request) -> bool:
    """Does this request ask for a server-sent-event stream?"""
    if not _replayable(request):
        return False
    body = request.content
    return b'"stream":true' in body or b'"stream": true' in body


def _replayable(request: httpx2.Request) -> bool:
    """Bytes bodies can be sent again; one-shot streams cannot (as in the official SDKs)."""
    return isinstance(request.stream, httpx2.ByteStream)


def _target_of(request: httpx2.Request) -> str | None:
    """The model a raw request asks for (only used outside a drop-in client)."""
    if request.method != "POST" or not _replayable(request):
        return None
    try:
        body = json.loads(request.content)
    except (ValueError, UnicodeDecodeError):
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


def _prepare(request: httpx2.Request, call: Call, send: Send, provider: str) -> None:
    """Per-attempt request edits: clipped timeouts, the attempt number, one idempotency key."""
    request.extensions["timeout"] = send.timeouts
    record = call.record
    if record.server_address is None:
        url = request.url
        record.provider = provider
        record.server_address = url.host
        record.server_port = url.port or (443 if url.scheme == "https" else 80)
        record.path = url.path
    # The SDK numbers attempts in this header; its loop is off, so number ours, but never
    # overwrite a value the caller set themselves.
    if send.attempt > 1 and request.headers.get("x-stainless-retry-count") == str(send.attempt - 2):
        request.headers["x-stainless-retry-count"] = str(send.attempt - 1)
    if request.method != "GET":
        headers = request.headers
        key = _header(headers, b"idempotency-key")
        if key is None:
            key = call.record.idempotency_key or f"rllm-{os.urandom(16).hex()}"
            _add_header(headers, _IDEMPOTENCY_HEADER, key)
        call.record.idempotency_key = key


def _status_error(response: httpx2.Response, failure: Failure) -> httpx2.HTTPStatusError:
    return httpx2.HTTPStatusError(
        f"{failure.describe()}", request=response.request, response=response
    )


def _exhausted(call: Call, decision: GiveUp, last: httpx2.Response | BaseException) -> Any:
    """The call ends on a provider failure: hand the SDK what the official client would see."""
    if decision.reason == "deadline":
        cause = last if isinstance(last, BaseException) else _status_error(last, decision.failure
                                                                           or _unknown_failure())
        raise call.deadline_error(cause)
    call.emit("gave_up", failure=decision.failure, detail=decision.reason)
    if isinstance(last, BaseException):
        raise last
    return last


def _budget_error(call: Call, state: TargetPressure, decision: GiveUp,
                  last: httpx2.Response | BaseException) -> RetryBudgetExhausted:
    cause = last if isinstance(last, BaseException) else _status_error(
        last, decision.failure or _unknown_failure())
    call.emit("gave_up", failure=decision.failure, detail="retry_budget")
    return RetryBudgetExhausted(
        f"retry budget of {state.key.model or 'the target'} is spent "
        f"({state.budget.retries} retries for {state.budget.requests} requests); "
        f"last failure: {decision.failure.describe() if decision.failure else 'unknown'}",
        cause=cause,
        attempts=call.record.attempts,
    )


def _unknown_failure() -> Failure:
    return Failure(kind=FailureClass.SERVER_ERROR, retryable=False)


def _interrupted(call: Call, scanner: StreamScanner, failure: FailureClass, message: str,
                 cause: BaseException | None = None) -> StreamInterrupted:
    error = StreamInterrupted(
        f"stream interrupted after output had started ({failure.value}: {message}); "
        f"{len(scanner.text)} characters of partial text are on the exception",
        partial_text=scanner.text,
        failure=failure.value,
        cause=cause,
        attempts=call.record.attempts,
    )
    call.emit("stream_interrupted", failure=Failure(kind=failure, retryable=False),
              detail=failure.value)
    return error


_STREAM_FAULTS = frozenset({
    FailureClass.STREAM_MALFORMED, FailureClass.STREAM_INCOMPLETE, FailureClass.STREAM_CUT,
    FailureClass.STREAM_STALL, FailureClass.FIRST_TOKEN_TIMEOUT,
})


def _from_error_event(scanner: StreamScanner, error: BaseException | None) -> bool:
    """True when the provider itself sent an error event (as opposed to a broken stream)."""
    failure = scanner.failure
    return error is None and failure is not None and failure.kind not in _STREAM_FAULTS


def _replay(response: httpx2.Response, buffered: list[bytes]) -> httpx2.Response:
    """The peeked bytes as a fresh response, so the SDK raises its own error for them."""
    return httpx2.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx2.ByteStream(b"".join(buffered)),
        request=response.request,
        extensions=response.extensions,
    )


def _stream_failure_exception(failure: Failure, request: httpx2.Request) -> Exception:
    """What the SDK sees when a stream fails before any output and no retry is left."""
    if failure.kind in (FailureClass.FIRST_TOKEN_TIMEOUT, FailureClass.STREAM_STALL):
        return httpx2.ReadTimeout(f"no stream output in time ({failure.kind.value})",
                                  request=request)
    return httpx2.RemoteProtocolError(
        f"stream failed before any output ({failure.kind.value})", request=request
    )


class ForeignTransportError(httpx2.TransportError):
    """A non-httpx2 exception from the transport that the official SDK would retry.

    The engine classifies transport failures by their httpx2 type; an SDK may also retry
    other exceptions raised while sending (openai 3.54: ``ssl.SSLError`` and
    ``anyio.EndOfStream``; anthropic: anything that is not an ``AnthropicError``). Wrapping them
    lets the one retry layer retry them; ``original`` is what the caller finally sees as the
    ``__cause__`` of the SDK's ``APIConnectionError``, exactly as with the official client.
    """

    def __init__(self, original: Exception, request: httpx2.Request) -> None:
        super().__init__(f"{type(original).__name__}: {original}", request=request)
        self.original = original


class _Base:
    """Configuration shared by both drivers."""

    def __init__(
        self,
        *,
        policy: Policy | None,
        provider: str,
        clock: Clock,
        rng: RandomSource,
        retry_exceptions: Callable[[Exception], bool] | None,
    ) -> None:
        self._policy = policy
        self._wire: Wire = wire_for(provider)
        self._clock = clock
        self._rng = rng
        self._retry_exceptions = retry_exceptions
        self._states: dict[tuple[Any, ...], tuple[int, TargetPressure]] = {}

    def reraise(self, exc: Exception, request: httpx2.Request) -> NoReturn:
        """Re-raise ``exc``, raised by the wrapped transport, as a :class:`ForeignTransportError`
        (a connection failure) when it is not httpx2's and ``retry_exceptions`` accepts it (the
        official SDK would retry it); unchanged otherwise."""
        rule = self._retry_exceptions
        if rule is None or isinstance(exc, httpx2.TransportError) or not rule(exc):
            raise exc
        raise ForeignTransportError(exc, request) from exc

    @staticmethod
    def classify(exc: Exception, request: httpx2.Request) -> tuple[Failure, Exception] | None:
        """A transport failure as (failure, the error to report); ``None`` for anything else,
        which propagates unchanged and is never retried."""
        failure = classify_exception(exc)
        if failure is None:
            return None
        _attach_request(exc, request)
        return failure, exc

    @property
    def policy(self) -> Policy:
        """The policy for requests made outside a drop-in client call."""
        if self._policy is None:
            self._policy = Policy.from_env()
        return self._policy

    def _call_for(self, request: httpx2.Request) -> Call:
        call = current_call()
        if call is not None:
            return call
        from ..engine.call import start_call

        policy = self.policy
        call, token = start_call(
            policy, target=_target_of(request), clock=self._clock, rng=self._rng
        )
        from ..engine.call import end_call

        end_call(token)
        return call

    # pressure (shared by both drivers; no I/O)

    def pressure_for(self, request: httpx2.Request, call: Call,
                     model: str | None = None) -> TargetPressure:
        url = request.url
        headers = request.headers
        credential = _header(headers, b"authorization", b"x-api-key")
        model = model or call.target
        redis_url = call.policy.redis_url
        # Hot path: this transport's recent targets, while the registry has not been cleared.
        memo = (url.scheme, url.host, url.port, credential, model, redis_url)
        hit = self._states.get(memo)
        if hit is not None and hit[0] == registry.generation:
            return hit[1]
        endpoint = f"{url.scheme}://{url.host}:{url.port or ''}"
        digest = TargetKey.of(endpoint, credential, None).credential
        state = registry.get(TargetKey(endpoint, digest, model), call.clock.now(),
                             redis_url=redis_url)
        if len(self._states) > 256:
            self._states.clear()
        self._states[memo] = (registry.generation, state)
        return state

    def observe(self, state: TargetPressure, call: Call, response: httpx2.Response) -> None:
        """Learn from rate-limit headers: every error response, and every 8th success while
        the last headers showed more than half of each limit left (nothing to pace then)."""
        if response.status_code < 400 and state.headroom_skips > 0:
            state.headroom_skips -= 1
            return
        requests, tokens = parse_rate_limits(self._wire.name, response.headers.raw)
        if requests is None and tokens is None:
            return
        state.observe(requests, tokens, call.clock.now())
        roomy = all(d is None or d.remaining > 0.5 * d.limit for d in (requests, tokens))
        state.headroom_skips = 7 if roomy else 0

    @staticmethod
    def release(state: TargetPressure, call: Call, started: float,
                failure: Failure | None) -> None:
        now = call.clock.now()
        state.release(
            now,
            priority=call.policy.priority,
            latency=None if failure is not None else now - started,
            # Only a 429 says "send slower"; overload and timeouts say "fewer at once".
            throttled=failure is not None and failure.kind is FailureClass.RATE_LIMITED,
            dropped=failure is not None and failure.kind in _DROPS,
            # 429s are answered by pacing and Retry-After, not by spending the retry budget,
            # whose job is to stop retries multiplying load on a failing target.
            succeeded=failure is None or not failure.retryable
            or failure.kind is FailureClass.RATE_LIMITED,
            hinted=failure is not None and failure.retry_after is not None,
        )

    @staticmethod
    def decide(state: TargetPressure, call: Call, failure: Failure,
               last: httpx2.Response | BaseException, replayable: bool) -> Wait | GiveUp:
        now = call.clock.now()
        budget_ok = not failure.retryable or state.record_retry(now)
        return call.after_failure(
            failure,
            last if isinstance(last, BaseException) else None,
            replayable=replayable,
            pressure=state.pressure(now),
            floor=state.time_until_available(now),
            budget_ok=budget_ok,
        )

    @staticmethod
    def admission_failed(call: Call, state: TargetPressure, wait: float | None) -> BaseException:
        """Admission cannot happen before the deadline: fail now, not at the deadline."""
        why = f"the pacer needs {wait:.3g} s" if wait is not None else "no slot freed in time"
        if call.last_error is None:
            call.last_error = TimeoutError(
                f"admission to {state.key.model or 'the target'} failed: {why}"
            )
        return call.deadline_error()


class _Plan:
    """One request's walk through its call: targets, attempts, waits. No I/O.

    Both drivers run the same loop: ``next_attempt`` (pick a target, plan the attempt),
    admission (I/O), ``prepare`` (the request for that target), the attempt (I/O), then
    ``handle``, which returns the response to hand back, or the seconds to sleep before the
    next attempt (0 = move on at once), or raises the error that ends the call.
    """

    def __init__(self, base: _Base, request: httpx2.Request) -> None:
        self.base = base
        self.request = request
        self.call = call = base._call_for(request)
        # The SDK's timeouts; ``_prepare`` replaces (never edits) the extension per attempt.
        self.requested: dict[str, float | None] | None = request.extensions.get("timeout")
        self.replayable = _replayable(request)
        self._cost: float | None = None
        self.router = Router.for_call(call.policy, call.target)
        self.requested_model = call.target
        self.target = self.router.current
        self._states: dict[str | None, TargetPressure] = {}
        self.state = self._state_for(call.target)
        self._bodies: dict[str, httpx2.Request] = {}
        self._last: httpx2.Response | BaseException | None = None

    # --- before an attempt

    def next_attempt(self) -> Send | httpx2.Response:
        """The next attempt to make, or (when the call cannot make one) its final response."""
        call, router = self.call, self.router
        while True:
            target = router.current
            if target.model:
                call.target = target.model
            state = self._state_for(call.target)
            now = call.clock.now()
            reason = None
            if router.has_fallback:  # latency and saturation only matter with somewhere to go
                reason = router.skip_reason(
                    circuit_open=False,
                    expected_latency=state.expected_latency(),
                    remaining=call.remaining(),
                    saturated=state.pressure(now) >= 0.9,
                    batch=call.policy.priority == "batch",
                    paced=state.time_until_available(now) > FALLBACK_PATIENCE,
                )
            breaker = state.breaker
            seen = breaker.transitions
            if reason is None and not breaker.allow(now, alone=not router.has_fallback,
                                                    rng=call.rng):
                reason = "circuit_open"
            self._breaker_moved(state, seen, now)
            if reason is None:
                break
            if not router.move(reason):
                raise self._unservable(reason, state)
            call.emit("fell_back", target=router.current.model, detail=reason)
        self.target, self.state = target, state
        action = call.next_attempt(self.requested, share=router.attempt_share())
        if isinstance(action, GiveUp):
            self.abandon()
            if action.reason == "deadline" or self._last is None:
                raise call.deadline_error()
            return self._end(action, self._last)
        return action

    def _state_for(self, model: str | None) -> TargetPressure:
        state = self._states.get(model)
        if state is None:
            state = self._states[model] = self.base.pressure_for(self.request, self.call, model)
        return state

    @property
    def cost(self) -> float:
        """The request's token estimate, computed when first asked for (a token bucket or a
        queue reads it; the uncontended admission of an unpaced target does not)."""
        if self._cost is None:
            self._cost = estimate_tokens(self.request.content) if self.replayable else 0.0
        return self._cost

    def hedge_attempt(self) -> tuple[httpx2.Request, Send, TargetPressure] | None:
        """A second, concurrent attempt: the next target of the chain, else the same target.

        ``None`` when the attempt cap, the deadline or the target's admission forbids it now
        (a hedge never waits for admission: it would only add load to a busy target).
        """
        call, router = self.call, self.router
        target = router.chain[router.index + 1] if router.has_fallback else router.current
        model = target.model or call.target
        state = self._state_for(model)
        saved, call.target = call.target, model
        try:
            action = call.next_attempt(self.requested)
        finally:
            call.target = saved
        if isinstance(action, GiveUp):
            return None
        waiter = state.enqueue(call.policy.priority, self.cost)
        if not state.try_admit(waiter, call.clock.now()).granted:
            state.cancel(waiter)
            call.attempts -= 1  # planned, never made
            return None
        source = self._request_for(target)
        request = httpx2.Request(source.method, source.url, headers=httpx2.Headers(source.headers),
                                 content=source.content, extensions=dict(source.extensions))
        _prepare(request, call, action, self.base._wire.name)
        call.attempt_started(action)
        return request, action, state

    def admit_now(self) -> bool:
        """Admission without waiting, the uncontended case; ``False``: queue for it."""
        state, call = self.state, self.call
        pressure = state.admit_now(call.policy.priority,
                                   self.cost if state.paces_tokens else 0.0, call.clock.now())
        if pressure is None:
            return False
        call.record.pressure = pressure
        return True

    def abandon(self) -> None:
        """The planned attempt will not be made (admission failed): free a probe slot."""
        self.state.breaker.cancel_probe()

    def prepare(self, send: Send) -> httpx2.Request:
        outgoing = self._request_for(self.target)
        _prepare(outgoing, self.call, send, self.base._wire.name)
        self.call.attempt_started(send)
        return outgoing

    def _request_for(self, target: Target) -> httpx2.Request:
        request = self.request
        endpoint = self.call.policy.region_endpoints.get(target.region or "")
        if (not target.model or target.model == self.requested_model) and endpoint is None:
            return request
        cached = self._bodies.get(str(target))
        if cached is not None:
            return cached
        content = request.content
        if target.model and target.model != self.requested_model:
            body = json.loads(content)
            body["model"] = target.model
            content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        url = request.url
        if endpoint is not None:
            origin = httpx2.URL(endpoint)
            url = url.copy_with(scheme=origin.scheme, host=origin.host, port=origin.port)
        headers = httpx2.Headers(request.headers)
        headers["content-length"] = str(len(content))
        if endpoint is not None:
            headers["host"] = url.netloc.decode("ascii")
        rewritten = httpx2.Request(
            request.method, url, headers=headers, content=content,
            extensions=dict(request.extensions),
        )
        self._bodies[str(target)] = rewritten
        return rewritten

    # --- after an attempt

    def crashed(self, started: float) -> None:
        self.base.release(self.state, self.call, started, _unknown_failure())
        self.state.breaker.cancel_probe()

    def handle(
        self,
        result: httpx2.Response | tuple[Failure, httpx2.Response | BaseException],
        started: float,
    ) -> httpx2.Response | float:
        call, router, state = self.call, self.router, self.state
        now = call.clock.now()
        seen = state.breaker.transitions
        if isinstance(result, httpx2.Response):
            state.breaker.record(now, None, call.rng)
            self._breaker_moved(state, seen, now)
            return result
        failure, last = result
        self._last = last
        self.base.release(state, call, started, failure)
        state.breaker.record(now, failure, call.rng)
        self._breaker_moved(state, seen, now)
        router.causes[str(router.current)] = _as_exception(last, failure)
        router.tries_here += 1
        if isinstance(last, httpx2.Response):
            call.last_error = _status_error(last, failure)
        step = router.after_failure(failure)
        if step == "move":
            if router.move(failure.kind.value, failure):
                call.emit("fell_back", target=router.current.model, detail=failure.kind.value)
                return 0.0
            step = "stop"
        if step == "retry":
            decision = self.base.decide(state, call, failure, last, self.replayable)
            if isinstance(decision, Wait):
                return decision.seconds
            if decision.reason == "budget" and router.move("retry_budget"):
                call.emit("fell_back", target=router.current.model, detail="retry_budget")
                return 0.0
            if decision.reason == "budget":
                raise _budget_error(call, state, decision, last)
            return self._end(decision, last)
        return self._end(GiveUp("not_retryable", failure), last)

    def _end(self, decision: GiveUp, last: httpx2.Response | BaseException) -> httpx2.Response:
        if decision.reason != "deadline":
            residency = self.router.residency_error()
            if residency is not None:
                self.call.emit("gave_up", failure=decision.failure, detail="residency")
                raise residency
            if self.router.index > 0 or len(self.router.causes) > 1:
                raise self._all_failed(decision)
        return _exhausted(self.call, decision, last)  # type: ignore[no-any-return]

    def _all_failed(self, decision: GiveUp) -> Exception:
        router, call = self.router, self.call
        call.emit("gave_up", failure=decision.failure, detail="all_targets_failed")
        names = ", ".join(router.causes) or str(router.current)
        return AllTargetsFailed(
            f"every target failed ({names}); last failure: "
            f"{decision.failure.describe() if decision.failure else decision.reason}",
            causes=router.causes,
            attempts=call.record.attempts,
        )

    def _breaker_moved(self, state: TargetPressure, seen: int, now: float) -> None:
        """Report a circuit that changed state (open, half-open, closed) as one event."""
        if state.breaker.transitions != seen:
            self.call.emit("breaker_changed", target=state.key.model,
                           detail=state.breaker.state(now))

    def _unservable(self, reason: str, state: TargetPressure) -> Exception:
        """No target of the chain may be tried (all skipped or spent)."""
        call, router = self.call, self.router
        residency = router.residency_error()
        if residency is not None:
            call.emit("gave_up", detail="residency")
            return residency
        if router.index > 0 or len(router.causes) > 1:
            return self._all_failed(GiveUp("attempts", call.last_failure))
        snapshot = state.breaker.snapshot(call.clock.now())
        call.emit("gave_up", failure=call.last_failure, detail=reason)
        error = CircuitOpen(
            f"the circuit of {router.current} is open after repeated failures and no "
            "fallback is configured; it will be probed again shortly",
            target=str(router.current),
            retry_at=snapshot.open_until,
            attempts=call.record.attempts,
        )
        error.__cause__ = router.causes.get(str(router.current))
        return error


def _attach_request(exc: BaseException, request: httpx2.Request) -> None:
    """Transport errors raised below the client carry no request yet; the SDKs need one."""
    if isinstance(exc, httpx2.RequestError):
        try:
            exc.request  # noqa: B018 - raises RuntimeError when unset
        except RuntimeError:
            exc.request = request


def _as_exception(last: httpx2.Response | BaseException, failure: Failure) -> BaseException:
    return last if isinstance(last, BaseException) else _status_error(last, failure)


# --- sync driver --------------------------------------------------------------------------------


class _Watch:
    """One guarded read phase: the instant it must end by, and why."""

    __slots__ = ("done", "expires_at", "fired", "limit", "sock")

    def __init__(self, sock: socket.socket, expires_at: float, limit: str) -> None:
        self.sock = sock
        self.expires_at = expires_at
        self.limit = limit
        self.fired = False
        self.done = False


class _Watchdog:
    """One daemon thread that shuts down sockets whose reads outlive their limit.

    Readers extend a watch by assigning ``expires_at`` (no lock, no wake-up): the thread
    re-checks an entry when it comes due. Shortening a watch goes through :meth:`reschedule`.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watch]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, expires_at: float, limit: str) -> _Watch:
        entry = _Watch(sock, expires_at, limit)
        self.reschedule(entry)
        return entry

    def reschedule(self, entry: _Watch) -> None:
        with self._cond:
            heap = self._heap
            if len(heap) > 4096:  # finished watches wait for their instant: drop them early
                heap[:] = [item for item in heap if not item[2].done]
                heapq.heapify(heap)
            earliest = heap[0][0] if heap else None
            heapq.heappush(heap, (entry.expires_at, next(self._seq), entry))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="resilient-llm-watchdog", daemon=True
                )
                self._thread.start()
            if earliest is None or entry.expires_at < earliest:
                self._cond.notify()  # the thread sleeps until the earliest instant only

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, entry = self._heap[0]
                if entry.done or entry.fired:
                    heapq.heappop(self._heap)
                    continue
                if entry.expires_at > at:  # extended since it was scheduled
                    heapq.heapreplace(self._heap, (entry.expires_at, next(self._seq), entry))
                    continue
                now = time.monotonic()
                if at > now:
                    self._cond.wait(at - now)
                    continue
                heapq.heappop(self._heap)
                entry.fired = True
            with contextlib.suppress(OSError):
                entry.sock.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()


def _socket_of(response: httpx2.Response) -> socket.socket | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    try:
        sock = stream.get_extra_info("socket")
    except Exception:
        return None
    return sock if isinstance(sock, socket.socket) else None


class _SyncGuard:
    """Bounds blocking reads of one response by wall-clock limits, via the watchdog."""

    __slots__ = ("_watch",)

    def __init__(self, response: httpx2.Response, expires_at: float | None, limit: str) -> None:
        sock = _socket_of(response)
        self._watch: _Watch | None = None
        if sock is not None and expires_at is not None:
            self._watch = _WATCHDOG.watch(sock, expires_at, limit)

    def set(self, expires_at: float | None, limit: str, *, shorter: bool = False) -> None:
        watch = self._watch
        if watch is None or expires_at is None:
            return
        watch.limit = limit
        watch.expires_at = expires_at
        if shorter:
            _WATCHDOG.reschedule(watch)

    @property
    def fired(self) -> str | None:
        watch = self._watch
        return watch.limit if watch is not None and watch.fired else None

    def close(self) -> None:
        if self._watch is not None:
            self._watch.done = True


def _real_deadline(call: Call) -> float | None:
    """The call's deadline on the real monotonic clock (the watchdog's clock)."""
    left = call.remaining()
    return None if left is None else time.monotonic() + left


class _SyncStream(httpx2.SyncByteStream):
    """A committed stream: replays the peeked bytes, then guards every read."""

    def __init__(
        self,
        call: Call,
        scanner: StreamScanner,
        buffered: list[bytes],
        chunks: Iterator[bytes],
        inner: httpx2.SyncByteStream,
        guard: _SyncGuard,
    ) -> None:
        self._call = call
        self._scanner = scanner
        self._buffered = buffered
        self._chunks = chunks
        self._inner = inner
        self._guard = guard

    def __iter__(self) -> Iterator[bytes]:
        call, scanner, guard = self._call, self._scanner, self._guard
        idle = call.policy.stream_idle_timeout
        deadline = _real_deadline(call)
        yield from self._buffered
        self._buffered = []

        def limit() -> tuple[float | None, str]:
            at = time.monotonic() + idle
            if deadline is not None and deadline <= at:
                return deadline, "deadline"
            return at, "idle"

        guard.set(*limit(), shorter=True)
        try:
            for chunk in self._chunks:
                scanner.feed(chunk)
                if scanner.failure is not None:
                    raise _interrupted(call, scanner, scanner.failure.kind,
                                       scanner.failure.describe())
                guard.set(*limit())
                yield chunk
            _stream_ended(call, scanner)
        except httpx2.TransportError as exc:
            raise _translate_stream_error(call, scanner, guard.fired, exc) from exc
        finally:
            guard.close()

    def close(self) -> None:
        self._guard.close()
        self._inner.close()
        _closed(self._call, self._scanner)


def _stream_ended(call: Call, scanner: StreamScanner) -> None:
    """The upstream body ended: it must end with the provider's terminal event to count."""
    scanner.finish()
    if scanner.failure is not None:
        raise _interrupted(call, scanner, scanner.failure.kind, scanner.failure.describe())
    if not scanner.terminal:
        raise _interrupted(call, scanner, FailureClass.STREAM_INCOMPLETE,
                           "the stream ended without its terminal event")
    if scanner.usage is not None:
        call.record.usage = scanner.usage
    call.emit("stream_finished")


def _closed(call: Call, scanner: StreamScanner) -> None:
    """The caller closed the stream (read to its end, or stopped early): the call is over."""
    record = call.record
    if record.finished:
        return
    if scanner.usage is not None:
        record.usage = scanner.usage
    call.emit("stream_finished", detail="" if scanner.terminal else "closed_by_caller")


def _translate_stream_error(
    call: Call, scanner: StreamScanner, fired: str | None, exc: BaseException
) -> BaseException:
    """A transport error while reading a committed stream, in resilient-llm's terms."""
    if fired == "deadline" or (call.remaining() is not None and (call.remaining() or 0) <= 0):
        interrupted = _interrupted(call, scanner, FailureClass.STREAM_STALL,
                                   "the call's deadline passed", exc)
        return call.deadline_error(interrupted)
    if fired == "idle" or isinstance(exc, httpx2.TimeoutException):
        return _interrupted(call, scanner, FailureClass.STREAM_STALL,
                            "no event within the idle limit", exc)
    return _interrupted(call, scanner, FailureClass.STREAM_CUT, type(exc).__name__, exc)


class ResilientTransport(httpx2.BaseTransport):
    """A sync httpx2 transport that retries, paces and bounds each request by one deadline.

    Wraps ``inner`` (default: a plain ``httpx2.HTTPTransport``). Inside a drop-in client call the
    call's policy and deadline apply; requests made directly through an ``httpx2.Client`` with
    this transport each form their own call under ``policy`` (default ``Policy.from_env()``).
    ``retry_exceptions`` accepts exceptions other than httpx2's that ``inner`` may raise and
    that should be retried as connection failures (the drop-ins pass their SDK's own rule).
    """

    def __init__(
        self,
        inner: httpx2.BaseTransport | None = None,
        *,
        policy: Policy | None = None,
        provider: str = "openai",
        clock: Clock = SYSTEM_CLOCK,
        rng: RandomSource = SYSTEM_RANDOM,
        retry_exceptions: Callable[[Exception], bool] | None = None,
    ) -> None:
        self._inner = inner if inner is not None else httpx2.HTTPTransport()
        self._base = _Base(policy=policy, provider=provider, clock=clock, rng=rng,
                           retry_exceptions=retry_exceptions)
        # --- telemetry seam (owner: _telemetry.py): subscribe the event listener and tap each
        # attempt's exact request/response under this transport (nothing when telemetry=False).
        from ..telemetry.otel import attach

        self._inner = attach(self._inner, policy, asynchronous=False)
        # --- end of telemetry seam

    @property
    def inner(self) -> httpx2.BaseTransport:
        """The wrapped transport."""
        return self._inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        plan = _Plan(self._base, request)
        call = plan.call
        while True:
            send = plan.next_attempt()
            if isinstance(send, httpx2.Response):
                return send
            try:
                if not plan.admit_now():
                    self._queue(plan)
            except BaseException:
                plan.abandon()
                raise
            outgoing = plan.prepare(send)
            started = call.clock.now()
            try:
                result = self._attempt(outgoing, call, send, plan.state, started)
            except BaseException:
                plan.crashed(started)
                raise
            step = plan.handle(result, started)
            if isinstance(step, httpx2.Response):
                return step
            if step > 0:
                call.clock.sleep(step)
                call.waited(step)

    def _queue(self, plan: _Plan) -> None:
        """Wait (bounded by the deadline) until the target's pacer and limit admit us."""
        state, call = plan.state, plan.call
        clock = call.clock
        began = clock.now()
        waiter = state.enqueue(call.policy.priority, plan.cost)
        queued = False
        try:
            while True:
                admission = state.try_admit(waiter, clock.now())
                if admission.granted:
                    break
                queued = True
                left = call.remaining()
                wait = admission.wait
                if left is not None and (left <= MIN_ATTEMPT or (wait is not None and wait > left)):
                    raise self._base.admission_failed(call, state, wait)
                if wait is not None:
                    clock.sleep(wait)
                else:
                    waiter.event.wait(0.05 if left is None else min(0.05, left))
                    waiter.event.clear()
        except BaseException:
            state.cancel(waiter)
            raise
        call.record.pressure = admission.pressure
        if queued:
            call.waited(clock.now() - began, "admission")

    def _attempt(
        self, request: httpx2.Request, call: Call, send: Send, state: TargetPressure,
        started: float,
    ) -> httpx2.Response | tuple[Failure, httpx2.Response | BaseException]:
        try:
            try:
                response = self._inner.handle_request(request)
            except Exception as exc:  # the rule is for the wrapped transport's errors only
                self._base.reraise(exc, request)
            response.request = request
            self._base.observe(state, call, response)
        except Exception as exc:
            classified = self._base.classify(exc, request)
            if classified is None:
                call.attempt_finished(None, None)
                raise
            call.attempt_finished(classified[0], None)
            return classified
        status = response.status_code
        if status >= 400:
            guard = _SyncGuard(response, _real_deadline(call), "deadline")
            try:
                body = response.read()
            except httpx2.TransportError as exc:
                return self._read_failed(call, guard, exc, status)
            finally:
                guard.close()
            failure = classify_status(status, response.headers, body, self._base._wire.name)
            assert failure is not None
            call.attempt_finished(failure, status)
            return failure, response
        content_type = _content_type(response)
        if _is_event_stream(content_type):
            return self._peek_stream(request, response, call, send, state, started)
        guard = _SyncGuard(response, _real_deadline(call), "deadline")
        try:
            if _is_json(content_type):
                response.read()
        except httpx2.TransportError as exc:
            return self._read_failed(call, guard, exc, status)
        finally:
            guard.close()
        call.attempt_finished(None, status)
        self._base.release(state, call, started, None)
        call.succeeded(send.target or call.target)
        return response

    @staticmethod
    def _read_failed(
        call: Call, guard: _SyncGuard, exc: httpx2.TransportError, status: int
    ) -> tuple[Failure, BaseException]:
        if guard.fired == "deadline":
            call.attempt_finished(Failure(kind=FailureClass.TIMEOUT, retryable=True), status)
            raise call.deadline_error(exc) from exc
        failure = classify_exception(exc) or Failure(FailureClass.CONNECTION_RESET, True)
        call.attempt_finished(failure, status)
        return failure, exc

    def _peek_stream(
        self, request: httpx2.Request, response: httpx2.Response, call: Call, send: Send,
        state: TargetPressure, started: float,
    ) -> httpx2.Response | tuple[Failure, httpx2.Response | BaseException]:
        """Read until the first output, so a failure before it can still be retried."""
        scanner = StreamScanner(self._base._wire)
        now = time.monotonic()
        first_by = now + send.first_token_timeout
        guard = _SyncGuard(response, first_by, "first_token")
        inner = response.stream
        assert isinstance(inner, httpx2.SyncByteStream)
        chunks = iter(inner)
        buffered: list[bytes] = []
        failure: Failure | None = None
        error: BaseException | None = None
        try:
            for chunk in chunks:
                buffered.append(chunk)
                scanner.feed(chunk)
                if scanner.failure is not None or scanner.committed or scanner.terminal:
                    break
            else:
                scanner.finish()
                if scanner.failure is None and not scanner.committed and not scanner.terminal:
                    failure = Failure(FailureClass.STREAM_INCOMPLETE, True,
                                      message="stream ended before any output")
        except httpx2.TransportError as exc:
            error = exc
            fired = guard.fired
            if fired == "first_token":
                failure = Failure(FailureClass.FIRST_TOKEN_TIMEOUT, True,
                                  message="no output within the first-token limit")
            elif isinstance(exc, httpx2.TimeoutException):
                failure = Failure(FailureClass.STREAM_STALL, True, message=type(exc).__name__)
            else:
                failure = Failure(FailureClass.STREAM_CUT, True, message=type(exc).__name__)
        failure = failure or scanner.failure
        if failure is not None:
            guard.close()
            response.close()
            call.attempt_finished(failure, response.status_code)
            left = call.remaining()
            if left is not None and left <= 0:
                raise call.deadline_error(error)
            if _from_error_event(scanner, error):
                return failure, _replay(response, buffered)
            return failure, error or _stream_failure_exception(failure, request)
        call.attempt_finished(None, response.status_code)
        self._base.release(state, call, started, None)  # latency = time to first output
        call.emit("stream_committed")
        call.emit("succeeded", target=send.target or call.target, detail="stream")
        response.stream = _SyncStream(call, scanner, buffered, chunks, inner, guard)
        return response

    def close(self) -> None:
        self._inner.close()


# --- async driver -------------------------------------------------------------------------------


class _AttemptTimeout:
    """``anyio.move_on_after(seconds)`` for one attempt; natively on asyncio (Python ≥ 3.11).

    anyio's cancel scope does task bookkeeping on entry and exit that costs about a tenth of
    the async drop-in's per-call overhead. On asyncio one timer handle does the job, with
    ``asyncio.timeout``'s rule (3.11 cancellation counting): the timer's cancellation is
    swallowed only when no other cancellation was requested meanwhile, so an outer one still
    wins. Under trio, or on Python 3.10 (no ``Task.uncancel``), anyio's scope is used.
    """

    __slots__ = ("_cancelling", "_expired", "_handle", "_native", "_scope", "_seconds", "_task",
                 "cancelled_caught")

    def __init__(self, seconds: float) -> None:
        self.cancelled_caught = False
        self._seconds = seconds
        self._native = _HAS_UNCANCEL and on_asyncio()
        if not self._native:
            import anyio

            self._scope: Any = anyio.move_on_after(seconds)

    async def __aenter__(self) -> _AttemptTimeout:
        if not self._native:
            self._scope.__enter__()
            return self
        self._expired = False
        self._handle: asyncio.TimerHandle | None = None
        if not math.isinf(self._seconds):
            loop = asyncio.get_running_loop()
            task: Any = asyncio.current_task(loop)  # cancelling/uncancel: 3.11+, not in 3.10 stubs
            if task is None:  # pragma: no cover - httpx2 always awaits inside a task
                raise RuntimeError("an attempt timeout needs a running asyncio task")
            self._task = task
            self._cancelling = task.cancelling()
            self._handle = loop.call_at(loop.time() + self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        self._handle = None
        self._expired = True
        self._task.cancel()

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if not self._native:
            suppressed = bool(self._scope.__exit__(kind, exc, tb))
            self.cancelled_caught = bool(self._scope.cancelled_caught)
            return suppressed
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if not self._expired:
            return False
        # Withdraw our cancellation request; swallow the CancelledError only when it was ours.
        if self._task.uncancel() <= self._cancelling and kind is not None \
                and issubclass(kind, asyncio.CancelledError):
            self.cancelled_caught = True
            return True
        return False


_HAS_UNCANCEL = hasattr(asyncio.Task, "uncancel")  # Python ≥ 3.11


class _AsyncStream(httpx2.AsyncByteStream):
    """A committed async stream: replays the peeked bytes, then bounds every read."""

    def __init__(
        self,
        call: Call,
        scanner: StreamScanner,
        buffered: list[bytes],
        chunks: AsyncIterator[bytes],
        inner: httpx2.AsyncByteStream,
    ) -> None:
        self._call = call
        self._scanner = scanner
        self._buffered = buffered
        self._chunks = chunks
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import anyio

        call, scanner = self._call, self._scanner
        idle = call.policy.stream_idle_timeout
        for early in self._buffered:
            yield early
        self._buffered = []
        while True:
            left = call.remaining()
            limit = idle if left is None else min(idle, left)
            by_deadline = left is not None and left <= idle
            chunk: bytes | None = None
            try:
                with anyio.move_on_after(max(limit, 0.0)) as scope:
                    chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                break
            except httpx2.TransportError as exc:
                raise _translate_stream_error(call, scanner, None, exc) from exc
            if scope.cancelled_caught or chunk is None:
                stall = httpx2.ReadTimeout("stream read exceeded its limit")
                raise _translate_stream_error(
                    call, scanner, "deadline" if by_deadline else "idle", stall
                )
            scanner.feed(chunk)
            if scanner.failure is not None:
                raise _interrupted(call, scanner, scanner.failure.kind, scanner.failure.describe())
            yield chunk
        _stream_ended(call, scanner)

    async def aclose(self) -> None:
        await self._inner.aclose()
        _closed(self._call, self._scanner)


class AsyncResilientTransport(httpx2.AsyncBaseTransport):
    """The async twin of :class:`ResilientTransport` (anyio: asyncio and trio)."""

    def __init__(
        self,
        inner: httpx2.AsyncBaseTransport | None = None,
        *,
        policy: Policy | None = None,
        provider: str = "openai",
        clock: Clock = SYSTEM_CLOCK,
        rng: RandomSource = SYSTEM_RANDOM,
        retry_exceptions: Callable[[Exception], bool] | None = None,
    ) -> None:
        self._inner = inner if inner is not None else httpx2.AsyncHTTPTransport()
        self._base = _Base(policy=policy, provider=provider, clock=clock, rng=rng,
                           retry_exceptions=retry_exceptions)
        # --- telemetry seam (owner: _telemetry.py): subscribe the event listener and tap each
        # attempt's exact request/response under this transport (nothing when telemetry=False).
        from ..telemetry.otel import attach

        self._inner = attach(self._inner, policy, asynchronous=True)
        # --- end of telemetry seam

    @property
    def inner(self) -> httpx2.AsyncBaseTransport:
        """The wrapped transport."""
        return self._inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        plan = _Plan(self._base, request)
        call = plan.call
        while True:
            send = plan.next_attempt()
            if isinstance(send, httpx2.Response):
                return send
            try:
                if not plan.admit_now():
                    await self._queue(plan)
            except BaseException:
                plan.abandon()
                raise
            outgoing = plan.prepare(send)
            started = call.clock.now()
            try:
                if call.policy.hedge and _streaming(outgoing):
                    result = await self._hedged(plan, outgoing, send, started)
                else:
                    result = await self._attempt(outgoing, call, send, plan.state, started)
            except BaseException:
                plan.crashed(started)
                raise
            step = plan.handle(result, started)
            if isinstance(step, httpx2.Response):
                return step
            if step > 0:
                await call.clock.asleep(step)
                call.waited(step)

    async def _hedged(
        self, plan: _Plan, outgoing: httpx2.Request, send: Send, started: float
    ) -> httpx2.Response | tuple[Failure, httpx2.Response | BaseException]:
        """Run the attempt; if no output arrives within the hedge delay, race a second one.

        The first attempt to produce output wins; the other is cancelled and its connection
        closed. See ``_hedge`` for the delay and the budget.
        """
        import anyio

        call = plan.call
        stats = hedge_stats(plan.state.key)
        stats.deposit(call.policy.hedge_budget)
        delay = stats.delay(call.policy.hedge_delay)
        if delay is None:
            result = await self._attempt(outgoing, call, send, plan.state, started)
            if isinstance(result, httpx2.Response):
                stats.record(call.clock.now() - started)
            return result
        finished: list[tuple[int, Any]] = []
        changed = [anyio.Event()]
        running = 1

        async def run(index: int, request: httpx2.Request, attempt: Send,
                      state: TargetPressure, began: float) -> None:
            outcome: Any = None
            try:
                outcome = await self._attempt(request, call, attempt, state, began)
            except Exception as exc:
                outcome = exc
            finally:
                if outcome is None:  # cancelled: it lost the race; free its slot
                    state.release(call.clock.now(), priority=call.policy.priority, latency=None,
                                  throttled=False, dropped=False, succeeded=True)
                elif index > 0 and not isinstance(outcome, httpx2.Response):
                    failure = outcome[0] if isinstance(outcome, tuple) else _unknown_failure()
                    self._base.release(state, call, began, failure)
            finished.append((index, outcome))
            changed[0].set()

        winner: Any = None
        async with anyio.create_task_group() as group:
            group.start_soon(run, 0, outgoing, send, plan.state, started)
            may_hedge = True
            while True:
                done = [item for item in finished if isinstance(item[1], httpx2.Response)]
                if done or len(finished) == running:
                    break
                changed[0] = anyio.Event()
                with anyio.move_on_after(delay if may_hedge else math.inf) as waited:
                    await changed[0].wait()
                if not waited.cancelled_caught:
                    continue
                # Still no output after the delay: race one more attempt, budget permitting.
                spent = stats.try_spend()
                hedge = plan.hedge_attempt() if spent else None
                if hedge is None:
                    if spent:
                        stats.refund()
                    may_hedge = False
                    continue
                request2, send2, state2 = hedge
                call.emit("fell_back", target=send2.target, detail="hedge")
                group.start_soon(run, running, request2, send2, state2, call.clock.now())
                running += 1
                may_hedge = running < MAX_RACERS
            winner = done[0] if done else None
            group.cancel_scope.cancel()
        for index, outcome in finished:
            if isinstance(outcome, httpx2.Response) and (winner is None or index != winner[0]):
                await outcome.aclose()
        if winner is not None:
            stats.record(call.clock.now() - started)
            return winner[1]  # type: ignore[no-any-return]
        primary = next(outcome for index, outcome in finished if index == 0)
        if isinstance(primary, BaseException):
            raise primary
        return primary  # type: ignore[no-any-return]

    async def _queue(self, plan: _Plan) -> None:
        """The async twin of ``ResilientTransport._queue``."""
        import anyio

        state, call = plan.state, plan.call
        clock = call.clock
        began = clock.now()
        waiter = state.enqueue(call.policy.priority, plan.cost)
        waiter.loop_thread = threading.get_ident()
        queued = False
        try:
            while True:
                waiter.async_event = anyio.Event()
                admission = state.try_admit(waiter, clock.now())
                if admission.granted:
                    break
                queued = True
                left = call.remaining()
                wait = admission.wait
                if left is not None and (left <= MIN_ATTEMPT or (wait is not None and wait > left)):
                    raise self._base.admission_failed(call, state, wait)
                if wait is not None:
                    await clock.asleep(wait)
                else:
                    # Woken at once by a release on this loop; other threads' releases are
                    # noticed within 50 ms.
                    with anyio.move_on_after(0.05 if left is None else min(0.05, left)):
                        await waiter.async_event.wait()
        except BaseException:
            state.cancel(waiter)
            raise
        finally:
            waiter.async_event = None
        call.record.pressure = admission.pressure
        if queued:
            call.waited(clock.now() - began, "admission")

    async def _attempt(
        self, request: httpx2.Request, call: Call, send: Send, state: TargetPressure,
        started: float,
    ) -> httpx2.Response | tuple[Failure, httpx2.Response | BaseException]:
        left = call.remaining()
        response: httpx2.Response | None = None
        try:
            async with _AttemptTimeout(left if left is not None else math.inf) as scope:
                try:
                    response = await self._inner.handle_async_request(request)
                except Exception as exc:  # the rule is for the wrapped transport's errors only
                    self._base.reraise(exc, request)
                response.request = request
                self._base.observe(state, call, response)
                status = response.status_code
                content_type = _content_type(response)
                if status >= 400:
                    body = await response.aread()
                elif _is_json(content_type):
                    await response.aread()
        except Exception as exc:
            classified = self._base.classify(exc, request)
            if classified is None:
                call.attempt_finished(None, None, send)
                raise
            call.attempt_finished(classified[0], response.status_code if response else None,
                                  send)
            return classified
        if scope.cancelled_caught or response is None:
            if response is not None:
                await response.aclose()
            timeout = Failure(FailureClass.TIMEOUT, True, message="deadline")
            call.attempt_finished(timeout, None, send)
            raise call.deadline_error(httpx2.ReadTimeout("deadline reached during the attempt",
                                                         request=request))
        if status >= 400:
            failure = classify_status(status, response.headers, body, self._base._wire.name)
            assert failure is not None
            call.attempt_finished(failure, status, send)
            return failure, response
        if _is_event_stream(content_type):
            return await self._peek_stream(request, response, call, send, state, started)
        call.attempt_finished(None, status, send)
        self._base.release(state, call, started, None)
        call.succeeded(send.target or call.target)
        return response

    async def _peek_stream(
        self, request: httpx2.Request, response: httpx2.Response, call: Call, send: Send,
        state: TargetPressure, started: float,
    ) -> httpx2.Response | tuple[Failure, httpx2.Response | BaseException]:
        import anyio

        scanner = StreamScanner(self._base._wire)
        inner = response.stream
        assert isinstance(inner, httpx2.AsyncByteStream)
        chunks = inner.__aiter__()
        buffered: list[bytes] = []
        failure: Failure | None = None
        error: BaseException | None = None
        try:
            with anyio.move_on_after(send.first_token_timeout) as scope:
                async for chunk in chunks:
                    buffered.append(chunk)
                    scanner.feed(chunk)
                    if scanner.failure is not None or scanner.committed or scanner.terminal:
                        break
                else:
                    scanner.finish()
                    if scanner.failure is None and not scanner.committed \
                            and not scanner.terminal:
                        failure = Failure(FailureClass.STREAM_INCOMPLETE, True,
                                          message="stream ended before any output")
            if scope.cancelled_caught:
                failure = Failure(FailureClass.FIRST_TOKEN_TIMEOUT, True,
                                  message="no output within the first-token limit")
        except httpx2.TransportError as exc:
            error = exc
            kind = (FailureClass.STREAM_STALL if isinstance(exc, httpx2.TimeoutException)
                    else FailureClass.STREAM_CUT)
            failure = Failure(kind, True, message=type(exc).__name__)
        failure = failure or scanner.failure
        if failure is not None:
            await response.aclose()
            call.attempt_finished(failure, response.status_code, send)
            left = call.remaining()
            if left is not None and left <= 0:
                raise call.deadline_error(error)
            if _from_error_event(scanner, error):
                return failure, _replay(response, buffered)
            return failure, error or _stream_failure_exception(failure, request)
        call.attempt_finished(None, response.status_code, send)
        self._base.release(state, call, started, None)  # latency = time to first output
        call.emit("stream_committed")
        call.emit("succeeded", target=send.target or call.target, detail="stream")
        response.stream = _AsyncStream(call, scanner, buffered, chunks, inner)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
