"""Shared fixtures. Environment variables of resilient-llm never leak between tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


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
    """Each test starts with no learned pressure (limits, budgets) from earlier tests."""
    from resilient_llm.engine.pressure import registry

    registry.clear()
    yield
    registry.clear()


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
