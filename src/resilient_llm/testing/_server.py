"""Loopback driver: a minimal HTTP/1.1 server on asyncio, one event loop in one thread.

Why asyncio and not threads: hundreds of concurrent (or hung) connections cost a few KB each,
and one loop can stop them all at once. The parser handles what the official SDKs send
(Content-Length or chunked request bodies, keep-alive); responses use Content-Length for JSON
and chunked transfer encoding for SSE, so a cut mid-stream is a real protocol error.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import threading
import time
from email.utils import formatdate
from http import HTTPStatus

from ._plan import Plan, PlanSource

__all__ = ["FaultServer"]

_MAX_HEAD = 64 * 1024
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_REASONS[529] = "Site Overloaded"


class _ClientGone(Exception):
    """The client closed or reset the connection while a response was pending."""


class _Conn(asyncio.Protocol):
    """One accepted connection: read buffer, write flow control and disconnect notice.

    A protocol (not streams) so that EOF and resets arrive as callbacks: no read task has to
    compete with the request parser to notice that a client went away mid-response.
    """

    def __init__(self, server: FaultServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.gone: asyncio.Future[None] = self.loop.create_future()
        self._data: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    # protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.task = self.loop.create_task(self.server._serve(self))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake_reader()

    def eof_received(self) -> bool:
        self._lost()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def _lost(self) -> None:
        if not self.gone.done():
            self.gone.set_result(None)
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._data is not None and not self._data.done():
            self._data.set_result(None)

    # used by the request handler
    async def fill(self) -> None:
        """Wait for more request bytes; raise ``_ClientGone`` at EOF."""
        if self.gone.done():
            raise _ClientGone
        self._data = self.loop.create_future()
        await self._data
        self._data = None
        if self.gone.done():
            raise _ClientGone

    def write(self, data: bytes) -> None:
        # A failed send closes the transport before ``connection_lost`` runs; writing on
        # would only make asyncio log "socket.send() raised exception".
        if self.gone.done() or self.transport is None or self.transport.is_closing():
            raise _ClientGone
        self.transport.write(data)

    async def drain(self) -> None:
        if self._writable is not None and not self._writable.done():
            await self._writable
        if self.gone.done():
            raise _ClientGone

    async def idle(self, seconds: float) -> None:
        """Wait ``seconds`` (``inf`` = until the client leaves), raising if the client leaves."""
        if self.gone.done():
            raise _ClientGone
        timeout = None if math.isinf(seconds) else seconds
        await asyncio.wait((self.gone,), timeout=timeout)
        if self.gone.done():
            raise _ClientGone

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def reset(self) -> None:
        """Abort with SO_LINGER 0, so the peer gets a TCP RST instead of a FIN."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


