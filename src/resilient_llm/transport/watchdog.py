"""The sync driver's watchdog: one thread that bounds blocking reads by wall-clock limits.

A blocking ``read`` on a socket cannot be cancelled from the thread that waits in it, and a
server that drips one byte at a time never trips a per-read timeout. The watchdog shuts the
socket down when the deadline, the first-token limit or the idle limit passes, so the read
fails at once and the driver reports which limit fired.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, MutableMapping
from typing import Any, TypeGuard

import httpx2

from ..engine.call import Call

__all__ = ["KnownSockets", "SendGuard", "SyncGuard", "closed_by_watchdog", "real_deadline",
           "write_tag"]

_WHY = {
    "deadline": "deadline reached while waiting for the response",
    "idle": "no stream event within the idle limit",
    "first_token": "no stream output within the first-token limit",
}


def closed_by_watchdog(limit: str, reset: Exception,
                       request: httpx2.Request | None = None) -> httpx2.ReadTimeout:
    """The error of a read the watchdog ended at ``limit`` by shutting its socket: the timeout
    the SDK would have raised (as the async driver's timeouts do), not the "peer closed the
    connection" that the shutdown caused and that blames the server; ``reset`` is its cause.

    Built here, not in a local of the frame that raises it: the error's traceback holds that
    frame, and the local would make a reference cycle of them."""
    if request is None and isinstance(reset, httpx2.RequestError):
        with contextlib.suppress(RuntimeError):  # a transport error without its request
            request = reset.request
    timeout = httpx2.ReadTimeout(_WHY.get(limit, f"the {limit} limit passed"), request=request)
    timeout.__cause__ = reset
    return timeout


class _Watch:
    """One guarded read phase: the instant it must end by, and why."""

    __slots__ = ("done", "expires_at", "fired", "limit", "sock")

    def __init__(self, sock: socket.socket, expires_at: float, limit: str) -> None:
        self.sock: socket.socket | None = sock
        self.expires_at = expires_at
        self.limit = limit
        self.fired = False
        self.done = False

    def finish(self) -> None:
        """The phase is over. The entry stays in the heap until its instant (or until the
        heap is compacted), so it lets go of the socket now: the sockets of every call of
        the last deadline's length were kept alive (closed, but their objects held)."""
        self.done = True
        self.sock = None


class _Watchdog:
    """One daemon thread that shuts down sockets whose reads outlive their limit.

    Readers extend a watch by assigning ``expires_at`` (no lock, no wake-up): the thread
    re-checks an entry when it comes due. Shortening a watch goes through :meth:`reschedule`.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watch]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def forked(self) -> None:
        """In a forked child: the parent's thread is not there, nor its reads; start afresh
        (no per-watch ``is_alive()`` check is needed then: the thread never ends otherwise)."""
        self._heap = []
        self._cond = threading.Condition()
        self._thread = None

    def watch(self, sock: socket.socket, expires_at: float, limit: str) -> _Watch:
        entry = _Watch(sock, expires_at, limit)
        self.reschedule(entry)
        return entry

    def reschedule(self, entry: _Watch) -> None:
        with self._cond:
            heap = self._heap
            if len(heap) > 4096:  # finished watches wait for their instant: drop them early
                heap[:] = [item for item in heap if not item[2].done]
                heapq.heapify(heap)
            earliest = heap[0][0] if heap else None
            heapq.heappush(heap, (entry.expires_at, next(self._seq), entry))
            if self._thread is None:
                thread = threading.Thread(
                    target=self._run, name="resilient-llm-watchdog", daemon=True
                )
                thread.start()  # kept once started: a start that failed is tried again
                self._thread = thread
            if earliest is None or entry.expires_at < earliest:
                self._cond.notify()  # the thread sleeps until the earliest instant only

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, entry = self._heap[0]
                if entry.done or entry.fired:
                    heapq.heappop(self._heap)
                    continue
                if entry.expires_at > at:  # extended since it was scheduled
                    heapq.heapreplace(self._heap, (entry.expires_at, next(self._seq), entry))
                    continue
                now = time.monotonic()
                if at > now:
                    self._cond.wait(at - now)
                    continue
                heapq.heappop(self._heap)
                entry.fired = True
                sock = entry.sock
            if sock is not None:  # (None: the phase ended as its instant came)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):  # (not on Windows, which has no fork)
    os.register_at_fork(after_in_child=_WATCHDOG.forked)


class KnownSockets:
    """The connection sockets one transport's guards have seen, so a reused one is found again.

    A kept-alive connection taken from the pool fires no connect event: its socket was seen
    when it was created (or with an earlier response on it) and is looked up here. One set per
    transport (its pool), not per process: the look-up scans the set, so it costs what that
    pool holds, and another pool's sockets are never candidates. Weak references only: a
    socket leaves the set when its connection is dropped.
    """

    def __init__(self) -> None:
        # By id, each socket's weak reference made once (a ``WeakSet`` makes one per ``add``
        # and iterates slowly). No lock: each step is one dict operation, atomic under the
        # GIL, and the callback that drops an entry runs while its socket is being freed,
        # before any other object can take that id.
        self._known: dict[int, weakref.ref[socket.socket]] = {}

    def add(self, sock: socket.socket) -> None:
        key = id(sock)
        known = self._known.get(key)
        if known is not None and known() is sock:
            return
        known_sockets = self._known

        def forget(ref: weakref.ref[socket.socket]) -> None:
            if known_sockets.get(key) is ref:
                known_sockets.pop(key, None)

        known_sockets[key] = weakref.ref(sock, forget)

    def tagged(self, tag: float) -> socket.socket | None:
        """The one open socket whose timeout is ``tag``; ``None`` if none or several are."""
        known = tuple(self._known.values())
        found = None
        for ref in known:
            sock = ref()
            if sock is None:
                continue
            timeout = sock.gettimeout()
            if timeout is not None and abs(timeout - tag) < _TAG_TOLERANCE \
                    and sock.fileno() != -1:
                if found is not None:
                    return None  # ambiguous: never shut down a connection that may be another's
                found = sock
        return found


#: Tags differ by a microsecond at least; the socket keeps a timeout to the nanosecond.
_TAG_TOLERANCE = 1e-7
_TAGS = itertools.count()


def write_tag(write: float | None, left: float) -> float:
    """A write timeout that marks the socket it is set on, within a millisecond of ``write``.

    httpcore sets a request's write timeout on its socket (``settimeout``) before each write,
    so after the request is sent the socket's ``gettimeout()`` names the connection the pool
    chose. The whole milliseconds of the timeout are kept; the microseconds carry a sequence
    number (1 to 997), so concurrent sends in the same millisecond get distinct tags.
    """
    base = write if write is not None else left
    base = math.floor(max(base, 0.0) * 1000) / 1000
    return base + (next(_TAGS) % 997 + 1) * 1e-6


def _socket_of(response: httpx2.Response, known: KnownSockets) -> socket.socket | None:
    sock = _stream_socket(response.extensions.get("network_stream"))
    if sock is not None:
        known.add(sock)  # the connection may be reused by a later request
    return sock


class SyncGuard:
    """Bounds blocking reads of one response by wall-clock limits, via the watchdog."""

    __slots__ = ("_watch",)

    def __init__(self, response: httpx2.Response, expires_at: float | None, limit: str,
                 known: KnownSockets) -> None:
        sock = _socket_of(response, known)
        self._watch: _Watch | None = None
        if sock is not None and expires_at is not None:
            self._watch = _WATCHDOG.watch(sock, expires_at, limit)

    def set(self, expires_at: float | None, limit: str, *, shorter: bool = False) -> None:
        watch = self._watch
        if watch is None or expires_at is None:
            return
        watch.limit = limit
        watch.expires_at = expires_at
        if shorter:
            _WATCHDOG.reschedule(watch)

    @property
    def fired(self) -> str | None:
        watch = self._watch
        return watch.limit if watch is not None and watch.fired else None

    def close(self) -> None:
        if self._watch is not None:
            self._watch.finish()


#: httpcore trace events that hand over a fresh connection's network stream.
_CONNECTED = frozenset({
    "connection.connect_tcp.complete",
    "connection.connect_unix_socket.complete",
    "connection.start_tls.complete",
})


#: httpcore HTTP/1.1 trace events after the request head is written on the chosen connection
#: (the first one ends the guard's part: httpcore calls no hook of its for the body's events).
_SENT = frozenset({"http11.send_request_headers.complete", "http11.send_request_body.started",
                   "http11.receive_response_headers.started"})


class SendGuard:
    """Bounds the send of a request (connect, request, response headers) by the deadline.

    Until the response's headers arrive the driver holds no socket to watch. httpcore's
    standard ``trace`` request extension hands over each new connection's stream, so the
    watchdog can shut it down when the deadline passes mid-send (headers dripped one byte at a
    time never trip a per-read timeout). A kept-alive connection reused from the pool fires no
    connect event: for HTTP/1.1 the request's write timeout is then made a tag
    (:func:`write_tag`), and once the head is written the one known socket carrying that
    timeout is the connection the pool chose. A caller's own ``trace`` callback still runs;
    it gets its place back as soon as the connection is watched (httpcore then calls it, not
    the guard, for the rest of the exchange), and the request's timeouts are restored by
    :meth:`close`. Transports that do not
    implement the extension are unaffected; HTTP/2 connections reused from the pool are not
    watched (several calls share one socket: shutting it down would fail them all).
    """

    __slots__ = ("_expires_at", "_extensions", "_known", "_previous", "_request", "_tag",
                 "_timeouts", "_watch")

    def __init__(self, request: httpx2.Request, expires_at: float | None,
                 known: KnownSockets) -> None:
        self._request = request
        self._known = known
        self._expires_at = expires_at
        self._watch: _Watch | None = None
        self._tag: float | None = None
        self._extensions: MutableMapping[str, Any] | None = None
        self._timeouts: Any = None
        self._previous: Callable[[str, dict[str, Any]], Any] | None = \
            request.extensions.get("trace")
        if expires_at is not None:
            request.extensions["trace"] = self._trace

    def _trace(self, name: str, info: dict[str, Any]) -> None:
        if self._previous is not None:
            self._previous(name, info)
        expires_at = self._expires_at
        if self._watch is not None or expires_at is None:
            return
        if name in _CONNECTED:
            sock = _stream_socket(info.get("return_value"))
            if sock is not None:
                self._known.add(sock)
                self._watch = _WATCHDOG.watch(sock, expires_at, "deadline")
                self._unhook()
        elif name == "http11.send_request_headers.started":
            self._mark(info, expires_at)
        elif name in _SENT and self._tag is not None:
            sock = self._known.tagged(self._tag)
            if sock is not None:
                self._watch = _WATCHDOG.watch(sock, expires_at, "deadline")
                self._unhook()

    def _unhook(self) -> None:
        """Give the request its own ``trace`` back (none, or the caller's): once the connection
        is watched, or the send is over, the guard needs no more events."""
        extensions = self._request.extensions
        if extensions.get("trace") == self._trace:
            if self._previous is None:
                del extensions["trace"]
            else:
                extensions["trace"] = self._previous

    def _mark(self, info: dict[str, Any], expires_at: float) -> None:
        """A reused connection: tag the write timeout that httpcore is about to set on it."""
        extensions = getattr(info.get("request"), "extensions", None)
        if not _is_mapping(extensions):
            return
        timeouts = extensions.get("timeout")
        if not _is_mapping(timeouts):
            return
        write = timeouts.get("write")
        if not (write is None or isinstance(write, (int, float))):
            return
        self._tag = write_tag(write, expires_at - time.monotonic())
        self._extensions, self._timeouts = extensions, timeouts
        extensions["timeout"] = {**timeouts, "write": self._tag}

    @property
    def fired(self) -> bool:
        """Did the deadline pass during the send (the watchdog closed the connection)?"""
        return self._watch is not None and self._watch.fired

    def close(self) -> None:
        """The send is over: stop watching; give the request its ``trace`` and timeouts back."""
        if self._watch is not None:
            self._watch.finish()
        self._unhook()
        tagged = self._extensions
        if tagged is not None:
            timeouts = tagged.get("timeout")
            if _is_mapping(timeouts) and timeouts.get("write") == self._tag:
                tagged["timeout"] = self._timeouts
            self._extensions = self._timeouts = None


def _is_mapping(value: object) -> TypeGuard[MutableMapping[str, Any]]:
    """A mutable mapping (httpx2's extensions and timeouts are plain dicts: checked first,
    without the ABC's slower instance check)."""
    return type(value) is dict or isinstance(value, MutableMapping)


def _stream_socket(stream: object) -> socket.socket | None:
    get_extra_info = getattr(stream, "get_extra_info", None)
    if get_extra_info is None:
        return None
    try:
        sock = get_extra_info("socket")
    except Exception:
        return None
    return sock if isinstance(sock, socket.socket) else None


def real_deadline(call: Call) -> float | None:
    """The call's deadline on the real monotonic clock (the watchdog's clock)."""
    left = call.remaining()
    return None if left is None else time.monotonic() + left


