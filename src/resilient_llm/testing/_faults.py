"""What the fault provider does with one request: small frozen values built through ``Fault``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "ErrorEvent",
    "Fault",
    "FirstTokenDelay",
    "Hang",
    "MalformedChunk",
    "MissingTerminator",
    "Ok",
    "Reset",
    "Status",
    "StreamCut",
    "StreamStall",
    "ToolCall",
    "Usage",
]


def _check_seconds(fault: object, name: str, *, allow_inf: bool = False) -> None:
    """Check ``fault.name`` is seconds and store it as a float: the drivers tell a pause
    (a float step) from a cut by its type, so a whole number must not become a cut."""
    value = getattr(fault, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if math.isnan(value) or value < 0 or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    object.__setattr__(fault, name, float(value))  # frozen dataclass


def _check_events(value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"after_events must be a whole number of events, got {value!r}")
    if value is not None and value < 0:
        raise ValueError(f"after_events must be >= 0, got {value!r}")


def _check_text(value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"text must be a string, got {value!r}")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the answer makes after its text: streamed as the API streams it (OpenAI chat:
    ``tool_calls`` deltas, Anthropic: a ``tool_use`` block with ``input_json_delta`` events),
    its ``arguments`` (JSON text) in pieces of eight characters, one content event each."""

    name: str
    arguments: str = "{}"


