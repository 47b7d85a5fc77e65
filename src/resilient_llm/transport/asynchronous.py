"""The async driver: an httpx2 transport that performs a request's plan with anyio I/O.

The twin of :mod:`.sync`, I/O only: every decision comes from the request's
:class:`~resilient_llm.engine.plan.Plan` and from :mod:`.streams`. Each attempt, body read and
stream read is bounded by a cancel scope (asyncio and trio alike). Streamed attempts may be
hedged (``Policy.hedge``): a second attempt races the first when no output came in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from typing import Any, cast

import httpx2

from .._errors import DeadlineExceeded, ResponseTooLarge, StreamInterrupted
from ..context.deadline import on_asyncio
from ..engine.call import Call, Send, Wait
from ..engine.classify import (
    Failure,
    FailureClass,
    classify_status,
    deadline_failure,
    first_token_timeout,
    unknown_failure,
)
from ..engine.hedge import MAX_RACERS, hedge_stats
from ..engine.plan import (
    Action,
    Admit,
    Admitted,
    Failed,
    Plan,
    Refused,
    Reply,
    Served,
)
from ..engine.pressure import TargetPressure
from ..engine.queue import HEAD_POLL
from .bodies import AsyncBoundedBody
from .decoding import EventView, aread_capped
from .recovery import AsyncResume, recovery_for
from .shared import (
    Outgoing,
    Result,
    WrappingTransport,
    as_failed,
    body_read_failed,
    content_type,
    ended,
    is_event_stream,
    is_json,
    streaming,
)
from .streams import StreamConsumer

__all__ = ["AsyncResilientTransport"]


_HEDGE_LOST = Failure(FailureClass.HEDGE_LOST, False, message="another attempt answered first")


class AsyncResilientTransport(
    WrappingTransport[httpx2.AsyncBaseTransport], httpx2.AsyncBaseTransport
):
    """The async twin of :class:`ResilientTransport` (anyio: asyncio and trio)."""

    _default_inner = httpx2.AsyncHTTPTransport

    def handle_async_request(
        self, request: httpx2.Request
    ) -> Coroutine[Any, Any, httpx2.Response]:
        """The request's plan, performed by :meth:`_perform`'s coroutine (returned, not
        awaited here: one frame less between the caller and the wire)."""
        if self._passes_through():
            return self._inner.handle_async_request(request)
        plan, outgoing = self._start(request)
        return self._perform(plan, plan.run(), outgoing, None)

    async def _perform(self, plan: Plan, flow: Generator[Action, Reply, None],
                       outgoing: Outgoing, vet: Callable[[Reply], Reply] | None
                       ) -> httpx2.Response:
        """Carry out ``flow``'s actions. ``vet`` sees each attempt's result first; without
        one (the caller's own request, not a stream recovery's) streams may be hedged, and a
        stream that breaks after its first output may be resumed."""
        action: Action | None = None
        try:
            action = next(flow)
            while (response := ended(action)) is None:
                reply: Reply = None
                try:
                    if isinstance(action, Send):
                        self._ensure_open(outgoing)
                        request = await outgoing.aprepare(plan.target, action)
                        if vet is not None:
                            reply = vet(await self._attempt(request, plan, action, plan.state))
                        elif plan.call.policy.hedge and streaming(request):
                            reply = await self._hedged(plan, outgoing, request, action)
                        else:
                            reply = await self._attempt(request, plan, action, plan.state)
                    elif isinstance(action, Wait):
                        await plan.call.clock.asleep(action.seconds)
                    elif isinstance(action, Admit):
                        reply = await self._queue(plan, action)
                except BaseException as exc:
                    flow.throw(exc)  # the plan frees what the action held, then re-raises
                    raise
                action = flow.send(reply)
        except DeadlineExceeded:
            await _scope_ends(plan.call)
            raise
        finally:  # a Raise's error has this frame in its traceback: no cycle through it
            action = None
        stream = response.stream
        if vet is None and isinstance(stream, _AsyncStream):
            recovery = recovery_for(plan, outgoing, response, stream.consumer)
            if recovery is not None:
                stream.resume = AsyncResume(recovery, self._perform)
        return response

    async def _hedged(
        self, plan: Plan, outgoing: Outgoing, request: httpx2.Request, send: Send
    ) -> Served | Failed:
        """Run the attempt; if no output arrives within the hedge delay, race a second one.

        The first attempt to produce output wins; the other is cancelled and its connection
        closed. See ``engine.hedge`` for the delay and the budget.
        """
        import anyio

        call = plan.call
        started = call.clock.now()
        stats = hedge_stats(plan.state.key)
        stats.deposit(call.policy.hedge_budget)
        delay = stats.delay(call.policy.hedge_delay)
        if delay is None:
            result = await self._attempt(request, plan, send, plan.state, started)
            if isinstance(result, Served):
                stats.record(call.clock.now() - started)
            return result
        finished: list[tuple[int, Any]] = []
        lost: list[Send] = []
        changed = [anyio.Event()]
        running = 1

        async def run(index: int, request: httpx2.Request, attempt: Send,
                      state: TargetPressure, began: float) -> None:
            outcome: Any = None
            try:
                outcome = await self._attempt(request, plan, attempt, state, began)
            except Exception as exc:
                outcome = exc
            finally:
                if outcome is None:  # cancelled: it lost the race; free its slot
                    state.release(call.clock.now(), priority=call.policy.priority, latency=None,
                                  throttled=False, dropped=False, succeeded=True)
                    lost.append(attempt)  # (reported below, if another attempt won)
                elif index > 0 and not isinstance(outcome, Served):
                    failure = outcome.failure if isinstance(outcome, Failed) \
                        else unknown_failure()
                    plan.release(state, began, failure)
            finished.append((index, outcome))
            changed[0].set()

        winner: Any = None
        async with anyio.create_task_group() as group:
            group.start_soon(run, 0, request, send, plan.state, started)
            may_hedge = True
            while True:
                done = [item for item in finished if isinstance(item[1], Served)]
                if done or len(finished) == running:
                    break
                changed[0] = anyio.Event()
                with anyio.move_on_after(delay if may_hedge else math.inf) as waited:
                    await changed[0].wait()
                if not waited.cancelled_caught:
                    continue
                # Still no output after the delay: race one more attempt, budget permitting.
                spent = stats.try_spend()
                hedge = plan.hedge() if spent else None
                if hedge is None:
                    if spent:
                        stats.refund()
                    may_hedge = False
                    continue
                send2, target2, state2 = hedge
                request2 = await outgoing.aprepare(target2, send2, copy=True)
                call.emit("fell_back", target=send2.target, detail="hedge")
                group.start_soon(run, running, request2, send2, state2, call.clock.now())
                running += 1
                may_hedge = running < MAX_RACERS
            winner = done[0] if done else None
            group.cancel_scope.cancel()
        for index, outcome in finished:
            if isinstance(outcome, Served) and (winner is None or index != winner[0]):
                await cast(httpx2.Response, outcome.response).aclose()
        if winner is not None:
            for attempt in lost:  # sent, and cancelled: another attempt answered first
                call.attempt_finished(_HEDGE_LOST, None, attempt)
            stats.record(call.clock.now() - started)
            return winner[1]  # type: ignore[no-any-return]
        primary = next(outcome for index, outcome in finished if index == 0)
        if isinstance(primary, BaseException):
            try:
                raise primary
            finally:  # the error's traceback holds this frame: no cycle through its locals
                del primary, finished
        return primary  # type: ignore[no-any-return]

    @staticmethod
    async def _queue(plan: Plan, admit: Admit) -> Admitted | Refused:
        """The async twin of ``ResilientTransport._queue``."""
        import anyio

        place = plan.enqueue(admit)
        waiter = place.waiter
        waiter.loop_thread = threading.get_ident()
        # A release on this loop wakes the task at once; one on another thread reaches it
        # through the loop on asyncio, and is noticed at the next poll elsewhere.
        waiter.notify = _cross_thread_wake(lambda: waiter.async_event) if on_asyncio() else None
        longest = None if waiter.notify is not None else HEAD_POLL
        try:
            while True:
                waiter.async_event = anyio.Event()  # before asking: no wake-up is missed
                turn = place.turn()
                if isinstance(turn, (Admitted, Refused)):
                    return turn
                if turn is not None:
                    await plan.call.clock.asleep(turn)
                else:
                    with anyio.move_on_after(place.poll(longest)):
                        await waiter.async_event.wait()
        except BaseException:
            place.leave()
            raise
        finally:
            waiter.async_event = None
            waiter.notify = None

    async def _attempt(
        self, request: httpx2.Request, plan: Plan, send: Send, state: TargetPressure,
        started: float | None = None,
    ) -> Served | Failed:
        """One attempt: send ``request``, read what the plan needs of the answer, report it.

        One coroutine from the send to the reply (no helper coroutines in between): every
        suspension while the provider answers passes through each frame of the chain."""
        call, base = plan.call, self._base
        if started is None:
            started = call.clock.now()
        left = call.remaining()
        response: httpx2.Response | None = None
        read_error: Exception | None = None
        stream = streaming(request)
        # connect, headers and first event share the first-token limit, from the send
        first_by = _anyio_now() + send.first_token_timeout if stream else math.inf
        try:
            async with _AttemptLimit(left) as scope:
                with _first_token_scope(first_by):
                    try:
                        response = await self._inner.handle_async_request(request)
                    except Exception as exc:  # the rule is for the wrapped transport's errors
                        base.reraise(exc, request)
                if response is not None:
                    response.request = request
                    base.observe(plan, state, response)
                    status = response.status_code
                    kind = content_type(response)
                    try:
                        body = (await aread_capped(response, call.policy.max_response_bytes)
                                if status >= 400 or is_json(kind) else b"")
                    except Exception as exc:
                        read_error = exc
        except Exception as exc:
            return as_failed(*base.exchange_failed(
                call, send, exc, request, None if response is None else response.status_code))
        if response is None and not scope.expired and not _out_of_time(call):
            late = first_token_timeout()
            call.attempt_finished(late, None, send)
            return as_failed(late, httpx2.ReadTimeout("no response headers within the "
                                                      "first-token limit", request=request))
        if scope.expired or response is None:
            if response is not None:
                await response.aclose()
            call.attempt_finished(deadline_failure(),
                                  None if response is None else response.status_code, send)
            raise call.deadline_error(httpx2.ReadTimeout("deadline reached during the attempt",
                                                         request=request))
        if read_error is not None:
            return as_failed(*body_read_failed(call, send, read_error, request, status))
        if status >= 400:
            failure = classify_status(status, response.headers, body, base.wire.name)
            assert failure is not None
            call.attempt_finished(failure, status, send)
            return as_failed(failure, response)
        if is_event_stream(kind):
            if not stream:  # an event stream the request did not ask for: limit from now
                first_by = _anyio_now() + send.first_token_timeout
            result = await self._peek_stream(request, response, plan, send, state, started,
                                             first_by)
            return Served(result) if isinstance(result, httpx2.Response) else as_failed(*result)
        if not is_json(kind):  # the SDK reads this body itself: keep it bounded by the deadline
            inner = response.stream
            assert isinstance(inner, httpx2.AsyncByteStream)
            response.stream = AsyncBoundedBody(inner, call, request)
        call.attempt_finished(None, status, send)
        plan.release(state, started, None)
        call.succeeded(send.target or call.target)
        return Served(response)

    async def _peek_stream(
        self, request: httpx2.Request, response: httpx2.Response, plan: Plan, send: Send,
        state: TargetPressure, started: float, first_by: float,
    ) -> Result:
        """Read until the first output (by ``first_by``, on anyio's clock: the send plus the
        first-token limit), so a failure before it can still be retried."""
        import anyio

        call = plan.call
        consumer = StreamConsumer(call, self._base.wire,
                                  EventView(response, call.policy.max_response_bytes),
                                  content_type=content_type(response), response=response)
        inner = response.stream
        assert isinstance(inner, httpx2.AsyncByteStream)
        chunks = inner.__aiter__()
        failure: Failure | None = None
        error: BaseException | None = None
        try:
            with anyio.CancelScope(deadline=first_by) as scope:
                async for chunk in chunks:
                    if consumer.peek(chunk):
                        break
                else:
                    failure = consumer.peek_ended()
            if scope.cancelled_caught:
                failure = consumer.peek_failed(None, first_token_passed=True)
        except ResponseTooLarge:
            await response.aclose()
            call.attempt_finished(None, response.status_code, send)
            raise
        except httpx2.TransportError as exc:
            late = consumer.timed_out_at_limit(exc, anyio.current_time(), first_by)
            error = None if late else exc  # the limit's own error says more than "timed out"
            failure = consumer.peek_failed(exc, first_token_passed=late)
        if failure is not None or consumer.scanner.failure is not None:
            await response.aclose()
        verdict = consumer.verdict(failure, error, plan, send, request, response)
        if verdict is not None:
            return verdict
        consumer.committed(plan, state, send, started, response.status_code)
        response.stream = _AsyncStream(consumer, chunks, inner)
        return response

    async def aclose(self) -> None:
        self._closings += 1
        await self._inner.aclose()


async def _scope_ends(call: Call) -> None:
    """The call's deadline is an enclosing anyio cancel scope's (``move_on_after``,
    ``fail_after``) and it ran out, or nothing fits before it: let the scope end the call when
    it passes, as it ends the official client's. Raised here, ``DeadlineExceeded`` would escape
    a ``move_on_after`` (which swallows only its own cancellation) and fail its task group.
    If the scope does not cancel (shielded, or its deadline moved), the error goes on."""
    if call.scope_cancels:
        import anyio

        left = call.remaining()
        await anyio.sleep(max(0.0, left if left is not None else 0.0) + _SCOPE_SLACK)


#: How long past the scope's deadline to wait for its cancellation (timer granularity).
_SCOPE_SLACK = 0.05


class _AttemptLimit:
    """Ends one attempt after ``seconds`` (``None``: never) and says whether it did.

    The standard library's ``asyncio.timeout`` on asyncio (Python ≥ 3.11: it tells its own
    expiry from an outer cancellation, which still propagates); anyio's cancel scope under
    trio and on Python 3.10. Both cancel whatever the attempt awaits when the time is up.
    """

    __slots__ = ("_native", "_scope", "expired")

    def __init__(self, seconds: float | None) -> None:
        self.expired = False
        self._native = _HAS_TIMEOUT and on_asyncio()
        if self._native:
            self._scope: Any = asyncio.timeout(seconds)  # type: ignore[attr-defined,unused-ignore]
        else:
            import anyio

            self._scope = anyio.move_on_after(math.inf if seconds is None else seconds)

    async def __aenter__(self) -> _AttemptLimit:
        if self._native:
            await self._scope.__aenter__()
        else:
            self._scope.__enter__()
        return self

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if not self._native:
            suppressed = bool(self._scope.__exit__(kind, exc, tb))
            self.expired = bool(self._scope.cancelled_caught)
            return suppressed
        try:
            return bool(await self._scope.__aexit__(kind, exc, tb))
        except TimeoutError:
            if not self._scope.expired():
                raise
            self.expired = True
            return True


_HAS_TIMEOUT = hasattr(asyncio, "timeout")  # Python ≥ 3.11


def _cross_thread_wake(current_event: Callable[[], Any]) -> Callable[[], None]:
    """A wake-up another thread can send to a task on this asyncio loop. The loop sets the
    event the task waits on when the callback runs, not the one current when it was sent (the
    task may have moved on to a new one: at worst it asks once more)."""
    loop = asyncio.get_running_loop()

    def set_current() -> None:
        event = current_event()
        if event is not None:
            event.set()

    def notify() -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits on it any more
            loop.call_soon_threadsafe(set_current)

    return notify


def _out_of_time(call: Call) -> bool:
    left = call.remaining()
    return left is not None and left <= 0


def _anyio_now() -> float:
    import anyio

    return anyio.current_time()


#: The first-token limit's scope when there is none (a request that is no stream).
_UNLIMITED = contextlib.nullcontext()


def _first_token_scope(first_by: float) -> contextlib.AbstractContextManager[Any]:
    """A cancel scope that ends the wait for the response headers at ``first_by`` (anyio's
    clock; a stream's first-token limit); no scope at all when there is no such limit."""
    if first_by == math.inf:
        return _UNLIMITED
    import anyio

    return anyio.CancelScope(deadline=first_by)


class _AsyncStream(httpx2.AsyncByteStream):
    """A committed async stream: replays the peeked bytes, then bounds every read. With a
    ``resume`` (stream recovery) it hands over whole events, and a break goes on there."""

    def __init__(self, consumer: StreamConsumer, chunks: AsyncIterator[bytes],
                 inner: httpx2.AsyncByteStream) -> None:
        self.consumer = consumer
        self._chunks = chunks
        self._inner = inner
        self.resume: AsyncResume | None = None
        self._iterator: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        """One iteration per stream: a second ``async for`` (the SDK drains the body after
        ``[DONE]``) goes on where the first stopped instead of reading the upstream again."""
        if self._iterator is None:
            self._iterator = self._iterate()
        return self._iterator

    async def _iterate(self) -> AsyncIterator[bytes]:
        consumer, resume = self.consumer, self.resume
        try:
            try:
                async for chunk in self._read(consumer, resume is not None):
                    yield chunk
            except StreamInterrupted as error:
                if resume is None:
                    raise consumer.report(error) from error.__cause__
                await self._inner.aclose()
                async for chunk in resume(error, consumer):
                    yield chunk
        except DeadlineExceeded:
            await _scope_ends(consumer.call)
            raise

    async def _read(self, consumer: StreamConsumer, whole: bool) -> AsyncIterator[bytes]:
        """The upstream's bytes (``whole``: whole events only); a break raises
        StreamInterrupted (or the deadline's error)."""
        import anyio

        call = consumer.call
        idle = call.policy.stream_idle_timeout
        for early in consumer.replay_events() if whole else consumer.replay():
            yield early
        idle_by = anyio.current_time() + idle
        while True:
            now, left = anyio.current_time(), call.remaining()
            by_deadline = left is not None and now + left <= idle_by
            chunk: bytes | None = None
            try:
                with anyio.CancelScope(
                    deadline=now + left if left is not None and by_deadline else idle_by
                ) as scope:
                    chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                break
            except httpx2.TransportError as exc:
                raise consumer.read_failed(None, exc) from exc
            if scope.cancelled_caught or chunk is None:
                stall = httpx2.ReadTimeout("stream read exceeded its limit")
                raise consumer.read_failed("deadline" if by_deadline else "idle", stall)
            data, event = consumer.passing(chunk, whole)
            if event:  # an event (not a comment) restarts the idle limit
                idle_by = anyio.current_time() + idle
            if data is not None:
                yield data
            consumer.check()  # (a failure ``feed`` met has raised already)
        if whole and (last := consumer.flush_events()):
            yield last
        consumer.ended()  # (raises a failure the last events met, as check() would)

    async def aclose(self) -> None:
        await self._inner.aclose()
        if self.resume is not None:
            await self.resume.aclose()
        self.consumer.closed()
