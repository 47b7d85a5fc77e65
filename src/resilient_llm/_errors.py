"""The exception tree of resilient-llm.

```
ResilientLLMError
├── ConfigError (also ValueError)        bad setting: names the variable, value, what is accepted
├── DeadlineExceeded (also TimeoutError)  the call's one wall-clock budget ran out
├── AllTargetsFailed                      every target of a fallback chain failed
├── CircuitOpen                           the target's breaker is open and nothing else may serve
├── RetryBudgetExhausted                  retries would multiply load beyond the target's budget
├── StreamInterrupted                     a stream failed after output reached the caller
├── IdempotencyConflict                   same idempotency key, different arguments
├── IdempotencyOutcomeUnknown             a run's lease expired without an outcome (at-most-once)
├── IdempotencyStoreUnavailable           the ledger cannot be reached; the side effect did not run
├── SideEffectFailed                      a recorded failure whose type cannot be rebuilt here
├── PromptLintError                       strict lint found volatile content in the cacheable prefix
├── ResponseTooLarge                      a response body or stream event exceeds max_response_bytes
└── ResidencyViolation                    routing would leave the allowed regions
```

Provider errors (``openai.RateLimitError``, ``anthropic.BadRequestError``, ...) keep their official
types: a drop-in client raises them exactly where the official client would, once the retries the
policy allows are spent. Every resilient-llm error that ends a call carries the attempts made so
far; none carries a credential or prompt text in its message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events.outcome import AttemptInfo

__all__ = [
    "AllTargetsFailed",
    "CircuitOpen",
    "ConfigError",
    "DeadlineExceeded",
    "IdempotencyConflict",
    "IdempotencyOutcomeUnknown",
    "IdempotencyStoreUnavailable",
    "PromptLintError",
    "ResidencyViolation",
    "ResilientLLMError",
    "ResponseTooLarge",
    "RetryBudgetExhausted",
    "SideEffectFailed",
    "StreamInterrupted",
]


class ResilientLLMError(Exception):
    """Base class of every error resilient-llm raises itself."""

    attempts: tuple[AttemptInfo, ...]

    def __init__(self, message: str, *, attempts: Sequence[AttemptInfo] = ()) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by state: the constructors take arguments the default pickling does not
        pass again, and a ``multiprocessing`` pool that could not rebuild an error a worker
        raised hung (``Pool``) or broke (``ProcessPoolExecutor``)."""
        return (rebuild_error, (type(self), self.args, dict(vars(self))))


def rebuild_error(cls: type[BaseException], args: tuple[Any, ...],
                  state: dict[str, Any]) -> BaseException:
    """An error of ``cls`` with ``args`` and attributes ``state``, its constructor not run."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigError(ResilientLLMError, ValueError):
    """A setting is invalid. The message names the variable, the value and what is accepted."""

    def __init__(self, variable: str, value: object, accepted: str) -> None:
        shown = repr(value)
        if len(shown) > 200:
            shown = shown[:200] + "…"
        super().__init__(f"{variable}={shown} is invalid: {accepted}")
        self.variable = variable
        self.value = value
        self.accepted = accepted
        self.field: str | None = None


class DeadlineExceeded(ResilientLLMError, TimeoutError):
    """The call's wall-clock deadline ran out, or the next wait would have ended past it.

    ``cause`` is the last underlying failure (a provider error, a transport error, a 429), or
    ``None`` when the budget ran out before any attempt failed.
    """

    def __init__(
        self,
        message: str,
        *,
        cause: BaseException | None = None,
        attempts: Sequence[AttemptInfo] = (),
        budget: float | None = None,
    ) -> None:
        super().__init__(message, attempts=attempts)
        self.cause = cause
        self.budget = budget
        if cause is not None:
            self.__cause__ = cause


class AllTargetsFailed(ResilientLLMError):
    """The fallback chain is spent: every target the call tried failed, ``causes`` maps each
    to its last error and ``attempts`` lists every attempt. When the call's attempts
    (``max_attempts``) ran out before the chain did, the message names the targets it did not
    reach."""

    def __init__(
        self,
        message: str,
        *,
        causes: dict[str, BaseException],
        attempts: Sequence[AttemptInfo] = (),
    ) -> None:
        super().__init__(message, attempts=attempts)
        self.causes = dict(causes)


class CircuitOpen(ResilientLLMError):
    """The target's circuit breaker is open and no other target may serve the call."""

    def __init__(
        self, message: str, *, target: str, retry_at: float | None = None,
        attempts: Sequence[AttemptInfo] = (),
    ) -> None:
        super().__init__(message, attempts=attempts)
        self.target = target
        self.retry_at = retry_at


