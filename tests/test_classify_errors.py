"""classify_error / classify_response: users' own exceptions and responses, one table.

Every exception here is a real one of its library (httpx2, httpx, requests, urllib, openai,
anthropic, the standard library), built the way the library builds it.
"""

from __future__ import annotations

import email.message
import io
import json
import socket
import subprocess
import sys
import urllib.error
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
import requests

from resilient_llm import AllTargetsFailed, DeadlineExceeded
from resilient_llm.engine.classify import FailureClass, classify_error, classify_response

URL = "http://tool.test/search"


def httpx2_status(status: int, headers: dict[str, str] | None = None) -> httpx2.HTTPStatusError:
    response = httpx2.Response(status, headers=headers, request=httpx2.Request("GET", URL))
    return httpx2.HTTPStatusError("status", request=response.request, response=response)


def httpx_status(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    response = httpx.Response(status, headers=headers, request=httpx.Request("GET", URL))
    return httpx.HTTPStatusError("status", request=response.request, response=response)


def requests_response(status: int, headers: dict[str, str] | None = None) -> Any:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response.url = URL
    return response


def requests_status(status: int, headers: dict[str, str] | None = None) -> Any:
    return requests.HTTPError("status", response=requests_response(status, headers))


def urllib_status(status: int, headers: dict[str, str] | None = None) -> urllib.error.HTTPError:
    message = email.message.Message()
    for name, value in (headers or {}).items():
        message[name] = value
    return urllib.error.HTTPError(URL, status, "status", message, io.BytesIO(b""))


def sdk_status(sdk: Any, status: int, headers: dict[str, str] | None = None,
               body: Any = None) -> Any:
    response = httpx2.Response(status, headers=headers, request=httpx2.Request("POST", URL),
                               content=json.dumps(body).encode() if body is not None else b"")
    return sdk.APIStatusError("status", response=response, body=body)


STATUS_ERRORS: dict[str, Callable[..., BaseException]] = {
    "httpx2": httpx2_status,
    "httpx": httpx_status,
    "requests": requests_status,
    "urllib": urllib_status,
    "openai": lambda s, h=None: sdk_status(openai, s, h),
    "anthropic": lambda s, h=None: sdk_status(anthropic, s, h),
}


@pytest.mark.parametrize("library", sorted(STATUS_ERRORS))
@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (429, FailureClass.RATE_LIMITED, True),
        (503, FailureClass.OVERLOADED, True),
        (529, FailureClass.OVERLOADED, True),
        (500, FailureClass.SERVER_ERROR, True),
        (502, FailureClass.SERVER_ERROR, True),
        (408, FailureClass.TIMEOUT, True),
        (400, FailureClass.INVALID_REQUEST, False),
        (404, FailureClass.INVALID_REQUEST, False),
        (422, FailureClass.INVALID_REQUEST, False),
        (401, FailureClass.AUTH, False),
    ],
)
def test_status_errors_of_every_client_use_the_status_table(
    library: str, status: int, kind: FailureClass, retryable: bool
) -> None:
    failure = classify_error(STATUS_ERRORS[library](status))
    assert failure is not None
    assert (failure.kind, failure.retryable, failure.status) == (kind, retryable, status)


@pytest.mark.parametrize("library", sorted(STATUS_ERRORS))
def test_retry_after_is_read_from_every_clients_error(library: str) -> None:
    seconds = classify_error(STATUS_ERRORS[library](429, {"Retry-After": "7"}))
    millis = classify_error(STATUS_ERRORS[library](503, {"retry-after-ms": "1500"}))
    assert seconds is not None and seconds.retry_after == 7.0
    assert millis is not None and millis.retry_after == 1.5


@pytest.mark.parametrize("library", sorted(STATUS_ERRORS))
def test_x_should_retry_false_wins(library: str) -> None:
    failure = classify_error(STATUS_ERRORS[library](503, {"x-should-retry": "false"}))
    assert failure is not None and failure.kind is FailureClass.OVERLOADED
    assert not failure.retryable


def test_sdk_error_bodies_tell_a_quota_from_a_rate_limit() -> None:
    quota = sdk_status(openai, 429, body={"error": {"type": "insufficient_quota",
                                                    "code": "insufficient_quota"}})
    limited = sdk_status(openai, 429, body={"error": {"type": "requests",
                                                      "code": "rate_limit_exceeded"}})
    overloaded = sdk_status(anthropic, 529, body={"type": "error",
                                                  "error": {"type": "overloaded_error"}})
    assert classify_error(quota) is not None
    assert classify_error(quota).kind is FailureClass.QUOTA_EXHAUSTED  # type: ignore[union-attr]
    assert not classify_error(quota).retryable  # type: ignore[union-attr]
    assert classify_error(limited).kind is FailureClass.RATE_LIMITED  # type: ignore[union-attr]
    assert classify_error(overloaded).kind is FailureClass.OVERLOADED  # type: ignore[union-attr]


