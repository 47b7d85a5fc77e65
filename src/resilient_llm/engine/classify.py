"""Classification: every way an attempt can fail, mapped to one failure class, in one place.

Retry, fallback, breaker and pressure code read :class:`Failure`, never raw statuses. The
mapping follows the providers' documented semantics (see docs/errors.md):

==========================  ===========================================  =========
class                       from                                         retryable
==========================  ===========================================  =========
rate_limited                429 (not a quota/spend cap)                  yes
quota_exhausted             429 ``insufficient_quota``, spend caps       no
overloaded                  529, 503, ``overloaded_error``               yes
server_error                500, 502, other 5xx, ``api_error``           yes
timeout                     408, 504, read/write timeout                 yes
connect_error               connect error/timeout, pool timeout          yes
connection_reset            reset or protocol error before a response    yes
conflict                    409                                          yes
context_length              ``context_length_exceeded``, prompt too long no
content_policy              content-policy rejections                    no
auth                        401, 403                                     no
invalid_request             other 4xx                                    no
first_token_timeout         no stream output within the first-token limit yes (before output)
stream_stall                no stream event within the idle limit        yes (before output)
stream_cut                  the stream's connection dropped              yes (before output)
stream_malformed            an event that does not parse                 yes (before output)
stream_incomplete           a clean end without a finish reason          yes (before output)
application_error           any other exception of the caller's own code no
==========================  ===========================================  =========

``x-should-retry: true|false`` overrides the retryable column, as in the official SDKs.

:func:`classify_error` and :func:`classify_response` apply the same table to the exceptions and
responses of users' own code (``resilient_llm.integrations``): httpx2, httpx, requests, urllib,
openai and anthropic errors, and the built-in ``TimeoutError`` / ``ConnectionError`` family.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from .failure import _RETRYABLE, Failure, FailureClass

__all__ = [
    "STREAM_FAULTS",
    "Failure",
    "FailureClass",
    "classify_body_read_error",
    "classify_error",
    "classify_error_body",
    "classify_event_stream_exception",
    "classify_exception",
    "classify_response",
    "classify_status",
    "classify_stream_error",
    "deadline_failure",
    "event_stream_corrupt",
    "event_stream_cut",
    "first_token_timeout",
    "parse_retry_after",
    "stream_ended_early",
    "stream_interruption",
    "unknown_failure",
]

ProviderName = Literal["openai", "anthropic"]


def parse_retry_after(
    headers: Mapping[str, str], *, wall_clock: Callable[[], float] = time.time
) -> float | None:
    """The server-directed delay in seconds, or ``None``.

    Order as in the official SDKs: ``retry-after-ms`` (milliseconds), then ``retry-after`` as
    seconds, then as an HTTP date. Zero, negative, NaN and unparseable values mean "no hint".
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        value = when.timestamp() - wall_clock()
    if not math.isfinite(value) or value <= 0:
        return None
    return value


#: The client errors the official SDKs retry: a timeout, a lock conflict, a rate limit.
_RETRIED_4XX = frozenset({408, 409, 429})


def _should_retry_header(headers: Mapping[str, str]) -> bool | None:
    value = headers.get("x-should-retry")
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def _error_fields(body: Any) -> tuple[str | None, str | None, str]:
    """(type, code, message) from an OpenAI, Anthropic, Azure, Google or AWS error body.

    Google (Vertex) bodies carry the gRPC status name (``RESOURCE_EXHAUSTED``) beside a
    numeric ``code``; AWS (Bedrock) bodies carry only ``message`` (``Message``), their type
    being in the ``x-amzn-errortype`` header (see :func:`_aws_error_type`).
    """
    if not isinstance(body, Mapping):
        return None, None, ""
    error = body.get("error", body)
    if not isinstance(error, Mapping):
        return None, None, str(error) if isinstance(error, str) else ""
    etype = error.get("type")
    code = error.get("code")
    details = error.get("details")
    if code is None and isinstance(details, Mapping):
        code = details.get("error_code")
    if not isinstance(code, str) and isinstance(error.get("status"), str):
        code = error["status"]
    inner = error.get("innererror")  # Azure: the content filter's own code
    if isinstance(inner, Mapping) and inner.get("code") in _CLOUD_CLASSES:
        code = inner["code"]
    message = error.get("message", error.get("Message"))
    return (
        etype if isinstance(etype, str) else None,
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else "",
    )


