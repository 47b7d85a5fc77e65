"""An incremental server-sent-events scanner that tracks what a stream has delivered.

It sees the same bytes the SDK will parse and answers the questions the engine needs: has
output started (the commit point, after which a failure cannot be retried transparently), did
the stream deliver its end (a finish reason, or its terminal event), did an error event or a
malformed event arrive, and what text had been delivered when it failed.

Completion is the finish reason, not the sentinel: a chat stream whose every choice carried a
``finish_reason`` (an Anthropic stream whose ``message_delta`` carried a ``stop_reason``) is
complete even when ``data: [DONE]`` (``message_stop``) never comes, as the official SDKs treat
it. A stream that ends without either is a truncation. Only events count (``events``): SSE
comments such as ``: keep-alive`` and blank lines are not events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ..engine.classify import Failure, FailureClass

__all__ = ["Part", "StreamScanner", "Wire", "event_fields"]


def event_fields(text: str) -> tuple[str | None, str | None]:
    """One server-sent event block's ``event`` name and its ``data`` lines joined (``None``
    when it has none: a comment or keep-alive), as the SSE format defines them."""
    name: str | None = None
    lines: list[str] = []
    for line in text.split("\n"):
        if not line or line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if key == "data":
            lines.append(value)
        elif key == "event":
            name = value
    return name, ("\n".join(lines) if lines else None)


class Wire(Protocol):
    """What a provider's stream events mean."""

    name: str

    def inspect(self, event: str | None, data: str, scanner: StreamScanner) -> None:
        """Update ``scanner`` for one event (mark content, terminal, failure, text, usage)."""
        ...


@dataclass(slots=True)
class Part:
    """One output of a stream, in the order outputs began: its key on the wire, its kind
    (``text``, ``tool``, ``other``), a tool's name, and the text it carried so far."""

    key: object
    kind: str
    name: str | None = None
    pieces: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(slots=True)
