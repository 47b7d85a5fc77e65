"""OpenTelemetry spans and metrics, log lines, cost and capture, built from the engine's events.

One listener on ``_events`` turns each call's transitions into:

* one CLIENT span per logical call, named ``{gen_ai.operation.name} {gen_ai.request.model}``
  and covering every retry and fallback (as the GenAI conventions ask), with one INTERNAL
  child span per attempt and span events for backoffs and fallbacks;
* the GenAI client metrics plus ``resilient_llm.*`` counters and histograms;
* one WARNING log line per degraded or failed call, one DEBUG line per attempt;
* the cost of the call (when a price table is configured) and, opt-in, a JSONL capture line.

Only ``opentelemetry-api`` is used. Without an SDK the API hands out no-op providers; the
listener notices that per call and skips span and metric work entirely, so telemetry costs a
few dictionary operations. Names follow semantic conventions **v1.41.0** (``SCHEMA_URL``);
``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` switches to the newer names of
the GenAI development repository (``LATEST_EXPERIMENTAL``), which carry no released schema.

Prompt and completion text never leave the process unless ``capture_content`` is on, and then
credentials are masked. API keys never appear: nothing here reads credential headers except
to mask their values.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..context.attributes import current_attributes
from ..events.bus import ALL_KINDS, Event, set_builtin
from ..events.outcome import CallRecord
from . import capture as _capture
from .pricing import Cost, PriceTable, TokenUsage, load_prices, token_usage

if TYPE_CHECKING:
    from .._policy import Policy

__all__ = [
    "DURATION_BUCKETS",
    "INSTRUMENTATION_NAME",
    "LATEST_EXPERIMENTAL",
    "METRICS",
    "OPT_IN_ENV",
    "OPT_IN_VALUE",
    "RESILIENT_ATTRIBUTES",
    "SCHEMA_URL",
    "SEMCONV_ATTRIBUTES",
    "STABLE",
    "TOKEN_BUCKETS",
    "Conventions",
    "attach",
    "configure",
    "conventions",
    "install",
    "uninstall",
]

log = logging.getLogger("resilient_llm.calls")

INSTRUMENTATION_NAME = "resilient_llm"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.0"
OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
OPT_IN_VALUE = "gen_ai_latest_experimental"

#: ``gen_ai.client.operation.duration`` and every other seconds histogram (conventions v1.41).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
#: ``gen_ai.client.token.usage`` (conventions v1.41).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)


@dataclass(frozen=True, slots=True)
class Conventions:
    """The names that differ between the pinned conventions and the latest experimental ones."""

    schema_url: str | None
    cache_write_attribute: str
    duration_metric: str
    ttfc_metric: str
    token_histogram: str | None  # v1.41: one histogram split by gen_ai.token.type
    token_counter_prefix: str | None  # dev: counters gen_ai.client.inference.usage.*


STABLE = Conventions(
    schema_url=SCHEMA_URL,
    cache_write_attribute="gen_ai.usage.cache_creation.input_tokens",
    duration_metric="gen_ai.client.operation.duration",
    ttfc_metric="gen_ai.client.operation.time_to_first_chunk",
    token_histogram="gen_ai.client.token.usage",
    token_counter_prefix=None,
)
LATEST_EXPERIMENTAL = Conventions(
    schema_url=None,
    cache_write_attribute="gen_ai.usage.cache_write.input_tokens",
    duration_metric="gen_ai.client.inference.duration",
    ttfc_metric="gen_ai.client.inference.time_to_first_chunk",
    token_histogram=None,
    token_counter_prefix="gen_ai.client.inference.usage.",
)


def conventions() -> Conventions:
    """``LATEST_EXPERIMENTAL`` when ``OTEL_SEMCONV_STABILITY_OPT_IN`` lists it, else ``STABLE``."""
    opted = os.environ.get(OPT_IN_ENV, "")
    if OPT_IN_VALUE in (item.strip() for item in opted.split(",")):
        return LATEST_EXPERIMENTAL
    return STABLE


#: Convention attributes resilient-llm may emit (v1.41.0 names), on spans and metric points.
SEMCONV_ATTRIBUTES = frozenset({
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.request.stream",
    "gen_ai.response.model",
    "gen_ai.response.id",
    "gen_ai.response.finish_reasons",
    "gen_ai.response.time_to_first_chunk",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.token.type",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "server.address",
    "server.port",
    "error.type",
    "http.response.status_code",
})

#: resilient-llm's own attributes (spans, span events and metric points).
RESILIENT_ATTRIBUTES = frozenset({
    "resilient_llm.attempts",
    "resilient_llm.retries",
    "resilient_llm.degraded",
    "resilient_llm.retried",
    "resilient_llm.served_by",
    "resilient_llm.reason",
    "resilient_llm.deadline.budget",
    "resilient_llm.deadline.remaining",
    "resilient_llm.pressure",
    "resilient_llm.queue_wait",
    "resilient_llm.backoff.total",
    "resilient_llm.breaker.state",
    "resilient_llm.cache_key.hash",
    "resilient_llm.cache.findings",
    "resilient_llm.prompt_cache.hit",
    "resilient_llm.idempotency_key.hash",
    "resilient_llm.cost.usd",
    "resilient_llm.stream.complete",
    "resilient_llm.attempt.number",
    "resilient_llm.attempt.failure",
    "resilient_llm.attempt.backoff",
    "resilient_llm.attempt.outcome",
    "resilient_llm.failure.class",
    "resilient_llm.fallback.from",
    "resilient_llm.fallback.to",
    "resilient_llm.fallback.reason",
    "resilient_llm.wait.reason",
    "resilient_llm.wait.seconds",
    "resilient_llm.circuit.state",
    "resilient_llm.give_up.reason",
    "resilient_llm.target",
})

#: Every instrument: name -> (kind, unit). GenAI names shown for the pinned conventions.
METRICS: Mapping[str, tuple[str, str]] = {
    "gen_ai.client.operation.duration": ("histogram", "s"),
    "gen_ai.client.token.usage": ("histogram", "{token}"),
    "gen_ai.client.operation.time_to_first_chunk": ("histogram", "s"),
    "resilient_llm.client.token.cache_usage": ("histogram", "{token}"),
    "resilient_llm.attempts": ("counter", "{attempt}"),
    "resilient_llm.attempt.duration": ("histogram", "s"),
    "resilient_llm.retries": ("counter", "{retry}"),
    "resilient_llm.throttles": ("counter", "{throttle}"),
    "resilient_llm.fallbacks": ("counter", "{fallback}"),
    "resilient_llm.deadline_exceeded": ("counter", "{call}"),
    "resilient_llm.circuit.state_changes": ("counter", "{change}"),
    "resilient_llm.retry_budget.exhausted": ("counter", "{call}"),
    "resilient_llm.backoff.duration": ("histogram", "s"),
    "resilient_llm.queue_wait.duration": ("histogram", "s"),
    "resilient_llm.cost": ("counter", "{USD}"),
    "resilient_llm.pressure": ("gauge", "1"),
}

_THROTTLES = frozenset({"rate_limited", "overloaded"})
_MAX_OPEN_CALLS = 10_000
_MAX_CONTENT = 64 * 1024
_MIN_EVENT_WAIT = 0.001  # shorter admission waits are in queue_wait, not worth a span event


# --- providers, tracer and instruments ----------------------------------------------------------

_explicit_tracer_provider: trace.TracerProvider | None = None
_explicit_meter_provider: metrics.MeterProvider | None = None
_tracers: dict[tuple[int, Conventions], trace.Tracer] = {}
_instruments: dict[tuple[int, Conventions], _Instruments] = {}


def _version() -> str:
    from .. import __version__

    return __version__


# The API's globals, read directly on the hot path (an attribute load instead of two function
# calls and an environment lookup); when they are missing (another API version) or set, the
# public getters below decide.
_MISSING = object()
_ENV_PROVIDERS = any(name in os.environ for name in ("OTEL_PYTHON_TRACER_PROVIDER",
                                                      "OTEL_PYTHON_METER_PROVIDER"))


def _metrics_internal() -> Any:
    try:
        from opentelemetry.metrics import _internal
    except ImportError:  # pragma: no cover - another layout of the API
        return None
    return _internal


_METRICS_INTERNAL = _metrics_internal()


def _no_sdk() -> bool:
    """True when neither a tracer nor a meter provider has been set (the common no-SDK case)."""
    if _ENV_PROVIDERS or _explicit_tracer_provider is not None \
            or _explicit_meter_provider is not None:
        return False
    if getattr(trace, "_TRACER_PROVIDER", _MISSING) is not None:
        return False
    return getattr(_METRICS_INTERNAL, "_METER_PROVIDER", _MISSING) is None


def _tracer_provider() -> trace.TracerProvider | None:
    """The provider to use, or ``None`` when spans would go nowhere (no SDK configured)."""
    if _explicit_tracer_provider is not None:
        return _explicit_tracer_provider
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider


def _meter_provider() -> metrics.MeterProvider | None:
    """The meter provider to use, or ``None`` when metric points would go nowhere."""
    if _explicit_meter_provider is not None:
        return _explicit_meter_provider
    provider = metrics.get_meter_provider()
    if isinstance(provider, metrics.NoOpMeterProvider) or \
            type(provider).__name__ == "_ProxyMeterProvider":
        return None
    return provider


def _tracer(provider: trace.TracerProvider, conv: Conventions) -> trace.Tracer:
    key = (id(provider), conv)
    tracer = _tracers.get(key)
    if tracer is None:
        tracer = provider.get_tracer(INSTRUMENTATION_NAME, _version(), schema_url=conv.schema_url)
        _tracers[key] = tracer
    return tracer


def _observe_pressure(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    """One point per target the engine tracks: ``endpoint|credential hash|model``."""
    from ..engine.pressure import pressure_snapshot

    for snapshot in pressure_snapshot():
        model = snapshot.target.rsplit("|", 1)[-1]
        yield metrics.Observation(snapshot.pressure, {"resilient_llm.target": snapshot.target,
                                                      "gen_ai.request.model": model})


class _Instruments:
    """Every instrument of one meter provider, created once."""

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
            "resilient_llm.pressure", callbacks=[_observe_pressure], unit="1",
            description="Estimated provider pressure per target (0 idle, 1 saturated)")


def _instruments_for(provider: metrics.MeterProvider, conv: Conventions) -> _Instruments:
    key = (id(provider), conv)
    found = _instruments.get(key)
    if found is None:
        meter = provider.get_meter(INSTRUMENTATION_NAME, _version(), schema_url=conv.schema_url)
        found = _instruments[key] = _Instruments(meter, conv)
    return found


def configure(*, tracer_provider: trace.TracerProvider | None = None,
              meter_provider: metrics.MeterProvider | None = None) -> None:
    """Use these providers instead of the global ones (``None``: back to the globals).

    For tests and for applications that keep several providers; most applications set the
    global providers and never call this.
    """
    global _explicit_tracer_provider, _explicit_meter_provider
    _explicit_tracer_provider = tracer_provider
    _explicit_meter_provider = meter_provider
    _tracers.clear()
    _instruments.clear()


# --- per-policy settings -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Settings:
    enabled: bool
    capture_content: bool
    sink: _capture.Sink | None
    prices: PriceTable | None


_settings_cache: dict[int, tuple[Any, _Settings]] = {}
_env_policy: tuple[tuple[str | None, ...], Any] | None = None
_ENV_KEYS = ("RESILIENT_LLM_TELEMETRY", "RESILIENT_LLM_CAPTURE_CONTENT",
             "RESILIENT_LLM_CAPTURE_FILE", "RESILIENT_LLM_PRICES", "RESILIENT_LLM_PRICES_FILE")
_price_errors: set[str] = set()


def _policy_from_env() -> Any:
    """The environment's policy (for calls made outside a drop-in client), cached."""
    global _env_policy
    key = tuple(os.environ.get(name) for name in _ENV_KEYS)
    if _env_policy is None or _env_policy[0] != key:
        from .._policy import Policy

        try:
            policy: Any = Policy.from_env()
        except ValueError:
            policy = None
        _env_policy = (key, policy)
    return _env_policy[1]