def _aws_error_type(headers: Mapping[str, str]) -> str | None:
    """The exception name of an AWS error response (``x-amzn-errortype:
    ThrottlingException:http://internal.amazon.com/...`` → ``ThrottlingException``)."""
    raw = headers.get("x-amzn-errortype")
    if not raw:
        return None
    return raw.split(":", 1)[0].strip() or None


_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_POLICY_CODES = frozenset({
    "content_policy_violation", "content_filter", "moderation_blocked", "invalid_prompt",
})
#: The clouds' own error names: AWS exceptions (Bedrock), gRPC statuses (Vertex, Google Cloud)
#: and Azure codes, by the class each one means. A name decides before the status does: a
#: Bedrock ``ModelNotReadyException`` is a 429 that means "scaling up", not "over your rate".
_CLOUD_CLASSES: Mapping[str, FailureClass] = {
    "ThrottlingException": FailureClass.RATE_LIMITED,
    "TooManyRequestsException": FailureClass.RATE_LIMITED,
    "ServiceUnavailableException": FailureClass.OVERLOADED,
    "ModelNotReadyException": FailureClass.OVERLOADED,
    "ModelTimeoutException": FailureClass.TIMEOUT,
    "InternalServerException": FailureClass.SERVER_ERROR,
    "ModelErrorException": FailureClass.SERVER_ERROR,
    "ModelStreamErrorException": FailureClass.SERVER_ERROR,
    "ServiceQuotaExceededException": FailureClass.QUOTA_EXHAUSTED,
    "AccessDeniedException": FailureClass.AUTH,
    "UnrecognizedClientException": FailureClass.AUTH,
    "ExpiredTokenException": FailureClass.AUTH,
    "ValidationException": FailureClass.INVALID_REQUEST,
    "ResourceNotFoundException": FailureClass.INVALID_REQUEST,
    "RESOURCE_EXHAUSTED": FailureClass.RATE_LIMITED,
    "UNAVAILABLE": FailureClass.OVERLOADED,
    "DEADLINE_EXCEEDED": FailureClass.TIMEOUT,
    "INTERNAL": FailureClass.SERVER_ERROR,
    "UNAUTHENTICATED": FailureClass.AUTH,
    "PERMISSION_DENIED": FailureClass.AUTH,
    "INVALID_ARGUMENT": FailureClass.INVALID_REQUEST,
    "NOT_FOUND": FailureClass.INVALID_REQUEST,
    "FAILED_PRECONDITION": FailureClass.INVALID_REQUEST,
    "DeploymentNotFound": FailureClass.INVALID_REQUEST,
    "ResponsibleAIPolicyViolation": FailureClass.CONTENT_POLICY,
}

_QUOTA_CODES = frozenset({
    "insufficient_quota", "billing_hard_limit_reached", "contract_spend_limit_reached",
    "enforced_spend_limit_reached", "spend_limit_reached",
})


