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
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx2

from ..engine.call import Call

__all__ = ["SendGuard", "SyncGuard", "real_deadline"]


class _Watch:
    """One guarded read phase: the instant it must end by, and why."""

    __slots__ = ("done", "expires_at", "fired", "limit", "sock")

    def __init__(self, sock: socket.socket, expires_at: float, limit: str) -> None:
        self.sock = sock
        self.expires_at = expires_at
        self.limit = limit
        self.fired = False
        self.done = False


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
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="resilient-llm-watchdog", daemon=True
                )
                self._thread.start()
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
            with contextlib.suppress(OSError):
                entry.sock.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()


def _socket_of(response: httpx2.Response) -> socket.socket | None:
    return _stream_socket(response.extensions.get("network_stream"))


class SyncGuard:
    """Bounds blocking reads of one response by wall-clock limits, via the watchdog."""

    __slots__ = ("_watch",)

    def __init__(self, response: httpx2.Response, expires_at: float | None, limit: str) -> None:
        sock = _socket_of(response)
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
            self._watch.done = True


#: httpcore trace events that hand over a fresh connection's network stream.
_CONNECTED = frozenset({
    "connection.connect_tcp.complete",
    "connection.connect_unix_socket.complete",
    "connection.start_tls.complete",
})


class SendGuard:
    """Bounds the send of a request (connect, request, response headers) by the deadline.

    Until the response's headers arrive the driver holds no socket to watch; the standard
    ``trace`` request extension of httpcore hands over each new connection's stream, so the
    watchdog can shut it down when the deadline passes mid-send (headers dripped one byte at a
    time never trip a per-read timeout). A caller's own ``trace`` callback still runs, and is
    restored by :meth:`close`. Transports that do not implement the extension are unaffected.
    """

    __slots__ = ("_expires_at", "_previous", "_request", "_watch")

    def __init__(self, request: httpx2.Request, expires_at: float | None) -> None:
        self._request = request
        self._expires_at = expires_at
        self._watch: _Watch | None = None
        self._previous: Callable[[str, dict[str, Any]], Any] | None = \
            request.extensions.get("trace")
        if expires_at is not None:
            request.extensions["trace"] = self._trace

    def _trace(self, name: str, info: dict[str, Any]) -> None:
        if self._previous is not None:
            self._previous(name, info)
        if name in _CONNECTED and self._watch is None and self._expires_at is not None:
            sock = _stream_socket(info.get("return_value"))
            if sock is not None:
                self._watch = _WATCHDOG.watch(sock, self._expires_at, "deadline")

    @property
    def fired(self) -> bool:
        """Did the deadline pass during the send (the watchdog closed the connection)?"""
        return self._watch is not None and self._watch.fired

    def close(self) -> None:
        """The send is over: stop watching, and give the request its own ``trace`` back."""
        if self._watch is not None:
            self._watch.done = True
        extensions = self._request.extensions
        if extensions.get("trace") == self._trace:
            if self._previous is None:
                del extensions["trace"]
            else:
                extensions["trace"] = self._previous


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


