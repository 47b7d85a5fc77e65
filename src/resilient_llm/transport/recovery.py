"""Stream recovery: a stream that broke after its first output goes on, on the same target or
the next one of the chain, and the caller's iterator keeps yielding the answer exactly once.

The committed stream (:mod:`.sync`, :mod:`.asynchronous`) hands the caller whole events only,
so a continuation can follow any of them. When it breaks, :class:`Recovery` asks the request's
plan what comes next through its usual actions (``Plan.run(after=...)``: retry here or move on,
backoff, attempt cap, deadline), with a request that continues the answer
(:func:`~.splice.continuation_body` for a prefill, the original for a restart). The new
attempt's events pass through a :class:`~.splice.Splicer`; what it lets through is the rest of
the caller's stream. A target that answers a prefill with a 400 is remembered for the process
and the attempt counts as a failure of the original class, so the call restarts there or moves
on, and never ends on that 400. When nothing recovers the stream, the caller gets
``StreamInterrupted`` with the text delivered and the original cause.

No I/O here: :class:`SyncResume` and :class:`AsyncResume` read the new attempts' bodies, the
drivers send them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from typing import Any

import httpx2

from .._errors import DeadlineExceeded, StreamInterrupted
from ..engine.classify import Failure, FailureClass
from ..engine.plan import Action, Failed, Plan, Reply
from ..engine.routing import Target, drop_tracebacks
from ..events.outcome import StreamRecovery
from .shared import Outgoing, streaming
from .splice import (
    Diverged,
    Mode,
    Splicer,
    api_of,
    billed_usage,
    continuation_body,
    continuation_mode,
    remember_rejection,
)
from .streams import StreamConsumer

__all__ = ["AsyncResume", "Continuation", "Recovery", "SyncResume", "recovery_for"]

Perform = Callable[[Plan, Any, Outgoing, Callable[[Reply], Reply]], httpx2.Response]
AsyncPerform = Callable[[Plan, Any, Outgoing, Callable[[Reply], Reply]],
                        Coroutine[Any, Any, httpx2.Response]]


def recovery_for(plan: Plan, outgoing: Outgoing, response: httpx2.Response,
                 consumer: StreamConsumer) -> Recovery | None:
    """The recovery of a committed stream, or ``None`` when it cannot have one (recovery off,
    a one-shot request body, a request that did not ask for a stream, a compressed stream, a
    stream that is not server-sent events, an API without known events)."""
    call = plan.call
    if call.policy.stream_recovery == "off" or not plan.replayable:
        return None
    if response.headers.get("content-encoding", "identity") not in ("identity", ""):
        return None
    if not consumer.scanner.splices:
        return None  # continuations splice server-sent events only (not Bedrock's frames)
    api = api_of(outgoing.request.url.path)
    if api is None or not streaming(outgoing.request):
        return None
    return Recovery(plan, outgoing, consumer, api)


class Recovery:
    """The state of one stream's recovery, shared by both drivers (no I/O)."""

    def __init__(self, plan: Plan, outgoing: Outgoing, consumer: StreamConsumer,
                 api: str) -> None:
        self.plan = plan
        self.call = plan.call
        self.consumer = consumer
        self.api = api
        url = outgoing.request.url
        self.origin = f"{url.scheme}://{url.host}:{url.port or ''}"
        self._source = outgoing
        self._outgoing: Outgoing | None = None
        #: The first break: its class and cause end the call if nothing recovers it.
        self.original: StreamInterrupted | None = None
        self.original_failure: Failure | None = None
        #: (input tokens or None, output tokens) of every attempt that broke.
        self.earlier: list[tuple[int | None, int]] = []
        self.mode: Mode = "restart"
        self.expected: list[tuple[str, str | None, str]] = []
        self.target: str | None = None
        self._offset = 0
        self._broke: Failure | None = None
        #: The stream ended with the break's error (:meth:`failed`): the caller has it.
        self._raised = False

    @property
    def outgoing(self) -> Outgoing:
        """The continuation attempts' request, with this recovery's edits. Built at the first
        break: it refers back to the recovery, a reference cycle that only a stream that broke
        should carry, until its continuations end (:meth:`ended`)."""
        if self._outgoing is None:
            source = self._source
            self._outgoing = Outgoing(source.request, self.call, source.provider, self._edit)
        return self._outgoing

    def ended(self) -> None:
        """No continuation follows (the caller's stream ended, or was closed): the recovery
        lets go of its continuation request and the cycle through it, and, unless it raised
        the break as the stream's end, of the break's traceback (whose frames hold the
        stream's reader)."""
        self._outgoing = None
        if self.original is not None and not self._raised:
            drop_tracebacks(self.original, breaks=True)

    # --- a break ----------------------------------------------------------------------------

    def resume(self, error: StreamInterrupted,
               scanner_of: StreamConsumer) -> Generator[Action, Reply, None]:
        """The plan's actions for the next continuation attempt after a break; raises what the
        caller's stream ends with when the output so far cannot be continued."""
        failed = self.broke(error, scanner_of)
        if failed is None:
            raise self.failed(None) from error
        return self.plan.run(after=failed)

    def broke(self, error: StreamInterrupted, scanner_of: StreamConsumer) -> Failed | None:
        """The stream broke with ``error`` (its attempt's consumer: ``scanner_of``): the reply
        the plan decides on, or ``None`` when the output so far cannot be continued."""
        consumer = self.consumer
        failure = scanner_of.broke or Failure(FailureClass(error.failure), True)
        scanner = scanner_of.scanner
        self.earlier.append((_input_tokens(self.api, scanner.usage), scanner.deltas))
        if self.original is None:
            self.original, self.original_failure = error, failure
        outer = consumer.scanner
        if outer.complete or not outer.resumable or len(outer.choices) > 1 \
                or not _json_object(self._source.request):
            return None  # a whole answer (then a break), or output it cannot continue
        outer.resume()
        self._offset = len(outer.text)
        self._broke = failure
        return Failed(failure, self.original, self.original)

    def vet(self, reply: Reply) -> Reply:
        """A continuation attempt's result: a prefill the target rejected (a 400 or 422)
        becomes a failure of the original class, and the target restarts from now on."""
        if isinstance(reply, Failed) and self.mode == "prefill" \
                and reply.failure.status in (400, 422) and self.original_failure is not None:
            remember_rejection(self.origin, self.target)
            original = self.original
            assert original is not None
            kind = self.original_failure.kind
            return Failed(Failure(kind, True, status=400, code=reply.failure.code,
                                  message="the target rejected the prefill"),
                          original, original)
        return reply

    def _edit(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """The body of a continuation attempt to ``target`` (``Outgoing`` calls it)."""
        model = target.model or self.call.target
        outer = self.consumer.scanner
        self.target = model
        self.mode = continuation_mode(self.call.policy, self.api, model, self.origin)
        self.expected = [(part.kind, part.name, part.text) for part in outer.parts]
        if self.mode == "prefill":  # one text only: tool calls and thinking are never prefilled
            continued = continuation_body(body, self.api, outer.text) if outer.plain else None
            if continued is None:
                self.mode = "restart"
            else:
                body, rest = continued
                self.expected = [("text", None, rest)]
        return body

    # --- the continuation -------------------------------------------------------------------

    def continuation(self, response: httpx2.Response) -> Continuation | None:
        """The events of a continuation's ``response`` on their way to the caller; ``None``
        when its body is not one the drivers inspect (it cannot be spliced)."""
        inner = getattr(response.stream, "consumer", None)
        if not isinstance(inner, StreamConsumer):
            return None
        inner.nested = True
        outer = self.consumer.scanner
        first = outer.parts[0].key if outer.parts else 0
        splicer = Splicer(self.api, self.mode, expected=self.expected,
                          slot=first if isinstance(first, int) else 0,
                          prior=outer.deltas, sequence=outer.sequence, ids=outer.ids)
        return Continuation(self, splicer, inner)

    def deliver(self, blocks: list[bytes], inner: StreamConsumer) -> bytes:
        """Spliced events of ``inner`` on their way to the caller: the caller's stream now
        holds them, and the call's usage counts every attempt's tokens."""
        data = b"".join(blocks)
        self.consumer.scanner.feed(data)
        usage = inner.scanner.usage
        if isinstance(usage, dict):
            self.consumer.billed = billed_usage(self.api, usage, self.earlier)
        return data

    def verified(self, splicer: Splicer, attempt: int) -> None:
        """The continuation reproduced the delivered text: report the recovery."""
        assert self._broke is not None
        self.call.record.recoveries.append(StreamRecovery(
            offset=self._offset, failure=self._broke.kind.value, target=self.target,
            mode=self.mode, regenerated_tokens=splicer.regenerated, attempt=attempt,
        ))
        self.call.emit("stream_recovered", target=self.target, detail=self.mode)

    def finished(self) -> None:
        """The continuation ended cleanly: the caller's stream is complete (or truncated)."""
        consumer = self.consumer
        try:
            consumer.ended()
        except StreamInterrupted as error:
            raise consumer.report(error) from None

    def failed(self, error: BaseException | None) -> BaseException:
        """Nothing recovered the stream: the original break, with every character delivered
        (``DeadlineExceeded`` around it when the deadline ended the call)."""
        original = self.original
        assert original is not None
        self._raised = True
        final = self.consumer.interrupted(FailureClass(original.failure),
                                          _describe(self.original_failure), original.cause)
        self.consumer.broke = self.original_failure
        if isinstance(error, DeadlineExceeded):  # the call already reported its end
            error.cause = final
            error.__cause__ = final
            return error
        return self.consumer.report(final)


class Continuation:
    """One continuation's events on their way to the caller, without I/O: both readers feed
    it the body's chunks and yield what it returns (``None``: nothing to pass on yet)."""

    def __init__(self, recovery: Recovery, splicer: Splicer, inner: StreamConsumer) -> None:
        self._recovery = recovery
        self._splicer = splicer
        #: The consumer reading the continuation's body (where a further break is seen).
        self.inner = inner
        self._attempt = recovery.call.attempts
        self._reported = False

    def feed(self, chunk: bytes) -> bytes | None:
        return self._pass(self._splicer.feed(chunk))

    def finish(self) -> bytes | None:
        """The body ended: what the splicer still held."""
        return self._pass(self._splicer.finish())

    def _pass(self, blocks: list[bytes]) -> bytes | None:
        splicer = self._splicer
        if splicer.verified and not self._reported:  # reproduced what was delivered
            self._recovery.verified(splicer, self._attempt)
            self._reported = True
        return self._recovery.deliver(blocks, self.inner) if blocks else None


def _json_object(request: httpx2.Request) -> bool:
    """Is the request's body a JSON object (the continuation edits it)? Read at a break only."""
    try:
        return isinstance(json.loads(request.content), dict)
    except (ValueError, UnicodeDecodeError, httpx2.RequestNotRead):
        return False


def _describe(failure: Failure | None) -> str:
    return failure.describe() if failure is not None else "stream interrupted"


def _input_tokens(api: str, usage: Any) -> int | None:
    if not isinstance(usage, dict):
        return None
    value = usage.get("prompt_tokens" if api == "chat" else "input_tokens")
    return value if isinstance(value, int) else None


class SyncResume:
    """Reads continuations for the sync driver (``perform`` runs a plan's flow)."""

    def __init__(self, recovery: Recovery, perform: Perform) -> None:
        self.recovery = recovery
        self._perform = perform
        self._current: httpx2.Response | None = None

    def __call__(self, error: StreamInterrupted, consumer: StreamConsumer) -> Iterator[bytes]:
        recovery = self.recovery
        try:
            while True:
                flow = recovery.resume(error, consumer)
                try:
                    response = self._perform(recovery.plan, flow, recovery.outgoing,
                                             recovery.vet)
                except Exception as exc:
                    raise recovery.failed(exc) from exc
                continuation = recovery.continuation(response)
                if continuation is None:
                    response.close()
                    raise recovery.failed(None)
                self._current = response
                try:
                    for chunk in response.stream:  # type: ignore[union-attr]
                        if (data := continuation.feed(chunk)) is not None:
                            yield data
                    if (data := continuation.finish()) is not None:
                        yield data
                except StreamInterrupted as again:
                    error, consumer = again, continuation.inner
                    continue
                except (Diverged, DeadlineExceeded) as exc:
                    raise recovery.failed(exc) from exc
                finally:
                    response.close()
                    self._current = None
                recovery.finished()
                return
        finally:
            recovery.ended()

    def close(self) -> None:
        if self._current is not None:
            self._current.close()


class AsyncResume:
    """The async twin of :class:`SyncResume`."""

    def __init__(self, recovery: Recovery, perform: AsyncPerform) -> None:
        self.recovery = recovery
        self._perform = perform
        self._current: httpx2.Response | None = None

    async def __call__(self, error: StreamInterrupted,
                       consumer: StreamConsumer) -> AsyncIterator[bytes]:
        recovery = self.recovery
        try:
            while True:
                flow = recovery.resume(error, consumer)
                try:
                    response = await self._perform(recovery.plan, flow, recovery.outgoing,
                                                   recovery.vet)
                except Exception as exc:
                    raise recovery.failed(exc) from exc
                continuation = recovery.continuation(response)
                if continuation is None:
                    await response.aclose()
                    raise recovery.failed(None)
                self._current = response
                try:
                    async for chunk in response.stream:  # type: ignore[union-attr]
                        if (data := continuation.feed(chunk)) is not None:
                            yield data
                    if (data := continuation.finish()) is not None:
                        yield data
                except StreamInterrupted as again:
                    error, consumer = again, continuation.inner
                    continue
                except (Diverged, DeadlineExceeded) as exc:
                    raise recovery.failed(exc) from exc
                finally:
                    await response.aclose()
                    self._current = None
                recovery.finished()
                return
        finally:
            recovery.ended()

    async def aclose(self) -> None:
        if self._current is not None:
            await self._current.aclose()