def _settings(policy: Policy | None) -> _Settings:
    cached = _settings_cache.get(id(policy))
    if cached is not None and cached[0] is policy:
        return cached[1]
    prices: PriceTable | None = None
    inline = getattr(policy, "prices", None)
    path = getattr(policy, "prices_file", None)
    if inline is not None or path is not None:
        try:
            prices = load_prices(inline, path)
        except ValueError as exc:
            message = str(exc)
            if message not in _price_errors:
                _price_errors.add(message)
                log.warning("resilient_llm: price table ignored: %s", message)
    capture_file = getattr(policy, "capture_file", None)
    settings = _Settings(
        enabled=bool(getattr(policy, "telemetry", True)),
        capture_content=bool(getattr(policy, "capture_content", False)),
        sink=_capture.sink_for(capture_file) if capture_file else None,
        prices=prices,
    )
    if len(_settings_cache) > 256:
        _settings_cache.clear()
    _settings_cache[id(policy)] = (policy, settings)
    return settings


# --- per-call state ------------------------------------------------------------------------------


class _CallState:
    """What the listener keeps about one call between its events."""

    __slots__ = (
        "attempt_span", "attrs", "backoff_total", "base", "committed", "complete", "deep",
        "deferred", "exchange", "instruments", "last_failure", "live", "pending_wait",
        "record", "settings", "span", "t0_ns", "target", "tee", "tracer",
    )

    def __init__(self, record: CallRecord, t0_ns: int, settings: _Settings) -> None:
        self.record = record
        self.t0_ns = t0_ns
        self.attrs = record.attributes
        self.settings = settings
        self.deep = False  # arm the tap: spans, metrics, prices or capture need the bytes
        self.live = False  # spans or metrics go somewhere
        self.tee = False  # keep a copy of streamed bytes (capture only)
        self.tracer: trace.Tracer | None = None
        self.instruments: _Instruments | None = None
        self.span: trace.Span | None = None
        self.attempt_span: trace.Span | None = None
        self.base: dict[str, Any] | None = None
        self.deferred: list[Callable[[], None]] = []
        self.exchange: _capture.Exchange | None = None
        self.target = record.requested
        self.last_failure: str | None = None
        self.pending_wait = 0.0
        self.backoff_total = 0.0
        self.committed = False
        self.complete: bool | None = None

    def ns(self, at: float) -> int:
        """Wall-clock nanoseconds of an event ``at`` seconds after the call started.

        Offsets come from the call's own clock, so spans agree with ``outcome()`` (and with
        a fake clock in tests)."""
        return self.t0_ns + int(at * 1e9)


