"""Spans, metrics, log lines and cost, read back with the OpenTelemetry SDK's in-memory exporters.

Every call goes through the drop-in OpenAI client to the in-process fault provider on a fake
clock: retries and fallbacks are real, nothing sleeps.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import httpx2
import openai
import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, Metric
from opentelemetry.trace import SpanKind, StatusCode

from resilient_llm import DeadlineExceeded, Policy, ResilientTransport, outcome
from resilient_llm.context.attributes import attributes
from resilient_llm.engine.classify import Failure, FailureClass
from resilient_llm.events import bus as _events
from resilient_llm.events.outcome import CallRecord
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.telemetry import conventions as _conventions
from resilient_llm.telemetry import listener as _listener
from resilient_llm.telemetry import otel as _telemetry
from resilient_llm.telemetry import providers as _providers
from resilient_llm.telemetry import tap as _tap
from resilient_llm.telemetry.pricing import PriceTable, TokenUsage, token_usage
from resilient_llm.testing import FakeClock, FakeRandom, Fault, FaultProvider, Usage
from tests.conftest import Otel

BASE_URL = "http://telemetry.test/v1"
MESSAGES: Any = [{"role": "user", "content": "hi"}]
PRICES = {"gpt-4.1": {"input": 2.0, "output": 8.0, "cache_read": 0.5},
          "gpt-4.1-mini*": {"input": 0.4, "output": 1.6, "cache_read": 0.1}}
USER_ATTRIBUTES = frozenset({"feature", "tenant"})


def make_client(provider: FaultProvider, **policy: Any) -> OpenAI:
    client = OpenAI(api_key="sk-telem", base_url=BASE_URL, policy=Policy(**policy),
                    http_client=httpx2.Client(transport=provider.transport()))
    client._resilient_clock = FakeClock()
    client._resilient_rng = FakeRandom(fixed=0.5)
    return client


def fallback_call(otel: Otel, **policy: Any) -> Any:
    """gpt-4.1 answers 500 (retried), then 503 (moves on); gpt-4.1-mini answers."""
    provider = FaultProvider()
    provider.script(Fault.status(500), Fault.status(503), model="gpt-4.1")
    provider.script(Fault.ok(usage=Usage(input_tokens=1000, output_tokens=200,
                                         cache_read_tokens=768)), model="gpt-4.1-mini")
    settings: dict[str, Any] = {"fallbacks": {"gpt-4.1": ["gpt-4.1-mini"]}, "prices": PRICES}
    settings.update(policy)
    with make_client(provider, **settings) as client, \
            attributes(feature="search", tenant="acme"):
        answer = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert [r.model for r in provider.requests] == ["gpt-4.1", "gpt-4.1", "gpt-4.1-mini"]
    return answer


def points(metric: Metric) -> list[Any]:
    return list(metric.data.data_points)


# --- the acceptance scenario --------------------------------------------------------------------


def test_retried_twice_then_fell_back_is_one_call_span_with_three_attempts(otel: Otel) -> None:
    answer = fallback_call(otel)
    report = outcome(answer)
    assert report.degraded and len(report.attempts) == 3

    (call,) = otel.call_spans()
    assert call.name == "chat gpt-4.1"
    attrs = dict(call.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4.1"
    assert attrs["gen_ai.response.model"] == "gpt-4.1-mini"
    assert attrs["server.address"] == "telemetry.test" and attrs["server.port"] == 80
    assert attrs["resilient_llm.attempts"] == 3 and attrs["resilient_llm.retries"] == 2
    assert attrs["resilient_llm.degraded"] is True
    assert attrs["resilient_llm.served_by"] == "gpt-4.1-mini"
    assert attrs["resilient_llm.reason"] == "overloaded"
    assert attrs["resilient_llm.deadline.budget"] == 600.0
    assert attrs["resilient_llm.deadline.remaining"] == pytest.approx(600.0 - report.elapsed)
    assert attrs["resilient_llm.backoff.total"] == pytest.approx(report.attempts[1].waited_before)
    assert attrs["resilient_llm.queue_wait"] == 0.0
    assert "resilient_llm.pressure" in attrs
    key_hash = attrs["resilient_llm.idempotency_key.hash"]
    assert isinstance(key_hash, str) and len(key_hash) == 16
    assert report.idempotency_key and key_hash not in report.idempotency_key
    assert attrs["gen_ai.usage.input_tokens"] == 1000
    assert attrs["gen_ai.usage.output_tokens"] == 200
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 768
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 0
    assert attrs["resilient_llm.prompt_cache.hit"] is True
    assert attrs["feature"] == "search" and attrs["tenant"] == "acme"
    assert call.status.status_code is StatusCode.UNSET
    assert "error.type" not in attrs
    assert call.instrumentation_scope is not None
    assert call.instrumentation_scope.name == "resilient_llm"
    assert call.instrumentation_scope.schema_url == _conventions.SCHEMA_URL

    first, second, third = otel.children(call)
    assert [s.name for s in (first, second, third)] == [
        "attempt gpt-4.1", "attempt gpt-4.1", "attempt gpt-4.1-mini"]
    assert all(s.kind is SpanKind.INTERNAL for s in (first, second, third))
    facts = [dict(s.attributes or {}) for s in (first, second, third)]
    assert [f.get("resilient_llm.attempt.failure") for f in facts] == [
        "server_error", "overloaded", None]
    assert [f["http.response.status_code"] for f in facts] == [500, 503, 200]
    assert [f["gen_ai.request.model"] for f in facts] == ["gpt-4.1", "gpt-4.1", "gpt-4.1-mini"]
    assert facts[0]["resilient_llm.attempt.backoff"] == 0.0
    assert facts[1]["resilient_llm.attempt.backoff"] == pytest.approx(
        report.attempts[1].waited_before)
    assert first.status.status_code is StatusCode.ERROR
    assert third.status.status_code is StatusCode.UNSET
    # Spans are placed on the call's own clock, so they agree with outcome().
    assert second.start_time is not None and call.start_time is not None
    assert (second.start_time - call.start_time) / 1e9 == pytest.approx(
        report.attempts[1].started_at, abs=1e-6)
    assert call.end_time is not None and third.end_time is not None
    assert call.end_time >= third.end_time

    events = {e.name: dict(e.attributes or {}) for e in call.events}
    assert events["resilient_llm.fallback"] == {
        "resilient_llm.fallback.from": "gpt-4.1", "resilient_llm.fallback.to": "gpt-4.1-mini",
        "resilient_llm.fallback.reason": "overloaded"}
    assert events["resilient_llm.wait"]["resilient_llm.wait.reason"] == "backoff"


def test_metric_points_carry_documented_names_units_and_attributes(otel: Otel) -> None:
    fallback_call(otel)
    metrics = otel.metrics()
    for name, (_kind, unit) in _conventions.METRICS.items():
        if name in metrics:
            assert metrics[name].unit == unit, name
    expected = {"gen_ai.client.operation.duration", "gen_ai.client.token.usage",
                "resilient_llm.client.token.cache_usage", "resilient_llm.attempts",
                "resilient_llm.attempt.duration", "resilient_llm.retries",
                "resilient_llm.throttles", "resilient_llm.fallbacks",
                "resilient_llm.backoff.duration", "resilient_llm.cost", "resilient_llm.pressure"}
    assert expected <= set(metrics)

    (duration,) = points(metrics["gen_ai.client.operation.duration"])
    assert isinstance(duration, HistogramDataPoint)
    assert tuple(duration.explicit_bounds) == _conventions.DURATION_BUCKETS
    assert dict(duration.attributes or {}) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1", "gen_ai.response.model": "gpt-4.1-mini",
        "server.address": "telemetry.test", "server.port": 80,
        "feature": "search", "tenant": "acme",
        "resilient_llm.degraded": True, "resilient_llm.retried": True,
        "resilient_llm.prompt_cache.hit": True,
    }
    tokens = {p.attributes["gen_ai.token.type"]: p for p in points(
        metrics["gen_ai.client.token.usage"])}
    assert set(tokens) == {"input", "output"}
    assert tokens["input"].sum == 1000 and tokens["output"].sum == 200
    assert tuple(tokens["input"].explicit_bounds) == _conventions.TOKEN_BUCKETS
    (cached,) = points(metrics["resilient_llm.client.token.cache_usage"])
    assert cached.attributes["gen_ai.token.type"] == "cache_read" and cached.sum == 768

    attempts = {(p.attributes["gen_ai.request.model"],
                 p.attributes["resilient_llm.attempt.outcome"]): p.value
                for p in points(metrics["resilient_llm.attempts"])}
    assert attempts == {("gpt-4.1", "server_error"): 1, ("gpt-4.1", "overloaded"): 1,
                        ("gpt-4.1-mini", "ok"): 1}
    retries = {p.attributes["resilient_llm.failure.class"]: p.value
               for p in points(metrics["resilient_llm.retries"])}
    assert retries == {"server_error": 1, "overloaded": 1}
    (throttle,) = points(metrics["resilient_llm.throttles"])
    assert throttle.attributes["resilient_llm.failure.class"] == "overloaded"
    (fallback,) = points(metrics["resilient_llm.fallbacks"])
    assert fallback.value == 1
    assert fallback.attributes["resilient_llm.fallback.reason"] == "overloaded"
    assert fallback.attributes["resilient_llm.fallback.to"] == "gpt-4.1-mini"
    targets = {p.attributes["gen_ai.request.model"]: p.value
               for p in points(metrics["resilient_llm.pressure"])}
    assert set(targets) >= {"gpt-4.1", "gpt-4.1-mini"}
    assert all(0.0 <= v <= 1.0 for v in targets.values())
    assert otel.scope_schema_urls() == {_conventions.SCHEMA_URL}


def test_attribute_names_are_the_pinned_convention_list(otel: Otel) -> None:
    fallback_call(otel)
    with make_client(FaultProvider(), prices=PRICES) as client:
        stream = client.chat.completions.create(
            model="gpt-4.1", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True})
        for _ in stream:
            pass
    allowed = _conventions.SEMCONV_ATTRIBUTES | _conventions.RESILIENT_ATTRIBUTES | USER_ATTRIBUTES
    seen: set[str] = set()
    for span in otel.spans():
        seen |= set(span.attributes or {})
        for event in span.events:
            seen |= set(event.attributes or {})
    for metric in otel.metrics().values():
        for point in points(metric):
            seen |= set(point.attributes or {})
    assert seen <= allowed, sorted(seen - allowed)
    assert {n for n in seen if n.startswith("gen_ai.")} >= {
        "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
        "gen_ai.response.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
        "gen_ai.token.type", "gen_ai.request.stream", "gen_ai.response.time_to_first_chunk"}


def test_the_pinned_list_matches_the_installed_semantic_conventions() -> None:
    # opentelemetry-semconv comes with opentelemetry-sdk (the dev extra): never skipped.
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as incubating
    from opentelemetry.semconv.attributes import error_attributes, server_attributes

    published = {v for k, v in vars(incubating).items() if k.startswith("GEN_AI_")
                 and isinstance(v, str)}
    published |= {server_attributes.SERVER_ADDRESS, server_attributes.SERVER_PORT,
                  error_attributes.ERROR_TYPE, "http.response.status_code"}
    assert published >= _conventions.SEMCONV_ATTRIBUTES, sorted(
        _conventions.SEMCONV_ATTRIBUTES - published)
    assert all(not name.startswith(("gen_ai.", "server.", "error."))
               for name in _conventions.RESILIENT_ATTRIBUTES)


def test_newer_names_only_behind_the_stability_opt_in(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_conventions.OPT_IN_ENV, "http, gen_ai_latest_experimental")
    provider = FaultProvider()
    provider.script(Fault.ok(usage=Usage(input_tokens=50, output_tokens=5,
                                         cache_creation_tokens=40)))
    with make_client(provider) as client:
        client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    (call,) = otel.call_spans()
    attrs = dict(call.attributes or {})
    assert attrs["gen_ai.usage.cache_write.input_tokens"] == 40
    assert "gen_ai.usage.cache_creation.input_tokens" not in attrs
    metrics = otel.metrics()
    assert "gen_ai.client.inference.duration" in metrics
    assert "gen_ai.client.operation.duration" not in metrics
    assert "gen_ai.client.token.usage" not in metrics
    (written,) = points(metrics["gen_ai.client.inference.usage.cache_write.input_tokens"])
    assert written.value == 40 and written.attributes["gen_ai.token.modality"] == "unknown"
    (inputs,) = points(metrics["gen_ai.client.inference.operation.input_tokens"])
    assert inputs.sum == 50
    assert call.instrumentation_scope is not None
    assert call.instrumentation_scope.schema_url in (None, "")


# --- streams, failures, async -------------------------------------------------------------------


def test_stream_reports_time_to_first_chunk_and_usage(otel: Otel) -> None:
    provider = FaultProvider()
    provider.script(Fault.ok(usage=Usage(input_tokens=30, output_tokens=7)))
    with make_client(provider) as client:
        stream = client.chat.completions.create(
            model="gpt-4.1", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True})
        for _ in stream:
            pass
    report = outcome(stream)
    (call,) = otel.call_spans()
    attrs = dict(call.attributes or {})
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.time_to_first_chunk"] == report.time_to_first_token
    assert attrs["resilient_llm.stream.complete"] is True
    assert attrs["gen_ai.usage.input_tokens"] == 30 and attrs["gen_ai.usage.output_tokens"] == 7
    (ttfc,) = points(otel.metrics()["gen_ai.client.operation.time_to_first_chunk"])
    assert ttfc.count == 1 and tuple(ttfc.explicit_bounds) == _conventions.DURATION_BUCKETS


def test_stream_cut_after_output_ends_the_span_in_error(otel: Otel) -> None:
    provider = FaultProvider()
    provider.script(Fault.stream_cut(after_events=3))
    with make_client(provider, stream_recovery="off") as client, \
            pytest.raises(Exception, match="interrupted"):
        for _ in client.chat.completions.create(model="gpt-4.1", messages=MESSAGES,
                                                stream=True):
            pass
    (call,) = otel.call_spans()
    assert call.status.status_code is StatusCode.ERROR
    assert dict(call.attributes or {})["error.type"] == "stream_cut"
    assert dict(call.attributes or {})["resilient_llm.stream.complete"] is False


def test_a_recovered_stream_is_a_span_event_that_agrees_with_outcome(otel: Otel) -> None:
    provider = FaultProvider()
    provider.script(Fault.stream_cut(after_events=3))
    with make_client(provider) as client:
        stream = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES,
                                                stream=True)
        for _ in stream:
            pass
    (recovery,) = outcome(stream).recoveries
    (call,) = otel.call_spans()
    events = {e.name: dict(e.attributes or {}) for e in call.events}
    assert events["resilient_llm.stream.recovered"] == {
        "resilient_llm.recovery.mode": recovery.mode,
        "resilient_llm.recovery.target": "gpt-4.1",
        "resilient_llm.recovery.failure": "stream_cut",
        "resilient_llm.recovery.offset": recovery.offset,
        "resilient_llm.recovery.regenerated_tokens": recovery.regenerated_tokens}
    assert call.status.status_code is StatusCode.UNSET
    assert dict(call.attributes or {})["resilient_llm.stream.complete"] is True


def test_deadline_exceeded_is_counted_logged_and_marked(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    provider = FaultProvider()
    provider.script(Fault.status(429, headers={"retry-after": "30"}))
    caplog.set_level(logging.WARNING, logger="resilient_llm")
    with make_client(provider, deadline=2) as client, pytest.raises(DeadlineExceeded):
        client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    (call,) = otel.call_spans()
    attrs = dict(call.attributes or {})
    assert call.status.status_code is StatusCode.ERROR
    assert attrs["error.type"] == "deadline_exceeded"
    assert attrs["resilient_llm.reason"] == "deadline"
    assert attrs["resilient_llm.deadline.budget"] == 2.0
    metrics = otel.metrics()
    (exceeded,) = points(metrics["resilient_llm.deadline_exceeded"])
    assert exceeded.value == 1
    (duration,) = points(metrics["gen_ai.client.operation.duration"])
    assert duration.attributes["error.type"] == "deadline_exceeded"
    (line,) = [r for r in caplog.records if r.name.startswith("resilient_llm.calls")]
    assert line.levelno == logging.WARNING
    text = line.getMessage()
    assert "gpt-4.1 failed (deadline_exceeded" in text and "of a 2.00 s budget" in text
    assert "#1 gpt-4.1 rate_limited HTTP 429" in text


def test_an_exception_no_class_covers_still_ends_the_span(otel: Otel) -> None:
    def broken(request: httpx2.Request) -> httpx2.Response:
        raise RuntimeError("a bug below the transport")

    client = OpenAI(api_key="sk-telem", base_url=BASE_URL,
                    http_client=httpx2.Client(transport=httpx2.MockTransport(broken)))
    client._resilient_clock = FakeClock()
    with client, pytest.raises((RuntimeError, openai.APIConnectionError)):
        client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    (call,) = otel.call_spans()
    assert dict(call.attributes or {})["error.type"] == "RuntimeError"
    assert _listener.open_calls() == 0


def test_async_calls_produce_the_same_spans(otel: Otel) -> None:
    provider = FaultProvider()
    provider.script(Fault.status(429), Fault.ok(usage=Usage(input_tokens=5, output_tokens=1)))

    async def main() -> Any:
        client = AsyncOpenAI(api_key="sk-telem", base_url=BASE_URL,
                             http_client=httpx2.AsyncClient(transport=provider.transport()))
        client._resilient_clock = FakeClock()
        client._resilient_rng = FakeRandom(fixed=0.5)
        async with client, attributes(feature="async"):
            return await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)

    answer = anyio.run(main)
    (call,) = otel.call_spans()
    attrs = dict(call.attributes or {})
    assert attrs["resilient_llm.attempts"] == 2 and attrs["feature"] == "async"
    assert attrs["gen_ai.usage.input_tokens"] == 5
    assert len(otel.children(call)) == 2
    assert outcome(answer).retries == 1


# --- degradation facts, logs ----------------------------------------------------------------------


def test_a_record_served_by_another_model_is_reported_degraded(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    """The listener's view of degradation, independent of how the engine chose the target."""
    caplog.set_level(logging.DEBUG, logger="resilient_llm")
    record = CallRecord(requested="gpt-4.1", deadline_budget=10.0, provider="openai",
                        server_address="api.test", server_port=443, path="/v1/chat/completions")
    failure = Failure(FailureClass.OVERLOADED, True, status=529)
    steps: list[_events.Event] = [
        _events.Event("call_started", 0.0, target="gpt-4.1"),
        _events.Event("attempt_started", 0.0, attempt=1, target="gpt-4.1"),
        _events.Event("attempt_finished", 0.2, attempt=1, target="gpt-4.1", failure=failure,
                      status=529),
        _events.Event("fell_back", 0.2, target="claude-haiku-4-5", detail="overloaded"),
        _events.Event("attempt_started", 0.2, attempt=2, target="claude-haiku-4-5"),
        _events.Event("attempt_finished", 0.9, attempt=2, target="claude-haiku-4-5", status=200),
        _events.Event("succeeded", 0.9, target="claude-haiku-4-5"),
    ]
    for event in steps:
        _events.emit(record, event)
    assert record.outcome().degraded
    (call,) = otel.call_spans()
    attrs = dict(call.attributes or {})
    assert attrs["resilient_llm.degraded"] is True
    assert attrs["resilient_llm.served_by"] == "claude-haiku-4-5"
    assert attrs["resilient_llm.reason"] == "overloaded"
    assert attrs["resilient_llm.deadline.remaining"] == pytest.approx(9.1)
    ours = [r for r in caplog.records if r.name == "resilient_llm.calls"]
    assert [r.levelname for r in ours] == ["DEBUG", "DEBUG", "DEBUG", "WARNING"]
    warning = ours[-1].getMessage()
    assert "gpt-4.1 was served by claude-haiku-4-5 (degraded, reason: overloaded)" in warning
    assert "after 2 attempts in 0.90 s of a 10.00 s budget" in warning
    assert "#1 gpt-4.1 overloaded HTTP 529" in warning