def classify_error_body(
    status: int | None, body: Any, headers: Mapping[str, str] | None = None
) -> Failure:
    """Classify an error from its status, headers and parsed JSON body (either provider's shape,
    or a cloud's: Azure, Bedrock's ``x-amzn-errortype``, Vertex's gRPC status names).

    ``status`` is ``None`` for an error that arrived inside a 200 stream: it is classified like
    its HTTP twin (``overloaded_error`` like a 529).
    """
    headers = headers or {}
    etype, code, message = _error_fields(body)
    code = _aws_error_type(headers) or code
    retry_after = parse_retry_after(headers) if headers else None
    lowered = message.lower()
    kind: FailureClass
    invalid = etype == "invalid_request_error" or code == "ValidationException"
    if code in _CONTEXT_CODES or (invalid and (
        "prompt is too long" in lowered or "context length" in lowered
        or "context window" in lowered or "input is too long" in lowered
    )):
        kind = FailureClass.CONTEXT_LENGTH
    elif code is not None and code in _CLOUD_CLASSES:
        kind = _CLOUD_CLASSES[code]
    elif code in _POLICY_CODES or etype in ("content_policy_violation",):
        kind = FailureClass.CONTENT_POLICY
    elif code in _QUOTA_CODES or etype in _QUOTA_CODES:
        kind = FailureClass.QUOTA_EXHAUSTED
    elif etype == "overloaded_error" or status in (503, 529):
        kind = FailureClass.OVERLOADED
    elif status == 429 or etype == "rate_limit_error" or code == "rate_limit_exceeded":
        kind = FailureClass.RATE_LIMITED
    elif status in (401, 403) or etype in ("authentication_error", "permission_error"):
        kind = FailureClass.AUTH
    elif status in (408, 504) or etype == "timeout_error":
        kind = FailureClass.TIMEOUT
    elif status == 409:
        kind = FailureClass.CONFLICT
    elif status is None or status >= 500 or etype in ("api_error", "server_error"):
        kind = FailureClass.SERVER_ERROR
    else:
        kind = FailureClass.INVALID_REQUEST
    # The status decides, as in the official SDKs: a 4xx other than 408, 409 and 429 is not
    # retried whatever its body says (a gateway's 404 "server_error" or 403 "rate_limit_error"
    # fails again, seconds later); the body only names the class.
    retryable = kind in _RETRYABLE and not (
        status is not None and 400 <= status < 500 and status not in _RETRIED_4XX)
    forced = _should_retry_header(headers)
    if forced is not None:
        retryable = forced
    parts = [p for p in (etype, code) if p]
    return Failure(
        kind=kind,
        retryable=retryable,
        status=status,
        code=code or etype,
        retry_after=retry_after,
        message="/".join(parts),
    )


def classify_status(
    status: int, headers: Mapping[str, str], body: bytes | None, provider: str | None = None
) -> Failure | None:
    """Classify an HTTP response; ``None`` for success (1xx–3xx).

    Anthropic's 504 (``timeout_error``) is classified as overload: it reports a provider that
    could not finish in time, not a slow network, and moves on like a 529.
    """
    if status < 400:
        return None
    parsed: Any = None
    if body:
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            parsed = None
    failure = classify_error_body(status, parsed, headers)
    if provider == "anthropic" and status == 504:
        return Failure(FailureClass.OVERLOADED, failure.retryable, status=status,
                       code=failure.code, retry_after=failure.retry_after,
                       message=failure.message)
    return failure


def classify_exception(exc: BaseException) -> Failure | None:
    """Classify a transport exception; ``None`` for anything that is not a transport failure.

    Application errors (``RuntimeError`` from a hook, cancellation, ``KeyboardInterrupt``) are
    not failures of the provider: they propagate unchanged and are never retried.
    """
    import httpx2

    return _classify_httpx_family(exc, httpx2)


def _classify_httpx_family(exc: BaseException, httpx: Any) -> Failure | None:
    """A transport error of ``httpx`` or ``httpx2`` (the same exception tree), else ``None``."""
    if not isinstance(exc, httpx.TransportError):
        return None
    name = type(exc).__name__
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        kind = FailureClass.CONNECT_ERROR
    elif isinstance(exc, httpx.TimeoutException):
        kind = FailureClass.TIMEOUT
    else:
        kind = FailureClass.CONNECTION_RESET
    return Failure(kind=kind, retryable=True, message=name)


# --- users' own code: any exception, any HTTP response ----------------------------------------

#: Header values read from a foreign response: enough for every hint, bounded for hostile input.
_MAX_HEADERS = 200


def _headers_of(carrier: Any) -> dict[str, str]:
    """The lower-cased headers of a response-like object (any mapping or ``email.Message``)."""
    headers = getattr(carrier, "headers", None)
    items = getattr(headers, "items", None)
    if items is None:
        return {}
    found: dict[str, str] = {}
    try:
        for name, value in items():
            if len(found) >= _MAX_HEADERS:
                break
            if isinstance(name, str) and isinstance(value, str):
                found[name.lower()] = value
    except Exception:  # a broken mapping says nothing about the failure
        return {}
    return found


