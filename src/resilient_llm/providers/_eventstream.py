"""Amazon's binary event-stream framing (``application/vnd.amazon.eventstream``), sans I/O.

Bedrock's ``invoke-with-response-stream`` answers in frames, not server-sent events::

    total length (4) | headers length (4) | prelude CRC32 (4) | headers | payload | CRC32 (4)

Each header is a name (1-byte length), a type byte and a value; ``:message-type`` says
``event`` (``:event-type: chunk``, payload ``{"bytes": base64(one Messages stream event)}``),
``exception`` (``:exception-type: throttlingException``, payload ``{"message": ...}``) or
``error`` (``:error-code`` / ``:error-message`` headers).

:class:`EventStreamDecoder` parses frames from bytes as they arrive, however the transport
splits them, and both drivers feed it the same way through :class:`EventStreamScanner`, the
event-stream twin of the server-sent-events :class:`~._sse.StreamScanner`: the Messages events
inside the frames go through the same wire knowledge (output, completion, usage), and an
exception frame, a CRC mismatch or a body that ends inside a frame becomes the same
:class:`~resilient_llm.engine.classify.Failure` an SSE stream's fault would
(built in :mod:`resilient_llm.engine.classify`). :func:`encode_message` is the inverse (the
fault provider speaks Bedrock with it).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from ..engine.classify import (
    FailureClass,
    classify_event_stream_exception,
    event_stream_corrupt,
    event_stream_cut,
)
from ._sse import StreamScanner

__all__ = [
    "CONTENT_TYPE",
    "EventStreamDecoder",
    "EventStreamScanner",
    "FramingError",
    "Message",
    "encode_message",
    "is_aws_event_stream",
]

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_PRELUDE = 12  # total length, headers length, prelude CRC
_OVERHEAD = _PRELUDE + 4  # plus the message CRC
#: The largest frame and header block the format allows (as AWS's own decoders enforce).
MAX_MESSAGE = 16 * 1024 * 1024
MAX_HEADERS = 128 * 1024

HeaderValue = bool | int | bytes | str


def is_aws_event_stream(content_type: str) -> bool:
    """Is a response's ``Content-Type`` Amazon's binary event-stream framing?"""
    return content_type.lower().startswith(CONTENT_TYPE)


class FramingError(ValueError):
    """A frame that cannot be read: a CRC mismatch, impossible lengths, a bad header."""


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded frame: its headers (by name) and its payload bytes."""

    headers: Mapping[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str | None:
        """A string header's value (``None`` when absent or not a string)."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


def _crc(data: bytes | memoryview, start: int = 0) -> int:
    return binascii.crc32(data, start) & 0xFFFFFFFF


#: Fixed-size header value types: type byte → their compiled struct.
_FIXED = {kind: struct.Struct(fmt)
          for kind, fmt in {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}.items()}


def _headers(block: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    at, end = 0, len(block)
    try:
        while at < end:
            size = block[at]
            name = block[at + 1: at + 1 + size].decode("utf-8")
            at += 1 + size
            kind = block[at]
            at += 1
            value: HeaderValue
            if kind in (0, 1):
                value = kind == 0
            elif kind in _FIXED:
                fixed = _FIXED[kind]
                value = fixed.unpack_from(block, at)[0]
                at += fixed.size
            elif kind in (6, 7):
                (length,) = struct.unpack_from(">H", block, at)
                raw = block[at + 2: at + 2 + length]
                if len(raw) != length:
                    raise FramingError("a header value runs past its block")
                value = raw.decode("utf-8") if kind == 7 else bytes(raw)
                at += 2 + length
            elif kind == 9:
                value = bytes(block[at: at + 16])
                at += 16
            else:
                raise FramingError(f"unknown header value type {kind}")
            if at > end:
                raise FramingError("a header value runs past its block")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise FramingError(f"a header cannot be read ({type(exc).__name__})") from exc
    return headers


class EventStreamDecoder:
    """Frames from bytes fed in pieces of any size: :meth:`feed` returns the frames the bytes
    so far complete and keeps the rest. A corrupt frame raises :class:`FramingError`, and so
    does every later :meth:`feed` (nothing after a broken frame can be trusted)."""

    __slots__ = ("_broken", "_buffer")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._broken: FramingError | None = None

    @property
    def pending(self) -> int:
        """Bytes of a frame that has not finished arriving."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        if self._broken is not None:
            raise self._broken
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        try:
            while len(buffer) >= _PRELUDE:
                total, header_size, prelude_crc = struct.unpack_from(">III", buffer)
                if _crc(bytes(buffer[:8])) != prelude_crc:
                    raise FramingError("prelude CRC mismatch")
                if total < _OVERHEAD + header_size or total > MAX_MESSAGE \
                        or header_size > MAX_HEADERS:
                    raise FramingError(f"impossible frame lengths ({total}, {header_size})")
                if len(buffer) < total:
                    break
                frame = bytes(buffer[:total])
                del buffer[:total]
                (message_crc,) = struct.unpack_from(">I", frame, total - 4)
                if _crc(frame[: total - 4]) != message_crc:
                    raise FramingError("message CRC mismatch")
                headers = _headers(frame[_PRELUDE: _PRELUDE + header_size])
                messages.append(Message(headers, frame[_PRELUDE + header_size: total - 4]))
        except FramingError as exc:
            self._broken = exc
            buffer.clear()
            raise
        return messages


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One frame with string ``headers`` and ``payload`` (the inverse of the decoder)."""
    block = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
        block += struct.pack(">B", len(raw_name)) + raw_name
        block += struct.pack(">BH", 7, len(raw_value)) + raw_value
    total = _OVERHEAD + len(block) + len(payload)
    prelude = struct.pack(">II", total, len(block))
    head = prelude + struct.pack(">I", _crc(prelude))
    body = head + bytes(block) + payload
    return body + struct.pack(">I", _crc(body))


@dataclass(slots=True)
class EventStreamScanner(StreamScanner):
    """A :class:`~._sse.StreamScanner` for the binary framing: every frame is an event (the
    idle limit restarts on it), the Messages event in a ``chunk`` frame is read by the wire as
    its SSE twin would be, and a broken frame or an exception frame is the stream's failure."""

    splices: ClassVar[bool] = False  # stream recovery splices server-sent events only

    _decoder: EventStreamDecoder = field(default_factory=EventStreamDecoder)

    def feed(self, chunk: bytes) -> None:
        if self.failure is not None:
            return
        try:
            messages = self._decoder.feed(chunk)
        except FramingError as exc:
            self.failure = event_stream_corrupt(str(exc))
            return
        for message in messages:
            self._message(message)
            if self._failed():
                return

    def _failed(self) -> bool:
        return self.failure is not None

    def events_of(self, chunk: bytes) -> bytes:
        """Not used: a binary stream is never spliced (stream recovery reads SSE only)."""
        raise TypeError("an event-stream response is not recovered event by event")

    def _message(self, message: Message) -> None:
        self.events += 1
        kind = message.header(":message-type") or "event"
        if kind == "exception":
            self.failure = classify_event_stream_exception(
                message.header(":exception-type"), _message_of(message.payload))
        elif kind == "error":
            self.failure = classify_event_stream_exception(
                message.header(":error-code"), message.header(":error-message"))
        elif message.header(":event-type") == "chunk":
            text = _chunk_text(message.payload)
            if text is None:
                self.fail(FailureClass.STREAM_MALFORMED, "chunk payload is not base64 JSON")
            else:
                self.wire.inspect(None, text, self)

    @property
    def pending(self) -> bytes:
        return b""  # frames are not handed out in pieces (see events_of)

    def resume(self) -> None:
        self.failure = None
        self._decoder = EventStreamDecoder()

    def finish(self) -> None:
        """The body ended: inside a frame it was cut."""
        if self.failure is None and self._decoder.pending:
            self.failure = event_stream_cut()


def _chunk_text(payload: bytes) -> str | None:
    """The Messages event a ``chunk`` frame carries (``{"bytes": base64(json)}``)."""
    try:
        outer = json.loads(payload)
        raw = outer.get("bytes") if isinstance(outer, dict) else None
        return base64.b64decode(raw, validate=True).decode("utf-8") \
            if isinstance(raw, str) else None
    except (ValueError, UnicodeDecodeError):
        return None


def _message_of(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict):
        message = data.get("message", data.get("Message"))
        return message if isinstance(message, str) else None
    return None