_states: dict[int, _CallState] = {}
# ``CallRecord.telemetry``: what the listener decided for a call when it started (or, for a
# record that did not go through a Call's start, at its first event).
_UNDECIDED, _LEAN, _OFF, _DEEP = 0, 1, 2, 3


def _operation(path: str | None) -> str:
    if path:
        if path.endswith("/embeddings"):
            return "embeddings"
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            return "text_completion"
    return "chat"


def _provider_name(record: CallRecord) -> str:
    provider = record.provider or "openai"
    host = record.server_address or ""
    if provider == "openai" and host.endswith((".openai.azure.com",
                                               ".cognitiveservices.azure.com")):
        return "azure.ai.openai"
    return provider


def _short_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def _open(record: CallRecord, at: float) -> tuple[bool, _CallState | None]:
    """Decide, when the call starts (or at its first event), how much work it gets.

    Returns (enabled, state): no state when nothing but log lines is needed (the lean path,
    which is all that runs without an OpenTelemetry SDK, prices or capture).
    """
    # Every Call puts its policy on its record; a bare record (built by hand) reads the env.
    policy = record.policy if record.policy is not None else _policy_from_env()
    settings = _settings(policy)
    if not settings.enabled:
        return False, None
    tee = settings.sink is not None or settings.capture_content
    if _no_sdk():
        tracer_provider: trace.TracerProvider | None = None
        meter_provider: metrics.MeterProvider | None = None
    else:
        tracer_provider = _tracer_provider()
        meter_provider = _meter_provider()
    live = tracer_provider is not None or meter_provider is not None
    if not (live or tee or settings.prices is not None):
        return True, None
    state = _CallState(record, time.time_ns() - int(at * 1e9), settings)
    state.deep = True
    state.tee = tee
    if live:
        state.live = True
        conv = conventions()
        if tracer_provider is not None:
            state.tracer = _tracer(tracer_provider, conv)
        if meter_provider is not None:
            state.instruments = _instruments_for(meter_provider, conv)
    if len(_states) >= _MAX_OPEN_CALLS:
        _evict()
    _states[id(record)] = state
    return True, state