REQUEST = httpx2.Request("GET", URL)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx2.ConnectError("refused"), FailureClass.CONNECT_ERROR),
        (httpx2.ReadTimeout("slow"), FailureClass.TIMEOUT),
        (httpx2.RemoteProtocolError("peer closed"), FailureClass.CONNECTION_RESET),
        (httpx.ConnectError("refused"), FailureClass.CONNECT_ERROR),
        (httpx.PoolTimeout("pool"), FailureClass.CONNECT_ERROR),
        (httpx.ReadTimeout("slow"), FailureClass.TIMEOUT),
        (httpx.ReadError("reset"), FailureClass.CONNECTION_RESET),
        (requests.ConnectTimeout("slow connect"), FailureClass.CONNECT_ERROR),
        (requests.ReadTimeout("slow"), FailureClass.TIMEOUT),
        (requests.ConnectionError("reset"), FailureClass.CONNECTION_RESET),
        (openai.APITimeoutError(request=REQUEST), FailureClass.TIMEOUT),
        (anthropic.APITimeoutError(request=REQUEST), FailureClass.TIMEOUT),
        (openai.APIConnectionError(request=REQUEST), FailureClass.CONNECTION_RESET),
        (TimeoutError("slow"), FailureClass.TIMEOUT),
        (socket.timeout("slow"), FailureClass.TIMEOUT),  # noqa: UP041 - the alias users catch
        (ConnectionRefusedError("refused"), FailureClass.CONNECT_ERROR),
        (ConnectionResetError("reset"), FailureClass.CONNECTION_RESET),
        (BrokenPipeError("pipe"), FailureClass.CONNECTION_RESET),
        (urllib.error.URLError(ConnectionRefusedError("refused")), FailureClass.CONNECT_ERROR),
    ],
    ids=lambda value: type(value).__module__.split(".")[0] + "." + type(value).__name__
    if isinstance(value, BaseException) else str(value),
)
def test_transport_errors_are_retryable(exc: Exception, kind: FailureClass) -> None:
    failure = classify_error(exc)
    assert failure is not None and failure.kind is kind and failure.retryable
    # Named after the exception, or after the OS error a wrapper (URLError) carries.
    assert failure.message in {type(exc).__name__, type(getattr(exc, "reason", exc)).__name__}


def test_sdk_connection_error_takes_its_causes_class() -> None:
    try:
        try:
            raise httpx2.ConnectTimeout("slow connect")
        except httpx2.ConnectTimeout as cause:
            raise anthropic.APIConnectionError(request=REQUEST) from cause
    except anthropic.APIConnectionError as exc:
        failure = classify_error(exc)
    assert failure is not None and failure.kind is FailureClass.CONNECT_ERROR


@pytest.mark.parametrize(
    "exc",
    [ValueError("bad"), KeyError("k"), TypeError("t"), RuntimeError("r"), OSError("disk"),
     requests.exceptions.InvalidURL("u"), urllib.error.URLError("unknown scheme"),
     DeadlineExceeded("spent"), AllTargetsFailed("all failed", causes={})],
)
def test_programming_and_library_errors_are_never_retryable(exc: Exception) -> None:
    failure = classify_error(exc)
    assert failure is not None
    assert failure.kind is FailureClass.APPLICATION_ERROR and not failure.retryable
    assert failure.message == type(exc).__name__


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(1), GeneratorExit()])
def test_what_is_not_an_exception_is_not_classified(exc: BaseException) -> None:
    assert classify_error(exc) is None


def test_returned_responses_are_classified_by_status_and_headers() -> None:
    throttled = classify_response(requests_response(503, {"Retry-After": "2"}))
    assert throttled is not None and throttled.kind is FailureClass.OVERLOADED
    assert throttled.retry_after == 2.0 and throttled.retryable
    rejected = classify_response(httpx2.Response(400, request=REQUEST))
    assert rejected is not None and not rejected.retryable
    assert classify_response(httpx.Response(200, request=httpx.Request("GET", URL))) is None
    assert classify_response({"status_code": 503}) is None  # a dict is not a response
    assert classify_response("503") is None


def test_hostile_headers_are_bounded_and_do_not_break_classification() -> None:
    headers = {f"x-h{i}": "v" for i in range(5000)}
    failure = classify_error(httpx2_status(503, headers))
    assert failure is not None and failure.kind is FailureClass.OVERLOADED
    assert classify_error(httpx2_status(429, {"Retry-After": "soon"})).retry_after is None  # type: ignore[union-attr]


def test_classifying_imports_no_client_library() -> None:
    code = (
        "import sys\n"
        "from resilient_llm.engine.classify import classify_error\n"
        "assert classify_error(ConnectionResetError()).retryable\n"
        "assert not classify_error(ValueError()).retryable\n"
        "loaded = {'httpx', 'requests', 'openai', 'anthropic', 'tenacity'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
