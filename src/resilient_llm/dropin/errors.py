"""What a drop-in client raises: the one place its errors are translated.

The transport raises resilient-llm's errors with httpx2 causes; the caller sees them with
their causes in the SDK's own types, and (``_sdk_errors``) as instances of the SDK error the
official client would have raised, so ``except openai.APIError`` keeps working.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx2

from .._errors import (
    AllTargetsFailed,
    CircuitOpen,
    DeadlineExceeded,
    ResilientLLMError,
    RetryBudgetExhausted,
)
from .._sdk_errors import as_sdk_error
from ..transport import ForeignTransportError
from ..transport.shared import LimitTimeout, StreamFailedEarly

__all__ = ["translate_error"]

#: The timeout an SDK's message names (anthropic: "Request to HOST timed out after 600s").
_SDK_TIMEOUT = re.compile(r" after [0-9.]+ ?s\b")


def translate_error(
    exc: BaseException,
    *,
    status_error: Callable[[httpx2.Response], BaseException],
    timeout_error: Callable[[httpx2.Request], BaseException],
    connection_error: Callable[[httpx2.Request], BaseException],
    provider: str | None = None,
) -> BaseException:
    """Our error with its cause in the provider's own exception type, or ``exc`` unchanged.

    The transport raises resilient-llm errors; some SDKs wrap foreign exceptions (anthropic
    turns them into ``APIConnectionError``): unwrap those so users see ours. A deadline, an
    open circuit, an exhausted retry budget or a failed chain is also an instance of the SDK
    error of its last cause (``RateLimitError`` for a 429 whose ``Retry-After`` passed the
    deadline), or of the SDK's timeout or connection error without one.
    """
    ours = exc
    if not isinstance(ours, ResilientLLMError):
        cause = exc.__cause__
        if isinstance(cause, ResilientLLMError):
            ours = cause
        else:
            if isinstance(cause, ForeignTransportError):
                exc.__cause__ = cause.original
            _explain(exc, cause)
            return exc

    def sdk_error(cause: BaseException | None) -> BaseException | None:
        mapped: BaseException | None = None
        if isinstance(cause, httpx2.HTTPStatusError):
            mapped = status_error(cause.response)
        elif isinstance(cause, httpx2.TimeoutException) and _has_request(cause):
            mapped = timeout_error(cause.request)
        elif isinstance(cause, httpx2.TransportError) and _has_request(cause):
            mapped = connection_error(cause.request)
        if mapped is not None:
            mapped.__cause__ = (cause.original if isinstance(cause, ForeignTransportError)
                                else cause)
            _explain(mapped, cause)
        return mapped

    like: BaseException | None = None
    if isinstance(ours, (DeadlineExceeded, RetryBudgetExhausted)):
        like = sdk_error(ours.cause)
        if like is not None:
            ours.cause = like
            ours.__cause__ = like
    elif isinstance(ours, AllTargetsFailed):
        mapped = {target: sdk_error(cause) for target, cause in ours.causes.items()}
        ours.causes = {t: mapped[t] or c for t, c in ours.causes.items()}
        ours.__cause__ = next(reversed(ours.causes.values()), None)
        like = next(reversed(mapped.values()), None)
    elif isinstance(ours, CircuitOpen):
        like = sdk_error(ours.__cause__)
        ours.__cause__ = like or ours.__cause__
    else:
        return ours
    request = getattr(exc, "request", None) if exc is not ours else None
    return as_sdk_error(ours, like, provider=provider, request=request)


def _explain(error: BaseException, cause: BaseException | None) -> None:
    """Say on the SDK's error what our transport knows happened.

    The SDKs' ``APITimeoutError`` and ``APIConnectionError`` have fixed messages ("Request timed
    out.", "Connection error."); when the cause is a limit of the policy or a stream that
    failed before any output, its description is appended (the type stays the SDK's own).
    """
    if not isinstance(cause, (LimitTimeout, StreamFailedEarly)) or not error.args:
        return
    first = error.args[0]
    if not isinstance(first, str) or str(cause) in first:
        return
    if isinstance(cause, LimitTimeout):  # "timed out after 600s" names the SDK's timeout,
        first = _SDK_TIMEOUT.sub("", first)  # not the limit that ran out
    text = f"{first.rstrip('.')}: {cause}"
    error.args = (text, *error.args[1:])
    if isinstance(getattr(error, "message", None), str):
        error.message = text  # type: ignore[attr-defined]


def _has_request(exc: httpx2.RequestError) -> bool:
    try:
        exc.request  # noqa: B018 - raises RuntimeError when unset
    except RuntimeError:
        return False
    return True
