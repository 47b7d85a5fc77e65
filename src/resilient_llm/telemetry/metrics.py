"""The metric sink: GenAI client metrics and ``resilient_llm.*`` instruments.

Per-attempt facts (attempts, retries, throttles, waits, fallbacks, breaker changes) are
added as the engine's events arrive; the per-call ones (duration, tokens, cost, deadline and
retry-budget give-ups) from the call's :class:`~.summary.CallSummary`. Every point carries the
call's base attributes (operation, provider, requested model, server, the caller's
``attributes(...)``). Instruments get the conventions' bucket boundaries as an advisory, so an
application's View still wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import metrics

from .conventions import (
    DURATION_BUCKETS,
    TOKEN_BUCKETS,
    Conventions,
    is_tool,
    target_attribute,
)
from .pricing import TokenUsage
from .summary import CallSummary

__all__ = ["Instruments", "observe_pressure"]

Attributes = Mapping[str, Any]

#: Failure classes counted as throttles.
_THROTTLES = frozenset({"rate_limited", "overloaded"})


def observe_pressure(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    """One point per target the engine tracks: ``endpoint|credential hash|model``."""
    from ..engine.registry import pressure_snapshot

    for snapshot in pressure_snapshot():
        model = snapshot.target.rsplit("|", 1)[-1]
        yield metrics.Observation(snapshot.pressure, {"resilient_llm.target": snapshot.target,
                                                      "gen_ai.request.model": model})


class Instruments:
    """The metric sink: every instrument of one meter provider (created once), and what
    each engine event and each finished call adds to them."""

    def __init__(self, meter: metrics.Meter, conv: Conventions) -> None:
        def histogram(name: str, unit: str, description: str,
                      buckets: Sequence[float]) -> metrics.Histogram:
            return meter.create_histogram(name, unit, description,
                                          explicit_bucket_boundaries_advisory=buckets)

        self.conv = conv
        self.duration = histogram(conv.duration_metric, "s",
                                  "Duration of GenAI operations, all retries and fallbacks "
                                  "included", DURATION_BUCKETS)
        self.ttfc = histogram(conv.ttfc_metric, "s",
                              "Time to the first chunk of a streamed answer", DURATION_BUCKETS)
        self.tokens: metrics.Histogram | None = None
        self.cache_tokens: metrics.Histogram | None = None
        self.token_counters: dict[str, metrics.Counter] = {}
        self.token_histograms: dict[str, metrics.Histogram] = {}
        if conv.token_histogram is not None:
            self.tokens = histogram(conv.token_histogram, "{token}",
                                    "Input and output tokens used", TOKEN_BUCKETS)
            self.cache_tokens = histogram("resilient_llm.client.token.cache_usage", "{token}",
                                          "Prompt-cache tokens read and written (part of "
                                          "input)", TOKEN_BUCKETS)
        else:
            prefix = conv.token_counter_prefix or ""
            for kind in ("input_tokens", "output_tokens", "cache_read.input_tokens",
                         "cache_write.input_tokens", "reasoning.output_tokens"):
                self.token_counters[kind] = meter.create_counter(
                    prefix + kind, "{token}", f"GenAI {kind.replace('_', ' ')}")
            for kind in ("input_tokens", "output_tokens"):
                self.token_histograms[kind] = histogram(
                    f"gen_ai.client.inference.operation.{kind}", "{token}",
                    f"GenAI {kind.replace('_', ' ')} per operation", TOKEN_BUCKETS)
        self.attempts = meter.create_counter("resilient_llm.attempts", "{attempt}",
                                             "Attempts sent, by target and outcome")
        self.attempt_duration = histogram("resilient_llm.attempt.duration", "s",
                                          "Duration of single attempts (the provider's share)",
                                          DURATION_BUCKETS)
        self.retries = meter.create_counter("resilient_llm.retries", "{retry}",
                                            "Attempts after the first, by the failure class "
                                            "that caused them")
        self.throttles = meter.create_counter("resilient_llm.throttles", "{throttle}",
                                              "Rate-limited and overloaded answers")
        self.fallbacks = meter.create_counter("resilient_llm.fallbacks", "{fallback}",
                                              "Moves to another model, by reason")
        self.deadline_exceeded = meter.create_counter("resilient_llm.deadline_exceeded",
                                                      "{call}", "Calls ended by their deadline")
        self.circuit_changes = meter.create_counter("resilient_llm.circuit.state_changes",
                                                    "{change}", "Circuit-breaker transitions")
        self.budget_exhausted = meter.create_counter("resilient_llm.retry_budget.exhausted",
                                                     "{call}",
                                                     "Calls that gave up because the retry "
                                                     "budget was spent")
        self.backoff = histogram("resilient_llm.backoff.duration", "s",
                                 "Backoff waits between attempts", DURATION_BUCKETS)
        self.queue_wait = histogram("resilient_llm.queue_wait.duration", "s",
                                    "Admission waits (pacing and concurrency limits)",
                                    DURATION_BUCKETS)
        self.cost = meter.create_counter("resilient_llm.cost", "{USD}",
                                         "Cost of calls from the configured price table")
        self.pressure = meter.create_observable_gauge(
            "resilient_llm.pressure", callbacks=[observe_pressure], unit="1",
            description="Estimated provider pressure per target (0 idle, 1 saturated)")


    # --- per event ------------------------------------------------------------------------------

    def retry(self, base: Attributes, failure: str | None) -> None:
        """An attempt after the first, caused by ``failure`` (the previous attempt's class)."""
        self.retries.add(1, {**base, "resilient_llm.failure.class": failure or "unknown"})

    def attempt(self, base: Attributes, target: str, failure: str | None,
                duration: float) -> None:
        """An attempt to ``target`` ended (``failure`` ``None``: it answered)."""
        attrs = {**base, target_attribute(base): target,
                 "resilient_llm.attempt.outcome": failure or "ok"}
        if failure is not None:
            attrs["error.type"] = failure
        self.attempts.add(1, attrs)
        self.attempt_duration.record(duration, attrs)
        if failure in _THROTTLES:
            self.throttles.add(1, {**base, target_attribute(base): target,
                                   "resilient_llm.failure.class": failure})

    def wait(self, base: Attributes, reason: str, seconds: float) -> None:
        """A wait before an attempt: ``admission`` (pacing, concurrency) or a backoff."""
        attrs = {**base, "resilient_llm.wait.reason": reason}
        (self.queue_wait if reason == "admission" else self.backoff).record(seconds, attrs)

    def fallback(self, base: Attributes, facts: Attributes) -> None:
        """The call moved to another target (``resilient_llm.fallback.*`` facts)."""
        self.fallbacks.add(1, {**base, **facts})

    def circuit_change(self, base: Attributes, facts: Attributes) -> None:
        """A target's circuit breaker changed state."""
        self.circuit_changes.add(1, {**base, **facts})

    # --- per call -------------------------------------------------------------------------------

    def call_ended(self, base: Attributes, summary: CallSummary) -> None:
        """Duration, time to first chunk, tokens, cost and give-up counters of one call."""
        base = dict(base)
        response_model = summary.response_model
        if response_model is not None and not is_tool(base):
            base["gen_ai.response.model"] = response_model
        usage = summary.usage
        duration_attrs = {**base, "resilient_llm.degraded": summary.degraded,
                          "resilient_llm.retried": summary.retries > 0}
        if usage is not None and usage.input_tokens:
            duration_attrs["resilient_llm.prompt_cache.hit"] = usage.cache_read_tokens > 0
        if summary.error is not None:
            duration_attrs["error.type"] = summary.error
        self.duration.record(summary.elapsed, duration_attrs)
        if summary.committed and summary.time_to_first_token is not None:
            self.ttfc.record(summary.time_to_first_token, base)
        if usage is not None:
            self._tokens(base, usage)
        if summary.cost is not None:
            self.cost.add(summary.cost.total, base)
        if summary.error == "deadline_exceeded":
            self.deadline_exceeded.add(1, base)
        if summary.give_up == "retry_budget":
            self.budget_exhausted.add(1, base)

    def _tokens(self, base: Attributes, usage: TokenUsage) -> None:
        if self.tokens is not None:
            self.tokens.record(usage.input_tokens, {**base, "gen_ai.token.type": "input"})
            self.tokens.record(usage.output_tokens, {**base, "gen_ai.token.type": "output"})
            if self.cache_tokens is not None:
                if usage.cache_read_tokens:
                    self.cache_tokens.record(usage.cache_read_tokens,
                                             {**base, "gen_ai.token.type": "cache_read"})
                if usage.cache_write_tokens:
                    self.cache_tokens.record(usage.cache_write_tokens,
                                             {**base, "gen_ai.token.type": "cache_write"})
            return
        counted = {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read.input_tokens": usage.cache_read_tokens,
            "cache_write.input_tokens": usage.cache_write_tokens,
            "reasoning.output_tokens": usage.reasoning_tokens,
        }
        modal = {**base, "gen_ai.token.modality": "unknown"}
        for kind, value in counted.items():
            if value:
                self.token_counters[kind].add(value, modal)
        self.token_histograms["input_tokens"].record(usage.input_tokens, base)
        self.token_histograms["output_tokens"].record(usage.output_tokens, base)