def _int_attribute(obj: Any, name: str) -> int | None:
    try:
        value = getattr(obj, name, None)
    except Exception:  # a property that refuses (httpx's unset ``request``): no such fact
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _http_status_failure(exc: BaseException) -> Failure | None:
    """An HTTP error status carried by ``exc`` (openai/anthropic ``APIStatusError``, httpx and
    httpx2 ``HTTPStatusError``, requests ``HTTPError``, urllib ``HTTPError``), classified with
    the status table; ``None`` when ``exc`` carries no status."""
    try:
        response = getattr(exc, "response", None)
    except Exception:
        response = None
    status = _int_attribute(exc, "status_code")  # openai, anthropic
    if status is None and response is not None:
        status = _int_attribute(response, "status_code")  # httpx, httpx2, requests
    carrier: Any = response if response is not None else exc
    urllib_error = sys.modules.get("urllib.error")
    if status is None and urllib_error is not None and isinstance(exc, urllib_error.HTTPError):
        status, carrier = exc.code, exc
    if status is None or status < 400:
        return None
    body = getattr(exc, "body", None)  # openai and anthropic keep the parsed error body
    return classify_error_body(status, body if isinstance(body, Mapping) else None,
                               _headers_of(carrier))


def _client_library_failure(exc: BaseException) -> Failure | None:
    """Transport errors of the HTTP client libraries that are loaded (none is imported here)."""
    httpx = sys.modules.get("httpx")
    if httpx is not None:
        failure = _classify_httpx_family(exc, httpx)
        if failure is not None:
            return failure
    name = type(exc).__name__
    requests = sys.modules.get("requests.exceptions")
    if requests is not None and isinstance(exc, requests.RequestException):
        if isinstance(exc, requests.ConnectTimeout):
            return Failure(FailureClass.CONNECT_ERROR, True, message=name)
        if isinstance(exc, requests.Timeout):
            return Failure(FailureClass.TIMEOUT, True, message=name)
        if isinstance(exc, (requests.ConnectionError, requests.ChunkedEncodingError)):
            return Failure(FailureClass.CONNECTION_RESET, True, message=name)
        return None
    for sdk_name in ("openai", "anthropic"):
        sdk = sys.modules.get(sdk_name)
        if sdk is None:
            continue
        if isinstance(exc, sdk.APITimeoutError):
            return Failure(FailureClass.TIMEOUT, True, message=name)
        if isinstance(exc, sdk.APIConnectionError):
            cause = exc.__cause__
            inner = classify_error(cause) if cause is not None else None
            if inner is not None and inner.kind is not FailureClass.APPLICATION_ERROR:
                return inner
            return Failure(FailureClass.CONNECTION_RESET, True, message=name)
    return None