def test_log_lines_round_the_budget_like_the_elapsed_time(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    """A budget left over from an enclosing scope (0.999575 s) reads as 1.00 s, not raw."""
    caplog.set_level(logging.WARNING, logger="resilient_llm")
    record = CallRecord(requested="gpt-4.1", deadline_budget=0.999575, provider="openai",
                        server_address="api.test", server_port=443, path="/v1/chat/completions")
    failure = Failure(FailureClass.OVERLOADED, True, status=529)
    for event in [
        _events.Event("call_started", 0.0, target="gpt-4.1"),
        _events.Event("attempt_started", 0.0, attempt=1, target="gpt-4.1"),
        _events.Event("attempt_finished", 0.2, attempt=1, target="gpt-4.1", failure=failure,
                      status=529),
        _events.Event("fell_back", 0.2, target="gpt-4.1-mini", detail="overloaded"),
        _events.Event("attempt_started", 0.2, attempt=2, target="gpt-4.1-mini"),
        _events.Event("attempt_finished", 0.5, attempt=2, target="gpt-4.1-mini", status=200),
        _events.Event("succeeded", 0.5, target="gpt-4.1-mini"),
    ]:
        _events.emit(record, event)
    (line,) = [r for r in caplog.records if r.name == "resilient_llm.calls"]
    text = line.getMessage()
    assert "in 0.50 s of a 1.00 s budget" in text
    assert "0.999575" not in text


def test_healthy_calls_log_nothing_above_debug(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="resilient_llm")
    provider = FaultProvider()
    with make_client(provider) as client:
        client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    ours = [r for r in caplog.records if r.name.startswith("resilient_llm")]
    assert [r.levelname for r in ours] == ["DEBUG"]
    assert "attempt 1 to gpt-4.1: ok (HTTP 200)" in ours[0].getMessage()


# --- cost ---------------------------------------------------------------------------------------


def test_cost_prices_cached_tokens_as_such_and_never_bills_failed_attempts(otel: Otel) -> None:
    answer = fallback_call(otel)
    # gpt-4.1-mini* prices: 232 uncached input, 768 cached, 200 output; the two failed
    # attempts on gpt-4.1 returned no usage and cost nothing.
    expected = (232 * 0.4 + 768 * 0.1 + 200 * 1.6) / 1e6
    (call,) = otel.call_spans()
    assert dict(call.attributes or {})["resilient_llm.cost.usd"] == pytest.approx(expected)
    (cost,) = points(otel.metrics()["resilient_llm.cost"])
    assert cost.value == pytest.approx(expected)
    assert {k: cost.attributes[k] for k in ("feature", "tenant", "gen_ai.response.model")} == {
        "feature": "search", "tenant": "acme", "gen_ai.response.model": "gpt-4.1-mini"}
    report = outcome(answer)
    assert report.cost is not None and report.cost.total == pytest.approx(expected)


def test_price_file_from_the_environment(
    otel: Otel, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"gpt-4.1": {"input": 2, "output": 8}}))
    monkeypatch.setenv("RESILIENT_LLM_PRICES_FILE", str(path))
    monkeypatch.setenv("RESILIENT_LLM_PRICES", json.dumps({"gpt-4.1": {"input": 1, "output": 4}}))
    provider = FaultProvider()
    provider.script(Fault.ok(usage=Usage(input_tokens=1000, output_tokens=100)))
    client = OpenAI(api_key="sk-telem", base_url=BASE_URL,
                    http_client=httpx2.Client(transport=provider.transport()))
    client._resilient_clock = FakeClock()
    with client:
        client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    (call,) = otel.call_spans()  # inline prices win over the file
    assert dict(call.attributes or {})["resilient_llm.cost.usd"] == pytest.approx(1.4e-3)


