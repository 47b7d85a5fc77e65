"""The call summary: one value per finished call, the only input of every telemetry sink.

When a call ends, the listener folds what it knows (the engine's :class:`CallRecord`, the
last attempt's exact exchange, the price table, its own tallies) into one frozen
:class:`CallSummary`. The call span, the metric points, the log line, the capture line and
``outcome().cost`` are all written from it, so they cannot disagree about whether a call was
degraded, what it cost or why it failed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..events.outcome import AttemptInfo, CallRecord
from .conventions import short_hash
from .pricing import Cost, PriceTable, TokenUsage, token_usage
from .tap import Exchange

__all__ = ["NO_ANSWER", "Answer", "CallSummary", "call_id", "read_answer", "summarize"]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the answer itself says (read from the tapped bytes, when telemetry kept them)."""

    usage: Any = None
    response_id: str | None = None
    response_model: str | None = None
    finish_reasons: tuple[str, ...] = ()
    output_text: str | None = None


NO_ANSWER = Answer()


def read_answer(exchange: Exchange | None, provider: str | None) -> Answer:
    """The answer of ``exchange``: a JSON body's id, model, finish reasons and usage, or, for a
    stream whose bytes were kept (capture), its text and usage."""
    if exchange is None or exchange.response is None:
        return NO_ANSWER
    if exchange.is_stream:
        from ..providers import StreamScanner, wire_for

        scanner = StreamScanner(wire_for("anthropic" if provider == "anthropic" else "openai"))
        scanner.feed(exchange.response_body() or b"")
        scanner.finish()
        return Answer(usage=scanner.usage, output_text=scanner.text)
    body = exchange.response_json()
    if not isinstance(body, Mapping):
        return NO_ANSWER
    reasons = [choice["finish_reason"] for choice in body.get("choices") or ()
               if isinstance(choice, Mapping) and isinstance(choice.get("finish_reason"), str)]
    for key in ("stop_reason", "status"):
        if isinstance(body.get(key), str) and not reasons:
            reasons.append(body[key])
    rid, model = body.get("id"), body.get("model")
    return Answer(
        usage=body.get("usage"),
        response_id=rid if isinstance(rid, str) else None,
        response_model=model if isinstance(model, str) else None,
        finish_reasons=tuple(reasons),
    )


def call_id(record: CallRecord) -> str:
    """A short id that matches a call's log lines with its spans (a hash of its idempotency
    key, or of the record's identity when there is none)."""
    key = record.idempotency_key
    return short_hash(key)[:8] if key else f"{id(record) & 0xFFFFFFFF:08x}"


@dataclass(frozen=True, slots=True)
class CallSummary:
    """Everything the sinks report about one logical call, fixed when the call ends.

    ``served_by`` is ``None`` for a failed call unless its stream had already delivered output
    (``committed``), and ``served_region`` with it; ``error`` is the call's ``error.type``
    (``None`` on success); ``reason`` says why it fell back or gave up. ``exchange`` is the
    last attempt exactly as sent (for content and capture), ``None`` when no bytes were
    tapped.
    """

    call_id: str
    provider: str
    requested: str | None
    served_by: str | None
    degraded: bool
    reason: str | None
    error: str | None
    elapsed: float
    attempts: tuple[AttemptInfo, ...] = ()
    served_region: str | None = None
    give_up: str | None = None
    committed: bool = False
    complete: bool | None = None
    deadline_budget: float | None = None
    pressure: float | None = None
    queue_wait: float = 0.0
    backoff_total: float = 0.0
    breaker_state: str | None = None
    time_to_first_token: float | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    idempotency_key_hash: str | None = None
    cache_key_hash: str | None = None
    findings: tuple[str, ...] = ()
    usage: TokenUsage | None = None
    cost: Cost | None = None
    answer: Answer = NO_ANSWER
    exchange: Exchange | None = None

    @property
    def retries(self) -> int:
        """Attempts beyond the first."""
        return max(0, len(self.attempts) - 1)

    @property
    def deadline_remaining(self) -> float | None:
        """Seconds of the budget left when the call ended."""
        if self.deadline_budget is None:
            return None
        return max(0.0, self.deadline_budget - self.elapsed)

    @property
    def response_model(self) -> str | None:
        """``gen_ai.response.model``: the answer's own model when it names one, else the
        target that served it."""
        if self.served_by is None:
            return None
        return self.answer.response_model or self.served_by


def summarize(
    record: CallRecord,
    *,
    at: float,
    error: str | None,
    give_up: str | None = None,
    committed: bool = False,
    complete: bool | None = None,
    last_failure: str | None = None,
    backoff_total: float = 0.0,
    exchange: Exchange | None = None,
    prices: PriceTable | None = None,
) -> CallSummary:
    """Fold a call that ended ``at`` seconds after it started into its summary.

    ``error`` and ``give_up`` say how it ended; ``committed``/``complete`` what its stream
    did; ``last_failure`` (the last attempt's failure class) explains a degradation the engine
    gave no reason for. Usage comes from the drop-in's parsed answer, else from the tapped
    bytes; it is priced only for a call that was served.
    """
    provider = record.provider or "openai"
    served = record.served_by if error is None or committed else None
    degraded = record.degraded_by(served)
    reason = record.reason or give_up
    if degraded and reason is None:
        reason = last_failure
    answer = read_answer(exchange, provider)
    usage = token_usage(record.usage, provider) or token_usage(answer.usage, provider)
    cost = None
    if prices is not None and served is not None and error is None:
        cost = prices.cost(served, usage)
    cache_key = _request_cache_key(exchange)
    return CallSummary(
        call_id=call_id(record),
        provider=provider,
        requested=record.requested,
        served_by=served,
        degraded=degraded,
        reason=reason,
        error=error,
        elapsed=max(at, 0.0),
        attempts=tuple(record.attempts),
        served_region=record.served_region if served is not None else None,
        give_up=give_up,
        committed=committed,
        complete=complete,
        deadline_budget=record.deadline_budget,
        pressure=record.pressure,
        queue_wait=record.queue_wait,
        backoff_total=backoff_total,
        breaker_state=record.breaker_state,
        time_to_first_token=record.time_to_first_token,
        attributes=record.attributes,
        idempotency_key_hash=short_hash(record.idempotency_key) if record.idempotency_key
        else None,
        cache_key_hash=short_hash(cache_key) if cache_key else None,
        findings=tuple(finding_code(f) for f in record.findings),
        usage=usage,
        cost=cost,
        answer=answer,
        exchange=exchange,
    )


def finding_code(finding: Any) -> str:
    """The low-cardinality code of a prompt-lint or cache-health finding (its ``kind``)."""
    kind = getattr(finding, "kind", None)
    return kind if isinstance(kind, str) else type(finding).__name__


def _request_cache_key(exchange: Exchange | None) -> str | None:
    """The ``prompt_cache_key`` the last attempt sent, if any."""
    if exchange is None:
        return None
    body = exchange.request_body()
    if not body or b"prompt_cache_key" not in body:
        return None
    try:
        value = json.loads(body).get("prompt_cache_key")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