def _build_base(state: _CallState) -> dict[str, Any]:
    """The attributes every span and metric point of the call carries.

    Built once the first attempt has been prepared (the server is known then); work that
    happened before it (admission waits, skipped targets) was deferred until now.
    """
    record = state.record
    base: dict[str, Any] = {
        "gen_ai.operation.name": _operation(record.path),
        "gen_ai.provider.name": _provider_name(record),
    }
    if record.requested:
        base["gen_ai.request.model"] = record.requested
    if record.server_address:
        base["server.address"] = record.server_address
        if record.server_port is not None:
            base["server.port"] = record.server_port
    base.update(state.attrs)
    state.base = base
    deferred, state.deferred = state.deferred, []
    for work in deferred:
        work()
    return base


def _later(state: _CallState, work: Callable[[], None]) -> None:
    """Run ``work`` now if the call's attributes are known, else once they are."""
    if state.base is not None:
        work()
    else:
        state.deferred.append(work)


# --- the listener --------------------------------------------------------------------------------


def _quiet_for(record: CallRecord) -> frozenset[str]:
    """Decide a call's path when it starts; the events that path never reads are not sent."""
    if record.telemetry == _UNDECIDED:
        _decide(record, 0.0)
    return _QUIET[record.telemetry]


def _decide(record: CallRecord, at: float) -> None:
    """Set ``record.telemetry``: deep (state opened), lean (log lines only) or off."""
    _begin(record)
    enabled, state = _open(record, at)
    record.telemetry = _DEEP if state is not None else _LEAN if enabled else _OFF


def _on_event(record: CallRecord, event: Event) -> None:
    mode = record.telemetry
    if mode == _UNDECIDED:  # a record that did not go through a Call's start
        _decide(record, event.at)
        mode = record.telemetry
    if mode == _LEAN:
        if event.kind in _LEAN_KINDS:
            _lean(record, event)
        return
    if mode == _OFF:
        return
    state = _states.get(id(record))
    if state is None or state.record is not record:  # evicted: log lines only, from now on
        record.telemetry = _LEAN
        _lean(record, event)
        return
    handler = _HANDLERS.get(event.kind)
    if handler is not None:
        handler(state, event)


#: The only events the lean path can write a log line for.
_LEAN_KINDS = frozenset({"attempt_finished", "succeeded", "gave_up", "stream_interrupted",
                         "fell_back"})


def _lean(record: CallRecord, event: Event) -> None:
    """Calls with no span, metric, price or capture to feed: log lines from the record alone.

    This is the whole cost of telemetry when no OpenTelemetry SDK is configured.
    """
    kind = event.kind
    if kind == "attempt_finished":
        failure = event.failure
        if failure is None and event.status is None:  # re-raised as is: the call ends here
            _log_outcome(record, "exception", None, None, event.at, committed=False)
        elif log.isEnabledFor(logging.DEBUG):
            _log_attempt(record, event)
    elif kind == "succeeded":
        served = event.target or record.served_by
        if served and record.requested and served != record.requested:
            _log_outcome(record, None, served, record.reason, event.at, committed=False)
    elif kind == "gave_up":
        if record.time_to_first_token is None:  # else the interruption was logged already
            _log_outcome(record, _error_of(event), None, record.reason or event.detail,
                         event.at, committed=False)
    elif kind == "stream_interrupted":
        failure = event.failure
        _log_outcome(record, failure.kind.value if failure is not None else "stream_interrupted",
                     record.served_by, None, event.at, committed=True)
    elif kind == "fell_back" and log.isEnabledFor(logging.DEBUG):
        log.debug("resilient_llm: call %s moves to %s (%s)", _call_id(record), event.target,
                  event.detail)


def _begin(record: CallRecord) -> None:
    attrs = current_attributes()
    if attrs and not record.attributes:
        record.attributes = attrs


def _evict() -> None:
    """Too many calls never ended (cancelled mid-attempt, streams never closed): end the
    oldest tenth, so a leak in user code cannot grow this table without bound."""
    for key in list(_states)[: _MAX_OPEN_CALLS // 10]:
        old = _states.get(key)
        if old is not None:
            _finish(old, max(old.record.elapsed, _elapsed_now(old)), "abandoned")


def _elapsed_now(state: _CallState) -> float:
    return max(0.0, (time.time_ns() - state.t0_ns) / 1e9)


def _attempt_started(state: _CallState, event: Event) -> None:
    target = event.target or state.target
    state.target = target
    if state.deep:
        state.exchange = None
        _capture.arm(state)
    if not state.live:
        return
    base = state.base if state.base is not None else _build_base(state)
    inst = state.instruments
    if inst is not None and event.attempt > 1:
        inst.retries.add(1, {**base, "resilient_llm.failure.class":
                             state.last_failure or "unknown"})
    if state.tracer is not None:
        attributes: dict[str, Any] = {
            "resilient_llm.attempt.number": event.attempt,
            "resilient_llm.attempt.backoff": state.pending_wait,
        }
        if target:
            attributes["gen_ai.request.model"] = target
        for name in ("server.address", "server.port"):
            if name in base:
                attributes[name] = base[name]
        state.attempt_span = state.tracer.start_span(
            f"attempt {target or 'unknown'}",
            context=trace.set_span_in_context(_call_span(state)),
            kind=SpanKind.INTERNAL, attributes=attributes, start_time=state.ns(event.at))
    state.pending_wait = 0.0


def _attempt_finished(state: _CallState, event: Event) -> None:
    if state.deep:
        _capture.disarm()
    record = state.record
    failure = event.failure
    kind = failure.kind.value if failure is not None else None
    unclassified = failure is None and event.status is None
    if unclassified:  # an exception no class covers: the transport re-raises it as is
        error = state.exchange.error if state.exchange is not None else None
        kind = type(error).__name__ if error is not None else "exception"
    info = record.attempts[-1] if record.attempts and \
        record.attempts[-1].number == event.attempt else None
    duration = info.duration if info is not None else 0.0
    target = event.target or state.target or "unknown"
    span = state.attempt_span
    if span is not None:
        state.attempt_span = None
        if event.status is not None:
            span.set_attribute("http.response.status_code", event.status)
        if kind is not None:
            span.set_attribute("resilient_llm.attempt.failure", kind)
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR, kind))
        span.end(end_time=state.ns(event.at))
    inst = state.instruments
    if inst is not None and state.base is not None:
        attrs = {**state.base, "gen_ai.request.model": target,
                 "resilient_llm.attempt.outcome": kind or "ok"}
        if kind is not None:
            attrs["error.type"] = kind
        inst.attempts.add(1, attrs)
        inst.attempt_duration.record(duration, attrs)
        if kind in _THROTTLES:
            inst.throttles.add(1, {**state.base, "gen_ai.request.model": target,
                                   "resilient_llm.failure.class": kind})
    if log.isEnabledFor(logging.DEBUG):
        _log_attempt(record, event, kind)
    if kind is not None:
        state.last_failure = kind
    if unclassified:
        _finish(state, event.at, kind)


