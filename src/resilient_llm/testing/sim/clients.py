"""The two clients the simulator compares, on the same traffic and seeds.

* :class:`ResilientClient` runs each call through the library's own decision code — the
  request plan the drivers drive (``engine.plan.Plan``: routing, breaker, admission, pacer,
  concurrency limit, retry budget, attempt planning, backoff, give-up → error) — with the
  provider's answers classified and their headers parsed by the same functions the drivers
  use. Only the I/O is simulated: :func:`_drive` performs the plan's actions on virtual time,
  as the sync driver does on real time. Given a :class:`~.redis_model.RedisModel`, a process
  is one worker of a fleet: its targets are built by the registry with the fleet's state
  (``FleetPressure`` and ``FleetBreaker`` over a :class:`~.redis_model.ModelLink`), as the
  drivers build them with ``RESILIENT_LLM_REDIS_URL`` set, and each call runs in its own
  context, so the fleet code sees the call (its deadline, its probe) as it does in a driver.
* :class:`ControlClient` is the official SDK's retry loop: 2 retries, exponential backoff
  (0.5 s doubling, at most 8 s, minus up to 25 % jitter), ``Retry-After`` honoured up to 60 s,
  retries on 408/409/429/5xx and connection errors, and a 600 s timeout per attempt.

A call succeeds when it returns a response within its deadline; the control, which has no
deadline, keeps trying after it (as a real caller's SDK would) but that success counts as late.
"""

from __future__ import annotations

import contextvars
import json
import random
import threading
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2

from ..._policy import Policy, Priority
from ...engine.call import Send, Wait, start_call
from ...engine.classify import classify_exception, classify_status
from ...engine.plan import Admit, Admitted, Failed, Plan, Raise, Refused, Return, Served
from ...engine.plan import Reply as PlanReply
from ...engine.pressure import TargetKey, TargetPressure
from ...engine.registry import PressureRegistry
from ...providers._ratelimits import parse_rate_limits
from .._fake_clock import FakeRandom
from .loop import Loop, SimClock, SimEvent
from .providers import ProviderModel, Reply
from .redis_model import ModelLink, RedisModel

__all__ = ["CallResult", "ControlClient", "ResilientClient", "World"]

_BODY_429 = json.dumps({"error": {"message": "rate limited", "type": "requests",
                                   "code": "rate_limit_exceeded"}}).encode()
_BODY_5XX = json.dumps({"error": {"message": "unavailable", "type": "server_error"}}).encode()
_BODY_529 = json.dumps({"type": "error", "error": {"type": "overloaded_error",
                                                   "message": "overloaded"}}).encode()
#: The token estimate of a simulated request (a short prompt and ``max_tokens`` 16).
_COST = 30.0
#: Every process of a fleet calls the same endpoint with the same key: one shared target.
_FLEET_ENDPOINT = "http://sim.invalid:80"
T = TypeVar("T")


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
        self._calls = 0
        for index, model in enumerate(self.models.values()):
            model.start(loop, seed * 31 + index)

    def number(self) -> int:
        """A number for a new call: calls begun in the same order (open-loop traffic) have
        the same numbers whichever client makes them."""
        self._calls += 1
        return self._calls

    def serve(self, model: str, tokens: float | None = None,
              key: tuple[int, int] | None = None) -> Reply:
        return self.models[model].serve(self.loop.now, tokens, key)


