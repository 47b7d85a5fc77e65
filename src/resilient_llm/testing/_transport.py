"""In-process driver: an httpx2 transport that carries out the provider's plans without sockets.

Streamed bodies are real generators that sleep between events, so stalls and slow first tokens
behave as over a network. Socket-level faults raise the exceptions httpcore would raise, and the
request's read timeout is honoured the way a real transport honours it (``ReadTimeout`` after
waiting that long), so timeout handling can be tested without a server.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator

import anyio
import httpx2

from ._plan import Plan, PlanSource

__all__ = ["FaultTransport"]

_RESET_MESSAGE = "[Errno 104] Connection reset by peer"
_NO_RESPONSE = "Server disconnected without sending a response."
_CUT_MESSAGE = (
    "peer closed connection without sending complete message body (incomplete chunked read)"
)
_CUT_LENGTH = (
    "peer closed connection without sending complete message body (received {} bytes, expected {})"
)
_POLL = 0.05  # how often an async infinite wait checks whether the provider freed it


def _read_timeout(request: httpx2.Request) -> float | None:
    timeout = request.extensions.get("timeout")
    if isinstance(timeout, dict):
        read = timeout.get("read")
        if isinstance(read, (int, float)):
            return float(read)
    return None


class _Waits:
    """Waiting rules shared by the sync and async paths: the read timeout bounds every wait."""

    __slots__ = ("plan", "read_timeout", "request")

    def __init__(self, plan: Plan, request: httpx2.Request) -> None:
        self.plan = plan
        self.request = request
        self.read_timeout = _read_timeout(request)

    def budget(self, seconds: float) -> tuple[float, bool]:
        """(how long to wait, whether the read timeout fires at the end of it)."""
        if self.read_timeout is not None and seconds > self.read_timeout:
            return self.read_timeout, True
        return seconds, False

    def timed_out(self) -> httpx2.ReadTimeout:
        return httpx2.ReadTimeout("timed out", request=self.request)

    def freed(self) -> httpx2.RemoteProtocolError:
        return httpx2.RemoteProtocolError(_NO_RESPONSE, request=self.request)

    def cut(self) -> httpx2.RemoteProtocolError:
        return httpx2.RemoteProtocolError(_CUT_MESSAGE, request=self.request)

    def wait_sync(self, seconds: float, line: _Line | None = None) -> None:
        """Wait ``seconds`` (bounded by the read timeout). A provider reset frees an endless
        or timed-out wait; a client watchdog shutting the ``line`` down ends any wait, as it
        ends a read on a real socket."""
        wait, fires = self.budget(seconds)
        release = self.plan.release if math.isinf(wait) or fires else None
        end = time.monotonic() + wait
        while (left := end - time.monotonic()) > 0:
            step = left if release is None else min(left, _POLL)
            if line is not None:
                if line.shut_within(step):
                    raise self.cut()
            elif release is not None:
                release.wait(step)
            else:
                time.sleep(step)
            if release is not None and release.is_set():
                raise self.freed()
        if math.isinf(wait):  # pragma: no cover - the loop never ends without raising
            raise self.freed()
        if fires:
            raise self.timed_out()

    async def wait_async(self, seconds: float) -> None:
        wait, fires = self.budget(seconds)
        release = self.plan.release
        if math.isinf(wait):
            # A threading.Event cannot be awaited; a 50 ms poll frees hangs on provider.reset().
            while release is None or not release.is_set():  # noqa: ASYNC110
                await anyio.sleep(_POLL)
            raise self.freed()
        await anyio.sleep(wait)
        if fires:
            raise self.timed_out()


class _Line:
    """The connection of an in-process streamed answer, as a socket pair: the client's end is
    the response's ``network_stream`` socket, so the client's watchdog bounds the waits of the
    body (first token, stream idle, the deadline) by shutting it down, as over a network."""

    __slots__ = ("client", "server")

    def __init__(self) -> None:
        self.client, self.server = socket.socketpair()

    def get_extra_info(self, name: str) -> object:
        return self.client if name == "socket" else None

    def shut_within(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True once the client's end was shut down (it reads EOF)."""
        try:
            readable, _, _ = select.select([self.client], [], [], seconds)
        except (OSError, ValueError):  # closed meanwhile
            return True
        return bool(readable)

    def close(self) -> None:
        self.client.close()
        self.server.close()


def _cut_error(plan: Plan, sent: int, request: httpx2.Request) -> httpx2.RemoteProtocolError:
    if plan.chunked:
        return httpx2.RemoteProtocolError(_CUT_MESSAGE, request=request)
    expected = next((v for k, v in plan.headers if k == "content-length"), "?")
    return httpx2.RemoteProtocolError(_CUT_LENGTH.format(sent, expected), request=request)


def _response_headers(plan: Plan) -> list[tuple[str, str]]:
    if plan.steps is None or plan.chunked:
        return plan.headers
    # A cut JSON body announces its full length; httpx2 must not see it or it re-checks it.
    return [h for h in plan.headers if h[0] != "content-length"]


def _leaving_async() -> tuple[type[BaseException], ...]:
    """What means an async client left: its read timeout, or its task was cancelled."""
    return (httpx2.ReadTimeout, anyio.get_cancelled_exc_class())


def _waits_before_answer(plan: Plan) -> list[float]:
    """The plan's waits before any answer: its delay, then forever if it hangs."""
    waits = [plan.delay] if plan.delay > 0 else []
    if plan.action == "hang":
        waits.append(math.inf)
    return waits


