"""The call summary and each telemetry sink on its own: spans, metrics, logs, capture.

``test_telemetry.py`` drives whole calls through the drop-in client; here each piece gets a
hand-built :class:`CallRecord` (folded from engine events, as the bus does) and is read back
through the OpenTelemetry SDK's in-memory exporters, a log capture or a file.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, StatusCode

import resilient_llm
from resilient_llm.caching.lint import Finding
from resilient_llm.engine.classify import Failure, FailureClass
from resilient_llm.events import bus
from resilient_llm.events.bus import Event
from resilient_llm.events.outcome import CallRecord
from resilient_llm.telemetry import conventions, listener, providers
from resilient_llm.telemetry.capture import SCHEMA, Sink, capture_line
from resilient_llm.telemetry.conventions import LATEST_EXPERIMENTAL, STABLE, short_hash
from resilient_llm.telemetry.logs import attempts_text, log_call
from resilient_llm.telemetry.metrics import Instruments
from resilient_llm.telemetry.pricing import PriceTable, TokenUsage
from resilient_llm.telemetry.spans import CallSpans, call_attributes
from resilient_llm.telemetry.summary import NO_ANSWER, CallSummary, read_answer, summarize
from resilient_llm.telemetry.tap import Exchange
from tests.conftest import Otel

SRC = Path(resilient_llm.__file__).parent
PRICES = PriceTable.from_json(json.dumps({"claude-haiku-*": {"input": 1, "output": 5}}))
KEY = "rllm-idem-0123456789"
OVERLOADED = Failure(FailureClass.OVERLOADED, True, status=529)


def degraded_record(**fields: Any) -> CallRecord:
    """claude-sonnet overloaded (529), then claude-haiku answered: two attempts, one move."""
    record = CallRecord(requested="claude-sonnet-4-6", deadline_budget=10.0,
                        provider="anthropic", server_address="api.test", server_port=443,
                        path="/v1/messages", idempotency_key=KEY, pressure=0.25, **fields)
    for event in (
        Event("attempt_started", 0.0, attempt=1, target="claude-sonnet-4-6"),
        Event("attempt_finished", 0.2, attempt=1, target="claude-sonnet-4-6",
              failure=OVERLOADED, status=529),
        Event("waited", 0.2, seconds=0.1, detail="backoff"),
        Event("attempt_started", 0.3, attempt=2, target="claude-haiku-4-5"),
        Event("attempt_finished", 0.9, attempt=2, target="claude-haiku-4-5", status=200),
        Event("succeeded", 0.9, target="claude-haiku-4-5"),
    ):
        record.apply(event)
    record.usage = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 60,
                    "cache_creation_input_tokens": 30}
    return record


def exchange(body: dict[str, Any], answer: dict[str, Any] | None = None) -> Exchange:
    request = httpx2.Request("POST", "https://api.test/v1/messages",
                             headers={"x-api-key": "sk-ant-secret-0123456789abcdef"},
                             content=json.dumps(body).encode())
    tapped = Exchange(request)
    if answer is not None:
        tapped.response = httpx2.Response(200, json=answer)
        tapped.response.read()
    return tapped


# --- the summary ---------------------------------------------------------------------------------


def test_a_summary_is_one_frozen_value_with_every_fact_the_sinks_read() -> None:
    record = degraded_record()
    record.findings.append(Finding("timestamp", "system[0].text@3", "‹timestamp›", "move it"))
    sent = exchange({"model": "claude-haiku-4-5", "prompt_cache_key": "tenant-a/faq"},
                    {"id": "msg_1", "model": "claude-haiku-4-5-20260101",
                     "stop_reason": "end_turn"})
    summary = summarize(record, at=0.9, error=None, last_failure="overloaded",
                        backoff_total=0.1, exchange=sent, prices=PRICES)

    assert summary.served_by == "claude-haiku-4-5" and summary.degraded
    assert summary.reason == "overloaded"  # from the last failure: the engine gave none
    assert summary.retries == 1 and [a.number for a in summary.attempts] == [1, 2]
    assert summary.deadline_remaining == pytest.approx(9.1)
    assert summary.idempotency_key_hash == short_hash(KEY) and KEY not in repr(summary)
    assert summary.cache_key_hash == short_hash("tenant-a/faq")
    assert summary.findings == ("timestamp",)
    # Anthropic's input excludes cache reads and writes; the summary's includes them.
    assert summary.usage == TokenUsage(100, 5, 60, 30, 0)
    assert summary.cost is not None and summary.cost.model == "claude-haiku-4-5"
    assert summary.cost.total == pytest.approx((10 + 60 + 30 + 25) / 1e6)
    assert summary.answer.response_id == "msg_1"
    assert summary.response_model == "claude-haiku-4-5-20260101"
    assert summary.answer.finish_reasons == ("end_turn",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.error = "changed"  # type: ignore[misc]


def test_a_failed_call_is_served_by_nobody_and_never_priced() -> None:
    record = degraded_record()
    summary = summarize(record, at=1.0, error="deadline_exceeded", give_up="deadline",
                        prices=PRICES)
    assert summary.served_by is None and not summary.degraded
    assert summary.response_model is None and summary.cost is None
    assert summary.reason == "deadline" and summary.give_up == "deadline"


def test_a_stream_cut_after_output_keeps_who_served_it() -> None:
    summary = summarize(degraded_record(), at=1.0, error="stream_cut", committed=True,
                        complete=False)
    assert summary.served_by == "claude-haiku-4-5" and summary.degraded
    assert summary.complete is False and summary.error == "stream_cut"


def test_the_answer_is_read_from_a_json_body_and_nothing_else() -> None:
    assert read_answer(None, "openai") is NO_ANSWER
    chat = exchange({"model": "gpt-4.1"},
                    {"id": "chatcmpl-1", "model": "gpt-4.1-2025",
                     "choices": [{"finish_reason": "stop"}, {"finish_reason": "length"}],
                     "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    answer = read_answer(chat, "openai")
    assert answer.finish_reasons == ("stop", "length") and answer.response_id == "chatcmpl-1"
    assert answer.usage == {"prompt_tokens": 3, "completion_tokens": 1}
    unanswered = exchange({"model": "gpt-4.1"})
    assert read_answer(unanswered, "openai") is NO_ANSWER


# --- the span sink -------------------------------------------------------------------------------


def test_call_attributes_follow_the_conventions_in_force() -> None:
    summary = summarize(degraded_record(), at=0.9, error=None, backoff_total=0.1)
    stable = call_attributes(summary, STABLE)
    assert stable["gen_ai.usage.cache_creation.input_tokens"] == 30
    assert stable["gen_ai.usage.input_tokens"] == 100
    assert stable["resilient_llm.prompt_cache.hit"] is True
    assert stable["resilient_llm.served_by"] == "claude-haiku-4-5"
    assert stable["resilient_llm.backoff.total"] == 0.1
    assert stable["resilient_llm.pressure"] == 0.25
    assert "error.type" not in stable and "gen_ai.request.stream" not in stable
    latest = call_attributes(summary, LATEST_EXPERIMENTAL)
    assert latest["gen_ai.usage.cache_write.input_tokens"] == 30
    assert "gen_ai.usage.cache_creation.input_tokens" not in latest


def test_call_spans_place_every_span_on_the_calls_clock(otel: Otel) -> None:
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-6", "server.address": "api.test",
            "server.port": 443}
    tracer = otel.tracer_provider.get_tracer("test")
    t0 = 1_000_000_000_000
    spans = CallSpans(tracer, t0)
    spans.attempt_started(base, number=1, target="claude-sonnet-4-6", backoff=0.0, at=0.0)
    spans.attempt_finished(status=529, failure="overloaded", at=0.2)
    spans.event(base, "resilient_llm.wait", {"resilient_llm.wait.seconds": 0.1}, 0.2)
    spans.attempt_started(base, number=2, target="claude-haiku-4-5", backoff=0.1, at=0.3)
    summary = summarize(degraded_record(), at=0.9, error="deadline_exceeded")
    spans.end(base, summary, STABLE, content=False)  # also ends the attempt never finished

    (call,) = otel.call_spans()
    assert call.name == "chat claude-sonnet-4-6" and call.start_time == t0
    assert call.end_time == t0 + 900_000_000
    assert call.status.status_code is StatusCode.ERROR
    assert (call.attributes or {})["error.type"] == "deadline_exceeded"
    first, second = otel.children(call)
    assert first.kind is SpanKind.INTERNAL and first.end_time == t0 + 200_000_000
    assert (first.attributes or {})["resilient_llm.attempt.failure"] == "overloaded"
    assert (second.attributes or {})["resilient_llm.attempt.backoff"] == 0.1
    assert second.end_time == call.end_time
    (wait,) = call.events
    assert wait.name == "resilient_llm.wait" and wait.timestamp == t0 + 200_000_000


# --- the metric sink -----------------------------------------------------------------------------


def test_call_ended_records_duration_tokens_cost_and_give_ups(otel: Otel) -> None:
    instruments = Instruments(otel.meter_provider.get_meter("test"), STABLE)
    base = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-sonnet-4-6"}
    served = summarize(degraded_record(), at=0.9, error=None, prices=PRICES)
    instruments.call_ended(base, served)
    failed = summarize(degraded_record(), at=2.0, error="rate_limited", give_up="retry_budget")
    instruments.call_ended(base, failed)
    found = otel.metrics()

    durations = {p.attributes.get("error.type"): p for p in
                 found["gen_ai.client.operation.duration"].data.data_points}
    assert durations[None].sum == pytest.approx(0.9)
    assert durations[None].attributes["gen_ai.response.model"] == "claude-haiku-4-5"
    assert durations[None].attributes["resilient_llm.degraded"] is True
    assert durations["rate_limited"].sum == pytest.approx(2.0)
    tokens = {(p.attributes["gen_ai.token.type"], p.attributes.get("gen_ai.response.model")):
              p.sum for p in found["gen_ai.client.token.usage"].data.data_points}
    assert tokens == {  # both calls carry the record's usage; only the served one a model
        ("input", "claude-haiku-4-5"): 100, ("output", "claude-haiku-4-5"): 5,
        ("input", None): 100, ("output", None): 5}
    (cost,) = found["resilient_llm.cost"].data.data_points
    assert cost.value == pytest.approx(served.cost.total if served.cost else -1)
    (exhausted,) = found["resilient_llm.retry_budget.exhausted"].data.data_points
    assert exhausted.value == 1
    assert "resilient_llm.deadline_exceeded" not in found


def test_attempt_metrics_count_throttles_by_class(otel: Otel) -> None:
    instruments = Instruments(otel.meter_provider.get_meter("test"), STABLE)
    base = {"gen_ai.operation.name": "chat"}
    instruments.attempt(base, "gpt-4.1", "rate_limited", 0.5)
    instruments.attempt(base, "gpt-4.1", "server_error", 0.25)
    instruments.attempt(base, "gpt-4.1", None, 1.0)
    found = otel.metrics()
    outcomes = {p.attributes["resilient_llm.attempt.outcome"]: p.value
                for p in found["resilient_llm.attempts"].data.data_points}
    assert outcomes == {"rate_limited": 1, "server_error": 1, "ok": 1}
    (throttle,) = found["resilient_llm.throttles"].data.data_points
    assert throttle.attributes["resilient_llm.failure.class"] == "rate_limited"


# --- the log sink --------------------------------------------------------------------------------


def test_the_log_line_says_what_happened_and_nothing_for_a_healthy_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="resilient_llm.calls")
    healthy = CallSummary(call_id="c0", provider="openai", requested="gpt-4.1",
                          served_by="gpt-4.1", degraded=False, reason=None, error=None,
                          elapsed=0.5)
    log_call(healthy)
    assert caplog.records == []

    log_call(summarize(degraded_record(), at=0.9, error=None, last_failure="overloaded"))
    log_call(summarize(degraded_record(), at=0.9, error="stream_cut", committed=True))
    log_call(summarize(degraded_record(), at=2.0, error="rate_limited", give_up="attempts"))
    degraded, interrupted, failed = (r.getMessage() for r in caplog.records)
    call = short_hash(KEY)[:8]
    assert degraded.startswith(f"resilient_llm: call {call} for claude-sonnet-4-6 was served "
                               "by claude-haiku-4-5 (degraded, reason: overloaded) after 2 "
                               "attempts in 0.90 s of a 10.00 s budget")
    assert "#1 claude-sonnet-4-6 overloaded HTTP 529 0.200 s; #2 claude-haiku-4-5 ok" in degraded
    assert "stream from claude-haiku-4-5 interrupted after output had started (stream_cut)" \
        in interrupted
    assert "failed (rate_limited, gave up: attempts) after 2 attempts in 2.00 s" in failed


def test_attempts_text_names_waits_and_unsent_calls() -> None:
    record = degraded_record()
    assert "#2 claude-haiku-4-5 ok HTTP 200 0.600 s after 0.10 s wait" in attempts_text(
        record.attempts)
    assert attempts_text(()) == "none sent"


# --- the capture sink ----------------------------------------------------------------------------


def test_a_capture_line_holds_the_call_and_the_exact_request_without_credentials(
    tmp_path: Path,
) -> None:
    sent = exchange({"model": "claude-haiku-4-5", "messages": []},
                    {"id": "msg_1", "model": "claude-haiku-4-5"})
    summary = summarize(degraded_record(attributes={"feature": "faq"}), at=0.9, error=None,
                        exchange=sent, prices=PRICES)
    sink = Sink(str(tmp_path / "calls.jsonl"))
    sink.write(capture_line(summary))
    sink.write(capture_line(summary))
    first, second = (json.loads(text) for text in
                     (tmp_path / "calls.jsonl").read_text("utf-8").splitlines())
    assert first["schema"] == SCHEMA and first["provider"] == "anthropic"
    assert first["call"]["served_by"] == "claude-haiku-4-5" and first["call"]["degraded"]
    assert first["call"]["attributes"] == {"feature": "faq"}
    assert [a["number"] for a in first["call"]["attempts"]] == [1, 2]
    assert first["call"]["usage"]["cache_read_tokens"] == 60
    assert first["call"]["cost"] == pytest.approx(summary.cost.total if summary.cost else -1)
    assert first["request"]["body"]["model"] == "claude-haiku-4-5"
    assert "x-api-key" not in first["request"]["headers"]
    assert "sk-ant-secret" not in (tmp_path / "calls.jsonl").read_text("utf-8")
    assert first["response"]["status"] == 200 and first["transport_error"] is None
    assert first["call"] == second["call"]


# --- providers: the public API only --------------------------------------------------------------


_STAND_INS = """
from opentelemetry import metrics, trace
from resilient_llm.telemetry.providers import is_api_placeholder
print(is_api_placeholder(trace.get_tracer_provider()),
      is_api_placeholder(metrics.get_meter_provider()))
