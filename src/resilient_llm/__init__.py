"""resilient-llm: drop-in OpenAI and Anthropic clients with resilience built in."""

from __future__ import annotations

from ._deadline import deadline, remaining
from ._errors import (
    AllTargetsFailed,
    CircuitOpen,
    ConfigError,
    DeadlineExceeded,
    IdempotencyConflict,
    IdempotencyStoreUnavailable,
    ResidencyViolation,
    ResilientLLMError,
    RetryBudgetExhausted,
    StreamInterrupted,
)
from ._policy import Policy

__version__ = "0.1.0"

__all__ = [
    "AllTargetsFailed",
    "CircuitOpen",
    "ConfigError",
    "DeadlineExceeded",
    "IdempotencyConflict",
    "IdempotencyStoreUnavailable",
    "Policy",
    "ResidencyViolation",
    "ResilientLLMError",
    "RetryBudgetExhausted",
    "StreamInterrupted",
    "deadline",
    "remaining",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("resilient_llm._"):
        _obj.__module__ = "resilient_llm"
del _name, _obj
