"""The names telemetry writes: semantic-convention versions, attributes, instruments.

Names follow the OpenTelemetry semantic conventions **v1.41.0** (``SCHEMA_URL``), vendored as
strings rather than imported from ``opentelemetry.semconv._incubating`` (whose GenAI constants
are deprecated in place). ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` switches
to the newer names of the GenAI development repository (``LATEST_EXPERIMENTAL``), which carry
no released schema. Pure data and pure functions: nothing here imports OpenTelemetry.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    "conventions",
    "library_version",
    "operation_name",
    "provider_name",
    "short_hash",
]

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
    "resilient_llm.served_region",
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
    "resilient_llm.recovery.mode",
    "resilient_llm.recovery.target",
    "resilient_llm.recovery.failure",
    "resilient_llm.recovery.offset",
    "resilient_llm.recovery.regenerated_tokens",
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


_DISTRIBUTION = "resilient-llm"
_version: list[str | None] = []


def library_version() -> str | None:
    """The installed distribution's version, for the tracer's and meter's scope.

    Read from the package metadata once (not from the package root, which would be an
    import circle); ``None`` when resilient-llm runs from a source tree that was never
    installed, which the OpenTelemetry API accepts.
    """
    if not _version:
        from importlib import metadata  # only once a tracer or meter is made: not light

        try:
            _version.append(metadata.version(_DISTRIBUTION))
        except metadata.PackageNotFoundError:
            _version.append(None)
    return _version[0]


#: ``CallRecord.operation`` of users' own code recorded by ``resilient_llm.integrations``: a
#: tool call, not a model call (an INTERNAL span, ``gen_ai.tool.name``, no capture).
TOOL_OPERATION = "execute_tool"


def is_tool(base: Mapping[str, Any]) -> bool:
    """Whether the call whose base attributes these are is users' own code (a tool)."""
    return base.get("gen_ai.operation.name") == TOOL_OPERATION


def target_attribute(base: Mapping[str, Any]) -> str:
    """The attribute naming what a call or attempt went to: a model, or a tool."""
    return "gen_ai.tool.name" if is_tool(base) else "gen_ai.request.model"


def operation_name(path: str | None) -> str:
    """``gen_ai.operation.name`` of a request path: ``embeddings``, ``text_completion`` or
    ``chat`` (chat completions, messages, responses)."""
    if path:
        if path.endswith("/embeddings"):
            return "embeddings"
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            return "text_completion"
    return "chat"


_AZURE_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com")


def provider_name(provider: str | None, server_address: str | None) -> str:
    """``gen_ai.provider.name``: the wire protocol's provider, ``azure.ai.openai`` for the
    OpenAI protocol on an Azure host."""
    name = provider or "openai"
    if name == "openai" and (server_address or "").endswith(_AZURE_HOSTS):
        return "azure.ai.openai"
    return name


def short_hash(value: str) -> str:
    """16 hex digits of SHA-256: enough to match a key across spans, logs and stores, never
    the key itself."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]