"""


def test_the_apis_stand_in_providers_are_recognised_and_an_sdks_are_not() -> None:
    """If the API moves or renames its stand-ins, this fails before telemetry goes quiet or
    starts building spans that go nowhere."""
    proc = subprocess.run([sys.executable, "-c", _STAND_INS], capture_output=True, text=True,
                          timeout=60, env={"PATH": ""}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"], (
        "the OpenTelemetry API's unset global providers are no longer recognised as stand-ins "
        "by resilient_llm.telemetry.providers.is_api_placeholder: " + proc.stdout)
    assert providers.is_api_placeholder(trace.NoOpTracerProvider())
    assert providers.is_api_placeholder(metrics.NoOpMeterProvider())
    assert not providers.is_api_placeholder(TracerProvider())
    assert not providers.is_api_placeholder(MeterProvider())


def test_explicit_providers_win_and_none_goes_back_to_the_globals(otel: Otel) -> None:
    assert providers.tracer_provider() is otel.tracer_provider
    assert providers.meter_provider() is otel.meter_provider
    providers.configure()
    assert providers.tracer_provider() is None and providers.meter_provider() is None


def test_the_scope_carries_the_installed_version(otel: Otel) -> None:
    tracer = providers.tracer_for(otel.tracer_provider, STABLE)
    tracer.start_span("probe").end()
    (span,) = otel.spans()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.version == resilient_llm.__version__
    assert conventions.library_version() == resilient_llm.__version__


# --- where telemetry sits ------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), at any depth of the file."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_telemetry_is_wired_by_the_client_layer_and_never_reads_the_package_root() -> None:
    for path in sorted((SRC / "transport").rglob("*.py")):
        assert not any(name.startswith("resilient_llm.telemetry") for name in _imports(path)), \
            f"{path.name} imports telemetry: the drop-in layer wires it"
    for path in sorted((SRC / "telemetry").rglob("*.py")):
        imported = _imports(path)
        assert "resilient_llm" not in imported and "resilient_llm.__version__" not in imported, \
            f"telemetry/{path.name} imports the package root (an import circle)"
    assert any(name.startswith("resilient_llm.telemetry")
               for name in _imports(SRC / "dropin" / "base.py"))


def test_every_telemetry_module_is_small() -> None:
    sizes = {path.name: len(path.read_text("utf-8").splitlines())
             for path in (SRC / "telemetry").glob("*.py")}
    assert max(sizes.values()) <= 700, sizes


def test_the_engines_record_carries_no_telemetry_scratch() -> None:
    assert "telemetry" not in {f.name for f in dataclasses.fields(CallRecord)}


# --- the listener: how much work a call gets ----------------------------------------------------


def _emit_degraded(record: CallRecord, *, between: Callable[[], object] = lambda: None) -> None:
    for event in (
        Event("call_started", 0.0, target="claude-sonnet-4-6"),
        Event("attempt_started", 0.0, attempt=1, target="claude-sonnet-4-6"),
        None,
        Event("attempt_finished", 0.2, attempt=1, target="claude-sonnet-4-6",
              failure=OVERLOADED, status=529),
        Event("fell_back", 0.2, target="claude-haiku-4-5", detail="overloaded"),
        Event("attempt_started", 0.2, attempt=2, target="claude-haiku-4-5"),
        Event("attempt_finished", 0.9, attempt=2, target="claude-haiku-4-5", status=200),
        Event("succeeded", 0.9, target="claude-haiku-4-5"),
    ):
        if event is None:
            between()
        else:
            bus.emit(record, event)


def bare_record() -> CallRecord:
    listener.install()  # as the first drop-in client does
    return CallRecord(requested="claude-sonnet-4-6", deadline_budget=10.0, provider="anthropic",
                      server_address="api.test", server_port=443, path="/v1/messages")


def test_without_an_sdk_a_call_is_lean_its_warning_still_written_and_nothing_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    providers.configure()
    caplog.set_level(logging.WARNING, logger="resilient_llm.calls")
    record = bare_record()
    _emit_degraded(record)
    assert listener.open_calls() == 0
    assert "attempt_started" in record.quiet and "waited" in record.quiet  # never delivered
    (line,) = [r.getMessage() for r in caplog.records]
    assert "was served by claude-haiku-4-5 (degraded, reason: overloaded)" in line


def test_a_call_started_twice_keeps_its_open_span(otel: Otel) -> None:
    record = bare_record()
    bus.start(record)
    _emit_degraded(record, between=lambda: bus.start(record))  # mid-attempt
    (call,) = otel.call_spans()
    assert len(otel.children(call)) == 2 and listener.open_calls() == 0


def test_telemetry_off_delivers_no_event_at_all(otel: Otel) -> None:
    record = bare_record()
    record.policy = resilient_llm.Policy(telemetry=False)
    bus.start(record)
    assert record.quiet == bus.ALL_KINDS
    _emit_degraded(record)
    assert otel.spans() == [] and listener.open_calls() == 0


def test_every_log_line_of_a_call_carries_one_call_id(caplog: pytest.LogCaptureFixture) -> None:
    """The call id (a hash of the call's idempotency key) is known from the call's start: the
    line that says it skipped an open circuit, before any attempt, carries the same id as the
    attempt's and the summary's (it carried one made from the record's address, which later
    calls reused)."""
    import re

    from resilient_llm import Policy
    from resilient_llm.openai import OpenAI
    from resilient_llm.testing import Fault, FaultProvider

    provider = FaultProvider()
    provider.set_default(Fault.status(500), model="a")
    policy = Policy(fallbacks={"a": ["b"]}, deadline=5)
    ids: list[set[str]] = []
    with OpenAI(base_url="http://fault.test/v1", api_key="sk-x", policy=policy,
                http_client=httpx2.Client(transport=provider.transport())) as client:
        for _ in range(8):  # the primary's circuit opens on the way
            caplog.clear()
            with caplog.at_level(logging.DEBUG, logger="resilient_llm"):
                client.chat.completions.create(model="a",
                                               messages=[{"role": "user", "content": "hi"}])
            ids.append(set(re.findall(r"resilient_llm: call ([0-9a-f]{8}) ", caplog.text)))
    assert any("moves to b (circuit_open)" in line for line in caplog.text.splitlines())
    assert all(len(found) == 1 for found in ids), ids
    assert len(set().union(*ids)) == len(ids)  # and no two calls share one
