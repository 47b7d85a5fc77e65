"""No API key and no prompt text in any span, metric, log record or exception message.

Every kind of call (plain, retried, degraded, failed, deadline, streamed, cut, async, reset)
runs with a sentinel API key and a sentinel prompt while content capture is off; then every
string resilient-llm produced is searched for both. Log records are those of the
``resilient_llm`` loggers (the official SDK's own DEBUG logs print request options: that is
the SDK's choice, outside this library).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilient_llm import Policy
from resilient_llm.context.attributes import attributes
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.telemetry import otel as _telemetry
from resilient_llm.testing import FakeClock, FakeRandom, Fault, FaultProvider

SENTINEL_KEY = "sk-proj-SENTINELKEY0123456789abcdefXYZ"
SENTINEL_PROMPT = "purple elephants dance at midnight 7f3a9c"
SYSTEM = "You are the sentinel system prompt 51c2e8"
MESSAGES: Any = [{"role": "system", "content": SYSTEM},
                 {"role": "user", "content": SENTINEL_PROMPT}]
NEEDLES = (SENTINEL_KEY, SENTINEL_KEY[8:28], SENTINEL_PROMPT, "purple elephants", SYSTEM,
           "51c2e8")


@pytest.fixture
def exporters() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    _telemetry.configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield exporter, reader
    _telemetry.configure()


def client_for(provider: FaultProvider, **policy: Any) -> OpenAI:
    client = OpenAI(api_key=SENTINEL_KEY, base_url="http://secrets.test/v1",
                    policy=Policy(**policy),
                    http_client=httpx2.Client(transport=provider.transport()))
    client._resilient_clock = FakeClock()
    client._resilient_rng = FakeRandom(fixed=0.5)
    return client


def exception_texts(exc: BaseException) -> Iterator[str]:
    """The message of ``exc`` and of every cause it carries."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield from (repr(arg) for arg in current.args)
        partial = getattr(current, "partial_text", None)
        if isinstance(partial, str):
            yield partial
        linked = (current.__cause__, current.__context__, getattr(current, "cause", None))
        pending.extend(e for e in linked if isinstance(e, BaseException))
        causes = getattr(current, "causes", None)
        if isinstance(causes, dict):
            pending.extend(c for c in causes.values() if isinstance(c, BaseException))


def run_every_kind_of_call(provider: FaultProvider, errors: list[BaseException],
                           **policy: Any) -> None:
    def attempt(call: Any) -> None:
        try:
            result = call()
            if hasattr(result, "__iter__") and not isinstance(result, (str, bytes, dict)):
                for _ in result:
                    pass
        except Exception as exc:
            errors.append(exc)

    fallbacks = {"gpt-4.1": ["gpt-4.1-mini"]}
    with client_for(provider, fallbacks=fallbacks, **policy) as client, \
            attributes(feature="secrets"):
        create = client.chat.completions.create
        attempt(lambda: create(model="gpt-4.1", messages=MESSAGES))
        provider.script(Fault.status(500), Fault.status(503), model="gpt-4.1")
        attempt(lambda: create(model="gpt-4.1", messages=MESSAGES))
        provider.script(Fault.status(400), model="gpt-4.1")
        attempt(lambda: create(model="gpt-4.1", messages=MESSAGES))
        # Both targets down: every target fails (the fallback's failures send the last
        # attempts back to the primary, which fails them too).
        for model in ("gpt-4.1", "gpt-4.1-mini"):
            provider.set_default(Fault.status(503), model=model)
        attempt(lambda: create(model="gpt-4.1", messages=MESSAGES))
        for model in ("gpt-4.1", "gpt-4.1-mini"):
            provider.set_default(Fault.ok(), model=model)
        provider.script(*[Fault.reset()] * 4, model="o3")
        attempt(lambda: create(model="o3", messages=MESSAGES))
        attempt(lambda: create(model="gpt-4.1", messages=MESSAGES, stream=True,
                               stream_options={"include_usage": True}))
        # Cut whichever model serves: the primary's circuit may still be open from the 5xx
        # above (how long depends on the backoffs before), then the fallback answers.
        provider.script(Fault.stream_cut(after_events=3), model="gpt-4.1")
        provider.script(Fault.stream_cut(after_events=3), model="gpt-4.1-mini")
        attempt(lambda: create(model="gpt-4.1", messages=MESSAGES, stream=True))
        # A stream that breaks on every target, so that recovery gives up too.
        provider.script(*[Fault.stream_cut(after_events=3)] * 4, model="gpt-4.1")
        provider.script(*[Fault.stream_cut(after_events=3)] * 4, model="gpt-4.1-mini")
        attempt(lambda: create(model="gpt-4.1", messages=MESSAGES, stream=True))
        provider.reset()
    with client_for(provider, deadline=2, **policy) as client:
        provider.script(Fault.status(429, headers={"retry-after": "30"}), model="gpt-4o")
        attempt(lambda: client.chat.completions.create(model="gpt-4o", messages=MESSAGES))

    async def async_call() -> None:
        client = AsyncOpenAI(api_key=SENTINEL_KEY, base_url="http://secrets.test/v1",
                             policy=Policy(**policy),
                             http_client=httpx2.AsyncClient(transport=provider.transport()))
        client._resilient_clock = FakeClock()
        client._resilient_rng = FakeRandom(fixed=0.5)
        provider.script(Fault.status(429), model="gpt-4.1")
        async with client:
            await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            provider.script(Fault.status(401), model="gpt-4.1")
            try:
                await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            except Exception as exc:
                errors.append(exc)

    anyio.run(async_call)


