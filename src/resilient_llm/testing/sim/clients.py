"""The two clients the simulator compares, on the same traffic and seeds.

* :class:`ResilientClient` runs each call through the library's own decision code — the
  request plan the drivers use (routing, breaker, admission, pacer, concurrency limit, retry
  budget, attempt planning, backoff, give-up → error) — with the provider's answers built as
  real ``httpx2`` responses and classified by the same functions. Only the I/O is simulated:
  :func:`_drive` performs the plan's actions on virtual time, as the sync driver does on real
  time. It is the one place that knows the plan's shape.
* :class:`ControlClient` is the official SDK's retry loop: 2 retries, exponential backoff
  (0.5 s doubling, at most 8 s, minus up to 25 % jitter), ``Retry-After`` honoured up to 60 s,
  retries on 408/409/429/5xx and connection errors, and a 600 s timeout per attempt.

A call succeeds when it returns a response within its deadline; the control, which has no
deadline, keeps trying after it (as a real caller's SDK would) but that success counts as late.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2

from ..._policy import Policy, Priority
from ...engine.call import MIN_ATTEMPT
from ...engine.classify import Failure, classify_exception, classify_status
from ...engine.pressure import registry
from ...transport.drivers import _Base, _Plan
from .._fake_clock import FakeRandom
from .loop import Loop, SimClock, SimEvent
from .providers import ProviderModel, Reply

__all__ = ["CallResult", "ControlClient", "ResilientClient", "World"]

_BODY_429 = json.dumps({"error": {"message": "rate limited", "type": "requests",
                                   "code": "rate_limit_exceeded"}}).encode()
_BODY_5XX = json.dumps({"error": {"message": "unavailable", "type": "server_error"}}).encode()
_BODY_529 = json.dumps({"type": "error", "error": {"type": "overloaded_error",
                                                   "message": "overloaded"}}).encode()
_BODY_OK = b'{"id":"sim","object":"chat.completion","choices":[]}'


@dataclass(frozen=True, slots=True)
class CallResult:
    """How one logical call went, as its caller saw it."""

    start: float
    end: float
    ok: bool
    attempts: int
    throttled: int
    #: Seconds the call spent in the client (admission, backoff), not waiting on an answer.
    waited: float
    priority: Priority = "interactive"
    error: str | None = None
    #: The model that answered last (a fallback's name when the call fell back).
    model: str | None = None
    #: The target's pressure as the call ended (resilient client only).
    pressure: float = 0.0

    @property
    def latency(self) -> float:
        return self.end - self.start


class World:
    """The loop and the providers, by model name."""

    def __init__(self, loop: Loop, models: Mapping[str, ProviderModel], seed: int) -> None:
        self.loop = loop
        self.models = dict(models)
        for index, model in enumerate(self.models.values()):
            model.start(loop, seed * 31 + index)

    def serve(self, model: str) -> Reply:
        return self.models[model].serve(self.loop.now)


class ResilientClient:
    """One process using resilient-llm: its own transport state, the shared pressure registry.

    Processes of one fleet share one registry in this Python process; each gets its own
    endpoint host so their targets' state stays apart, as in separate processes.
    """

    def __init__(self, world: World, *, policy: Policy, seed: int, process: int = 0) -> None:
        self.world = world
        clock = SimClock(world.loop)
        rng = FakeRandom(seed * 1009 + process)
        self._bases = {
            priority: _Base(policy=policy.replace(priority=priority), provider="openai",
                            clock=clock, rng=rng, retry_exceptions=None)
            for priority in ("interactive", "batch")
        }
        self.url = f"http://p{process}.sim.invalid/v1/chat/completions"

    def call(self, model: str, priority: Priority = "interactive") -> Generator[float, None,
                                                                                CallResult]:
        body = json.dumps({"model": model, "messages": [], "max_tokens": 16}).encode()
        request = httpx2.Request("POST", self.url, content=body,
                                 headers={"authorization": "Bearer sim-key",
                                          "content-type": "application/json"})
        return (yield from _drive(self.world, self._bases[priority], request, priority))


def _drive(world: World, base: _Base, request: httpx2.Request,
           priority: Priority) -> Generator[float, None, CallResult]:
    """The sync driver's loop (``ResilientTransport.handle_request``) on virtual time."""
    loop = world.loop
    start = loop.now
    attempts = throttled = 0
    in_attempts = 0.0

    plan: _Plan | None = None

    def result(ok: bool, error: str | None) -> CallResult:
        model = pressure = None
        if plan is not None:
            model = plan.target.model or plan.call.target
            pressure = plan.state.pressure(loop.now)
        return CallResult(start, loop.now, ok, attempts, throttled,
                          max(0.0, loop.now - start - in_attempts), priority, error, model,
                          pressure or 0.0)

    try:
        plan = _Plan(base, request)
        call = plan.call
        while True:
            send = plan.next_attempt()
            if isinstance(send, httpx2.Response):
                return result(send.status_code < 400, f"http_{send.status_code}")
            if not plan.admit_now():
                state = plan.state
                waiter = state.enqueue(call.policy.priority, plan.cost)
                # Woken when a slot frees, as the async driver's waiters are.
                waiter.async_event = SimEvent(loop)
                waiter.loop_thread = threading.get_ident()
                while True:
                    admission = state.try_admit(waiter, loop.now)
                    if admission.granted:
                        break
                    left = call.remaining()
                    wait = admission.wait
                    if left is not None and (left <= MIN_ATTEMPT
                                             or (wait is not None and wait > left)):
                        state.cancel(waiter)
                        plan.abandon()
                        raise base.admission_failed(call, state, wait)
                    # The sync driver polls every 50 ms while no wait is known; a wait
                    # shorter than float resolution at this time would never advance it.
                    yield max(wait, 1e-4) if wait is not None else min(0.05, left or 0.05)
                call.record.pressure = admission.pressure
            outgoing = plan.prepare(send)
            started = loop.now
            reply = world.serve(plan.target.model or call.target or "")
            attempts += 1
            read = send.timeouts.get("read")
            latency = reply.latency if read is None else min(reply.latency, read)
            yield latency
            in_attempts += latency
            outcome = _outcome(base, plan, outgoing, reply, latency < reply.latency, started)
            if isinstance(outcome, tuple) and outcome[0].kind.value == "rate_limited":
                throttled += 1
            step = plan.handle(outcome, started)
            if isinstance(step, httpx2.Response):
                return result(step.status_code < 400, None)
            if step > 0:
                yield step
                call.waited(step)
    except Exception as exc:  # the error the caller would see
        return result(False, type(exc).__name__)


