"""The span sink: one CLIENT span per logical call, one INTERNAL child span per attempt.

The call span covers every retry and fallback, as the GenAI conventions ask, and is named
``{gen_ai.operation.name} {gen_ai.request.model}``. It is opened when the first attempt
starts (a child of whatever span is current in the caller then), gets span events for waits,
fallbacks and breaker changes, and is closed from the call's
:class:`~.summary.CallSummary`. Every timestamp is placed on the call's own clock
(``t0_ns`` plus the event's offset), so span timings agree with ``outcome()``, and with a
fake clock in tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .content import content_attributes
from .conventions import Conventions, is_tool, target_attribute
from .summary import CallSummary

__all__ = ["MIN_EVENT_WAIT", "CallSpans"]

Attributes = Mapping[str, Any]

#: Shorter admission waits are in ``resilient_llm.queue_wait``, not worth a span event.
MIN_EVENT_WAIT = 0.001


class CallSpans:
    """The spans of one call, from its first attempt to its end."""

    __slots__ = ("attempt_span", "span", "t0_ns", "tracer")

    def __init__(self, tracer: trace.Tracer, t0_ns: int) -> None:
        self.tracer = tracer
        self.t0_ns = t0_ns
        self.span: trace.Span | None = None
        self.attempt_span: trace.Span | None = None

    def ns(self, at: float) -> int:
        """Wall-clock nanoseconds of an event ``at`` seconds after the call started."""
        return self.t0_ns + int(at * 1e9)

    def call_span(self, base: Attributes) -> trace.Span:
        """The call's span, opened on first use with the call's base attributes."""
        span = self.span
        if span is None:
            model = base.get(target_attribute(base))
            operation = base["gen_ai.operation.name"]
            kind = SpanKind.INTERNAL if is_tool(base) else SpanKind.CLIENT
            span = self.span = self.tracer.start_span(
                f"{operation} {model}" if model else operation, kind=kind,
                attributes=base, start_time=self.t0_ns)
        return span

    def attempt_started(self, base: Attributes, *, number: int, target: str | None,
                        backoff: float, at: float) -> None:
        """Open attempt ``number``'s span (``backoff``: seconds waited before it)."""
        attributes: dict[str, Any] = {
            "resilient_llm.attempt.number": number,
            "resilient_llm.attempt.backoff": backoff,
        }
        if target:
            attributes[target_attribute(base)] = target
        for name in ("server.address", "server.port"):
            if name in base:
                attributes[name] = base[name]
        self.attempt_span = self.tracer.start_span(
            f"attempt {target or 'unknown'}",
            context=trace.set_span_in_context(self.call_span(base)),
            kind=SpanKind.INTERNAL, attributes=attributes, start_time=self.ns(at))

    def attempt_finished(self, *, status: int | None, failure: str | None, at: float) -> None:
        """Close the open attempt span (``failure``: its class, or ``None`` when it answered)."""
        span = self.attempt_span
        if span is None:
            return
        self.attempt_span = None
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if failure is not None:
            span.set_attribute("resilient_llm.attempt.failure", failure)
            span.set_attribute("error.type", failure)
            span.set_status(Status(StatusCode.ERROR, failure))
        span.end(end_time=self.ns(at))

    def event(self, base: Attributes, name: str, facts: Attributes, at: float) -> None:
        """A span event on the call span (``resilient_llm.wait``, ``.fallback``, ``.circuit``)."""
        self.call_span(base).add_event(name, facts, timestamp=self.ns(at))

    def end(self, base: Attributes, summary: CallSummary, conv: Conventions, *,
            content: bool) -> None:
        """Close the call span (and an attempt span that never reported back) from the
        summary; ``content`` adds the opt-in message attributes."""
        span = self.call_span(base)
        at = summary.elapsed
        if self.attempt_span is not None:
            self.attempt_span.end(end_time=self.ns(at))
            self.attempt_span = None
        facts = call_attributes(summary, conv)
        if is_tool(base):  # a tool has no response model
            facts.pop("gen_ai.response.model", None)
        span.set_attributes(facts)
        if content:
            span.set_attributes(content_attributes(summary.exchange, summary.answer))
        if summary.error is not None:
            span.set_status(Status(StatusCode.ERROR, summary.error))
        span.end(end_time=self.ns(at))


def call_attributes(summary: CallSummary, conv: Conventions) -> dict[str, Any]:
    """The attributes a finished call adds to its span (pure: tested without a tracer)."""
    facts: dict[str, Any] = {
        "resilient_llm.attempts": len(summary.attempts),
        "resilient_llm.retries": summary.retries,
        "resilient_llm.degraded": summary.degraded,
        "resilient_llm.queue_wait": summary.queue_wait,
        "resilient_llm.backoff.total": summary.backoff_total,
    }
    if summary.served_by is not None:
        facts["resilient_llm.served_by"] = summary.served_by
        if summary.served_region is not None:
            facts["resilient_llm.served_region"] = summary.served_region
        facts["gen_ai.response.model"] = summary.response_model
    if summary.reason is not None:
        facts["resilient_llm.reason"] = summary.reason
    if summary.deadline_budget is not None:
        facts["resilient_llm.deadline.budget"] = summary.deadline_budget
        facts["resilient_llm.deadline.remaining"] = summary.deadline_remaining
    if summary.pressure is not None:
        facts["resilient_llm.pressure"] = float(summary.pressure)
    if summary.breaker_state is not None:
        facts["resilient_llm.breaker.state"] = summary.breaker_state
    if summary.cache_key_hash is not None:
        facts["resilient_llm.cache_key.hash"] = summary.cache_key_hash
    if summary.findings:
        facts["resilient_llm.cache.findings"] = list(summary.findings)
    if summary.idempotency_key_hash is not None:
        facts["resilient_llm.idempotency_key.hash"] = summary.idempotency_key_hash
    if summary.committed:
        facts["gen_ai.request.stream"] = True
        if summary.time_to_first_token is not None:
            facts["gen_ai.response.time_to_first_chunk"] = summary.time_to_first_token
        if summary.complete is not None:
            facts["resilient_llm.stream.complete"] = summary.complete
    answer = summary.answer
    if answer.response_id:
        facts["gen_ai.response.id"] = answer.response_id
    if answer.finish_reasons:
        facts["gen_ai.response.finish_reasons"] = list(answer.finish_reasons)
    usage = summary.usage
    if usage is not None:
        facts["gen_ai.usage.input_tokens"] = usage.input_tokens
        facts["gen_ai.usage.output_tokens"] = usage.output_tokens
        facts["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_tokens
        facts[conv.cache_write_attribute] = usage.cache_write_tokens
        if usage.reasoning_tokens:
            facts["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        if usage.cache_read_tokens or usage.cache_write_tokens or usage.input_tokens:
            facts["resilient_llm.prompt_cache.hit"] = usage.cache_read_tokens > 0
    if summary.cost is not None:
        facts["resilient_llm.cost.usd"] = summary.cost.total
    if summary.error is not None:
        facts["error.type"] = summary.error
    return facts
