"""The tap: the exact bytes of each attempt, for telemetry and for opt-in capture.

A tap sits *under* the resilient transport (the drop-in layer puts it there, see
:func:`~.otel.attach`), so it sees every attempt as it is really sent: after the model rewrite
of a fallback, the idempotency key, the clipped timeouts, the prompt-cache key. It only records
when the telemetry listener armed it for the attempt (cost otherwise: one contextvar read).
What it keeps, in an :class:`Exchange`:

* the request (method, URL, headers, body);
* the response object (JSON bodies are read by the transport anyway) or the error;
* for streams, when capture needs them, a copy of the bytes as they pass (bounded by
  ``MAX_BODY``).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import httpx2

__all__ = ["MAX_BODY", "AsyncTap", "Exchange", "SyncTap", "arm", "disarm"]

log = logging.getLogger("resilient_llm.capture")

#: Bytes of one body kept for capture; longer bodies are cut and marked ``truncated``.
MAX_BODY = 8 * 1024 * 1024


class Exchange:
    """One attempt as sent and as answered."""

    __slots__ = ("error", "request", "response", "stream_bytes", "stream_truncated")

    def __init__(self, request: httpx2.Request) -> None:
        self.request = request
        self.response: httpx2.Response | None = None
        self.error: BaseException | None = None
        self.stream_bytes: bytearray | None = None
        self.stream_truncated = False

    @property
    def is_stream(self) -> bool:
        """True when the answer is a server-sent-events stream."""
        return self.stream_bytes is not None

    def _add(self, chunk: bytes) -> None:
        buffer = self.stream_bytes
        if buffer is None:
            return
        room = MAX_BODY - len(buffer)
        if room <= 0:
            self.stream_truncated = True
            return
        if len(chunk) > room:
            self.stream_truncated = True
            chunk = chunk[:room]
        buffer.extend(chunk)

    def request_body(self) -> bytes | None:
        """The request body, when it was a replayable bytes body."""
        if isinstance(self.request.stream, httpx2.ByteStream):
            return self.request.content
        return None

    def response_body(self) -> bytes | None:
        """The answer's bytes: the JSON body (already read) or the stream seen so far."""
        if self.stream_bytes is not None:
            return bytes(self.stream_bytes)
        response = self.response
        if response is None:
            return None
        try:
            return response.content
        except httpx2.ResponseNotRead:
            return None

    def response_json(self) -> Any:
        """The parsed JSON body of a non-stream answer, or ``None``."""
        if self.stream_bytes is not None:
            return None
        body = self.response_body()
        if not body:
            return None
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None


class _SyncTee(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, exchange: Exchange) -> None:
        self._inner = inner
        self._exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._exchange._add(chunk)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _AsyncTee(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, exchange: Exchange) -> None:
        self._inner = inner
        self._exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._exchange._add(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


# The listener arms the tap for the attempt it is about to see: same thread, same task.
_ARMED: contextvars.ContextVar[Any] = contextvars.ContextVar("resilient_llm_tap", default=None)


def arm(owner: Any) -> None:
    """Record the next attempt in this context into ``owner.exchange`` (streamed bytes too
    when ``owner.tee``)."""
    _ARMED.set(owner)


def disarm() -> None:
    """Forget an armed owner that no attempt used (the attempt never reached the wire)."""
    if _ARMED.get() is not None:
        _ARMED.set(None)


def _take() -> Any:
    owner = _ARMED.get()
    if owner is not None:
        _ARMED.set(None)
    return owner


def _is_sse(response: httpx2.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


@contextlib.contextmanager
def _recorded(owner: Any, request: httpx2.Request) -> Iterator[Exchange]:
    """A new :class:`Exchange` for ``owner``'s attempt; it keeps the error if the send raises."""
    exchange = Exchange(request)
    owner.exchange = exchange
    try:
        yield exchange
    except BaseException as exc:
        exchange.error = exc
        raise


def _answered(owner: Any, exchange: Exchange, response: httpx2.Response, stream_type: type,
              tee: Callable[[Any, Exchange], Any]) -> None:
    """Keep the response in ``exchange``; copy a streamed one as it is read (capture only).

    Only the wrapped transport's exceptions may come out of a tap: the resilient transport above
    it retries some foreign exceptions as connection failures (``retry_exceptions``), and a
    telemetry bug must never be mistaken for one, nor break the call. So a failure here is
    logged and the response handed on untouched.
    """
    exchange.response = response
    try:
        if owner.tee and _is_sse(response) and isinstance(response.stream, stream_type):
            exchange.stream_bytes = bytearray()
            response.stream = tee(response.stream, exchange)
    except Exception:
        log.exception("resilient_llm: capture of a streamed response failed; the call goes on")


class SyncTap(httpx2.BaseTransport):
    """Wraps the transport under :class:`~resilient_llm.ResilientTransport`; see module doc."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        owner = _take()
        if owner is None:
            return self.inner.handle_request(request)
        with _recorded(owner, request) as exchange:
            response = self.inner.handle_request(request)
        _answered(owner, exchange, response, httpx2.SyncByteStream, _SyncTee)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncTap(httpx2.AsyncBaseTransport):
    """The async twin of :class:`SyncTap`."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner

    def handle_async_request(
        self, request: httpx2.Request
    ) -> Coroutine[Any, Any, httpx2.Response]:
        """The inner transport's own coroutine when the attempt is not recorded (the common
        case: no frame of the tap's between the driver and the wire while it waits)."""
        owner = _take()
        if owner is None:
            return self.inner.handle_async_request(request)
        return self._recorded(owner, request)

    async def _recorded(self, owner: Any, request: httpx2.Request) -> httpx2.Response:
        with _recorded(owner, request) as exchange:
            response = await self.inner.handle_async_request(request)
        _answered(owner, exchange, response, httpx2.AsyncByteStream, _AsyncTee)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