def test_usage_shapes_of_both_providers_normalise_to_the_convention() -> None:
    chat = {"prompt_tokens": 100, "completion_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
            "completion_tokens_details": {"reasoning_tokens": 4}}
    assert token_usage(chat) == TokenUsage(100, 10, 60, 30, 4)
    responses = {"input_tokens": 100, "output_tokens": 10,
                 "input_tokens_details": {"cached_tokens": 60}}
    assert token_usage(responses, "openai") == TokenUsage(100, 10, 60, 0, 0)
    messages = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 60,
                "cache_creation_input_tokens": 30}
    assert token_usage(messages, "anthropic") == TokenUsage(100, 5, 60, 30, 0)
    assert token_usage(None) is None and token_usage({"total": 3}) is None
    table = PriceTable.from_json(json.dumps({"claude-*": {"input": 3, "output": 15,
                                                          "cache_read": 0.3, "cache_write": 3.75},
                                             "claude-haiku-*": {"input": 1, "output": 5}}))
    cost = table.cost("claude-haiku-4-5", token_usage(messages, "anthropic"))
    assert cost is not None and cost.total == pytest.approx((10 + 60 + 30 + 25) / 1e6)
    assert table.cost("gpt-4.1", TokenUsage(1, 1)) is None


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ("[1]", "expected a JSON object"),
        ('{"m": {"input": 1}}', "'m' lacks output"),
        ('{"m": {"input": 1, "output": "2"}}', "must be a number"),
        ('{"m": {"input": 1, "output": 2, "cached": 1}}', "unknown price fields ['cached']"),
        ('{"a*b": {"input": 1, "output": 2}}', "only accepted at the end"),
        ('{"m": {"input": 1, "output": -2}}', "finite and ≥ 0"),
    ],
)
def test_bad_price_tables_are_refused_with_the_reason(prices: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"RESILIENT_LLM_PRICES|prices") as info:
        Policy(prices=prices)
    assert message in str(info.value)


