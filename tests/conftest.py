"""Shared fixtures. Environment variables of resilient-llm never leak between tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from resilient_llm.testing import FaultProvider, FaultServer


@pytest.fixture(autouse=True)
def _clean_resilient_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("RESILIENT_LLM_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_pressure_state() -> Iterator[None]:
    """Each test starts with nothing learned of any target by earlier tests: pressure (limits,
    budgets), hedge samples and budget, prefill rejections. Everything learned is keyed by the
    endpoint, and a loopback port is reused within one run: a test must not inherit a budget
    an earlier test drained on the same port."""
    from resilient_llm.engine import hedge
    from resilient_llm.engine.registry import registry
    from resilient_llm.transport.splice import forget_rejections

    def forget() -> None:
        registry.clear()
        hedge.clear()
        forget_rejections()

    forget()
    yield
    forget()


# --- OpenTelemetry: the SDK's in-memory exporters, wired to resilient-llm only --------------------


class Otel:
    """The SDK's in-memory span exporter and metric reader that resilient-llm writes to."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[Any]:
        """Every finished span."""
        return list(self.exporter.get_finished_spans())

    def call_spans(self) -> list[Any]:
        """The CLIENT spans: one per logical call."""
        from opentelemetry.trace import SpanKind

        return [s for s in self.spans() if s.kind is SpanKind.CLIENT]

    def children(self, parent: Any) -> list[Any]:
        """``parent``'s child spans, by attempt number."""
        assert parent.context is not None
        return sorted(
            (s for s in self.spans()
             if s.parent is not None and s.parent.span_id == parent.context.span_id),
            key=lambda s: int(str((s.attributes or {}).get("resilient_llm.attempt.number", 0))),
        )

    def metrics(self) -> dict[str, Any]:
        """Every metric collected so far, by name."""
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    def scope_schema_urls(self) -> set[str | None]:
        """The schema URLs of the instrumentation scopes that wrote metrics."""
        data = self.reader.get_metrics_data()
        assert data is not None
        return {scope.scope.schema_url for r in data.resource_metrics for scope in r.scope_metrics}


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Otel]:
    """resilient-llm's telemetry written to in-memory exporters (the pinned conventions)."""
    from resilient_llm.telemetry import otel as telemetry
    from resilient_llm.telemetry.conventions import OPT_IN_ENV

    monkeypatch.delenv(OPT_IN_ENV, raising=False)
    exporters = Otel()
    telemetry.configure(tracer_provider=exporters.tracer_provider,
                        meter_provider=exporters.meter_provider)
    yield exporters
    telemetry.configure()
    exporters.tracer_provider.shutdown()
    exporters.meter_provider.shutdown()


# --- the fault-injecting provider -------------------------------------------------------------


@pytest.fixture
def provider() -> FaultProvider:
    """A fresh fault-injecting provider (in process; ``server`` runs it on loopback)."""
    return FaultProvider()


@pytest.fixture
def server(provider: FaultProvider) -> Iterator[FaultServer]:
    """``provider`` served on a loopback port for the test's duration."""
    with provider.serve() as running:
        yield running


# --- driver parity: one transport test, both drivers -----------------------------------------


class _Collected:
    """A streamed response read to its end inside the async driver's event loop, replayed to a
    sync test: the chunks, then the error that ended the read (if any)."""

    def __init__(self, response: Any, chunks: list[bytes], error: BaseException | None) -> None:
        self.status_code = response.status_code
        self.headers = response.headers
        self._chunks = chunks
        self._error = error

    def iter_bytes(self) -> Iterator[bytes]:
        yield from self._chunks
        if self._error is not None:
            raise self._error


class _AsyncFacade:
    """The sync client API the transport tests use, run through the async driver: each
    request runs in its own event loop on a fresh ``httpx2.AsyncClient``."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def __enter__(self) -> _AsyncFacade:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _client(self) -> Any:
        import httpx2

        return httpx2.AsyncClient(transport=self._transport, base_url="http://provider.test")

    def post(self, url: str, **kwargs: Any) -> Any:
        async def run() -> Any:
            async with self._client() as client:
                return await client.post(url, **kwargs)

        return asyncio.run(run())

    @contextlib.contextmanager
    def stream(self, method: str, url: str, **kwargs: Any) -> Iterator[_Collected]:
        async def run() -> _Collected:
            async with self._client() as client, client.stream(method, url, **kwargs) as response:
                chunks: list[bytes] = []
                try:
                    async for part in response.aiter_bytes():
                        chunks.append(part)  # noqa: PERF401 - keep what came before an error
                except Exception as exc:
                    return _Collected(response, chunks, exc)
                return _Collected(response, chunks, None)

        yield asyncio.run(run())


def _async_handler(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``handler`` for the async driver: a response streamed from a sync iterator is streamed
    from an async one instead (same chunks, same error at the end)."""
    import httpx2

    def wrapped(request: Any) -> Any:
        response = handler(request)
        stream = response.stream
        if isinstance(stream, httpx2.ByteStream) or not isinstance(stream, httpx2.SyncByteStream):
            return response

        async def body() -> AsyncIterator[bytes]:
            for part in stream:
                yield part

        return httpx2.Response(response.status_code, headers=response.headers, content=body())

    return wrapped


class Driver:
    """One of the two drivers, behind the sync client API the transport tests use."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.asynchronous = name == "async"

    def transport(self, handler: Callable[[Any], Any], *, clock: Any,
                  retry_exceptions: Callable[[Exception], bool] | None = None,
                  **policy: Any) -> Any:
        import httpx2

        from resilient_llm import AsyncResilientTransport, Policy, ResilientTransport
        from resilient_llm.testing import FakeRandom

        kind: Any = AsyncResilientTransport if self.asynchronous else ResilientTransport
        inner = httpx2.MockTransport(_async_handler(handler) if self.asynchronous else handler)
        return kind(inner, policy=Policy(**policy), clock=clock, rng=FakeRandom(fixed=0.5),
                    retry_exceptions=retry_exceptions)

    def client(self, handler: Callable[[Any], Any], *, clock: Any,
               retry_exceptions: Callable[[Exception], bool] | None = None,
               **policy: Any) -> Any:
        """A client over this driver: ``post``, ``stream`` and ``with`` as ``httpx2.Client``."""
        import httpx2

        transport = self.transport(handler, clock=clock, retry_exceptions=retry_exceptions,
                                   **policy)
        if self.asynchronous:
            return _AsyncFacade(transport)
        return httpx2.Client(transport=transport, base_url="http://provider.test")


@pytest.fixture(params=["sync", "async"])
def driver(request: pytest.FixtureRequest) -> Driver:
    """Runs the test once through each driver (parity: both pass the same transport tests)."""
    return Driver(request.param)