def _waited(state: _CallState, event: Event) -> None:
    seconds = event.seconds
    reason = event.detail or "backoff"
    if reason != "admission":  # admission waits are the call's queue_wait
        state.pending_wait += seconds
        state.backoff_total += seconds
    if not state.live:
        return
    at = event.at

    def record() -> None:
        assert state.base is not None
        inst = state.instruments
        if inst is not None:
            attrs = {**state.base, "resilient_llm.wait.reason": reason}
            (inst.queue_wait if reason == "admission" else inst.backoff).record(seconds, attrs)
        if state.tracer is not None and (reason != "admission" or seconds >= _MIN_EVENT_WAIT):
            _call_span(state).add_event(
                "resilient_llm.wait",
                {"resilient_llm.wait.reason": reason, "resilient_llm.wait.seconds": seconds},
                timestamp=state.ns(at))

    _later(state, record)


def _fell_back(state: _CallState, event: Event) -> None:
    """The router moved to the next target of the chain (after a failure, or skipping one)."""
    source = state.target or "unknown"
    target = event.target or "unknown"
    reason = event.detail or state.last_failure or "unknown"
    state.target = event.target or state.target
    if log.isEnabledFor(logging.DEBUG):
        log.debug("resilient_llm: call %s moves from %s to %s (%s)", _call_id(state.record),
                  source, target, reason)
    if not state.live:
        return
    at = event.at
    facts = {"resilient_llm.fallback.from": source, "resilient_llm.fallback.to": target,
             "resilient_llm.fallback.reason": reason}

    def record() -> None:
        assert state.base is not None
        if state.instruments is not None:
            state.instruments.fallbacks.add(1, {**state.base, **facts})
        if state.tracer is not None:
            _call_span(state).add_event("resilient_llm.fallback", facts,
                                        timestamp=state.ns(at))

    _later(state, record)


def _stream_committed(state: _CallState, event: Event) -> None:
    state.committed = True


def _succeeded(state: _CallState, event: Event) -> None:
    if event.detail == "stream" and state.deep:
        state.committed = True  # the call ends when the stream does
        return
    _finish(state, event.at, None)


def _stream_finished(state: _CallState, event: Event) -> None:
    state.complete = event.detail != "closed_by_caller"
    _finish(state, event.at, None)


def _stream_interrupted(state: _CallState, event: Event) -> None:
    failure = event.failure
    state.complete = False
    _finish(state, event.at, failure.kind.value if failure is not None else "stream_interrupted")


def _error_of(event: Event) -> str:
    """``error.type`` of a give-up: ``deadline_exceeded``, else the last failure class."""
    reason = event.detail or "unknown"
    if reason == "deadline":
        return "deadline_exceeded"
    return event.failure.kind.value if event.failure is not None else reason


def _gave_up(state: _CallState, event: Event) -> None:
    _finish(state, event.at, _error_of(event), give_up=event.detail or "unknown")


def _breaker_changed(state: _CallState, event: Event) -> None:
    """Engine event (when emitted): a target's circuit breaker changed state."""
    if not state.live:
        return
    facts = {"gen_ai.request.model": event.target or "unknown",
             "resilient_llm.circuit.state": event.detail or "unknown"}
    at = event.at

    def record() -> None:
        assert state.base is not None
        if state.instruments is not None:
            state.instruments.circuit_changes.add(1, {**state.base, **facts})
        if state.tracer is not None:
            _call_span(state).add_event("resilient_llm.circuit", facts, timestamp=state.ns(at))

    _later(state, record)


def _call_finished(state: _CallState, event: Event) -> None:
    """Engine event (when emitted): the drop-in method returned or raised."""
    if not state.committed:
        _finish(state, event.at, event.detail or None)


_HANDLERS: dict[str, Callable[[_CallState, Event], None]] = {
    "attempt_started": _attempt_started,
    "attempt_finished": _attempt_finished,
    "waited": _waited,
    "fell_back": _fell_back,
    "stream_committed": _stream_committed,
    "succeeded": _succeeded,
    "stream_finished": _stream_finished,
    "stream_interrupted": _stream_interrupted,
    "gave_up": _gave_up,
    "breaker_changed": _breaker_changed,
    "call_finished": _call_finished,
}
#: Per path, the events the listener never reads (no handler reads ``call_started``).
_QUIET = {
    _LEAN: ALL_KINDS - _LEAN_KINDS,
    _OFF: ALL_KINDS,
    _DEEP: ALL_KINDS - frozenset(_HANDLERS),
}


