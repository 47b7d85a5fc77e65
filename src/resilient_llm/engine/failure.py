"""A classified failure: the value that retry, fallback, breaker and pressure code read.

Kept apart from :mod:`.classify` (which maps statuses, bodies and exceptions to it) so that the
event and error types can name a failure without importing the classification rules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["NEVER_FALL_BACK", "THROTTLES", "Failure", "FailureClass"]


class FailureClass(str, enum.Enum):
    """Why an attempt failed; the value is the stable name used in outcomes and telemetry."""

    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    CONNECTION_RESET = "connection_reset"
    CONFLICT = "conflict"
    CONTEXT_LENGTH = "context_length"
    CONTENT_POLICY = "content_policy"
    AUTH = "auth"
    INVALID_REQUEST = "invalid_request"
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"
    STREAM_STALL = "stream_stall"
    STREAM_CUT = "stream_cut"
    STREAM_MALFORMED = "stream_malformed"
    STREAM_INCOMPLETE = "stream_incomplete"
    APPLICATION_ERROR = "application_error"
    #: A hedged attempt that another attempt of the same call beat to the first output: the
    #: client cancelled it (it was sent, and counts as an attempt).
    HEDGE_LOST = "hedge_lost"

    def __str__(self) -> str:
        return self.value


_RETRYABLE = frozenset({
    FailureClass.RATE_LIMITED,
    FailureClass.OVERLOADED,
    FailureClass.SERVER_ERROR,
    FailureClass.TIMEOUT,
    FailureClass.CONNECT_ERROR,
    FailureClass.CONNECTION_RESET,
    FailureClass.CONFLICT,
    FailureClass.FIRST_TOKEN_TIMEOUT,
    FailureClass.STREAM_STALL,
    FailureClass.STREAM_CUT,
    FailureClass.STREAM_MALFORMED,
    FailureClass.STREAM_INCOMPLETE,
})
#: Classes that mean "the provider is short of capacity": they feed pressure and use the
#: longer backoff base.
THROTTLES = frozenset({FailureClass.RATE_LIMITED, FailureClass.OVERLOADED})
_FEWER_AT_ONCE = frozenset({FailureClass.TIMEOUT, FailureClass.OVERLOADED})
#: Classes a fallback target cannot fix: they propagate at once.
NEVER_FALL_BACK = frozenset({
    FailureClass.AUTH, FailureClass.CONTENT_POLICY, FailureClass.INVALID_REQUEST,
})


@dataclass(frozen=True, slots=True)
class Failure:
    """One classified failure of one attempt.

    ``message`` is short and safe to log: it holds the status, the provider's error type and
    code, never request content. ``retry_after`` is the server-directed delay in seconds.
    """

    kind: FailureClass
    retryable: bool
    status: int | None = None
    code: str | None = None
    retry_after: float | None = None
    message: str = ""

    @property
    def throttle(self) -> bool:
        """True when the provider said it is short of capacity (429, 529, 503)."""
        return self.kind in THROTTLES

    @property
    def asks_fewer_at_once(self) -> bool:
        """Does it ask for fewer requests in flight? An overload answer (529,
        ``overloaded_error``) and a timeout do. A 503 says "unavailable": an outage or a
        partial failure, which the breaker handles; cutting the concurrency limit for it
        would only queue calls that the official SDK sends at once."""
        return self.kind in _FEWER_AT_ONCE and self.status != 503

    def describe(self) -> str:
        """A one-line human description without any request content."""
        parts = [self.kind.value]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(self.code)
        if self.retry_after is not None:
            parts.append(f"retry-after {self.retry_after:g}s")
        return ", ".join(parts)