def telemetry_texts(exporter: InMemorySpanExporter, reader: InMemoryMetricReader,
                    records: Iterable[logging.LogRecord]) -> Iterator[str]:
    for span in exporter.get_finished_spans():
        yield span.name
        yield repr(dict(span.attributes or {}))
        yield str(span.status.description)
        for event in span.events:
            yield event.name
            yield repr(dict(event.attributes or {}))
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                yield f"{metric.name} {metric.description} {metric.unit}"
                for point in metric.data.data_points:
                    yield repr(dict(point.attributes or {}))
    for record in records:
        if record.name.startswith("resilient_llm"):
            yield record.getMessage()
            yield record.exc_text or ""
            yield repr(getattr(record, "__dict__", {}))


def test_sentinels_appear_nowhere(
    exporters: tuple[InMemorySpanExporter, InMemoryMetricReader],
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter, reader = exporters
    caplog.set_level(logging.DEBUG)
    provider = FaultProvider()
    errors: list[BaseException] = []
    run_every_kind_of_call(provider, errors)

    # The scenario really ran: failures, fallbacks and log lines were produced.
    assert {type(e).__name__ for e in errors} == {
        "BadRequestError", "AllTargetsFailed", "APIConnectionError", "StreamInterrupted",
        "DeadlineExceeded", "AuthenticationError"}
    assert len([s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]) == 11
    ours = [r for r in caplog.records if r.name.startswith("resilient_llm")]
    assert any(r.levelno == logging.WARNING for r in ours)
    assert any(r.levelno == logging.DEBUG for r in ours)
    assert provider.requests[0].headers["authorization"] == f"Bearer {SENTINEL_KEY}"

    texts = list(telemetry_texts(exporter, reader, caplog.records))
    for exc in errors:
        texts.extend(exception_texts(exc))
    haystack = "\n".join(texts)
    assert "gen_ai.input.messages" not in haystack
    for needle in NEEDLES:
        assert needle not in haystack, needle


def test_content_capture_shows_text_but_still_masks_credentials(
    exporters: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    exporter, _ = exporters
    provider = FaultProvider()
    leaky = f"{SENTINEL_PROMPT}; my key is {SENTINEL_KEY} and Bearer abcdefghijklmnopqrstuvwx"
    with client_for(provider, capture_content=True) as client:
        client.chat.completions.create(model="gpt-4.1", messages=[
            {"role": "system", "content": SYSTEM}, {"role": "user", "content": leaky}])
    (call,) = [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]
    attrs = dict(call.attributes or {})
    inputs = str(attrs["gen_ai.input.messages"])
    assert SENTINEL_PROMPT in inputs and SYSTEM in inputs
    assert "Hello from the fault provider" in str(attrs["gen_ai.output.messages"])
    assert SENTINEL_KEY not in repr(attrs) and "abcdefghijklmnopqrstuvwx" not in repr(attrs)
    assert "[REDACTED]" in inputs


def test_the_capture_file_never_holds_the_key(
    exporters: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Path
) -> None:
    path = tmp_path / "capture.jsonl"
    provider = FaultProvider()
    errors: list[BaseException] = []
    run_every_kind_of_call(provider, errors, capture_file=str(path))
    text = path.read_text("utf-8")
    assert len(text.splitlines()) == 11
    assert SENTINEL_KEY not in text and SENTINEL_KEY[8:28] not in text
    assert SENTINEL_PROMPT in text  # capture is for replay: the request body is the point