def _tools(tool_calls: Sequence[ToolCall]) -> tuple[ToolCall, ...]:
    calls = tuple(tool_calls)
    for call in calls:
        if not isinstance(call, ToolCall):
            raise TypeError(f"tool_calls must be ToolCall values, got {call!r}")
    return calls


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token counts to report, so cost and prompt-cache accounting can be tested exactly.

    Mapped to each wire format: OpenAI ``prompt_tokens``/``completion_tokens`` and
    ``prompt_tokens_details.cached_tokens``/``cache_write_tokens`` (Responses:
    ``input_tokens_details``); Anthropic ``input_tokens``/``output_tokens``/
    ``cache_read_input_tokens``/``cache_creation_input_tokens``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """Base of every fault; build them with the ``Fault.*`` constructors, not directly.

    ``delay`` is the number of seconds before the response headers (or the socket action)
    are sent: it models latency and lets tests trip connect-to-first-byte timeouts.
    """

    kind: ClassVar[str] = "fault"
    delay: float = 0.0

    def __post_init__(self) -> None:
        _check_seconds(self, "delay")

    @staticmethod
    def ok(
        *,
        text: str | None = None,
        delay: float = 0.0,
        usage: Usage | Mapping[str, int] | None = None,
        chunk_delay: float = 0.0,
        tool_calls: Sequence[ToolCall] = (),
    ) -> Ok:
        """A normal answer, JSON or SSE as the request asked; ``chunk_delay`` paces SSE events.

        ``usage`` (a ``Usage`` or a dict of its fields) replaces the estimated token counts.
        ``tool_calls`` follow the text (which is then empty unless given).
        """
        if isinstance(usage, Mapping):
            usage = Usage(**usage)
        return Ok(text=text, delay=delay, usage=usage, chunk_delay=chunk_delay,
                  tool_calls=_tools(tool_calls))

    @staticmethod
    def status(
        code: int,
        *,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        message: str | None = None,
        param: str | None = None,
        body: object = None,
        delay: float = 0.0,
    ) -> Status:
        """An error status with a provider-shaped body; type and message default per status.

        ``body`` replaces the generated JSON body entirely when given.
        """
        return Status(
            code=code,
            headers=tuple((headers or {}).items()),
            error_type=error_type,
            error_code=error_code,
            message=message,
            param=param,
            body=body,
            delay=delay,
        )

    @staticmethod
    def context_length_exceeded(*, delay: float = 0.0) -> Status:
        """400 that only a larger-context model can fix (OpenAI code ``context_length_exceeded``,
        Anthropic ``prompt is too long``)."""
        return Fault.status(400, error_code="context_length_exceeded", delay=delay)

    @staticmethod
    def insufficient_quota(*, delay: float = 0.0) -> Status:
        """429 that retrying cannot fix: quota or spend limit exhausted, no ``retry-after``."""
        return Fault.status(429, error_code="insufficient_quota", delay=delay)

    @staticmethod
    def content_policy(*, delay: float = 0.0) -> Status:
        """400 content-policy refusal, which must never be retried or failed over."""
        return Fault.status(400, error_code="content_policy_violation", delay=delay)

    @staticmethod
    def hang(*, delay: float = 0.0) -> Hang:
        """Accept the request and never answer, until the client gives up or the server stops."""
        return Hang(delay=delay)

    @staticmethod
    def reset(*, delay: float = 0.0) -> Reset:
        """Drop the TCP connection abruptly (RST) before any response byte."""
        return Reset(delay=delay)

    @staticmethod
    def stream_cut(
        *, after_events: int = 1, text: str | None = None, delay: float = 0.0,
        tool_calls: Sequence[ToolCall] = (),
    ) -> StreamCut:
        """Send ``after_events`` SSE events of a normal stream, then drop the connection."""
        return StreamCut(after_events=after_events, text=text, delay=delay,
                         tool_calls=_tools(tool_calls))

    @staticmethod
    def stream_stall(
        *,
        after_events: int = 1,
        seconds: float = math.inf,
        text: str | None = None,
        delay: float = 0.0,
        tool_calls: Sequence[ToolCall] = (),
    ) -> StreamStall:
        """Send ``after_events`` events, go silent ``seconds`` (forever by default), then go on."""
        return StreamStall(after_events=after_events, seconds=seconds, text=text, delay=delay,
                           tool_calls=_tools(tool_calls))

    @staticmethod
    def malformed_chunk(
        *, after_events: int = 1, text: str | None = None, delay: float = 0.0,
        tool_calls: Sequence[ToolCall] = (),
    ) -> MalformedChunk:
        """Send ``after_events`` events, then a ``data:`` line of invalid JSON, then the rest."""
        return MalformedChunk(after_events=after_events, text=text, delay=delay,
                              tool_calls=_tools(tool_calls))

    @staticmethod
    def missing_terminator(
        *, after_events: int | None = None, text: str | None = None, delay: float = 0.0,
        tool_calls: Sequence[ToolCall] = (),
    ) -> MissingTerminator:
        """End the stream cleanly but without ``[DONE]``/``message_stop``/``response.completed``.

        With ``after_events`` the stream also stops early, still with a proper chunked end:
        the silent truncation that looks like success to the official SDKs.
        """
        return MissingTerminator(after_events=after_events, text=text, delay=delay,
                                 tool_calls=_tools(tool_calls))

    @staticmethod
    def error_event(
        *,
        after_events: int = 1,
        error_type: str | None = None,
        message: str | None = None,
        text: str | None = None,
        delay: float = 0.0,
    ) -> ErrorEvent:
        """HTTP 200, ``after_events`` events, then a provider error event and a clean end.

        ``error_type`` defaults to ``overloaded_error`` (Anthropic) / ``server_error`` (OpenAI).
        """
        return ErrorEvent(
            after_events=after_events,
            error_type=error_type,
            message=message,
            text=text,
            delay=delay,
        )

    @staticmethod
    def first_token_delay(
        seconds: float, *, text: str | None = None, delay: float = 0.0
    ) -> FirstTokenDelay:
        """Headers and the opening events at once, the first content delta after ``seconds``."""
        return FirstTokenDelay(seconds=seconds, text=text, delay=delay)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ok(Fault):
    """A normal answer; see ``Fault.ok``."""

    kind: ClassVar[str] = "ok"
    text: str | None = None
    usage: Usage | None = None
    chunk_delay: float = 0.0
    tool_calls: tuple[ToolCall, ...] = ()

    def __post_init__(self) -> None:
        Fault.__post_init__(self)
        _check_seconds(self, "chunk_delay")
        _check_text(self.text)
        if self.usage is not None and not isinstance(self.usage, Usage):
            raise TypeError(f"usage must be a Usage, got {self.usage!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Fault):
    """An HTTP error response; see ``Fault.status``."""

    kind: ClassVar[str] = "status"
    code: int
    headers: tuple[tuple[str, str], ...] = ()
    error_type: str | None = None
    error_code: str | None = None
    message: str | None = None
    param: str | None = None
    body: object = field(default=None, compare=False)

    def __post_init__(self) -> None:
        Fault.__post_init__(self)
        if isinstance(self.code, bool) or not isinstance(self.code, int):
            raise TypeError(f"status code must be a whole number, got {self.code!r}")
        if not 200 <= self.code <= 599:
            raise ValueError(f"status code must be in 200..599, got {self.code!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hang(Fault):
    """No answer at all; see ``Fault.hang``."""

    kind: ClassVar[str] = "hang"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reset(Fault):
    """A connection reset before the response; see ``Fault.reset``."""

    kind: ClassVar[str] = "reset"


@dataclass(frozen=True, slots=True, kw_only=True)
class _StreamFault(Fault):
    """Common shape of faults that break a stream after some events."""

    text: str | None = None
    after_events: int | None = 1
    tool_calls: tuple[ToolCall, ...] = ()

    def __post_init__(self) -> None:
        Fault.__post_init__(self)
        _check_events(self.after_events)
        _check_text(self.text)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamCut(_StreamFault):
    """A stream dropped mid-body; see ``Fault.stream_cut``."""

    kind: ClassVar[str] = "stream_cut"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStall(_StreamFault):
    """A stream that goes silent; see ``Fault.stream_stall``."""

    kind: ClassVar[str] = "stream_stall"
    seconds: float = math.inf

    def __post_init__(self) -> None:
        _StreamFault.__post_init__(self)
        _check_seconds(self, "seconds", allow_inf=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class MalformedChunk(_StreamFault):
    """A stream with one undecodable event; see ``Fault.malformed_chunk``."""

    kind: ClassVar[str] = "malformed_chunk"


@dataclass(frozen=True, slots=True, kw_only=True)
class MissingTerminator(_StreamFault):
    """A stream without its terminal event; see ``Fault.missing_terminator``."""

    kind: ClassVar[str] = "missing_terminator"
    after_events: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorEvent(_StreamFault):
    """A provider error inside a 200 stream; see ``Fault.error_event``."""

    kind: ClassVar[str] = "error_event"
    error_type: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstTokenDelay(_StreamFault):
    """A slow first token; see ``Fault.first_token_delay``."""

    kind: ClassVar[str] = "first_token_delay"
    after_events: int | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        _StreamFault.__post_init__(self)
        _check_seconds(self, "seconds")