# --- cost of telemetry: nothing when nothing listens --------------------------------------------


def test_without_an_sdk_the_tap_is_never_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    _telemetry.configure()  # the global providers: no SDK configured in this process
    assert _providers.tracer_provider() is None and _providers.meter_provider() is None
    armed: list[Any] = []
    monkeypatch.setattr(_listener, "arm", armed.append)
    provider = FaultProvider()
    with make_client(provider) as client:
        client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert armed == [] and _listener.open_calls() == 0


def test_telemetry_false_leaves_the_transport_alone(otel: Otel) -> None:
    provider = FaultProvider()
    _telemetry.uninstall()
    try:
        with make_client(provider, telemetry=False) as client:
            resilient = [t for t in client._client._mounts.values()
                         if isinstance(t, ResilientTransport)]
            assert resilient and all(
                not isinstance(t.inner, (_tap.SyncTap, _tap.AsyncTap)) for t in resilient)
            client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        assert otel.spans() == [] and not _telemetry.installed()
    finally:
        _telemetry.install()


def test_telemetry_false_is_silent_even_when_another_client_listens(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="resilient_llm")
    provider = FaultProvider()
    provider.script(Fault.status(400))
    with make_client(provider) as loud, make_client(provider, telemetry=False) as quiet:
        with pytest.raises(openai.BadRequestError):
            quiet.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        loud.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert len(otel.call_spans()) == 1
    ours = [r for r in caplog.records if r.name.startswith("resilient_llm")]
    assert [r.levelname for r in ours] == ["DEBUG"]
    assert _listener.open_calls() == 0  # nothing kept about either call once it ended


def test_the_call_span_is_a_child_of_the_callers_span(otel: Otel) -> None:
    provider = FaultProvider()
    tracer = otel.tracer_provider.get_tracer("app")
    with make_client(provider) as client, tracer.start_as_current_span("handle request") as app:
        client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    (call,) = otel.call_spans()
    assert call.parent is not None and call.parent.span_id == app.get_span_context().span_id