def _call_span(state: _CallState) -> trace.Span:
    span = state.span
    if span is None:
        assert state.tracer is not None
        base = state.base if state.base is not None else _build_base(state)
        model = base.get("gen_ai.request.model")
        operation = base["gen_ai.operation.name"]
        span = state.span = state.tracer.start_span(
            f"{operation} {model}" if model else operation, kind=SpanKind.CLIENT,
            attributes=base, start_time=state.t0_ns)
    return span


# --- the end of a call ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the tapped answer says (read only when telemetry needs the bytes)."""

    usage: Any = None
    response_id: str | None = None
    response_model: str | None = None
    finish_reasons: tuple[str, ...] = ()
    output_text: str | None = None


def _answer(state: _CallState) -> _Answer:
    exchange = state.exchange
    if exchange is None or exchange.response is None:
        return _Answer()
    if exchange.is_stream:  # a copy was kept (capture): its text, for content capture
        from ..providers import StreamScanner, wire_for

        scanner = StreamScanner(wire_for("anthropic" if state.record.provider == "anthropic"
                                         else "openai"))
        scanner.feed(exchange.response_body() or b"")
        scanner.finish()
        return _Answer(usage=scanner.usage, output_text=scanner.text)
    body = exchange.response_json()
    if not isinstance(body, Mapping):
        return _Answer()
    reasons = [choice["finish_reason"] for choice in body.get("choices") or ()
               if isinstance(choice, Mapping) and isinstance(choice.get("finish_reason"), str)]
    for key in ("stop_reason", "status"):
        if isinstance(body.get(key), str) and not reasons:
            reasons.append(body[key])
    rid, model = body.get("id"), body.get("model")
    return _Answer(
        usage=body.get("usage"),
        response_id=rid if isinstance(rid, str) else None,
        response_model=model if isinstance(model, str) else None,
        finish_reasons=tuple(reasons),
    )


def _finish(state: _CallState, at: float, error: str | None, *, give_up: str | None = None) -> None:
    """End the call: span, metrics, cost, log line and capture line, exactly once."""
    record = state.record
    if _states.pop(id(record), None) is not state:
        return
    if state.deep:
        _capture.disarm()
    settings = state.settings
    if state.live and state.base is None:
        _build_base(state)
    provider = record.provider or "openai"
    served = record.served_by if error is None or state.committed else None
    degraded = bool(served and record.requested and served != record.requested)
    reason = record.reason or give_up
    if degraded and reason is None:
        reason = state.last_failure
    answer = _answer(state) if state.deep else _Answer()
    usage: TokenUsage | None = None
    cost: Cost | None = None
    if state.deep:
        usage = token_usage(record.usage, provider) or token_usage(answer.usage, provider)
        if settings.prices is not None and served is not None and error is None:
            cost = settings.prices.cost(served, usage)
            if cost is not None and hasattr(record, "cost"):
                cast(Any, record).cost = cost
    elapsed = max(at, 0.0)
    if state.tracer is not None:
        _end_span(state, at, error, served, degraded, reason, usage, cost, answer, settings)
    if state.instruments is not None:
        _record_metrics(state.instruments, state, elapsed, error, served, degraded, usage, cost,
                        answer, give_up)
    if error is not None or degraded:
        _log_outcome(record, error, served, reason, elapsed, committed=state.committed)
    if settings.sink is not None:
        _write_capture(settings.sink, state, error, served, degraded, reason, elapsed, usage,
                       cost)


