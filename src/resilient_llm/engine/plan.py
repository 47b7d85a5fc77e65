"""The per-request state machine: route, admit, send, decide, and map a give-up to its error.

One request that reaches a driver becomes one :class:`Plan` over the logical :class:`Call`
it belongs to. The plan owns every decision of the request's walk through its targets; the
drivers (``transport/``) and the simulator only perform what it asks and report back. Nothing
here reads a socket, sleeps or imports httpx2: the request and response objects pass through
as opaque values.

Driving a plan
--------------

:meth:`Plan.run` is a generator, in the manner of httpx's auth flows and tenacity's
``iter()``: each value it yields is an action, and the driver sends back what happened::

    flow = plan.run()
    action = next(flow)
    while True:
        if isinstance(action, Return):
            return action.value              # the response to hand back
        if isinstance(action, Raise):
            raise action.error               # the error that ends the request
        try:
            if isinstance(action, Admit):    # queue for the target's pacer and limit
                reply = queue(action)        # -> Admitted or Refused (see AdmissionQueue)
            elif isinstance(action, Wait):   # back off before the next attempt
                sleep(action.seconds)
                reply = None
            else:                            # Send: one attempt to plan.target
                reply = attempt(action)      # -> Served(response) | Failed(failure, ...)
        except BaseException as exc:
            flow.throw(exc)                  # the plan frees what the action held, re-raises
            raise
        action = flow.send(reply)

While an attempt runs, the driver reports what it learns through :meth:`Plan.wants_limits` /
:meth:`Plan.observe` (rate-limit headers) and :meth:`Plan.release` (the attempt's slot is
free: on success as soon as the response or first stream output is there), and its events
through the call (``attempt_started``, ``attempt_finished``, ``succeeded``). A driver never
assigns a field of the call, the router or a pressure state.

Time and chance come from the call (``Call(clock=..., rng=...)``): a simulator builds its
calls on a virtual clock and a seeded random source, and passes its own pressure states
through ``states`` (one per model of the chain), so a whole run is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import replace

from .._errors import AllTargetsFailed, CircuitOpen, RetryBudgetExhausted
from .actions import (
    Action,
    Admit,
    Admitted,
    Failed,
    Raise,
    Refused,
    Reply,
    Return,
    Served,
)
from .call import MIN_ATTEMPT, Call, GiveUp, Send, Wait
from .classify import Failure, FailureClass, unknown_failure
from .pressure import Admission, RateLimits, TargetPressure
from .queue import AdmissionQueue
from .routing import FALLBACK_PATIENCE, Router, Target

__all__ = [
    "REFUSAL_PATIENCE",
    "Action",
    "AdmissionQueue",
    "Admit",
    "Admitted",
    "Failed",
    "Plan",
    "Raise",
    "Refused",
    "Reply",
    "Return",
    "Served",
]


#: The longest a call with nowhere else to go waits, in all, when this library's own protection
#: refuses it (an open circuit, a spent retry budget) before it fails: the official SDKs' retry
#: span (0.5 s and 1 s of backoff), so that it fails no sooner than they would, without
#: sending what they would.
REFUSAL_PATIENCE = 1.5
#: The shortest hold on a refusal (no spinning on an open circuit whose next chance is now).
_SHORTEST_HOLD = 0.01

def _cut_short(state: TargetPressure, failure: Failure, send: Send) -> bool:
    """A timeout of an attempt that had less time than the target's answers normally take
    (the deadline clipped it): the call ran out of time, the target did nothing wrong."""
    if failure.kind not in _TIMEOUTS:
        return False
    normal = state.normal_latency()
    if normal is None:
        return False
    limit = send.timeouts.get("read")
    if failure.kind is FailureClass.FIRST_TOKEN_TIMEOUT:
        limit = send.first_token_timeout
    return limit is not None and limit < normal


_TIMEOUTS = frozenset({FailureClass.TIMEOUT, FailureClass.FIRST_TOKEN_TIMEOUT})


# --- the plan ---------------------------------------------------------------------------------


class Plan:
    """One request's walk through its call: targets, admission, attempts, waits. No I/O.

    ``states`` returns the pressure state of a model of the chain (``None``: the request names
    no model); ``requested`` are the caller's phase timeouts, clipped per attempt;
    ``replayable`` says whether the body can be sent again; ``cost`` computes the request's
    token estimate, asked for only when a pacer reads it. Raises ``ResidencyViolation`` when
    the first target is outside the allowed regions.
    """

    __slots__ = ("_can_move", "_cost", "_cost_of", "_last", "_refusal_waited", "_refused",
                 "_sent_at", "_sent_with",
                 "_states", "_states_of", "call", "replayable", "requested", "requested_model",
                 "router", "state", "target")

    def __init__(
        self,
        call: Call,
        *,
        states: Callable[[str | None], TargetPressure],
        requested: Mapping[str, float | None] | None,
        replayable: bool,
        cost: Callable[[], float],
    ) -> None:
        self.call = call
        self.requested = requested
        self.replayable = replayable
        self._cost_of = cost
        self._cost: float | None = None
        self._states_of = states
        self.router = Router.for_call(call.policy, call.target)
        self.requested_model = call.target
        #: The target and pressure state of the attempt being planned or made.
        self.target: Target = self.router.current
        call.record.requested_region = self.target.region
        self._states: dict[str | None, TargetPressure] = {}
        self.state = self._state_for(self._key(self.target))
        self._last: Failed | None = None
        #: Seconds this call waited on refusals of its own protection (see REFUSAL_PATIENCE),
        #: and the budget refusal it waits on (asked again before the next attempt).
        self._refusal_waited = 0.0
        self._refused: tuple[GiveUp, Failed] | None = None
        #: When the attempt being made was admitted (its failure's release reads it).
        self._sent_at = 0.0
        #: The target of the latest attempt, and how many attempts to it were in flight
        #: (that one included) when it was sent.
        self._sent_with: tuple[TargetPressure, int] | None = None
        #: A later target could take the call (decided with each target picked).
        self._can_move = False

    @property
    def cost(self) -> float:
        """The request's token estimate, computed when first asked for (a token bucket or a
        queue reads it; the uncontended admission of an unpaced target does not)."""
        if self._cost is None:
            self._cost = self._cost_of() if self.replayable else 0.0
        return self._cost

    def _key(self, target: Target) -> str | None:
        """The name of ``target``'s pressure state: its model, with its region when that is
        not the policy's own (two regions of one model are two targets: one may be down, or
        throttled, while the other serves, and neither may open the other's circuit)."""
        model = target.model or self.call.target
        if target.region is None or target.region == self.call.policy.region or not model:
            return model
        return f"{model}@{target.region}"

    def _state_for(self, model: str | None) -> TargetPressure:
        state = self._states.get(model)
        if state is None:
            state = self._states[model] = self._states_of(model)
        return state

    # --- the flow -----------------------------------------------------------------------------

    def run(self, after: Failed | None = None) -> Generator[Action, Reply, None]:
        """The request's actions, one at a time; see the module docstring for the protocol.

        ``after``: the response this plan returned failed later (a stream that broke after
        its first output, whose slot was freed at that output): decide on that failure as on
        an attempt's, then go on (stream recovery)."""
        call = self.call
        if after is not None:
            # A stream that broke mid-answer: the official SDK raises at once, so a refusal of
            # this library's own protection is not held here (the caller is reading, not
            # looping back with new calls).
            self._refusal_waited = REFUSAL_PATIENCE
            if not (yield from self._follow(self._handle(self.state, after, held=False))):
                return
        while True:
            action = self._next()
            if isinstance(action, Wait):  # held by an open circuit with nowhere else to go
                yield action
                call.waited(action.seconds, action.reason)
                continue
            if not isinstance(action, Send):
                yield action
                return
            state = self.state
            try:
                if not self._admit_now(state):
                    admitted = yield Admit(state, self.cost)
                    assert isinstance(admitted, (Admitted, Refused))
                    if isinstance(admitted, Admitted):
                        call.record.pressure = admitted.pressure
                        if admitted.waited is not None:
                            call.waited(admitted.waited, "admission")
                            # Planned before the queue: its timeouts must still fit what is
                            # left.
                            again = call.reclip(action, self.requested,
                                               share=self._attempt_share())
                            if isinstance(again, Send):
                                action = again
                            else:
                                state.withdraw(call.policy.priority)
                                admitted = Refused("too_slow_for_deadline")
                    if isinstance(admitted, Refused):
                        # The attempt will not be made here: the next target may still serve.
                        state.breaker.cancel_probe()
                        call.withdraw(action)
                        if self._can_move and self.router.move(admitted.reason):
                            call.emit("fell_back", target=self.router.current.model,
                                      detail=admitted.reason)
                            continue
                        yield Raise(call.deadline_error())
                        return
            except BaseException:
                state.breaker.cancel_probe()  # the planned attempt will not be made
                raise
            self._sent_at, self._sent_with = call.clock.now(), (state, state.inflight)
            try:
                result = yield action
            except BaseException:
                self.release(state, self._sent_at, unknown_failure())
                state.breaker.cancel_probe()
                raise
            assert isinstance(result, (Served, Failed))
            if not (yield from self._follow(self._handle(state, result, action))):
                return

    def _follow(self, step: Wait | Return | Raise) -> Generator[Action, Reply, bool]:
        """Yield what the decision after an attempt asks for; ``False`` when the call ends."""
        if not isinstance(step, Wait):
            yield step
            return False
        if step.seconds > 0:
            yield step
            self.call.waited(step.seconds, step.reason)
        return True

    def _hold(self, state: TargetPressure, seconds: float, reason: str, *,
              at_least: float = 0.0) -> Wait | None:
        """Wait ``seconds`` on a refusal of this library's own protection rather than fail at
        once: within ``REFUSAL_PATIENCE`` seconds in all (or ``at_least``, a server's hint),
        and only while an attempt after it would still have the time an answer of the target
        normally takes; else ``None`` (fail now).

        Failing at once protects the caller's latency but not a worker that calls again:
        through a 10 s outage of 503s, 16 closed-loop workers made 6 600 calls that failed in
        ~10 ms each (every one sent its first attempt: 20 times the official client's load),
        where the official client spent ~1.3 s on each failure. The wait sends nothing, and
        a call still goes ahead if the refusal lifts within it.
        """
        seconds = min(max(seconds, _SHORTEST_HOLD), REFUSAL_PATIENCE - self._refusal_waited)
        seconds = max(seconds, at_least)  # a server's hint is waited out in full
        left = self.call.remaining()
        if left is not None:
            answer = max(MIN_ATTEMPT, state.normal_latency() or 0.0)
            if at_least + answer > left:
                return None  # what the server asked for leaves no time to use it
            seconds = min(seconds, left - answer)
        if seconds < _SHORTEST_HOLD:
            return None
        self._refusal_waited += seconds
        return Wait(seconds, reason)

    def _next(self) -> Send | Return | Raise | Wait:
        """Pick a target (skipping the ones that cannot serve now) and plan its attempt."""
        call, router = self.call, self.router
        while True:
            target = router.current
            if target.model:
                call.route_to(target.model)
            state = self._state_for(self._key(target))
            now = call.clock.now()
            reason = None
            # Latency and saturation only matter with somewhere to go: a fallback whose
            # circuit is open, or which asked to be left alone, is not (a busy primary skipped
            # for it failed calls the official client's retries on the primary would have
            # served). Without one, the target's breaker sees a caller that is alone.
            self._can_move = ready = router.has_fallback \
                and self._ready_fallback(now) is not None
            if ready and state.refusing_until > now + FALLBACK_PATIENCE:
                reason = "refusing"  # it asked for quiet (Retry-After); a fallback is ready
            elif ready:
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
            if reason is None and not breaker.allow(now, alone=not ready, rng=call.rng):
                reason = "circuit_open"
            self._breaker_moved(state, seen, now)
            if reason is None:
                break
            if reason == "circuit_open" and not ready:
                # nowhere else to go: wait for the target's next probe, or the end of its break
                wait = self._hold(state, state.breaker.next_chance(now), "circuit")
                if wait is not None:
                    return wait
            if not router.move(reason):
                return Raise(self._unservable(reason, state))
            call.emit("fell_back", target=router.current.model, detail=reason)
        self.target, self.state = target, state
        if self._refused is not None:  # the retry budget refused; it had time to refill
            (decision, result), self._refused = self._refused, None
            if not state.record_retry(call.clock.now()):
                state.breaker.cancel_probe()
                return Raise(self._budget_error(state, decision, result))
        # A target may differ only by region (``model@eu-west-1``): the record says which.
        call.record.attempt_region = target.region
        action = call.next_attempt(self.requested, share=self._attempt_share())
        if isinstance(action, GiveUp):
            state.breaker.cancel_probe()
            last = self._last
            if action.reason == "deadline" or last is None:
                return Raise(call.deadline_error())
            return self._end(action, last)
        return action

    def _attempt_share(self) -> float:
        """Share of the time left one attempt may use: half while a fallback is ready."""
        return self.router.attempt_share() if self._can_move else 1.0

    def _ready_fallback(self, now: float) -> TargetPressure | None:
        """The first later target of the chain that could take the call now, if any."""
        router = self.router
        for target in router.chain[router.index + 1:]:
            state = self._state_for(self._key(target))
            if self._could_take(state, now):
                return state
        return None

    def _could_take(self, state: TargetPressure, now: float) -> bool:
        """Could ``state``'s target take an attempt now: its circuit is not open, and it has
        not asked (``Retry-After``) to be left alone for longer than moving takes?"""
        return not self._circuit_open(state, now) \
            and state.refusing_until <= now + FALLBACK_PATIENCE

    def _circuit_open(self, state: TargetPressure, now: float) -> bool:
        seen = state.breaker.transitions
        circuit = state.breaker.state(now)
        self._breaker_moved(state, seen, now)  # (an open circuit's break may just have ended)
        return circuit == "open"

    def _admit_now(self, state: TargetPressure) -> bool:
        """Admission without waiting, the uncontended case; ``False``: queue for it."""
        call = self.call
        pressure = state.admit_now(call.policy.priority,
                                   self.cost if state.paces_tokens else 0.0, call.clock.now())
        if pressure is None:
            return False
        call.record.pressure = pressure
        return True

    def enqueue(self, admit: Admit) -> AdmissionQueue:
        """Join ``admit``'s queue: the drivers ask the returned place for their turn."""
        call = self.call
        return AdmissionQueue(admit, call.policy.priority, call.clock,
                              patience=self._queue_wait, give_up_in=self._give_up_in,
                              since=call.started_at)

    def _queue_wait(self, admission: Admission, since: float) -> float | Refused | None:
        """While queued (since ``since``) and not admitted: the seconds to sleep before asking
        again (``None``: until woken by a release), or :class:`Refused` when admission cannot
        come in time for this call (the driver stops waiting and replies with it: fail or move
        on now, not at the deadline)."""
        call = self.call
        wait = admission.wait
        give_up_in = self._give_up_in(since)
        expected = wait
        if wait is None and self._can_move and \
                self._ready_fallback(call.clock.now()) is not None:
            expected = admission.turn  # behind others: at least what their pace takes
        paced = expected is not None and give_up_in is not None and expected > give_up_in
        if paced or (give_up_in is not None and give_up_in <= 0):
            why = (f"the pacer needs {expected:.3g} s" if paced and expected is not None
                   else "no slot freed in time")
            if call.last_error is None and not self._can_move:
                call.note_error(TimeoutError(
                    f"admission to {self.state.key.model or 'the target'} failed: {why}"))
            return Refused("paced" if paced else "saturated")
        return wait

    def _give_up_in(self, since: float) -> float | None:
        """Seconds until a call queued for admission since ``since`` stops waiting (``None``:
        never).

        A slot given to a call that cannot finish in its time left is lost to the calls
        queued behind it: under contention, a call stops waiting once what is left is shorter
        than an answer of the target may normally take. With a fallback ready, a call waits on
        this target no longer than the fallback would take to answer, and never into the time
        the fallback needs.
        """
        left = self.call.remaining()
        fallback = self._ready_fallback(self.call.clock.now()) if self._can_move else None
        if fallback is None:
            if left is None:
                return None
            return left - max(MIN_ATTEMPT, self.state.normal_latency() or 0.0)
        answer = fallback.normal_latency()
        waited = self.call.clock.now() - since
        patience = max(FALLBACK_PATIENCE, answer or 0.0) - waited
        if left is None:
            return patience
        return min(patience, left - max(MIN_ATTEMPT, answer or 0.0))

    def _handle(self, state: TargetPressure, result: Served | Failed, send: Send | None = None,
                *, held: bool = True) -> Wait | Return | Raise:
        """After an attempt: hand back its response, or decide how the call goes on
        (``held``: the attempt still holds its admission slot; ``send``: the attempt, when it
        is the one just made)."""
        call, router = self.call, self.router
        now = call.clock.now()
        seen = state.breaker.transitions
        if isinstance(result, Served):
            state.breaker.record(now, None, call.rng)
            self._breaker_moved(state, seen, now)
            router.served()
            return Return(result.response)
        failure = result.failure
        self._last = result
        if send is not None and _cut_short(state, failure, send):
            # The call's own deadline ended the attempt before the target's usual answer time:
            # that says nothing about the target, so neither its limit nor its breaker learns.
            state.withdraw(call.policy.priority)
        else:
            if held:
                self.release(state, self._sent_at, failure)
            state.breaker.record(now, failure, call.rng)
        self._breaker_moved(state, seen, now)
        router.failed_here(result.error)
        if not isinstance(result.last, BaseException):
            call.note_error(result.error)  # an exception is noted by ``after_failure``
        step = router.after_failure(failure, failing=router.has_fallback and (
            state.breaker.snapshot(now).streak >= 2))
        ready = router.has_fallback and self._ready_fallback(now) is not None
        if step == "move" and failure.kind is not FailureClass.CONTEXT_LENGTH and not ready:
            step = "retry"  # the fallbacks are down or refusing for now: stay, as the SDK does
        if step == "move":
            if router.move(failure.kind.value, failure):
                call.emit("fell_back", target=router.current.model, detail=failure.kind.value)
                return Wait(0.0)
            step = "stop"
        if step == "retry":
            back = self._back_to_first(failure, state, result, now)
            if back is not None:
                return back
            decision = self._decide(state, result)
            if isinstance(decision, Wait):
                return decision
            if decision.reason == "budget" and ready and router.move("retry_budget"):
                call.emit("fell_back", target=router.current.model, detail="retry_budget")
                return Wait(0.0)
            if decision.reason == "deadline" and ready \
                    and router.move(failure.kind.value, failure):
                # no time for another try here: the next target may still answer in time
                call.emit("fell_back", target=router.current.model, detail=failure.kind.value)
                return Wait(0.0)
            if decision.reason == "budget":
                hold = self._hold(state, REFUSAL_PATIENCE, "budget",
                                  at_least=failure.retry_after or 0.0)
                if hold is None:
                    return Raise(self._budget_error(state, decision, result))
                self._refused = (decision, result)  # asked again before the next attempt
                return hold
            return self._end(decision, result)
        return self._end(GiveUp("not_retryable", failure), result)

    def _back_to_first(self, failure: Failure, state: TargetPressure, result: Failed,
                       now: float) -> Wait | None:
        """The chain's last target failed as one to leave: the retry goes to the first target
        when that target could take it in the time left (a :class:`Wait` for its own backoff,
        not the Retry-After of the fallback that refused, and no shorter than its own);
        ``None`` to decide on the last target as before."""
        call, router = self.call, self.router
        if not router.would_return(failure, failing=state.breaker.snapshot(now).streak >= 2):
            return None
        if call.attempts >= call.max_attempts or not self.replayable:
            return None  # no retry at all: nothing to spend on either target
        first = self._state_for(self._key(router.chain[0]))
        left = call.remaining()
        quiet = max(0.0, first.refusing_until - now)
        if self._circuit_open(first, now) or first.breaker.next_chance(now) > quiet \
                or (left is not None and quiet + MIN_ATTEMPT > left):
            return None  # its circuit would refuse the call, or its quiet outlasts the call
        # Its own retry: the backoff of the attempts it had, not of the call's (the official
        # client's next retry of it would wait no longer).
        name = router.chain[0].model or call.target
        tried = sum(1 for attempt in call.record.attempts if attempt.target == name)
        decision = self._decide(first, Failed(replace(failure, retry_after=None), result.last,
                                              result.error), at_least=quiet,
                                retry=max(1, tried))  # (skipped so far: its first retry)
        if not isinstance(decision, Wait):
            return None
        router.back_to_first()
        call.emit("fell_back", target=router.current.model, detail="chain_exhausted")
        return decision

    def _decide(self, state: TargetPressure, result: Failed, *, at_least: float = 0.0,
                retry: int | None = None) -> Wait | GiveUp:
        call, failure = self.call, result.failure
        now = call.clock.now()
        budget_ok = not failure.retryable or state.record_retry(now)
        last = result.last
        return call.after_failure(
            failure,
            last if isinstance(last, BaseException) else None,
            replayable=self.replayable,
            # A first retry is not widened by the throttle it answers (one transient 429
            # must not cost more than the official SDK's 0.375-0.5 s); later ones are.
            pressure=state.pressure(now, throttle_recency=call.attempts > 1),
            floor=max(state.time_until_available(now), at_least),
            budget_ok=budget_ok,
            # A throttle while the target's slots are all taken: the retry will queue for a
            # slot, and completions (not a random wait) clock it out, so it waits only for
            # what the provider asked. A random wait would leave slots idle.
            queued=failure.throttle and state.slots_full(),
            retry=retry,
        )

    # --- hedging (the async driver's second attempt) ------------------------------------------

    def hedge(self) -> tuple[Send, Target, TargetPressure] | None:
        """A second, concurrent attempt: the next target of the chain that could take it,
        else the same target.

        ``None`` when the attempt cap, the deadline or the target's admission forbids it now
        (a hedge never waits for admission: it would only add load to a busy target).
        """
        call, router = self.call, self.router
        now = call.clock.now()
        target = next((t for t in router.chain[router.index + 1:]
                       if self._could_take(self._state_for(self._key(t)), now)),
                      router.current)
        model = target.model or call.target
        state = self._state_for(self._key(target))
        action = call.next_attempt(self.requested, target=model)
        if isinstance(action, GiveUp):
            return None
        waiter = state.enqueue(call.policy.priority, self.cost)
        if not state.try_admit(waiter, call.clock.now()).granted:
            state.cancel(waiter)
            call.withdraw(action)  # planned, never made
            return None
        self._sent_with = None  # two attempts in flight: a release cannot tell whose count
        return action, target, state

    # --- what the drivers report while an attempt runs ----------------------------------------

    @staticmethod
    def wants_limits(state: TargetPressure, status: int) -> bool:
        """Should the driver parse this response's rate-limit headers? Every error response,
        and every 8th success while the last headers showed more than half of each limit left
        (nothing to pace then)."""
        if status < 400 and state.headroom_skips > 0:
            state.headroom_skips -= 1
            return False
        return True

    def observe(self, state: TargetPressure, requests: RateLimits | None,
                tokens: RateLimits | None) -> None:
        """Rate-limit headers of a response from ``state``'s target (after ``wants_limits``)."""
        if requests is None and tokens is None:
            return
        patience = self.call.record.deadline_budget
        state.observe(requests, tokens, self.call.clock.now(), patience=patience,
                      cost=self.cost if tokens is not None and patience is not None else 0.0)
        roomy = all(d is None or d.remaining > 0.5 * d.limit for d in (requests, tokens))
        state.headroom_skips = 7 if roomy else 0

    def release(self, state: TargetPressure, started: float, failure: Failure | None) -> None:
        """An admitted attempt ended (``failure=None``: it succeeded; a stream: its first output
        arrived): free its slot and let the target learn from it."""
        call, sent = self.call, self._sent_with
        now = call.clock.now()
        state.release(
            now, priority=call.policy.priority, sent_at=started,
            latency=None if failure is not None else now - started,
            # Only a 429 says "send slower"; overload and timeouts say "fewer at once" (unless
            # nothing has succeeded for a while: a target that answers nobody is down).
            throttled=failure is not None and failure.kind is FailureClass.RATE_LIMITED,
            dropped=failure is not None and failure.asks_fewer_at_once and not (
                failure.kind in _TIMEOUTS and state.silent(started, now)),
            # 429s are answered by pacing and Retry-After, not by spending the retry budget,
            # whose job is to stop retries multiplying load on a failing target.
            succeeded=failure is None or not failure.retryable
            or failure.kind is FailureClass.RATE_LIMITED,
            retry_after=None if failure is None else failure.retry_after,
            patience=call.record.deadline_budget,
            sent_with=sent[1] if sent is not None and sent[0] is state else None,
        )

    # --- how a request ends -------------------------------------------------------------------

    def _end(self, decision: GiveUp, last: Failed) -> Return | Raise:
        router, call = self.router, self.call
        if decision.reason != "deadline":
            residency = router.residency_error()
            if residency is not None:
                call.emit("gave_up", failure=decision.failure, detail="residency")
                return Raise(residency)
            if router.index > 0 or len(router.causes) > 1:
                return Raise(self._all_failed(decision))
        if decision.reason == "deadline":
            return Raise(call.deadline_error(last.error))
        # The call ends on a provider failure: hand the caller what the official client sees.
        call.emit("gave_up", failure=decision.failure, detail=decision.reason)
        if isinstance(last.last, BaseException):
            return Raise(last.last)
        return Return(last.last)

    def _budget_error(self, state: TargetPressure, decision: GiveUp,
                      last: Failed) -> RetryBudgetExhausted:
        call = self.call
        call.emit("gave_up", failure=decision.failure, detail="retry_budget")
        return RetryBudgetExhausted(
            f"retry budget of {state.key.model or 'the target'} is spent "
            f"({state.budget.retries} retries for {state.budget.requests} requests); "
            f"last failure: {decision.failure.describe() if decision.failure else 'unknown'}",
            cause=last.error,
            attempts=call.record.attempts,
        )

    def _all_failed(self, decision: GiveUp) -> Exception:
        router, call = self.router, self.call
        call.emit("gave_up", failure=decision.failure, detail="all_targets_failed")
        names = ", ".join(router.causes) or str(router.current)
        failure = decision.failure or (self._last.failure if self._last else call.last_failure)
        untried = [str(t) for t in router.chain if str(t) not in router.causes]
        return AllTargetsFailed(
            f"every target tried failed ({names}); last failure: "
            f"{failure.describe() if failure else decision.reason}"
            + (f"; not tried: {', '.join(untried)} (no attempt left of "
               f"max_attempts={call.policy.max_attempts})"
               if untried and decision.reason == "attempts" else ""),
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
