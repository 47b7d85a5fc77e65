"""Stream inspection shared by both drivers, without I/O: the drivers read, this decides.

A streamed attempt has two phases. Before its first output the driver feeds each chunk to
:meth:`StreamConsumer.peek` and keeps it; a failure there (an error event, a cut, a stall, a
malformed event, a body that ends early) is still the attempt's failure, and can be retried.
Once output started the stream is committed and handed to the caller: every further chunk
goes through :meth:`StreamConsumer.feed`, and a break becomes :class:`StreamInterrupted` with
the partial text. Completion is the finish reason (or the provider's terminal event): a stream
that ends without either never looks complete, and one that delivered its finish reason is
complete without the ``[DONE]`` sentinel, as with the official SDKs. Every failure class is
built in :mod:`resilient_llm.engine.classify`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable

import httpx2

from .._errors import StreamInterrupted
from .._sdk_errors import as_sdk_error, request_of, stream_error_of
from ..engine.call import Call, Send
from ..engine.classify import (
    STREAM_FAULTS,
    Failure,
    FailureClass,
    classify_stream_error,
    first_token_timeout,
    stream_ended_early,
    stream_interruption,
)
from ..engine.plan import Plan
from ..engine.pressure import TargetPressure
from ..providers import StreamScanner, Wire
from ..providers._eventstream import EventStreamScanner, is_aws_event_stream
from .shared import LimitTimeout, StreamFailedEarly

__all__ = ["StreamConsumer"]


class StreamConsumer:
    """One streamed attempt's bytes, inspected as they arrive (the driver does the reading)."""

    __slots__ = ("_response", "billed", "broke", "buffered", "call", "event_error", "nested",
                 "scanner", "view")

    def __init__(self, call: Call, wire: Wire,
                 view: Callable[[bytes], Iterable[bytes]] | None = None, *,
                 content_type: str = "text/event-stream",
                 response: httpx2.Response | None = None) -> None:
        self.call = call
        #: The streamed response (the SDK's error for an error event carries it). Weakly: the
        #: response's stream holds this consumer, and a cycle would leave both (and the call
        #: they refer to) to the garbage collector.
        self._response = None if response is None else weakref.ref(response)
        #: An error event's break, and the SDK's error for it (see :meth:`interrupted`).
        self.event_error: tuple[FailureClass, BaseException | None] | None = None
        #: Server-sent events, or Amazon's binary framing (Bedrock): the same questions asked
        #: of either (output, end, failure), by the scanner of the response's framing.
        self.scanner = (EventStreamScanner(wire) if is_aws_event_stream(content_type)
                        else StreamScanner(wire))
        #: What the scanner reads of a chunk: its decoded bytes when the stream is compressed
        #: (see :class:`~.decoding.EventView`); the caller always gets the chunk as received.
        self.view = view or _as_is
        #: The chunks read before the stream was committed, replayed to the caller.
        self.buffered: list[bytes] = []
        #: The failure that broke the committed stream (set with its StreamInterrupted).
        self.broke: Failure | None = None
        #: A stream read by stream recovery, not by the caller: the call's end is not its own.
        self.nested = False
        #: The usage of every attempt of a recovered stream (else the stream's own is used).
        self.billed: object = None

    # --- before the first output --------------------------------------------------------------

    def peek(self, chunk: bytes) -> bool:
        """Keep and inspect one chunk; ``True`` once the attempt's fate is known (output, the
        stream's end, or a failure): stop reading then."""
        self.buffered.append(chunk)
        scanner = self.scanner
        for piece in self.view(chunk):
            scanner.feed(piece)
        return scanner.failure is not None or scanner.committed or scanner.complete

    def peek_ended(self) -> Failure | None:
        """The body ended while peeking: a failure unless output or the stream's end came."""
        scanner = self.scanner
        scanner.finish()
        if scanner.failure is None and not scanner.committed and not scanner.complete:
            return stream_ended_early()
        return None

    @staticmethod
    def timed_out_at_limit(exc: BaseException, now: float, first_by: float) -> bool:
        """Is ``exc`` a read timeout at the first-token limit ``first_by`` (the attempt's read
        timeout is clipped to it)? Then the limit ran out, whichever timer noticed first."""
        return isinstance(exc, httpx2.TimeoutException) and now >= first_by - _TIMER_SLACK

    @staticmethod
    def peek_failed(exc: BaseException | None, *, first_token_passed: bool) -> Failure:
        """Reading failed before any output: ``exc`` (a transport error, or ``None``) after the
        first-token limit passed or not."""
        if first_token_passed or exc is None:
            return first_token_timeout()
        return classify_stream_error(exc)

    def verdict(
        self, failure: Failure | None, error: BaseException | None, plan: Plan, send: Send,
        request: httpx2.Request, response: httpx2.Response,
    ) -> tuple[Failure, httpx2.Response | BaseException] | None:
        """After peeking: ``None`` when the stream is committed, else the attempt's failure and
        what the caller would see (the driver has closed the response already). Raises the
        deadline error when the deadline passed meanwhile."""
        call = self.call
        failure = failure or self.scanner.failure
        if failure is None:
            return None
        call.attempt_finished(failure, response.status_code, send)
        left = call.remaining()
        if left is not None and left <= 0:
            raise call.deadline_error(error or _failure_exception(failure, request, send))
        sent = self.scanner.failure
        if error is None and sent is not None and sent.kind not in STREAM_FAULTS:
            # The provider sent an error event: the SDK raises its own error for those bytes.
            return failure, httpx2.Response(
                response.status_code, headers=response.headers,
                stream=httpx2.ByteStream(b"".join(self.buffered)),
                request=response.request, extensions=response.extensions,
            )
        return failure, error or _failure_exception(failure, request, send)

    def committed(self, plan: Plan, state: TargetPressure, send: Send, started: float,
                  status: int) -> None:
        """Output arrived: the attempt succeeded (its latency is the time to first output)."""
        call = self.call
        call.attempt_finished(None, status, send)
        plan.release(state, started, None)
        call.emit("stream_committed")
        call.emit("succeeded", target=send.target or call.target, detail="stream")

    def replay(self) -> list[bytes]:
        """The peeked chunks, handed over once to the caller's stream."""
        buffered, self.buffered = self.buffered, []
        return buffered

    def replay_events(self) -> list[bytes]:
        """As :meth:`replay`, up to the end of the last complete event only (the rest is
        buffered in the scanner and comes with :meth:`feed_events`): a recoverable stream
        hands the caller whole events, so that a continuation can follow any of them."""
        data = b"".join(self.replay())
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pending = len(self.scanner.pending)
        return [data[: len(data) - pending]] if len(data) > pending else []

    # --- after the stream was committed -------------------------------------------------------

    def feed(self, chunk: bytes) -> bool:
        """Inspect one chunk of the committed stream; raises when it carries a failure.

        Returns whether an event completed: only events restart the idle limit. SSE comments
        (``: keep-alive``), blank lines and the bytes of an unfinished event do not, so a
        stream that sends nothing but keep-alives ends at the idle limit."""
        scanner = self.scanner
        before = scanner.events
        for piece in self.view(chunk):
            scanner.feed(piece)
        if scanner.failure is not None:
            raise self.interrupted(scanner.failure.kind, scanner.failure.describe())
        return scanner.events != before

    def feed_events(self, chunk: bytes) -> bytes:
        """As :meth:`feed`, returning the complete events that parsed (each ended by a blank
        line) instead of raising: hand them to the caller, then call :meth:`check`."""
        return self.scanner.events_of(chunk)

    def passing(self, chunk: bytes, whole: bool) -> tuple[bytes | None, bool]:
        """One chunk of the committed stream, for either driver: what goes on to the caller
        (``whole``: the complete events only, ``None`` while there is none) and whether an
        event completed (:meth:`feed`). With ``whole``, :meth:`check` once it is handed over."""
        if whole:  # comments pass on with the events, but they are not events
            before = self.scanner.events
            events = self.feed_events(chunk)
            return (events or None), self.scanner.events != before
        return chunk, self.feed(chunk)

    def flush_events(self) -> bytes:
        """The body ended: the bytes of a last event that lacked its closing blank line, as
        they came. The SDK decides (the official ones drop such an event, as the SSE format
        says); :meth:`ended` still reads it for the stream's end."""
        return self.scanner.pending

    def check(self) -> None:
        """Raise the StreamInterrupted of a failure :meth:`feed_events` met."""
        failure = self.scanner.failure
        if failure is not None:
            raise self.interrupted(failure.kind, failure.describe())

    def ended(self) -> None:
        """The upstream body ended cleanly: complete if the finish reason (or the terminal
        event) came, else a truncation."""
        call, scanner = self.call, self.scanner
        scanner.finish()
        if scanner.failure is not None:
            raise self.interrupted(scanner.failure.kind, scanner.failure.describe())
        if not scanner.complete:
            raise self.interrupted(FailureClass.STREAM_INCOMPLETE,
                                   "the stream ended without a finish reason")
        if self.nested:
            return
        self._note_usage()
        call.emit("stream_finished")

    def _note_usage(self) -> None:
        usage = self.billed if self.billed is not None else self.scanner.usage
        if usage is not None:
            self.call.record.usage = usage

    def closed(self) -> None:
        """The caller closed the stream (read to its end, or stopped early): the call is over."""
        record = self.call.record
        if record.finished or self.nested:
            return
        scanner = self.scanner
        self._note_usage()
        self.call.emit("stream_finished", detail="" if scanner.complete else "closed_by_caller")

    def read_failed(self, limit: str | None, exc: BaseException) -> BaseException:
        """A transport error, or a read that ran past ``limit`` (``"deadline"`` or ``"idle"``),
        while reading the committed stream: the error the caller gets."""
        call = self.call
        left = call.remaining()
        if limit == "deadline" or (left is not None and left <= 0):
            interrupted = self.interrupted(FailureClass.STREAM_STALL,
                                           "the call's deadline passed", exc)
            return call.deadline_error(interrupted)
        if limit == "idle" or isinstance(exc, httpx2.TimeoutException):
            return self.interrupted(FailureClass.STREAM_STALL, "no event within the idle limit",
                                    exc)
        return self.interrupted(FailureClass.STREAM_CUT, type(exc).__name__, exc)

    def interrupted(self, kind: FailureClass, message: str,
                    cause: BaseException | None = None) -> StreamInterrupted:
        """The error of a stream that broke after output had started (reported to the call by
        :meth:`report` once nothing recovers it). The failure is kept in :attr:`broke`."""
        call, scanner = self.call, self.scanner
        sent = scanner.failure
        self.broke = sent if sent is not None and sent.kind is kind \
            else Failure(kind, True, message=message)
        call.emit("stream_broke", failure=self.broke)
        error = StreamInterrupted(
            f"stream interrupted after output had started ({kind.value}: {message}); "
            f"{len(scanner.text)} characters of partial text are on the exception",
            partial_text=scanner.text,
            failure=kind.value,
            cause=cause,
            attempts=call.record.attempts,
        )
        # Raised through the SDK's stream iterator, where the official client raises its
        # connection error (its timeout error for a stall; for an error event, the error it
        # raises for that event): handlers for those catch it.
        like = None
        response = self._response() if self._response is not None else None
        if sent is not None and sent.kind is kind and scanner.error_event is not None \
                and response is not None:
            like = stream_error_of(call.record.provider, scanner.error_event, response)
            self.event_error = (kind, like)
        elif self.event_error is not None and self.event_error[0] is kind:
            like = self.event_error[1]  # the break a failed recovery reports again
        return as_sdk_error(error, like, provider=call.record.provider,
                            request=request_of(cause),
                            timed_out=kind is FailureClass.STREAM_STALL)

    def report(self, error: StreamInterrupted) -> StreamInterrupted:
        """The stream ends with ``error``: tell the call (its record and telemetry)."""
        kind = FailureClass(error.failure)
        self.call.emit("stream_interrupted", failure=stream_interruption(kind), detail=kind.value)
        return error


#: How early a read timeout may fire and still be the first-token limit's (timer granularity).
_TIMER_SLACK = 0.01


def _as_is(chunk: bytes) -> tuple[bytes]:
    return (chunk,)


def _failure_exception(failure: Failure, request: httpx2.Request, send: Send) -> Exception:
    """What the SDK sees when a stream fails before any output and no retry is left: an
    error whose message says what happened (the drop-ins show it on the SDK's error)."""
    if failure.kind is FailureClass.FIRST_TOKEN_TIMEOUT:
        return LimitTimeout(
            f"no stream output within the first-token limit of {send.first_token_timeout:.3g} s "
            "(first_token_timeout)", request=request)
    if failure.kind is FailureClass.STREAM_STALL:
        return LimitTimeout(f"no stream output in time ({failure.kind.value})", request=request)
    detail = f": {failure.message}" if failure.message else ""
    return StreamFailedEarly(
        f"the stream failed before any output ({failure.kind.value}{detail})", request=request
    )
