"""The sync driver: an httpx2 transport that performs a request's plan with blocking I/O.

I/O only: every decision comes from the request's :class:`~resilient_llm.engine.plan.Plan`
(route, admit, retry, give up) and from :mod:`.streams` (what a stream's bytes mean). Reads of
a body or a stream are bounded by the :mod:`.watchdog`, so a server that drips bytes cannot
hold a call past its deadline, first-token or idle limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator

import httpx2

from .._errors import ResponseTooLarge, StreamInterrupted
from ..engine.call import Send, Wait
from ..engine.classify import Failure, classify_status, deadline_failure
from ..engine.plan import Action, Admit, Admitted, Failed, Plan, Refused, Reply, Served
from ..engine.pressure import TargetPressure
from .bodies import SyncBoundedBody
from .decoding import EventView, read_capped
from .recovery import SyncResume, recovery_for
from .shared import (
    Outgoing,
    Result,
    WrappingTransport,
    as_failed,
    body_read_failed,
    content_type,
    ended,
    first_token_timeouts,
    is_event_stream,
    is_json,
    streaming,
)
from .streams import StreamConsumer
from .watchdog import KnownSockets, SendGuard, SyncGuard, closed_by_watchdog, real_deadline

__all__ = ["ResilientTransport"]


class ResilientTransport(WrappingTransport[httpx2.BaseTransport], httpx2.BaseTransport):
    """A sync httpx2 transport that retries, paces and bounds each request by one deadline.

    Wraps ``inner`` (default: a plain ``httpx2.HTTPTransport``). Inside a drop-in client call the
    call's policy and deadline apply; requests made directly through an ``httpx2.Client`` with
    this transport each form their own call under ``policy`` (default ``Policy.from_env()``).
    ``retry_exceptions`` accepts exceptions other than httpx2's that ``inner`` may raise and
    that should be retried as connection failures (the drop-ins pass their SDK's own rule).
    ``calls_only``: only requests of a drop-in client's calls are made resilient, any other
    goes out as it is, once (the drop-ins set it on the ``http_client`` they wrap, which the
    application may use for its own requests too).
    """

    _default_inner = httpx2.HTTPTransport

    def _ready(self) -> None:
        self._sockets = KnownSockets()  # the wrapped pool's connections, for the guards

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._passes_through():
            return self._inner.handle_request(request)
        plan, outgoing = self._start(request)
        response = self._perform(plan, plan.run(), outgoing, _as_is)
        stream = response.stream
        if isinstance(stream, _SyncStream):
            recovery = recovery_for(plan, outgoing, response, stream.consumer)
            if recovery is not None:
                stream.resume = SyncResume(recovery, self._perform)
        return response

    def _perform(self, plan: Plan, flow: Generator[Action, Reply, None], outgoing: Outgoing,
                 vet: Callable[[Reply], Reply]) -> httpx2.Response:
        """Carry out ``flow``'s actions (``vet`` sees each attempt's result first)."""
        action = next(flow)
        try:
            while (response := ended(action)) is None:
                reply: Reply = None
                try:
                    if isinstance(action, Send):
                        self._ensure_open(outgoing)
                        reply = vet(self._attempt(outgoing.prepare(plan.target, action), plan,
                                                  action, plan.state))
                    elif isinstance(action, Wait):
                        plan.call.clock.sleep(action.seconds)
                    elif isinstance(action, Admit):
                        reply = self._queue(plan, action)
                except BaseException as exc:
                    flow.throw(exc)  # the plan frees what the action held, then re-raises
                    raise
                action = flow.send(reply)
        finally:  # a Raise's error has this frame in its traceback: no cycle through it
            del action
        return response

    @staticmethod
    def _queue(plan: Plan, admit: Admit) -> Admitted | Refused:
        """Wait (bounded by the deadline) until the target's pacer and limit admit us."""
        place = plan.enqueue(admit)
        try:
            while True:
                place.waiter.event.clear()  # before asking: no wake-up is missed
                turn = place.turn()
                if isinstance(turn, (Admitted, Refused)):
                    return turn
                if turn is not None:
                    plan.call.clock.sleep(turn)
                else:
                    place.waiter.event.wait(place.poll())
        except BaseException:
            place.leave()
            raise

    def _attempt(
        self, request: httpx2.Request, plan: Plan, send: Send, state: TargetPressure
    ) -> Served | Failed:
        started = plan.call.clock.now()
        result = self._exchange(request, plan, send, state, started)
        if isinstance(result, httpx2.Response):
            return Served(result)
        return as_failed(*result)

    def _exchange(
        self, request: httpx2.Request, plan: Plan, send: Send, state: TargetPressure,
        started: float,
    ) -> Result:
        call, base = plan.call, self._base
        response: httpx2.Response | None = None
        sending = SendGuard(request, real_deadline(call), self._sockets)
        sent_at = time.monotonic()
        stream = streaming(request)
        if stream:  # connect, headers and first event share the first-token limit
            request.extensions["timeout"] = first_token_timeouts(send)
        try:
            try:
                response = self._inner.handle_request(request)
            except Exception as exc:  # the rule is for the wrapped transport's errors only
                base.reraise(exc, request)
            finally:
                sending.close()
                if stream:  # the body is read lazily, with the attempt's own timeouts
                    request.extensions["timeout"] = send.timeouts
            response.request = request
            base.observe(plan, state, response)
        except Exception as exc:
            if sending.fired:  # the watchdog closed the connection: a timeout, not a reset
                call.attempt_finished(deadline_failure(), None, send)
                raise call.deadline_error(closed_by_watchdog("deadline", exc, request)) from exc
            return base.exchange_failed(call, send, exc, request,
                                        None if response is None else response.status_code,
                                        first_token=stream and response is None)
        status = response.status_code
        kind = content_type(response)
        if status < 400 and is_event_stream(kind):
            return self._peek_stream(request, response, plan, send, state, started,
                                     sent_at + send.first_token_timeout)
        guard = SyncGuard(response, real_deadline(call), "deadline", self._sockets)
        reads = status >= 400 or is_json(kind)
        try:
            body = read_capped(response, call.policy.max_response_bytes) if reads else b""
        except Exception as exc:
            guard.close()
            if guard.fired == "deadline":
                call.attempt_finished(deadline_failure(), status, send)
                raise call.deadline_error(closed_by_watchdog("deadline", exc, request)) from exc
            return body_read_failed(call, send, exc, request, status)
        if reads:
            guard.close()
        else:  # the SDK reads this body itself: keep its read bounded by the deadline
            inner = response.stream
            assert isinstance(inner, httpx2.SyncByteStream)
            response.stream = SyncBoundedBody(inner, guard, call)
        if status >= 400:
            failure = classify_status(status, response.headers, body, base.wire.name)
            assert failure is not None
            call.attempt_finished(failure, status, send)
            return failure, response
        call.attempt_finished(None, status, send)
        plan.release(state, started, None)
        call.succeeded(send.target or call.target)
        return response

    def _peek_stream(
        self, request: httpx2.Request, response: httpx2.Response, plan: Plan, send: Send,
        state: TargetPressure, started: float, first_by: float,
    ) -> Result:
        """Read until the first output (by ``first_by``, on the monotonic clock: the send plus
        the first-token limit), so a failure before it can still be retried."""
        call = plan.call
        consumer = StreamConsumer(call, self._base.wire,
                                  EventView(response, call.policy.max_response_bytes),
                                  content_type=content_type(response), response=response)
        guard = SyncGuard(response, first_by, "first_token", self._sockets)
        inner = response.stream
        assert isinstance(inner, httpx2.SyncByteStream)
        chunks = iter(inner)
        failure: Failure | None = None
        error: BaseException | None = None
        try:
            for chunk in chunks:
                if consumer.peek(chunk):
                    break
            else:
                failure = consumer.peek_ended()
        except ResponseTooLarge:
            guard.close()
            response.close()
            call.attempt_finished(None, response.status_code, send)
            raise
        except httpx2.TransportError as exc:
            late = guard.fired == "first_token" or consumer.timed_out_at_limit(
                exc, time.monotonic(), first_by)
            # Our watchdog closed the socket: report the limit, not the "peer closed" it caused.
            error = None if late else exc
            failure = consumer.peek_failed(exc, first_token_passed=late)
        if failure is not None or consumer.scanner.failure is not None:
            guard.close()
            response.close()
        verdict = consumer.verdict(failure, error, plan, send, request, response)
        if verdict is not None:
            return verdict
        consumer.committed(plan, state, send, started, response.status_code)
        response.stream = _SyncStream(consumer, chunks, inner, guard)
        return response

    def close(self) -> None:
        self._closings += 1
        self._inner.close()