def _outcome(base: _Base, plan: _Plan, request: httpx2.Request, reply: Reply, timed_out: bool,
             started: float) -> httpx2.Response | tuple[Failure, httpx2.Response | BaseException]:
    """``_attempt`` of the sync driver for a simulated reply (no streams, no body reads)."""
    call, state = plan.call, plan.state
    if timed_out or reply.status is None:
        exc: httpx2.TransportError
        if timed_out:
            exc = httpx2.ReadTimeout("simulated: no answer", request=request)
        elif reply.fault == "refused":
            exc = httpx2.ConnectError("simulated: connection refused", request=request)
        else:
            exc = httpx2.ReadError("simulated: connection reset", request=request)
        failure = classify_exception(exc)
        assert failure is not None
        call.attempt_finished(failure, None)
        return failure, exc
    status = reply.status
    body = _BODY_OK if status < 400 else (
        _BODY_429 if status == 429 else _BODY_529 if status == 529 else _BODY_5XX)
    response = httpx2.Response(status, headers=reply.headers, content=body, request=request)
    base.observe(state, call, response)
    if status >= 400:
        found = classify_status(status, response.headers, body, "openai")
        assert found is not None
        call.attempt_finished(found, status)
        return found, response
    call.attempt_finished(None, status)
    base.release(state, call, started, None)
    call.succeeded(call.target)
    return response


class ControlClient:
    """The official SDK's retry loop (see the module docstring), on virtual time."""

    MAX_RETRIES = 2
    TIMEOUT = 600.0

    def __init__(self, world: World, *, deadline: float, seed: int, process: int = 0) -> None:
        self.world = world
        self.deadline = deadline
        self._rng = random.Random(seed * 1013 + process)

    def call(self, model: str, priority: Priority = "interactive") -> Generator[float, None,
                                                                                CallResult]:
        loop = self.world.loop
        start = loop.now
        attempts = throttled = 0
        in_attempts = 0.0
        last = "none"
        for retry in range(self.MAX_RETRIES + 1):
            reply = self.world.serve(model)
            attempts += 1
            latency = min(reply.latency, self.TIMEOUT)
            yield latency
            in_attempts += latency
            if reply.ok:
                ok = loop.now - start <= self.deadline
                return CallResult(start, loop.now, ok, attempts, throttled,
                                  loop.now - start - in_attempts, priority,
                                  None if ok else "late", model)
            throttled += reply.status == 429
            last = "timeout" if reply.latency > self.TIMEOUT else (
                reply.fault or f"http_{reply.status}")
            hint = _retry_after(reply.headers)
            retryable = reply.status is None or reply.status in (408, 409, 429) \
                or reply.status >= 500
            if not retryable or (hint is not None and hint > 60) or retry == self.MAX_RETRIES:
                break
            if hint is not None and 0 < hint <= 60:
                delay = hint
            else:
                delay = min(0.5 * 2.0**retry, 8.0) * (1 - 0.25 * self._rng.random())
            yield delay
        return CallResult(start, loop.now, False, attempts, throttled,
                          loop.now - start - in_attempts, priority, last, model)


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms is not None:
        return float(ms) / 1000
    seconds = headers.get("retry-after")
    return None if seconds is None else float(seconds)


def fresh_state() -> None:
    """Forget every target's learned state (each simulated run starts cold)."""
    registry.clear()