class _DateCache:
    """``date`` header value, formatted once per second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = ""

    def get(self) -> str:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = formatdate(now, usegmt=True)
        return self.value


class FaultServer:
    """A running loopback server for a ``FaultProvider``; stop it with ``stop()`` or ``with``.

    ``openai_base_url`` ends in ``/v1`` as the OpenAI SDK expects; ``anthropic_base_url`` has
    no path because the Anthropic SDK appends ``/v1/messages`` itself.
    """

    def __init__(self, provider: PlanSource, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.provider = provider
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._conns: set[_Conn] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._date = _DateCache()
        self._thread = threading.Thread(target=self._run, name="fault-provider-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        error = self._startup_error()
        if error is not None:
            self._thread.join(1)
            raise RuntimeError(f"fault server failed to start: {error!r}") from error
        if not self._ready.is_set():  # pragma: no cover - only on a wedged machine
            raise RuntimeError("fault server did not start within 10 s")

    def _startup_error(self) -> BaseException | None:
        return self._error  # read after the thread had its chance to set it

    # ------------------------------------------------------------------ public

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL for ``openai.OpenAI(base_url=...)``."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for ``anthropic.Anthropic(base_url=...)``."""
        return self.url

    @property
    def running(self) -> bool:
        """True until ``stop()`` has finished."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Close every connection (hung ones included) and join the server thread; idempotent."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        if threading.current_thread() is not self._thread:
            self._thread.join(5)

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<FaultServer {self.url} {state}>"

    # ------------------------------------------------------------------ loop

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced to the starting thread
            self._error = exc
            self._ready.set()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Conn(self), self.host, self.port, backlog=2048, reuse_address=True
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            conns = list(self._conns)
            for conn in conns:
                conn.abort()
            tasks = [c.task for c in conns if c.task is not None]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _serve(self, conn: _Conn) -> None:
        """Serve requests on one connection until it closes (keep-alive loop)."""
        self._conns.add(conn)
        try:
            while await self._exchange(conn):
                pass
        except (_ClientGone, ConnectionError, OSError, ValueError, asyncio.CancelledError):
            pass
        except Exception:  # a bad fault or request must not kill the loop or spam its log
            conn.abort()
        finally:
            self._conns.discard(conn)
            conn.close()

    # ------------------------------------------------------------------ HTTP

    async def _read_request(self, conn: _Conn) -> tuple[str, str, dict[str, str], bytes, bool]:
        buf = conn.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > _MAX_HEAD:
                raise ValueError("request head too large")
            await conn.fill()
        lines = buf[:end].decode("latin-1").split("\r\n")
        del buf[: end + 4]
        method, target, version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked(conn)
        else:
            length = int(headers.get("content-length", "0") or 0)
            while len(buf) < length:
                await conn.fill()
            body = bytes(buf[:length])
            del buf[:length]
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return method, target, headers, body, keep_alive

    async def _read_chunked(self, conn: _Conn) -> bytes:
        buf = conn.buf
        parts: list[bytes] = []
        while True:
            while (eol := buf.find(b"\r\n")) < 0:
                await conn.fill()
            size = int(bytes(buf[:eol]).split(b";", 1)[0], 16)
            del buf[: eol + 2]
            if size == 0:
                while (eol := buf.find(b"\r\n")) != 0:  # trailers, then the blank line
                    if eol > 0:
                        del buf[: eol + 2]
                    else:
                        await conn.fill()
                del buf[:2]
                return b"".join(parts)
            while len(buf) < size + 2:
                await conn.fill()
            parts.append(bytes(buf[:size]))
            del buf[: size + 2]

    def _head(self, plan: Plan, keep_alive: bool, length: int | None) -> bytes:
        lines = [f"HTTP/1.1 {plan.status} {_REASONS.get(plan.status, 'Unknown')}"]
        lines += [f"{name}: {value}" for name, value in plan.headers]
        if length is not None:
            lines.append(f"content-length: {length}")
        elif plan.chunked:
            lines.append("transfer-encoding: chunked")
        lines.append(f"date: {self._date.get()}")
        lines.append("server: resilient-llm-fault-provider")
        lines.append("connection: keep-alive" if keep_alive else "connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _exchange(self, conn: _Conn) -> bool:
        """Serve one request; return whether to keep the connection open."""
        method, target, headers, body, keep_alive = await self._read_request(conn)
        plan = self.provider._begin(method, target, headers, body)
        answered = False
        disconnected = False
        try:
            if plan.delay > 0:
                await conn.idle(plan.delay)
            if plan.action == "hang":
                await conn.idle(math.inf)
                return False  # pragma: no cover - idle(inf) only ends by raising
            if plan.action == "reset":
                conn.reset()
                return False
            self.provider._answering(plan)
            if plan.steps is None:
                conn.write(self._head(plan, keep_alive, len(plan.body)) + plan.body)
                answered = True
                await conn.drain()
                return keep_alive
            # SSE is chunked; a cut or stalled JSON body carries its Content-Length in headers.
            conn.write(self._head(plan, keep_alive, None))
            answered = True
            for step in plan.steps:
                if isinstance(step, bytes):
                    conn.write(b"%x\r\n%b\r\n" % (len(step), step) if plan.chunked else step)
                    await conn.drain()
                elif isinstance(step, float):
                    await conn.idle(step)
                else:  # cut: what was written is flushed, then FIN without the last chunk
                    conn.close()
                    return False
            if plan.chunked:
                conn.write(b"0\r\n\r\n")
            await conn.drain()
            return keep_alive
        except (_ClientGone, ConnectionError, OSError):
            disconnected = True
            raise _ClientGone from None
        finally:
            self.provider._finish(plan, answered=answered, disconnected=disconnected)