class _SyncStream(httpx2.SyncByteStream):
    """A committed stream: replays the peeked bytes, then guards every read. With a
    ``resume`` (stream recovery) it hands over whole events, and a break goes on there."""

    def __init__(self, consumer: StreamConsumer, chunks: Iterator[bytes],
                 inner: httpx2.SyncByteStream, guard: SyncGuard) -> None:
        self.consumer = consumer
        self._chunks = chunks
        self._inner = inner
        self._guard = guard
        self.resume: SyncResume | None = None
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        """One iteration per stream: a second ``for`` (the SDK drains the body after
        ``[DONE]``) goes on where the first stopped instead of reading the upstream again."""
        if self._iterator is None:
            self._iterator = self._iterate()
        return self._iterator

    def _iterate(self) -> Iterator[bytes]:
        consumer, guard, resume = self.consumer, self._guard, self.resume
        idle = consumer.call.policy.stream_idle_timeout
        deadline = real_deadline(consumer.call)

        def limit() -> tuple[float | None, str]:
            at = time.monotonic() + idle
            if deadline is not None and deadline <= at:
                return deadline, "deadline"
            return at, "idle"

        whole = resume is not None
        try:
            yield from consumer.replay_events() if whole else consumer.replay()
            guard.set(*limit(), shorter=True)
            for chunk in self._chunks:
                data, event = consumer.passing(chunk, whole)
                if event:  # an event (not a comment) restarts the idle limit
                    guard.set(*limit())
                if data is not None:
                    yield data
                consumer.check()  # (a failure ``feed`` met has raised already)
            if whole and (last := consumer.flush_events()):
                yield last
            consumer.ended()  # (raises a failure the last events met, as check() would)
        except httpx2.TransportError as exc:
            fired = guard.fired
            error = consumer.read_failed(fired, closed_by_watchdog(fired, exc) if fired else exc)
            if resume is None or not isinstance(error, StreamInterrupted):
                raise (consumer.report(error) if isinstance(error, StreamInterrupted)
                       else error) from exc
            guard.close()
            self._inner.close()
            yield from resume(error, consumer)
        except StreamInterrupted as error:
            if resume is None:
                raise consumer.report(error) from error.cause
            guard.close()
            self._inner.close()
            yield from resume(error, consumer)
        finally:
            guard.close()

    def close(self) -> None:
        self._guard.close()
        self._inner.close()
        if self.resume is not None:
            self.resume.close()
        self.consumer.closed()


def _as_is(reply: Reply) -> Reply:
    return reply
