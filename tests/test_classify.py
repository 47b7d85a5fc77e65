"""Every failure class, from statuses, error bodies, headers and transport exceptions."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from email.utils import format_datetime

import httpx2
import pytest

from resilient_llm import FailureClass
from resilient_llm.engine.classify import (
    classify_error_body,
    classify_exception,
    classify_status,
    parse_retry_after,
)


def _openai_body(code: str | None = None, etype: str = "invalid_request_error") -> bytes:
    error = {"message": "m", "type": etype, "param": None, "code": code}
    return json.dumps({"error": error}).encode()


def _anthropic_body(etype: str, message: str = "m") -> bytes:
    return json.dumps({"type": "error", "error": {"type": etype, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable"),
    [
        (429, _openai_body("rate_limit_exceeded", "requests"), FailureClass.RATE_LIMITED, True),
        (429, _openai_body("insufficient_quota", "insufficient_quota"),
         FailureClass.QUOTA_EXHAUSTED, False),
        (429, _anthropic_body("rate_limit_error"), FailureClass.RATE_LIMITED, True),
        (529, _anthropic_body("overloaded_error"), FailureClass.OVERLOADED, True),
        (503, b"", FailureClass.OVERLOADED, True),
        (500, _anthropic_body("api_error"), FailureClass.SERVER_ERROR, True),
        (502, b"<html>bad gateway</html>", FailureClass.SERVER_ERROR, True),
        (504, _anthropic_body("timeout_error"), FailureClass.TIMEOUT, True),
        (408, b"", FailureClass.TIMEOUT, True),
        (409, b"", FailureClass.CONFLICT, True),
        (400, _openai_body("context_length_exceeded"), FailureClass.CONTEXT_LENGTH, False),
        (400, _anthropic_body("invalid_request_error", "prompt is too long: 210000 > 200000"),
         FailureClass.CONTEXT_LENGTH, False),
        (400, _openai_body("content_policy_violation"), FailureClass.CONTENT_POLICY, False),
        (400, _openai_body(None), FailureClass.INVALID_REQUEST, False),
        (404, _openai_body("model_not_found"), FailureClass.INVALID_REQUEST, False),
        (422, b"{}", FailureClass.INVALID_REQUEST, False),
        (401, _anthropic_body("authentication_error"), FailureClass.AUTH, False),
        (403, _openai_body(None, "permission_error"), FailureClass.AUTH, False),
    ],
)
def test_status_classes(status: int, body: bytes, kind: FailureClass, retryable: bool) -> None:
    failure = classify_status(status, {}, body)
    assert failure is not None
    assert (failure.kind, failure.retryable, failure.status) == (kind, retryable, status)


@pytest.mark.parametrize(("status", "body"), [
    (404, _openai_body(None, "server_error")),
    (400, _anthropic_body("api_error")),
    (400, _anthropic_body("overloaded_error")),
    (422, _anthropic_body("timeout_error")),
    (403, _anthropic_body("rate_limit_error")),
])
def test_a_client_error_is_not_retried_whatever_its_body_says(status: int, body: bytes) -> None:
    """The official SDKs retry 408, 409, 429 and 5xx only: a gateway's 404 "server_error"
    fails again seconds later. The body still names the class."""
    failure = classify_status(status, {}, body)
    assert failure is not None and not failure.retryable
    assert failure.kind is not FailureClass.INVALID_REQUEST  # the body's class, for reports
    forced = classify_status(status, {"x-should-retry": "true"}, body)
    assert forced is not None and forced.retryable


def test_success_is_not_a_failure() -> None:
    assert classify_status(200, {}, b"{}") is None
    assert classify_status(302, {}, None) is None


def test_x_should_retry_overrides_both_ways() -> None:
    forced = classify_status(400, {"x-should-retry": "true"}, _openai_body(None))
    forbidden = classify_status(503, {"x-should-retry": "false"}, b"")
    assert forced is not None and forced.retryable and forced.kind is FailureClass.INVALID_REQUEST
    assert forbidden is not None and not forbidden.retryable


def test_error_inside_a_stream_is_classified_like_its_http_twin() -> None:
    overloaded = classify_error_body(None, {"type": "error", "error": {"type": "overloaded_error"}})
    assert overloaded.kind is FailureClass.OVERLOADED and overloaded.retryable
    generic = classify_error_body(None, {"error": {"message": "boom"}})
    assert generic.kind is FailureClass.SERVER_ERROR and generic.retryable


def test_anthropic_spend_cap_is_not_retried() -> None:
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "m",
                                       "details": {"error_code": "enforced_spend_limit_reached"}}}
    failure = classify_error_body(429, body)
    assert failure.kind is FailureClass.QUOTA_EXHAUSTED and not failure.retryable


def test_failure_message_names_codes_but_no_content() -> None:
    body = _openai_body("context_length_exceeded")
    failure = classify_status(400, {}, body.replace(b'"m"', b'"SECRET PROMPT TEXT"'))
    assert failure is not None
    assert "SECRET" not in failure.describe()
    assert "context_length_exceeded" in failure.describe()


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx2.ConnectError("refused"), FailureClass.CONNECT_ERROR),
        (httpx2.ConnectTimeout("slow connect"), FailureClass.CONNECT_ERROR),
        (httpx2.PoolTimeout("pool"), FailureClass.CONNECT_ERROR),
        (httpx2.ReadTimeout("slow"), FailureClass.TIMEOUT),
        (httpx2.WriteTimeout("slow"), FailureClass.TIMEOUT),
        (httpx2.RemoteProtocolError("peer closed"), FailureClass.CONNECTION_RESET),
        (httpx2.ReadError("reset"), FailureClass.CONNECTION_RESET),
    ],
)
def test_transport_exceptions(exc: Exception, kind: FailureClass) -> None:
    failure = classify_exception(exc)
    assert failure is not None and failure.kind is kind and failure.retryable


@pytest.mark.parametrize("exc", [RuntimeError("hook"), OSError("disk"), KeyboardInterrupt()])
def test_application_errors_are_not_failures(exc: BaseException) -> None:
    assert classify_exception(exc) is None


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 7, tz=timezone.utc), usegmt=True)
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "junk", "retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after": date}, wall_clock=lambda: now) == pytest.approx(7)
    for bad in ("0", "-3", "nan", "inf", "soon"):
        assert parse_retry_after({"retry-after": bad}) is None
    assert parse_retry_after({}) is None
