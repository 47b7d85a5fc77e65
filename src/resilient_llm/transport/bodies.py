"""Response bodies the SDK reads after the driver returned: still bounded by the deadline.

The drivers read JSON and error bodies themselves, under the deadline. Any other body (an HTML
page from a proxy, a body without a content type, a file download) is left for the SDK to read,
as the official client would; these wrappers keep that read bounded by the call's deadline, so
a server that drips such a body cannot hold the caller past it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator

import httpx2

from ..engine.call import Call
from .watchdog import SyncGuard, closed_by_watchdog

__all__ = ["AsyncBoundedBody", "SyncBoundedBody"]


class SyncBoundedBody(httpx2.SyncByteStream):
    """A body read by the watchdog's deadline (``guard`` watches the response's socket)."""

    def __init__(self, inner: httpx2.SyncByteStream, guard: SyncGuard, call: Call) -> None:
        self._inner = inner
        self._guard = guard
        self._call = call

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
        except httpx2.TransportError as exc:
            if self._guard.fired == "deadline":
                raise self._call.deadline_error(closed_by_watchdog("deadline", exc)) from exc
            raise
        finally:
            self._guard.close()

    def close(self) -> None:
        self._guard.close()
        self._inner.close()


class AsyncBoundedBody(httpx2.AsyncByteStream):
    """The async twin of :class:`SyncBoundedBody`: each read in a cancel scope."""

    def __init__(self, inner: httpx2.AsyncByteStream, call: Call,
                 request: httpx2.Request) -> None:
        self._inner = inner
        self._call = call
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import anyio

        call = self._call
        chunks = self._inner.__aiter__()
        while True:
            left = call.remaining()
            chunk: bytes | None = None
            with anyio.move_on_after(math.inf if left is None else max(left, 0.0)):
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
            if chunk is None:
                stall = httpx2.ReadTimeout("deadline reached while reading the response body",
                                           request=self._request)
                raise call.deadline_error(stall)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()