class StreamScanner:
    """Feed it the stream's bytes; read ``committed``, ``complete``, ``failure``, ``text``.

    ``terminal`` is the provider's end-of-stream event (``[DONE]``, ``message_stop``,
    ``response.completed``); ``finished`` is the finish reason (every choice's, or the
    message's stop reason); ``choices`` maps each chat choice seen to whether it finished.

    What stream recovery needs to know of the output so far: ``parts``, each output in order
    (text, or a tool call's arguments), ``resumable`` (false once an output arrived that cannot
    be verified or continued: thinking, reasoning, a refusal, outputs that interleave),
    ``deltas`` its content events (an estimate of its tokens), ``sequence`` the last Responses
    ``sequence_number`` and ``ids`` the Responses ``response`` id and the first output ``item``
    id (a continuation must keep them).
    """

    #: Can stream recovery splice this framing event by event (server-sent events can)?
    splices: ClassVar[bool] = True

    wire: Wire
    committed: bool = False
    terminal: bool = False
    finished: bool = False
    failure: Failure | None = None
    usage: Any = None
    events: int = 0
    choices: dict[int, bool] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    resumable: bool = True
    deltas: int = 0
    sequence: int | None = None
    ids: dict[str, str] = field(default_factory=dict)
    #: The error event that failed the stream (its parsed data), when one did: the drop-ins
    #: raise the SDK's own error for it, as the official client does.
    error_event: Any = None
    #: The wire recognised an event of this stream as one of the kinds it knows.
    known: bool = False
    #: A stream of another kind (another endpoint's events: transcriptions, speech, images,
    #: Assistants runs): committed at its first event and judged by nothing after it, as the
    #: official SDKs judge it (no finish reason is expected, and nothing is resumed).
    opaque: bool = False
    _buffer: bytes = b""

    def feed(self, chunk: bytes) -> None:
        """Parse every complete event in ``chunk`` (plus what was buffered before)."""
        self.events_of(chunk)

    def events_of(self, chunk: bytes) -> bytes:
        """As :meth:`feed`, returning the complete events of ``chunk`` (with what was buffered
        before) that parsed without a failure, each ended by a blank line: the bytes that may
        reach the caller when output must stop exactly at an event's end. An unfinished event
        stays buffered; the event that failed, and anything after it, is not returned.

        Line ends are CRLF, LF or CR, as the SSE format allows: a chunk that ends with a CR
        keeps it until the next one shows whether an LF follows (one CRLF read in two chunks
        is one line end, not a blank line that ends the event)."""
        data = self._buffer + chunk if self._buffer else chunk
        held = b""
        if b"\r" in data:
            if data.endswith(b"\r"):
                data, held = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, rest = data.split(b"\n\n")
        self._buffer = rest + held
        for n, block in enumerate(blocks):
            if block:
                self._event(block)
            if self.failure is not None:
                return b"\n\n".join(blocks[:n]) + b"\n\n" if n else b""
        return data[: len(data) - len(rest)] if rest else data

    def _event(self, block: bytes) -> None:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(FailureClass.STREAM_MALFORMED, "event is not UTF-8")
            return
        name, data = event_fields(text)
        if data is None:
            return
        self.events += 1
        self.wire.inspect(name, data, self)

    # --- used by the wires --------------------------------------------------------------------

    def add_text(self, text: str, key: object = 0) -> None:
        self.output(key, "text", text)

    def output(self, key: object, kind: str, piece: str | None = None,
               name: str | None = None) -> None:
        """Output ``key`` (a choice's content, a tool call, a content block) of ``kind``
        (``text``, ``tool`` or ``other``) named ``name`` began (``piece`` is ``None``: its
        opening event, not output yet) or carried ``piece`` (a content event)."""
        parts = self.parts
        last = parts[-1] if parts else None
        if piece is not None:
            self.committed = True
            self.deltas += 1
        if last is not None and last.key == key:
            if piece:
                last.pieces.append(piece)
            if name and not last.name:
                last.name = name
            return
        if kind == "other" or any(part.key == key for part in parts):
            self.resumable = False  # not verifiable, or outputs interleave
        parts.append(Part(key, kind, name, [piece] if piece else []))

    @property
    def plain(self) -> bool:
        """The output so far is one text: a prefill can continue it."""
        parts = self.parts
        return self.resumable and len(parts) == 1 and parts[0].kind == "text"

    def recognised(self) -> None:
        """The wire knows this event's kind: the stream is one it can judge."""
        self.known = True

    def unknown(self) -> None:
        """The wire does not know this event's kind. A stream whose first event is such is of
        another kind (:attr:`opaque`); later ones are ignored."""
        if not self.known:
            self.opaque = self.committed = True
            self.resumable = False

    def fail(self, kind: FailureClass, message: str) -> None:
        self.failure = Failure(kind=kind, retryable=True, message=message)

    def parse(self, data: str) -> Any:
        """JSON of one event's data, or ``None`` after marking the stream malformed."""
        try:
            return json.loads(data)
        except ValueError:
            self.fail(FailureClass.STREAM_MALFORMED, "event data is not valid JSON")
            return None

    @property
    def complete(self) -> bool:
        """The stream delivered its end: a finish reason or its terminal event (a stream of a
        kind the wire does not know ends where its body ends)."""
        return self.terminal or self.finished or self.opaque

    @property
    def pending(self) -> bytes:
        """The bytes of an event that has not finished arriving."""
        return self._buffer

    def resume(self) -> None:
        """A continuation follows: forget the failure and the unfinished event of the break."""
        self.failure = None
        self._buffer = b""

    @property
    def text(self) -> str:
        """All text delivered so far."""
        return "".join(piece for part in self.parts if part.kind == "text"
                       for piece in part.pieces)

    def finish(self) -> None:
        """The byte stream ended: parse what is left and note a missing terminal event."""
        if self._buffer.strip() and self.failure is None:
            rest, self._buffer = self._buffer, b""
            self._event(rest)
