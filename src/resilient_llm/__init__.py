"""resilient-llm: drop-in OpenAI and Anthropic clients with resilience built in."""

from __future__ import annotations

from ._errors import (
    AllTargetsFailed,
    CircuitOpen,
    ConfigError,
    DeadlineExceeded,
    IdempotencyConflict,
    IdempotencyOutcomeUnknown,
    IdempotencyStoreUnavailable,
    PromptLintError,
    ResidencyViolation,
    ResilientLLMError,
    ResponseTooLarge,
    RetryBudgetExhausted,
    SideEffectFailed,
    StreamInterrupted,
)
from ._policy import Policy
from ._public_names import show_as_package as _show_as_package
from .caching.keys import prefix_fingerprint, prompt_cache_key, shards_for_rate
from .caching.lint import Finding, lint_prompt
from .context.attributes import attributes
from .context.deadline import deadline, remaining
from .context.scope import resilient
from .context.tools import deadline_headers, tool
from .engine.classify import Failure, FailureClass
from .engine.registry import pressure_snapshot
from .engine.target import PressureSnapshot
from .events.bus import Event, subscribe
from .events.outcome import AttemptInfo, Outcome, StreamRecovery, Timings, outcome
from .idempotency.options import SideEffectOptions
from .idempotency.side_effect import SideEffect, current_idempotency_key, run, side_effect
from .transport import AsyncResilientTransport, ForeignTransportError, ResilientTransport

__version__ = "0.1.0"

__all__ = [
    "AllTargetsFailed",
    "AsyncResilientTransport",
    "AttemptInfo",
    "CircuitOpen",
    "ConfigError",
    "DeadlineExceeded",
    "Event",
    "Failure",
    "FailureClass",
    "Finding",
    "ForeignTransportError",
    "IdempotencyConflict",
    "IdempotencyOutcomeUnknown",
    "IdempotencyStoreUnavailable",
    "Outcome",
    "Policy",
    "PressureSnapshot",
    "PromptLintError",
    "ResidencyViolation",
    "ResilientLLMError",
    "ResilientTransport",
    "ResponseTooLarge",
    "RetryBudgetExhausted",
    "SideEffect",
    "SideEffectFailed",
    "SideEffectOptions",
    "StreamInterrupted",
    "StreamRecovery",
    "Timings",
    "attributes",
    "current_idempotency_key",
    "deadline",
    "deadline_headers",
    "lint_prompt",
    "outcome",
    "prefix_fingerprint",
    "pressure_snapshot",
    "prompt_cache_key",
    "remaining",
    "resilient",
    "run",
    "shards_for_rate",
    "side_effect",
    "subscribe",
    "tool",
]

_show_as_package(__name__, globals(), __all__)
