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

import httpx2

from ..engine.call import Call

__all__ = ["SyncGuard", "real_deadline"]


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
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    try:
        sock = stream.get_extra_info("socket")
    except Exception:
        return None
    return sock if isinstance(sock, socket.socket) else None


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


def real_deadline(call: Call) -> float | None:
    """The call's deadline on the real monotonic clock (the watchdog's clock)."""
    left = call.remaining()
    return None if left is None else time.monotonic() + left


