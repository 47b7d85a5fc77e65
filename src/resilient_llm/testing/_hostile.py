"""A hostile provider: a loopback HTTP server that attacks the client instead of failing politely.

Where :class:`FaultProvider` plays a provider having a bad day (429s, resets, stalls),
:class:`HostileProvider` plays a broken or malicious upstream, byte by byte on a real socket:
headers and bodies dripped one byte at a time, 200s that are not JSON, gzip bodies and gzip
bombs, a ``Content-Length`` of 100 GB, streams that send nothing but keep-alive comments,
gzip-compressed SSE and absurd rate-limit headers, on a fresh connection or on one kept alive
after a good answer (the connection a client's pool reuses). Point any client at ``server.base_url``
(OpenAI paths under ``/v1``, Anthropic's ``/v1/messages``) and check that every wait ends by
your deadline and memory stays bounded.

Every behaviour is bounded: a server loop ends when the client goes away, when the server
closes, or after ``max_seconds`` (default 120 s), so a test that forgets its deadline still
ends.
"""

from __future__ import annotations

import itertools
import json
import math
import socket
import socketserver
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

__all__ = ["Hostile", "HostileProvider"]

Kind = Literal[
    "ok", "drip_headers", "drip_body", "not_json", "gzip", "gzip_bomb", "huge_content_length",
    "keepalive_stream", "gzip_stream", "absurd_rate_limits",
]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Hostile:
    """One scripted answer; build it with the class methods below."""

    kind: Kind
    interval: float = 0.0
    size: int = 0
    events: int = 0
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    keep_alive: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.interval, bool) or not isinstance(self.interval, (int, float)) \
                or not 0 <= self.interval < math.inf:
            raise ValueError(f"interval must be a finite number of seconds >= 0, got "
                             f"{self.interval!r}")
        for name in ("size", "events"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")

    @classmethod
    def ok(cls, *, keep_alive: bool = False) -> Hostile:
        """A well-formed answer (the default when nothing is scripted). With ``keep_alive``
        the connection stays open and the next request on it gets the next scripted answer:
        how to attack a connection the client's pool reuses (every other answer closes its
        connection)."""
        return cls("ok", keep_alive=keep_alive)

    @classmethod
    def drip_headers(cls, interval: float = 0.5) -> Hostile:
        """A valid answer whose status line and headers arrive one byte per ``interval``."""
        return cls("drip_headers", interval=interval)

    @classmethod
    def drip_body(cls, interval: float = 0.5) -> Hostile:
        """Headers at once, then a valid JSON body one byte per ``interval``."""
        return cls("drip_body", interval=interval)

    @classmethod
    def not_json(cls, *, content_type: str = "text/html; charset=utf-8",
                 interval: float = 0.0) -> Hostile:
        """A 200 whose body is an HTML page (``content_type=""`` sends no content type),
        optionally dripped one byte per ``interval``."""
        return cls("not_json", interval=interval, content_type=content_type)

    @classmethod
    def gzip(cls) -> Hostile:
        """A valid answer sent with ``Content-Encoding: gzip``."""
        return cls("gzip")

    @classmethod
    def gzip_bomb(cls, size: int = 1024**3) -> Hostile:
        """A ``Content-Encoding: gzip`` body of about ``size / 1000`` bytes that inflates to
        ``size`` bytes of zeros (1 GiB by default)."""
        return cls("gzip_bomb", size=size)

    @classmethod
    def huge_content_length(cls, size: int = 100 * 1024**3, interval: float = 0.0) -> Hostile:
        """Declares ``Content-Length: size`` (100 GB) and sends zeros, in 64 KiB blocks every
        ``interval`` seconds, for as long as the client reads."""
        return cls("huge_content_length", size=size, interval=interval)

    @classmethod
    def keepalive_stream(cls, interval: float = 0.5, *, after_events: int = 0) -> Hostile:
        """An SSE 200 that sends only ``: keep-alive`` comments, one per ``interval``; with
        ``after_events``, the first events of a valid stream come first (chat: 1 is the first
        output, Anthropic: 3), so the comments arrive once output has started."""
        if after_events < 0:
            raise ValueError(f"after_events must be >= 0, got {after_events!r}")
        return cls("keepalive_stream", interval=interval, events=after_events)

    @classmethod
    def gzip_stream(cls) -> Hostile:
        """A complete, valid SSE stream sent with ``Content-Encoding: gzip``."""
        return cls("gzip_stream")

    @classmethod
    def absurd_rate_limits(cls, status: int = 200,
                           headers: dict[str, str] | None = None) -> Hostile:
        """A valid answer (or an error ``status``) with rate-limit and ``Retry-After`` headers
        no real provider sends: negative, huge, NaN, far-future dates, garbage."""
        chosen = headers if headers is not None else ABSURD_HEADERS
        return cls("absurd_rate_limits", size=status, headers=tuple(chosen.items()))


#: The default absurd headers of :meth:`Hostile.absurd_rate_limits`.
ABSURD_HEADERS: dict[str, str] = {
    "retry-after": "1e308",
    "retry-after-ms": "-5",
    "x-ratelimit-limit-requests": "nan",
    "x-ratelimit-remaining-requests": "-1e308",
    "x-ratelimit-reset-requests": "99999999999h",
    "x-ratelimit-limit-tokens": "1e309",
    "x-ratelimit-remaining-tokens": "٣",
    "x-ratelimit-reset-tokens": "²s",
    "anthropic-ratelimit-requests-limit": "0",
    "anthropic-ratelimit-requests-remaining": "18446744073709551616",
    "anthropic-ratelimit-requests-reset": "9999-12-31T23:59:59Z",
    "anthropic-ratelimit-tokens-reset": "0001-01-01T00:00:00",
}


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = field(default=None)
    connection: int = 0


class HostileProvider:
    """A loopback server answering each request with the next scripted :class:`Hostile`.

    ``with HostileProvider() as server:`` starts it on a free port of 127.0.0.1 and stops it
    (ending every connection) on exit. ``server.requests`` lists what was received; each
    request's ``connection`` numbers the connection it came on (1, 2, ... in accept order).
    """

    def __init__(self, *, max_seconds: float = 120.0) -> None:
        if not 0 < max_seconds < math.inf:
            raise ValueError(f"max_seconds must be finite and > 0, got {max_seconds!r}")
        self.max_seconds = max_seconds
        self.requests: list[_Request] = []
        self._script: deque[Hostile] = deque()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None
        self._bombs: dict[int, bytes] = {}
        self._connections = itertools.count(1)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> HostileProvider:
        """Start serving on a free loopback port (idempotent)."""
        if self._server is None:
            provider = self

            class Handler(socketserver.BaseRequestHandler):
                def handle(self) -> None:
                    provider._handle(self.request)

            server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, daemon=True,
                                            name="resilient-llm-hostile")
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; every connection in progress ends within one interval."""
        self._closed.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HostileProvider:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the hostile provider is not running: use start() or `with`")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the OpenAI base URL (Anthropic: drop ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *answers: Hostile) -> None:
        """Queue answers for the next requests, in order; afterwards requests get ``ok``."""
        with self._lock:
            self._script.extend(answers)

    # --- serving ------------------------------------------------------------------------------

    def _next(self) -> Hostile:
        with self._lock:
            return self._script.popleft() if self._script else Hostile.ok()

    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(5.0)
        connection = next(self._connections)
        try:
            while not self._closed.is_set():
                request = _read_request(sock)
                if request is None:
                    return
                request.connection = connection
                self.requests.append(request)
                plan = self._next()
                self._answer(sock, request, plan)
                if not plan.keep_alive:
                    return
        except OSError:
            pass  # the client went away: that is what a hostile provider hopes for

    def _answer(self, sock: socket.socket, request: _Request, plan: Hostile) -> None:
        anthropic = request.path.endswith("/messages")
        stream = isinstance(request.json, dict) and bool(request.json.get("stream"))
        ends = time.monotonic() + self.max_seconds
        kind = plan.kind
        if kind in ("keepalive_stream", "gzip_stream") or (stream and kind == "ok"):
            body = _sse_body(anthropic)
            head = _head(200, [("content-type", "text/event-stream")], chunked=True,
                         gzip=kind == "gzip_stream", close=not plan.keep_alive)
            sock.sendall(head)
            if kind == "keepalive_stream":
                first = body.split(b"\n\n")[: plan.events]
                if first:
                    sock.sendall(_chunk(b"".join(event + b"\n\n" for event in first)))
                while not self._over(ends):
                    sock.sendall(_chunk(b": keep-alive\n\n"))
                    self._pause(min(plan.interval, max(0.0, ends - time.monotonic())))
                return
            payload = _gzip(body) if kind == "gzip_stream" else body
            sock.sendall(_chunk(payload) + b"0\r\n\r\n")
            return
        body = json.dumps(_answer(anthropic)).encode()
        if kind == "huge_content_length":
            sock.sendall(_head(200, [("content-type", "application/json")], length=plan.size))
            block, sent = bytes(65536), 0
            while sent < plan.size and not self._over(ends):
                sock.sendall(block[: min(len(block), plan.size - sent)])
                sent += len(block)
                self._pause(min(plan.interval, max(0.0, ends - time.monotonic())))
            return
        if kind == "not_json":
            page = b"<html><body><h1>502 Bad Gateway</h1>" + b" " * 200 + b"</body></html>"
            headers = [("content-type", plan.content_type)] if plan.content_type else []
            if self._drip(sock, _head(200, headers, length=len(page)), 0.0, ends):
                self._drip(sock, page, plan.interval, ends)
            return
        if kind in ("gzip", "gzip_bomb"):
            payload = _gzip(body) if kind == "gzip" else self._bomb(plan.size)
            sock.sendall(_head(200, [("content-type", "application/json"),
                                     ("content-encoding", "gzip")], length=len(payload)))
            sock.sendall(payload)
            return
        status = plan.size if kind == "absurd_rate_limits" else 200
        if status != 200:
            body = json.dumps({"error": {"message": "rate limited", "type": "rate_limit_error",
                                         "code": "rate_limit_exceeded"}}).encode()
        head = _head(status, [("content-type", "application/json"), *plan.headers],
                     length=len(body), close=not plan.keep_alive)
        if self._drip(sock, head, plan.interval if kind == "drip_headers" else 0.0, ends):
            self._drip(sock, body, plan.interval if kind == "drip_body" else 0.0, ends)

    def _drip(self, sock: socket.socket, data: bytes, interval: float, ends: float) -> bool:
        """Send ``data``, one byte per ``interval``; ``False`` when ``max_seconds`` (or the
        server's close) stopped it first: what follows must not be sent after a cut."""
        if interval <= 0:
            sock.sendall(data)
            return True
        for i in range(len(data)):
            if self._over(ends):
                return False
            sock.sendall(data[i:i + 1])
            self._pause(min(interval, max(0.0, ends - time.monotonic())))
        return not self._over(ends)

    def _over(self, ends: float) -> bool:
        return self._closed.is_set() or time.monotonic() >= ends

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._closed.wait(seconds)

    def _bomb(self, size: int) -> bytes:
        with self._lock:
            cached = self._bombs.get(size)
        if cached is None:
            packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip container
            block = bytes(1024 * 1024)
            parts, left = [], size
            while left > 0:
                parts.append(packer.compress(block[: min(left, len(block))]))
                left -= len(block)
            parts.append(packer.flush())
            cached = b"".join(parts)
            with self._lock:
                self._bombs[size] = cached
        return cached


# --- HTTP, minimal and on purpose ----------------------------------------------------------------


def _read_request(sock: socket.socket) -> _Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            return None
        data += more
        if len(data) > _MAX_HEAD:
            return None
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path = [*lines[0].split(" "), "", ""][:2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = min(int(headers.get("content-length", "0") or 0), _MAX_BODY)
    while len(rest) < length:
        more = sock.recv(65536)
        if not more:
            break
        rest += more
    request = _Request(method, path, headers, rest[:length])
    try:
        request.json = json.loads(request.body) if request.body else None
    except ValueError:
        request.json = None
    return request


def _head(status: int, headers: list[tuple[str, str]], *, length: int | None = None,
          chunked: bool = False, gzip: bool = False, close: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}",
             "connection: close" if close else "connection: keep-alive"]
    lines += [f"{name}: {value}" for name, value in headers]
    if gzip:
        lines.append("content-encoding: gzip")
    if chunked:
        lines.append("transfer-encoding: chunked")
    elif length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


def _answer(anthropic: bool) -> dict[str, Any]:
    if anthropic:
        return {"id": "msg_hostile", "type": "message", "role": "assistant",
                "model": "hostile", "content": [{"type": "text", "text": "hello"}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1}}
    return {"id": "chatcmpl-hostile", "object": "chat.completion", "created": 0,
            "model": "hostile", "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant",
                                                         "content": "hello"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def _sse_body(anthropic: bool) -> bytes:
    def event(data: Any, name: str | None = None) -> str:
        head = f"event: {name}\n" if name else ""
        return f"{head}data: {json.dumps(data)}\n\n"

    if anthropic:
        message = {**_answer(True), "content": [], "stop_reason": None}
        text = (event({"type": "message_start", "message": message}, "message_start")
                + event({"type": "content_block_start", "index": 0,
                         "content_block": {"type": "text", "text": ""}}, "content_block_start")
                + event({"type": "content_block_delta", "index": 0,
                         "delta": {"type": "text_delta", "text": "hello"}},
                        "content_block_delta")
                + event({"type": "content_block_stop", "index": 0}, "content_block_stop")
                + event({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                             "stop_sequence": None},
                         "usage": {"output_tokens": 1}}, "message_delta")
                + event({"type": "message_stop"}, "message_stop"))
        return text.encode()
    base = {"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 0,
            "model": "hostile"}
    text = (event({**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                               "content": "hello"},
                                        "finish_reason": None}]})
            + event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            + "data: [DONE]\n\n")
    return text.encode()