class _Body:
    """What both streamed bodies share: the plan's steps, the position in them, the close record.

    :meth:`_steps` walks the plan and yields what the driver must do: bytes to send, or seconds
    to wait; the sync and async bodies only carry that out.
    """

    def __init__(self, provider: PlanSource, waits: _Waits) -> None:
        self._provider = provider
        self._waits = waits
        self._pos = 0

    def _steps(self) -> Generator[bytes | float, None, None]:
        plan = self._waits.plan
        sent = 0
        for step in plan.steps or []:
            if isinstance(step, bytes):
                self._pos += 1
                sent += len(step)
                yield step
            elif isinstance(step, float):
                yield step  # the driver waits, then resumes here
                self._pos += 1
            else:
                self._provider._finish(plan, answered=True, disconnected=False)
                raise _cut_error(plan, sent, self._waits.request)
        self._provider._finish(plan, answered=True, disconnected=False)

    @contextlib.contextmanager
    def _recording(self, leaving: tuple[type[BaseException], ...]) -> Iterator[None]:
        """Record how the stream ended: ``leaving`` errors mean the client left mid-stream."""
        try:
            yield
        except leaving:
            self._provider._finish(self._waits.plan, answered=True, disconnected=True)
            raise
        except GeneratorExit:
            self._close()
            raise

    def _close(self) -> None:
        """The client closed the body: it left early if anything but pauses was still unsent."""
        plan = self._waits.plan
        steps = plan.steps or []
        left = any(not isinstance(s, float) for s in steps[self._pos :])
        self._provider._finish(plan, answered=True, disconnected=left)


class _SyncBody(_Body, httpx2.SyncByteStream):
    """A streamed body for sync clients; records whether the client left before the end."""

    def __init__(self, provider: PlanSource, waits: _Waits) -> None:
        super().__init__(provider, waits)
        self.line = _Line()
        self._gen = self._run()

    def _run(self) -> Generator[bytes, None, None]:
        try:
            with self._recording((httpx2.ReadTimeout,)):
                for step in self._steps():
                    if isinstance(step, bytes):
                        yield step
                    else:
                        self._waits.wait_sync(step, self.line)
        finally:
            self.line.close()

    def __iter__(self) -> Iterator[bytes]:
        return self._gen

    def close(self) -> None:
        self._gen.close()
        self.line.close()
        self._close()


class _AsyncBody(_Body, httpx2.AsyncByteStream):
    """A streamed body for async clients; cancellation counts as the client leaving."""

    def __init__(self, provider: PlanSource, waits: _Waits) -> None:
        super().__init__(provider, waits)
        self._gen = self._run()

    async def _run(self) -> AsyncGenerator[bytes, None]:
        with self._recording(_leaving_async()):
            for step in self._steps():
                if isinstance(step, bytes):
                    yield step
                else:
                    await self._waits.wait_async(step)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen

    async def aclose(self) -> None:
        await self._gen.aclose()
        self._close()


class FaultTransport(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """An httpx2 transport answering from a ``FaultProvider``; works in sync and async clients.

    Pass it as ``httpx2.Client(transport=...)`` / ``httpx2.AsyncClient(transport=...)`` and hand
    that client to the official SDK as ``http_client=``. Any base URL works: requests are routed
    by path suffix (``/chat/completions``, ``/responses``, ``/embeddings``, ``/messages``).
    """

    def __init__(self, provider: PlanSource) -> None:
        self.provider = provider

    def _begin(self, request: httpx2.Request, body: bytes) -> tuple[Plan, _Waits]:
        headers = {k.lower(): v for k, v in request.headers.items()}
        plan = self.provider._begin(request.method, request.url.path, headers, body)
        return plan, _Waits(plan, request)

    @contextlib.contextmanager
    def _unanswered(self, plan: Plan, leaving: tuple[type[BaseException], ...]) -> Iterator[None]:
        """Record a request failing before its answer; ``leaving`` errors mean the client left."""
        try:
            yield
        except leaving:
            self.provider._finish(plan, answered=False, disconnected=True)
            raise
        except BaseException:
            self.provider._finish(plan, answered=False, disconnected=False)
            raise

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Carry out the next plan for a sync client (blocking sleeps)."""
        plan, waits = self._begin(request, request.read())
        with self._unanswered(plan, (httpx2.ReadTimeout,)):
            for seconds in _waits_before_answer(plan):
                waits.wait_sync(seconds)
        return self._respond(plan, waits, _SyncBody)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Carry out the next plan for an async client (anyio sleeps, cancellable)."""
        plan, waits = self._begin(request, await request.aread())
        with self._unanswered(plan, _leaving_async()):
            for seconds in _waits_before_answer(plan):
                await waits.wait_async(seconds)
        return self._respond(plan, waits, _AsyncBody)

    def _respond(
        self, plan: Plan, waits: _Waits, body_cls: type[_SyncBody] | type[_AsyncBody]
    ) -> httpx2.Response:
        if plan.action == "reset":
            self.provider._finish(plan, answered=False, disconnected=False)
            raise httpx2.ReadError(_RESET_MESSAGE, request=waits.request)
        if plan.steps is None:
            self.provider._finish(plan, answered=True, disconnected=False)
            return httpx2.Response(
                plan.status, headers=plan.headers, content=plan.body, request=waits.request
            )
        self.provider._answering(plan)  # the status is logged once the client can read it
        body = body_cls(self.provider, waits)
        extensions = {"network_stream": body.line} if isinstance(body, _SyncBody) else {}
        return httpx2.Response(
            plan.status,
            headers=_response_headers(plan),
            stream=body,
            request=waits.request,
            extensions=extensions,
        )

    def __repr__(self) -> str:
        return f"FaultTransport({self.provider!r})"