def _builtin_failure(exc: BaseException) -> Failure | None:
    """The standard library's network errors (sockets, ``http.client``, ``urllib``)."""
    name = type(exc).__name__
    urllib_error = sys.modules.get("urllib.error")
    if urllib_error is not None and isinstance(exc, urllib_error.URLError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return _builtin_failure(reason)
        return None
    if isinstance(exc, TimeoutError):  # socket.timeout is an alias since 3.10
        return Failure(FailureClass.TIMEOUT, True, message=name)
    if isinstance(exc, ConnectionRefusedError):
        return Failure(FailureClass.CONNECT_ERROR, True, message=name)
    if isinstance(exc, ConnectionError):  # reset, aborted, broken pipe, RemoteDisconnected
        return Failure(FailureClass.CONNECTION_RESET, True, message=name)
    return None


def classify_error(exc: BaseException) -> Failure | None:
    """Classify any exception raised by users' own code (a tool, an HTTP call, an SDK call).

    An HTTP error status (from openai, anthropic, httpx, httpx2, requests or urllib errors)
    goes through the status table, its ``Retry-After`` / ``retry-after-ms`` and
    ``x-should-retry`` headers included; transport errors of those libraries and the built-in
    ``TimeoutError`` / ``ConnectionError`` family map to ``timeout``, ``connect_error`` or
    ``connection_reset``. Everything else (a bug, a validation error, a resilient-llm error
    such as :class:`~resilient_llm.DeadlineExceeded`, whose retries already happened) is
    ``application_error``: never retryable. ``None`` only for what is not an ``Exception``
    at all (cancellation, ``KeyboardInterrupt``). No client library is imported here: an
    exception of a library that is not loaded cannot exist.
    """
    if not isinstance(exc, Exception):
        return None
    from .._errors import ResilientLLMError

    if not isinstance(exc, ResilientLLMError):
        failure = (
            classify_exception(exc) or _http_status_failure(exc)
            or _client_library_failure(exc) or _builtin_failure(exc)
        )
        if failure is not None:
            return failure
    return Failure(FailureClass.APPLICATION_ERROR, False, message=type(exc).__name__)


def classify_response(response: Any) -> Failure | None:
    """Classify a response-like return value: anything with an integer ``status_code`` and
    ``headers`` (httpx, httpx2, requests). ``None`` for a success status or a value that is
    not a response. The body is not read: the status and headers decide."""
    status = _int_attribute(response, "status_code")
    if status is None or status < 400 or getattr(response, "headers", None) is None:
        return None
    return classify_error_body(status, None, _headers_of(response))
# --- failures the drivers meet outside a status or a transport exception ----------------------

#: The classes of a broken stream (as opposed to an error event the provider sent in it).
STREAM_FAULTS = frozenset({
    FailureClass.STREAM_MALFORMED, FailureClass.STREAM_INCOMPLETE, FailureClass.STREAM_CUT,
    FailureClass.STREAM_STALL, FailureClass.FIRST_TOKEN_TIMEOUT,
})


def unknown_failure() -> Failure:
    """An attempt that ended without a classified outcome (the driver itself failed)."""
    return Failure(kind=FailureClass.SERVER_ERROR, retryable=False)


def deadline_failure() -> Failure:
    """An attempt the call's deadline cut short."""
    return Failure(FailureClass.TIMEOUT, True, message="deadline")


def classify_body_read_error(exc: BaseException) -> Failure:
    """A transport error while reading a response's body (the status had arrived): the
    connection failed mid-response, retryable like a reset before it."""
    return classify_exception(exc) or Failure(FailureClass.CONNECTION_RESET, True,
                                              message=type(exc).__name__)


def first_token_timeout() -> Failure:
    """A stream that produced no output within the first-token limit."""
    return Failure(FailureClass.FIRST_TOKEN_TIMEOUT, True,
                   message="no output within the first-token limit")


def stream_ended_early() -> Failure:
    """A stream whose body ended before any output or terminal event."""
    return Failure(FailureClass.STREAM_INCOMPLETE, True, message="stream ended before any output")


def classify_stream_error(exc: BaseException) -> Failure:
    """A transport error while reading a stream before its first output: a stall (a read
    timed out) or a cut (the connection dropped)."""
    import httpx2

    kind = (FailureClass.STREAM_STALL if isinstance(exc, httpx2.TimeoutException)
            else FailureClass.STREAM_CUT)
    return Failure(kind, True, message=type(exc).__name__)


def stream_interruption(kind: FailureClass) -> Failure:
    """A stream that broke after output had started: never retried as it is."""
    return Failure(kind=kind, retryable=False)


# --- Amazon's binary event stream (Bedrock ``invoke-with-response-stream``) --------------------


def classify_event_stream_exception(name: str | None, message: str | None) -> Failure:
    """An ``exception`` (or ``error``) frame inside a 200 event stream, classified as its HTTP
    twin with that ``x-amzn-errortype`` would be: ``throttlingException`` is a rate limit,
    ``serviceUnavailableException`` overload, ``modelStreamErrorException`` and
    ``internalServerException`` server errors, ``validationException`` an invalid request
    (or a context-length error when the message says the input is too long). ``status`` stays
    ``None``: nothing but 200 was on the wire. Unknown names count as a server error."""
    exception = (name or "").strip()
    exception = exception[:1].upper() + exception[1:]
    headers = {"x-amzn-errortype": exception} if exception else {}
    return classify_error_body(None, {"message": message or ""}, headers)


def event_stream_corrupt(reason: str) -> Failure:
    """An event-stream frame that cannot be read (a CRC mismatch, impossible lengths)."""
    return Failure(FailureClass.STREAM_MALFORMED, True, message=f"event-stream frame: {reason}")


def event_stream_cut() -> Failure:
    """An event-stream body that ended inside a frame."""
    return Failure(FailureClass.STREAM_CUT, True, message="the stream ended inside a frame")