def _end_span(state: _CallState, at: float, error: str | None, served: str | None,
              degraded: bool, reason: str | None, usage: TokenUsage | None, cost: Cost | None,
              answer: _Answer, settings: _Settings) -> None:
    record = state.record
    span = _call_span(state)
    if state.attempt_span is not None:  # an attempt that never reported back
        state.attempt_span.end(end_time=state.ns(at))
        state.attempt_span = None
    conv = state.instruments.conv if state.instruments is not None else conventions()
    facts: dict[str, Any] = {
        "resilient_llm.attempts": len(record.attempts),
        "resilient_llm.retries": max(0, len(record.attempts) - 1),
        "resilient_llm.degraded": degraded,
        "resilient_llm.queue_wait": record.queue_wait,
        "resilient_llm.backoff.total": state.backoff_total,
    }
    if served is not None:
        facts["resilient_llm.served_by"] = served
        facts["gen_ai.response.model"] = answer.response_model or served
    if reason is not None:
        facts["resilient_llm.reason"] = reason
    if record.deadline_budget is not None:
        facts["resilient_llm.deadline.budget"] = record.deadline_budget
        facts["resilient_llm.deadline.remaining"] = max(0.0, record.deadline_budget - at)
    if record.pressure is not None:
        facts["resilient_llm.pressure"] = float(record.pressure)
    breaker = getattr(record, "breaker_state", None)
    if isinstance(breaker, str):
        facts["resilient_llm.breaker.state"] = breaker
    cache_key = getattr(record, "cache_key", None) or _request_cache_key(state)
    if isinstance(cache_key, str) and cache_key:
        facts["resilient_llm.cache_key.hash"] = _short_hash(cache_key)
    if record.findings:
        facts["resilient_llm.cache.findings"] = [_finding_code(f) for f in record.findings]
    if record.idempotency_key:
        facts["resilient_llm.idempotency_key.hash"] = _short_hash(record.idempotency_key)
    if state.committed:
        facts["gen_ai.request.stream"] = True
        if record.time_to_first_token is not None:
            facts["gen_ai.response.time_to_first_chunk"] = record.time_to_first_token
        if state.complete is not None:
            facts["resilient_llm.stream.complete"] = state.complete
    if answer.response_id:
        facts["gen_ai.response.id"] = answer.response_id
    if answer.finish_reasons:
        facts["gen_ai.response.finish_reasons"] = list(answer.finish_reasons)
    if usage is not None:
        facts["gen_ai.usage.input_tokens"] = usage.input_tokens
        facts["gen_ai.usage.output_tokens"] = usage.output_tokens
        facts["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_tokens
        facts[conv.cache_write_attribute] = usage.cache_write_tokens
        if usage.reasoning_tokens:
            facts["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        if usage.cache_read_tokens or usage.cache_write_tokens or usage.input_tokens:
            facts["resilient_llm.prompt_cache.hit"] = usage.cache_read_tokens > 0
    if cost is not None:
        facts["resilient_llm.cost.usd"] = cost.total
    if error is not None:
        facts["error.type"] = error
    if settings.capture_content:
        facts.update(_content_attributes(state, answer))
    span.set_attributes(facts)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=state.ns(at))


def _record_metrics(inst: _Instruments, state: _CallState, elapsed: float, error: str | None,
                    served: str | None, degraded: bool, usage: TokenUsage | None,
                    cost: Cost | None, answer: _Answer, give_up: str | None) -> None:
    record = state.record
    retries = max(0, len(record.attempts) - 1)
    base = dict(state.base or {})
    if served is not None:
        base["gen_ai.response.model"] = answer.response_model or served
    duration_attrs = {**base, "resilient_llm.degraded": degraded,
                      "resilient_llm.retried": retries > 0}
    if usage is not None and usage.input_tokens:
        duration_attrs["resilient_llm.prompt_cache.hit"] = usage.cache_read_tokens > 0
    if error is not None:
        duration_attrs["error.type"] = error
    inst.duration.record(elapsed, duration_attrs)
    if state.committed and record.time_to_first_token is not None:
        inst.ttfc.record(record.time_to_first_token, base)
    if usage is not None:
        if inst.tokens is not None:
            inst.tokens.record(usage.input_tokens, {**base, "gen_ai.token.type": "input"})
            inst.tokens.record(usage.output_tokens, {**base, "gen_ai.token.type": "output"})
            if inst.cache_tokens is not None:
                if usage.cache_read_tokens:
                    inst.cache_tokens.record(usage.cache_read_tokens,
                                             {**base, "gen_ai.token.type": "cache_read"})
                if usage.cache_write_tokens:
                    inst.cache_tokens.record(usage.cache_write_tokens,
                                             {**base, "gen_ai.token.type": "cache_write"})
        else:
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
                    inst.token_counters[kind].add(value, modal)
            inst.token_histograms["input_tokens"].record(usage.input_tokens, base)
            inst.token_histograms["output_tokens"].record(usage.output_tokens, base)
    if cost is not None:
        inst.cost.add(cost.total, base)
    if error == "deadline_exceeded":
        inst.deadline_exceeded.add(1, base)
    if give_up == "retry_budget":
        inst.budget_exhausted.add(1, base)


def _request_cache_key(state: _CallState) -> str | None:
    exchange = state.exchange
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


def _finding_code(finding: Any) -> str:
    for name in ("code", "kind", "rule"):
        value = getattr(finding, name, None)
        if isinstance(value, str):
            return value
    return type(finding).__name__


# --- content (opt-in) ----------------------------------------------------------------------------


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_CONTENT else text[:_MAX_CONTENT] + "…"


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for item in content:
            if isinstance(item, Mapping):
                text = item.get("text")
                kind = item.get("type") or "unknown"
                if isinstance(text, str):
                    parts.append({"type": "text", "content": text})
                else:
                    parts.append({"type": str(kind)})
    return parts


def _content_attributes(state: _CallState, answer: _Answer) -> dict[str, str]:
    """``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON strings), credentials
    masked; only called when content capture is on."""
    out: dict[str, str] = {}
    exchange = state.exchange
    body: Any = None
    if exchange is not None:
        raw = exchange.request_body()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
    if isinstance(body, Mapping):
        source = body.get("messages")
        if source is None and "input" in body:
            source = body["input"]
            if isinstance(source, str):
                source = [{"role": "user", "content": source}]
        messages = [{"role": str(message.get("role", "user")),
                     "parts": _parts(message.get("content"))}
                    for message in source or () if isinstance(message, Mapping)]
        if messages:
            out["gen_ai.input.messages"] = _clip(_capture.redact_text(
                json.dumps(messages, ensure_ascii=False)))
        system = body.get("system") or body.get("instructions")
        if system:
            out["gen_ai.system_instructions"] = _clip(_capture.redact_text(
                json.dumps(_parts(system), ensure_ascii=False)))
    output: list[dict[str, Any]] = []
    if answer.output_text is not None:
        output.append({"role": "assistant", "parts": _parts(answer.output_text)})
    elif exchange is not None:
        reply = exchange.response_json()
        if isinstance(reply, Mapping):
            for choice in reply.get("choices") or ():
                message = choice.get("message") if isinstance(choice, Mapping) else None
                if isinstance(message, Mapping):
                    output.append({"role": "assistant", "parts": _parts(message.get("content")),
                                   "finish_reason": choice.get("finish_reason")})
            if isinstance(reply.get("content"), list):  # Anthropic
                output.append({"role": "assistant", "parts": _parts(reply["content"]),
                               "finish_reason": reply.get("stop_reason")})
            output.extend(  # Responses API
                {"role": "assistant", "parts": _parts(item.get("content"))}
                for item in reply.get("output") or ()
                if isinstance(item, Mapping) and item.get("type") == "message")
    if output:
        out["gen_ai.output.messages"] = _clip(_capture.redact_text(
            json.dumps(output, ensure_ascii=False)))
    return out


# --- log lines -----------------------------------------------------------------------------------


def _call_id(record: CallRecord) -> str:
    key = record.idempotency_key
    return _short_hash(key)[:8] if key else f"{id(record) & 0xFFFFFFFF:08x}"


def _attempts_text(record: CallRecord) -> str:
    parts = []
    for attempt in record.attempts:
        status = f" HTTP {attempt.status}" if attempt.status is not None else ""
        waited = f" after {attempt.waited_before:.2f} s wait" \
            if attempt.waited_before >= 0.005 else ""
        result = attempt.failure or ("ok" if attempt.status is not None else "error")
        parts.append(f"#{attempt.number} {attempt.target or '?'} {result}"
                     f"{status} {attempt.duration:.3f} s{waited}")
    return "; ".join(parts) or "none sent"


def _log_attempt(record: CallRecord, event: Event, kind: str | None = None) -> None:
    """One DEBUG line per attempt."""
    if kind is None and event.failure is not None:
        kind = event.failure.kind.value
    info = record.attempts[-1] if record.attempts else None
    duration = info.duration if info is not None and info.number == event.attempt else 0.0
    log.debug("resilient_llm: call %s attempt %d to %s: %s%s in %.3f s",
              _call_id(record), event.attempt, event.target or record.requested, kind or "ok",
              f" (HTTP {event.status})" if event.status is not None else "", duration)


def _log_outcome(record: CallRecord, error: str | None, served: str | None,
                 reason: str | None, elapsed: float, *, committed: bool) -> None:
    """One WARNING line per degraded or failed call: enough to act on without a dashboard."""
    if not log.isEnabledFor(logging.WARNING):
        return
    budget = record.deadline_budget
    scope = " ".join(f"{k}={v}" for k, v in record.attributes.items())
    scope = f" [{scope}]" if scope else ""
    of_budget = f" of a {budget:.2f} s budget" if budget is not None else ""
    n = len(record.attempts)
    if error is None:
        log.warning(
            "resilient_llm: call %s for %s was served by %s (degraded, reason: %s) after %d "
            "attempt%s in %.2f s%s%s; attempts: %s",
            _call_id(record), record.requested, served, reason or "unknown", n,
            "" if n == 1 else "s", elapsed, of_budget, scope, _attempts_text(record))
    elif committed:
        log.warning(
            "resilient_llm: call %s for %s: stream from %s interrupted after output had "
            "started (%s) at %.2f s%s; the caller got StreamInterrupted with the partial text",
            _call_id(record), record.requested, served, error, elapsed, scope)
    else:
        log.warning(
            "resilient_llm: call %s for %s failed (%s%s) after %d attempt%s in %.2f s%s%s; "
            "attempts: %s",
            _call_id(record), record.requested, error,
            f", gave up: {reason}" if reason and reason != error else "", n,
            "" if n == 1 else "s", elapsed, of_budget, scope, _attempts_text(record))


# --- capture -------------------------------------------------------------------------------------


def _write_capture(sink: _capture.Sink, state: _CallState, error: str | None, served: str | None,
                   degraded: bool, reason: str | None, elapsed: float,
                   usage: TokenUsage | None, cost: Cost | None) -> None:
    record = state.record
    request, response, failure = _capture.exchange_fields(state.exchange)
    line = {
        "schema": "resilient_llm.capture/1",
        "time": _capture.utc_now(),
        "provider": record.provider,
        "call": {
            "requested": record.requested,
            "served_by": served,
            "degraded": degraded,
            "reason": reason,
            "error": error,
            "elapsed": elapsed,
            "deadline_budget": record.deadline_budget,
            "attributes": dict(state.attrs),
            "attempts": [
                {"number": a.number, "target": a.target, "failure": a.failure,
                 "status": a.status, "duration": a.duration, "waited_before": a.waited_before}
                for a in record.attempts
            ],
            "usage": None if usage is None else {
                "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                "cache_read_tokens": usage.cache_read_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
            },
            "cost": None if cost is None else cost.total,
        },
        "request": request,
        "response": response,
        "transport_error": failure,
    }
    sink.write(line)


# --- wiring --------------------------------------------------------------------------------------

_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Install the listener as the engine's built-in one (idempotent)."""
    global _installed
    with _install_lock:
        if not _installed:
            set_builtin(_on_event, _quiet_for)
            _installed = True


def installed() -> bool:
    """Is the listener installed (tests restore what they found)?"""
    return _installed


def uninstall() -> None:
    """Remove the listener and forget every open call (for tests and benchmarks)."""
    global _installed
    with _install_lock:
        if _installed:
            set_builtin(None)
            _installed = False
        _states.clear()


def attach(inner: Any, policy: Policy | None, *, asynchronous: bool) -> Any:
    """The transport seam: install the listener and put a tap under the resilient transport.

    Called when a :class:`~resilient_llm.ResilientTransport` (``asynchronous=False``) or its
    async twin is built, so the listener exists from the first drop-in client on.
    ``Policy(telemetry=False)`` leaves ``inner`` untouched and installs nothing.
    """
    if policy is not None and not getattr(policy, "telemetry", True):
        return inner
    install()
    if isinstance(inner, (_capture.SyncTap, _capture.AsyncTap)):
        return inner
    return _capture.AsyncTap(inner) if asynchronous else _capture.SyncTap(inner)


def _at_exit() -> None:
    """End calls still open at exit so their spans reach the exporter before it shuts down."""
    for state in list(_states.values()):
        _finish(state, max(state.record.elapsed, _elapsed_now(state)), "abandoned")


atexit.register(_at_exit)
