"""The exact bytes of each attempt, for telemetry and for opt-in replayable capture.

A tap sits *under* the resilient transport, so it sees every attempt as it is really sent:
after the model rewrite of a fallback, the idempotency key, the clipped timeouts, the
prompt-cache key. It only records when the telemetry listener armed it for the attempt
(cost otherwise: one contextvar read). What it keeps:

* the request (method, URL, headers minus credentials, body);
* the response object (JSON bodies are read by the transport anyway) or the error;
* for streams, when capture needs them, a copy of the bytes as they pass (bounded by
  ``MAX_BODY``).

:class:`Sink` appends one JSON line per logical call to ``RESILIENT_LLM_CAPTURE_FILE``; the
``replay`` command re-sends those requests. Credentials never reach a line: credential headers
are dropped, and any credential value seen in them is masked wherever it appears.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import httpx2

__all__ = [
    "MAX_BODY",
    "REDACTED",
    "AsyncTap",
    "Exchange",
    "Sink",
    "SyncTap",
    "arm",
    "disarm",
    "redact_text",
    "safe_headers",
    "sink_for",
]

log = logging.getLogger("resilient_llm.capture")

#: Bytes of one body kept for capture; longer bodies are cut and marked ``truncated``.
MAX_BODY = 8 * 1024 * 1024
REDACTED = "[REDACTED]"

_CREDENTIAL_HEADERS = frozenset({
    "authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie",
    "x-goog-api-key", "ocp-apim-subscription-key",
})
_CREDENTIAL_WORDS = ("secret", "token", "password", "passwd", "apikey", "api-key", "api_key",
                     "credential", "session", "auth")
# Common credential shapes, masked in captured content (the exact values seen in credential
# headers are masked too, whatever their shape).
_CREDENTIAL_TEXT = re.compile(
    r"(?:sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,})"
    r"|(?:(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*)"
    r"|(?:AKIA[0-9A-Z]{16})"
    r"|(?:AIza[0-9A-Za-z_\-]{30,})"
    r"|(?:gh[pousr]_[A-Za-z0-9]{30,})"
)
_MIN_SECRET = 8
_MAX_SECRETS = 256
_secrets: dict[str, None] = {}  # insertion-ordered set of credential values seen
_secrets_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None


def _is_credential_header(name: str) -> bool:
    lowered = name.lower()
    if lowered in _CREDENTIAL_HEADERS:
        return True
    if lowered == "idempotency-key":  # an identifier, not a credential
        return False
    return any(word in lowered for word in _CREDENTIAL_WORDS)


def _remember_secret(value: str) -> None:
    global _secret_pattern
    token = value.split(None, 1)[-1].strip() if value.lower().startswith("bearer") else value
    token = token.strip()
    if len(token) < _MIN_SECRET or token in _secrets:
        return
    with _secrets_lock:
        _secrets[token] = None
        while len(_secrets) > _MAX_SECRETS:
            del _secrets[next(iter(_secrets))]
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def safe_headers(headers: httpx2.Headers | Mapping[str, str]) -> dict[str, str]:
    """Headers without credentials (their values are remembered so they can be masked)."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        if _is_credential_header(name):
            _remember_secret(value)
            continue
        kept[name.lower()] = value
    return kept


def redact_text(text: str, *, patterns: bool = True) -> str:
    """``text`` with every credential value seen so far masked (and, with ``patterns``, any
    string shaped like a common API key or bearer token)."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    if patterns:
        text = _CREDENTIAL_TEXT.sub(REDACTED, text)
    return text


# --- one attempt ---------------------------------------------------------------------------------


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


def _tee(owner: Any, exchange: Exchange, response: httpx2.Response, stream_type: type,
         tee: Callable[[Any, Exchange], Any]) -> None:
    """Copy a streamed answer into ``exchange`` as it is read (capture only).

    Only the wrapped transport's exceptions may come out of a tap: the resilient transport above
    it retries some foreign exceptions as connection failures (``retry_exceptions``), and a
    telemetry bug must never be mistaken for one, nor break the call. So a failure here is
    logged and the response handed on untouched.
    """
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
        exchange = Exchange(request)
        owner.exchange = exchange
        try:
            response = self.inner.handle_request(request)
        except BaseException as exc:
            exchange.error = exc
            raise
        exchange.response = response
        _tee(owner, exchange, response, httpx2.SyncByteStream, _SyncTee)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncTap(httpx2.AsyncBaseTransport):
    """The async twin of :class:`SyncTap`."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        owner = _take()
        if owner is None:
            return await self.inner.handle_async_request(request)
        exchange = Exchange(request)
        owner.exchange = exchange
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            exchange.error = exc
            raise
        exchange.response = response
        _tee(owner, exchange, response, httpx2.AsyncByteStream, _AsyncTee)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- the JSONL sink ------------------------------------------------------------------------------


def _body_fields(body: bytes | None, *, truncated: bool = False) -> dict[str, Any]:
    """A body as JSON when it parses, else as (masked) text."""
    if body is None:
        return {}
    text = body.decode("utf-8", errors="replace")
    fields: dict[str, Any] = {}
    try:
        fields["body"] = json.loads(redact_text(text, patterns=False))
    except ValueError:
        fields["body_text"] = redact_text(text, patterns=False)
    if truncated:
        fields["truncated"] = True
    return fields


_Fields = dict[str, Any] | None


def exchange_fields(exchange: Exchange | None) -> tuple[_Fields, _Fields, _Fields]:
    """(request, response, error) of ``exchange`` as JSON-ready dicts, credentials removed."""
    if exchange is None:
        return None, None, None
    req = exchange.request
    request: dict[str, Any] = {
        "method": req.method,
        "url": str(req.url),
        "headers": safe_headers(req.headers),
        **_body_fields(exchange.request_body()),
    }
    response: dict[str, Any] | None = None
    if exchange.response is not None:
        resp = exchange.response
        response = {"status": resp.status_code, "headers": safe_headers(resp.headers)}
        body = exchange.response_body()
        if exchange.is_stream:
            response["stream"] = redact_text(
                (body or b"").decode("utf-8", errors="replace"), patterns=False
            )
            if exchange.stream_truncated:
                response["truncated"] = True
        else:
            response.update(_body_fields(body))
    error: dict[str, Any] | None = None
    if exchange.error is not None:
        error = {"type": type(exchange.error).__name__,
                 "message": redact_text(str(exchange.error))[:2000]}
    return request, response, error


class Sink:
    """Appends JSON lines to one file; thread-safe; a failing disk never fails a call."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self._lock = threading.Lock()
        self._failed = False

    def write(self, line: Mapping[str, Any]) -> None:
        """Append ``line`` (one JSON object) and flush it."""
        text = json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            try:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(text)
            except OSError as exc:
                if not self._failed:
                    self._failed = True
                    log.warning("resilient_llm capture: cannot write %s (%s); captured calls "
                                "are being dropped", self.path, exc.strerror or exc)
                return
        self._failed = False


_sinks: dict[str, Sink] = {}
_sinks_lock = threading.Lock()


def sink_for(path: str) -> Sink:
    """The one sink of ``path`` in this process (so concurrent clients share one lock)."""
    key = os.path.abspath(os.path.expanduser(path))
    with _sinks_lock:
        sink = _sinks.get(key)
        if sink is None:
            sink = _sinks[key] = Sink(key)
        return sink


def utc_now() -> str:
    """The current time, ISO 8601 in UTC with microseconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


__all__ += ["exchange_fields", "utc_now"]