class RetryBudgetExhausted(ResilientLLMError):
    """A retry would exceed the target's retry budget, so the call fails instead of adding load."""

    def __init__(
        self, message: str, *, cause: BaseException | None = None,
        attempts: Sequence[AttemptInfo] = (),
    ) -> None:
        super().__init__(message, attempts=attempts)
        self.cause = cause
        if cause is not None:
            self.__cause__ = cause


class StreamInterrupted(ResilientLLMError):
    """A stream failed after output had reached the caller.

    ``partial_text`` holds the text delivered before the fault, so nothing is lost; a truncated
    answer is never presented as complete. ``failure`` names the failure class (``stream_cut``,
    ``stream_stall``, ``stream_incomplete``, ...).
    """

    def __init__(
        self,
        message: str,
        *,
        partial_text: str,
        failure: str,
        cause: BaseException | None = None,
        attempts: Sequence[AttemptInfo] = (),
    ) -> None:
        super().__init__(message, attempts=attempts)
        self.partial_text = partial_text
        self.failure = failure
        self.cause = cause
        if cause is not None:
            self.__cause__ = cause


class ResponseTooLarge(ResilientLLMError):
    """A response body, or one stream event, would exceed ``max_response_bytes`` once decoded.

    A gzip bomb or an absurd ``Content-Length`` would otherwise exhaust memory; the read stops
    at the cap instead, and the attempt is not retried (the same request would get the same
    answer). ``limit`` is the cap in bytes; raise it (``RESILIENT_LLM_MAX_RESPONSE_BYTES``,
    ``Policy(max_response_bytes=...)``) if such answers are expected.
    """

    def __init__(self, message: str, *, limit: int,
                 attempts: Sequence[AttemptInfo] = ()) -> None:
        super().__init__(message, attempts=attempts)
        self.limit = limit


class IdempotencyConflict(ResilientLLMError):
    """The same idempotency key was used with different arguments."""


class IdempotencyStoreUnavailable(ResilientLLMError):
    """The idempotency ledger could not be reached, so the side effect was not run (fail closed)."""


class ResidencyViolation(ResilientLLMError):
    """Serving the call would route it outside ``RESILIENT_LLM_ALLOWED_REGIONS``."""

    def __init__(self, message: str, *, target: str, region: str | None) -> None:
        super().__init__(message)
        self.target = target
        self.region = region


class IdempotencyOutcomeUnknown(ResilientLLMError):
    """An earlier execution's lease expired before it recorded an outcome (at-most-once).

    Its owner crashed, was killed or was cancelled at its limit: the effect may or may not
    have happened, so it is not run again. Check it, then ``forget(...)`` the key to allow a
    new execution, or choose ``idempotency_on_expired_lease="at_least_once"``.
    """

    def __init__(self, message: str, *, key: str, attempt: int) -> None:
        super().__init__(message)
        self.key = key
        self.attempt = attempt


class SideEffectFailed(ResilientLLMError):
    """A recorded failure is replayed, but its exception type cannot be rebuilt in this process.

    ``error_type`` is the original ``module:qualname``; ``error_args`` its JSON arguments.
    """

    def __init__(self, message: str, *, error_type: str, error_args: Sequence[Any]) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.error_args = list(error_args)


class PromptLintError(ResilientLLMError):
    """``lint_prompts="strict"`` found volatile content in the cacheable prefix; nothing was sent.

    ``findings`` lists them; the message names kinds and locations only, never prompt text.
    """

    def __init__(self, findings: Sequence[Any]) -> None:
        shown = ", ".join(f"{f.kind} at {f.location}" for f in findings[:5])
        more = f" and {len(findings) - 5} more" if len(findings) > 5 else ""
        super().__init__(
            f"volatile content in the cacheable prefix would defeat prompt caching: {shown}{more} "
            "(lint_prompts=strict; each finding carries a fix hint, see docs/prompt-caching.md)"
        )
        self.findings = tuple(findings)