class ResilientClient:
    """One process using resilient-llm: its own pressure states (one per model), so the
    processes of a fleet without Redis learn apart, as separate processes do; with ``redis``
    (the fleet's shared Redis, modelled) they are one fleet's workers."""

    def __init__(self, world: World, *, policy: Policy, seed: int, process: int = 0,
                 redis: RedisModel | None = None) -> None:
        self.world = world
        self._clock = SimClock(world.loop)
        self._rng = FakeRandom(seed * 1009 + process)
        self._policies = {priority: policy.replace(priority=priority)
                          for priority in ("interactive", "batch")}
        self._states: dict[str | None, TargetPressure] = {}
        self._registry = PressureRegistry()
        self._link: ModelLink | None = None
        if redis is None:
            self._endpoint = f"http://p{process}.sim.invalid:80"
        else:
            self._endpoint = _FLEET_ENDPOINT
            self._link = ModelLink(redis, worker=f"p{process}", seed=seed * 1031 + process)

    def _fleet_state(self, key: TargetKey, now: float, redis_url: str) -> TargetPressure:
        """The registry's factory for a fleet-backed target (``fleet_pressure``'s, on the
        modelled Redis)."""
        from ...fleet import FleetPressure

        assert self._link is not None
        return FleetPressure(key, now, self._link)

    def state(self, model: str | None) -> TargetPressure:
        """This process's pressure state for ``model``."""
        found = self._states.get(model)
        if found is None:
            key = TargetKey.of(self._endpoint, "sim-key", model)
            found = self._states[model] = self._registry.get(
                key, self._clock.now(), redis_url=None if self._link is None else "redis://model",
                shared=self._fleet_state)
        return found

    def call(self, model: str, priority: Priority = "interactive",
             tokens: float | None = None) -> Generator[float, None, CallResult]:
        # Each call in a context of its own, current while its steps run (as a driver's call
        # is current in its thread or task): the fleet code reads it.
        context = contextvars.Context()
        call, _ = context.run(start_call, self._policies[priority], target=model,
                              clock=self._clock, rng=self._rng)
        cost = _COST if tokens is None else tokens  # the drivers' estimate from the body
        plan = Plan(call, states=self.state, requested=None, replayable=True,
                    cost=lambda: cost)
        number = self.world.number()
        return (yield from _within(context, _drive(self.world, plan, priority, tokens,
                                                   number)))


def _within(context: contextvars.Context, process: Generator[float, None, T]) -> Generator[
        float, None, T]:
    """Run every step of ``process`` in ``context``."""
    try:
        while True:
            yield context.run(next, process)
    except StopIteration as stop:
        result: T = stop.value
        return result


def _drive(world: World, plan: Plan, priority: Priority, tokens: float | None = None,
           number: int = 0) -> Generator[float, None, CallResult]:
    """Perform the plan's actions on virtual time, as the sync driver does on real time."""
    loop, call = world.loop, plan.call
    start = loop.now
    attempts = throttled = 0
    in_attempts = 0.0

    def result(ok: bool, error: str | None) -> CallResult:
        return CallResult(start, loop.now, ok, attempts, throttled,
                          max(0.0, loop.now - start - in_attempts), priority, error,
                          plan.target.model or call.target, plan.state.pressure(loop.now))

    flow = plan.run()
    tail = 0.0  # a streamed answer's reading after its first output (the call is the caller's)
    try:
        action = next(flow)
        while True:
            if isinstance(action, Return):
                status = getattr(action.value, "status", 200)
                if status < 400 and tail > 0:
                    left = call.remaining()
                    if left is not None and left < tail:  # the deadline cuts the stream
                        yield max(left, 0.0)
                        return result(False, "DeadlineExceeded")
                    yield tail
                return result(status < 400, None if status < 400 else f"http_{status}")
            if isinstance(action, Raise):
                return result(False, type(action.error).__name__)
            reply: PlanReply = None
            try:
                if isinstance(action, Send):
                    started = loop.now
                    answer = world.serve(plan.target.model or call.target or "", tokens,
                                         (number, attempts))
                    attempts += 1
                    call.attempt_started(action)
                    read = action.timeouts.get("read")
                    latency = answer.latency if read is None else min(answer.latency, read)
                    yield latency
                    in_attempts += latency
                    reply = _outcome(plan, action, answer, latency < answer.latency, started)
                    tail = answer.tail if isinstance(reply, Served) else 0.0
                    if isinstance(reply, Failed) and reply.failure.status == 429:
                        throttled += 1
                elif isinstance(action, Wait):
                    yield action.seconds
                else:
                    reply = yield from _queue(loop, plan, action)
            except Exception as exc:
                action = flow.throw(exc)  # the plan frees what the action held
                continue
            action = flow.send(reply)
    except Exception as exc:  # the error the caller would see
        return result(False, type(exc).__name__)


