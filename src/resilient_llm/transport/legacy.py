"""A legacy ``httpx`` client passed as ``http_client``: the resilient transport under it too.

openai still accepts an ``httpx.Client`` / ``httpx.AsyncClient`` (the package httpx2 forked
from) as ``http_client`` and sends its requests through it; the drivers work on httpx2's types.
So for such a client each of its transports is wrapped twice over: the client hands its
``httpx.Request`` to a :class:`LegacyBridge`, which passes it as an ``httpx2.Request`` to the
resilient transport, which sends each attempt through :class:`Httpx2Adapter` to the client's
own legacy transport (its pool, proxies, certificates and event hooks stay as configured).
Responses and their streams go back the same way, and the legacy transport's exceptions
become their httpx2 twins (``httpx.ReadTimeout`` → ``httpx2.ReadTimeout``), which the
classification and the SDK both know. Nothing here is imported unless such a client is met.

anthropic refuses a legacy client at construction itself, with a clear error; its drop-ins
do the same, as the official classes do.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import httpx2

__all__ = ["legacy_client_kind", "wrap_legacy_client"]


def _legacy() -> Any:
    return sys.modules.get("httpx")


def legacy_client_kind(client: object) -> Literal["sync", "async"] | None:
    """``"sync"`` for an ``httpx.Client``, ``"async"`` for an ``httpx.AsyncClient`` (legacy
    httpx, not httpx2), else ``None``."""
    module = _legacy()
    # Whatever sits in sys.modules under that name (a stub, or httpx2 itself aliased there, as
    # some test tools do): only classes that are not httpx2's count.
    for kind, name in (("async", "AsyncClient"), ("sync", "Client")):
        cls = getattr(module, name, None)
        if isinstance(cls, type) and cls.__module__.split(".")[0] == "httpx" \
                and isinstance(client, cls):
            return kind  # type: ignore[return-value]
    return None


def wrap_legacy_client(client: Any, wrap: Callable[[Any], Any], *, is_async: bool) -> None:
    """Put ``wrap(adapter)`` (the resilient transport) under every transport of the legacy
    ``client`` (idempotent); ``None`` mounts keep meaning "the default transport"."""
    bridge: type = AsyncLegacyBridge if is_async else LegacyBridge
    if isinstance(client._transport, bridge):
        return
    adapter: type = AsyncHttpx2Adapter if is_async else Httpx2Adapter

    def bridged(inner: Any) -> Any:
        return bridge(wrap(adapter(inner)))

    client._transport = bridged(client._transport)
    client._mounts = {pattern: None if inner is None else bridged(inner)
                      for pattern, inner in client._mounts.items()}


# --- httpx2 → legacy httpx (what the drivers send, to the client's own transport) -----------


def _legacy_request(request: httpx2.Request) -> Any:
    from .shared import body_of

    return _legacy().Request(request.method, str(request.url), headers=request.headers.raw,
                             content=body_of(request), extensions=dict(request.extensions))


def _httpx2_error(exc: Exception, request: httpx2.Request) -> Exception:
    """The httpx2 twin of a legacy httpx transport error (same name), else ``exc``."""
    module = _legacy()
    if not isinstance(exc, module.TransportError):
        return exc
    twin = getattr(httpx2, type(exc).__name__, None)
    if not (isinstance(twin, type) and issubclass(twin, httpx2.TransportError)):
        twin = httpx2.TransportError
    error: Exception = twin(str(exc), request=request)
    error.__cause__ = exc
    return error


def _httpx2_response(response: Any, request: httpx2.Request, stream: Any) -> httpx2.Response:
    return httpx2.Response(response.status_code, headers=response.headers.raw, stream=stream,
                           extensions=dict(response.extensions), request=request)


class Httpx2Adapter(httpx2.BaseTransport):
    """An httpx2 transport that sends through a legacy httpx transport."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = self.inner.handle_request(_legacy_request(request))
        except Exception as exc:
            raise _httpx2_error(exc, request) from exc
        return _httpx2_response(response, request, _Httpx2Stream(response.stream, request))

    def close(self) -> None:
        self.inner.close()


class _Httpx2Stream(httpx2.SyncByteStream):
    def __init__(self, inner: Any, request: httpx2.Request) -> None:
        self._inner, self._request = inner, request

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
        except Exception as exc:
            raise _httpx2_error(exc, self._request) from exc

    def close(self) -> None:
        self._inner.close()


class AsyncHttpx2Adapter(httpx2.AsyncBaseTransport):
    """An async httpx2 transport that sends through a legacy httpx transport."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self.inner.handle_async_request(_legacy_request(request))
        except Exception as exc:
            raise _httpx2_error(exc, request) from exc
        return _httpx2_response(response, request, _AsyncHttpx2Stream(response.stream, request))

    async def aclose(self) -> None:
        await self.inner.aclose()


class _AsyncHttpx2Stream(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, request: httpx2.Request) -> None:
        self._inner, self._request = inner, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except Exception as exc:
            raise _httpx2_error(exc, self._request) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


# --- legacy httpx → httpx2 (what the SDK sends through the legacy client, to the drivers) ----


def _httpx2_request(request: Any) -> httpx2.Request:
    return httpx2.Request(request.method, str(request.url), headers=request.headers.raw,
                          content=request.content, extensions=dict(request.extensions))


def _legacy_response(response: httpx2.Response, request: Any, stream: Any) -> Any:
    return _legacy().Response(response.status_code, headers=response.headers.raw,
                              stream=stream, extensions=dict(response.extensions),
                              request=request)


class LegacyBridge:
    """A legacy httpx transport (duck-typed) in front of the resilient transport."""

    def __init__(self, resilient: Any) -> None:
        self.resilient = resilient

    def handle_request(self, request: Any) -> Any:
        request.read()
        response = self.resilient.handle_request(_httpx2_request(request))
        return _legacy_response(response, request, _legacy_stream(response.stream))

    def close(self) -> None:
        self.resilient.close()

    def __enter__(self) -> LegacyBridge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _legacy_stream(stream: Any) -> Any:
    return _stream_classes(_legacy())[0](stream)


@functools.cache
def _stream_classes(module: Any) -> tuple[type, type]:
    """The legacy module's byte streams over a resilient response's, made once per module."""

    class Stream(module.SyncByteStream):  # type: ignore[misc]
        def __init__(self, stream: Any) -> None:
            self._stream = stream

        def __iter__(self) -> Iterator[bytes]:
            yield from self._stream

        def close(self) -> None:
            self._stream.close()

    class AsyncStream(module.AsyncByteStream):  # type: ignore[misc]
        def __init__(self, stream: Any) -> None:
            self._stream = stream

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._stream:
                yield chunk

        async def aclose(self) -> None:
            await self._stream.aclose()

    return Stream, AsyncStream


class AsyncLegacyBridge:
    """An async legacy httpx transport (duck-typed) in front of the resilient transport."""

    def __init__(self, resilient: Any) -> None:
        self.resilient = resilient

    async def handle_async_request(self, request: Any) -> Any:
        await request.aread()
        response = await self.resilient.handle_async_request(_httpx2_request(request))
        return _legacy_response(response, request, _async_legacy_stream(response.stream))

    async def aclose(self) -> None:
        await self.resilient.aclose()

    async def __aenter__(self) -> AsyncLegacyBridge:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _async_legacy_stream(stream: Any) -> Any:
    return _stream_classes(_legacy())[1](stream)