def _queue(loop: Loop, plan: Plan, admit: Admit) -> Generator[float, None, Admitted | Refused]:
    """The drivers' admission queue: ask, sleep what the pacer says, or until woken."""
    place = plan.enqueue(admit)
    # Woken when a slot frees, as the async driver's waiters are.
    event = place.waiter.async_event = SimEvent(loop)
    place.waiter.loop_thread = threading.get_ident()
    try:
        while True:
            turn = place.turn()
            if isinstance(turn, (Admitted, Refused)):
                return turn
            # Until woken by a release (one thread: no wake is missed), or until the plan
            # would stop waiting; a wait below float resolution at this time would never
            # advance the clock. Woken while asking (the event is pending): look again (almost)
            # at once. Every waiter looks again after 1 s at the latest; the drivers' first in
            # line looks every 50 ms (HEAD_POLL), so a slot freed by the clock alone (a stale
            # attempt) is taken here later than there: the model errs against the client.
            wait = 0.0 if event.pending else (place.poll(1.0) if turn is None else turn)
            event.arm()
            yield max(wait, 1e-4)
            event.disarm()
    except BaseException:
        place.leave()
        raise


@dataclass(frozen=True, slots=True)
class _Response:
    """What a simulated attempt hands back: the status and headers the plan's caller reads."""

    status: int
    headers: Mapping[str, str]


class _Fault(Exception):
    """A simulated transport failure (refused, reset, no answer)."""


def _outcome(plan: Plan, send: Send, answer: Reply, timed_out: bool,
             started: float) -> Served | Failed:
    """The sync driver's ``_exchange`` for a simulated answer (no streams, no body reads)."""
    call, state = plan.call, plan.state
    if timed_out or answer.status is None:
        exc: httpx2.TransportError
        if timed_out:
            exc = httpx2.ReadTimeout("simulated: no answer")
        elif answer.fault == "refused":
            exc = httpx2.ConnectError("simulated: connection refused")
        else:
            exc = httpx2.ReadError("simulated: connection reset")
        failure = classify_exception(exc)
        assert failure is not None
        call.attempt_finished(failure, None, send)
        return Failed(failure, exc, exc)
    status = answer.status
    headers = httpx2.Headers(answer.headers)
    if plan.wants_limits(state, status):
        requests, tokens = parse_rate_limits("openai", headers.raw)
        plan.observe(state, requests, tokens)
    response = _Response(status, answer.headers)
    if status >= 400:
        body = _BODY_429 if status == 429 else _BODY_529 if status == 529 else _BODY_5XX
        failure = classify_status(status, headers, body, "openai")
        assert failure is not None
        call.attempt_finished(failure, status, send)
        return Failed(failure, response, _Fault(failure.describe()))
    call.attempt_finished(None, status, send)
    plan.release(state, started, None)
    call.succeeded(send.target or call.target)
    return Served(response)


class ControlClient:
    """The official SDK's retry loop (see the module docstring), on virtual time."""

    MAX_RETRIES = 2
    TIMEOUT = 600.0

    def __init__(self, world: World, *, deadline: float, seed: int, process: int = 0) -> None:
        self.world = world
        self.deadline = deadline
        self._rng = random.Random(seed * 1013 + process)

    def call(self, model: str, priority: Priority = "interactive",
             tokens: float | None = None) -> Generator[float, None, CallResult]:
        loop = self.world.loop
        start = loop.now
        attempts = throttled = 0
        in_attempts = 0.0
        last, number = "none", self.world.number()
        for retry in range(self.MAX_RETRIES + 1):
            reply = self.world.serve(model, tokens, (number, attempts))
            attempts += 1
            latency = min(reply.latency, self.TIMEOUT)
            yield latency
            in_attempts += latency
            if reply.ok:
                yield reply.tail  # a stream, read to its end
                in_attempts += reply.tail
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
