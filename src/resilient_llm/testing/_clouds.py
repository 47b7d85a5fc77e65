"""The fault provider's Bedrock and Vertex dialects of the Messages API.

Both clouds serve Anthropic's Messages API under their own paths, with the model in the path:

* Bedrock: ``POST /model/{model}/invoke`` (JSON) and ``/model/{model}/invoke-with-response-stream``
  (Amazon's binary event-stream framing, each Messages event a ``chunk`` frame carrying
  ``{"bytes": base64(event)}``); errors are ``{"message": ...}`` bodies named by the
  ``x-amzn-errortype`` header (``ThrottlingException`` on a 429), and in a stream
  ``exception`` frames (``:exception-type: throttlingException``, ...).
* Vertex: ``POST /v1/projects/{p}/locations/{region}/publishers/anthropic/models/{m}:rawPredict``
  and ``:streamRawPredict`` (server-sent events as the first-party API sends them); errors in
  Google's shape, ``{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", ...}}``.

The provider decides what happens as for any request (every fault applies); :func:`adapt`
then puts the plan into the cloud's shape: headers, error bodies, and for Bedrock streams the
frames. A server-sent event that is not valid JSON (``Fault.malformed_chunk``) becomes a frame
whose CRC does not match; an ``error`` event becomes an ``exception`` frame.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from ..providers._eventstream import CONTENT_TYPE, encode_message
from ..providers._sse import event_fields
from ._plan import Plan, Step

__all__ = ["CloudRoute", "adapt", "route"]

Cloud = Literal["bedrock", "vertex"]

_BEDROCK = re.compile(r"/model/(?P<model>[^/]+)/(?P<op>invoke|invoke-with-response-stream)$")
_VERTEX = re.compile(
    r"/projects/[^/]+/locations/(?P<region>[^/]+)/publishers/anthropic/models/(?P<tail>[^/]+)$")


@dataclass(frozen=True, slots=True)
class CloudRoute:
    """A Bedrock or Vertex Messages request: its cloud, the model its path names, whether it
    asks for a stream, and (Vertex) the location its path names."""

    cloud: Cloud
    model: str
    stream: bool
    region: str | None = None


def route(path: str) -> CloudRoute | None:
    """The cloud route of a request path (without its query), or ``None``."""
    found = _BEDROCK.search(path)
    if found is not None:
        return CloudRoute("bedrock", unquote(found["model"]),
                          found["op"] == "invoke-with-response-stream")
    found = _VERTEX.search(path)
    if found is not None:
        model, _, method = unquote(found["tail"]).rpartition(":")
        if method in ("rawPredict", "streamRawPredict") and model and model != "count-tokens":
            return CloudRoute("vertex", model, method == "streamRawPredict",
                              unquote(found["region"]))
    return None


#: Bedrock's exception names by status (what ``x-amzn-errortype`` says).
_AWS_BY_STATUS = {
    400: "ValidationException", 401: "UnrecognizedClientException",
    403: "AccessDeniedException", 404: "ResourceNotFoundException",
    408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
    500: "InternalServerException", 503: "ServiceUnavailableException",
}
#: Google's gRPC status names by HTTP status.
_GOOGLE_BY_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
#: The in-stream exception an Anthropic error type becomes on Bedrock.
_AWS_STREAM = {
    "rate_limit_error": "throttlingException",
    "overloaded_error": "serviceUnavailableException",
    "api_error": "internalServerException",
    "invalid_request_error": "validationException",
    "timeout_error": "modelTimeoutException",
}


def adapt(plan: Plan, request_id: str, cloud_route: CloudRoute, stream: bool) -> Plan:
    """``plan`` (made for a first-party Messages request) in the cloud's own shape."""
    bedrock = cloud_route.cloud == "bedrock"
    headers = [(name, value) for name, value in plan.headers
               if not name.startswith("anthropic-") and name != "request-id"]
    headers.append(("x-amzn-requestid" if bedrock else "x-goog-request-id", request_id))
    if plan.status == 529:  # neither cloud says 529: their overload is a 503
        plan.status = 503
    if plan.status >= 400:
        headers = _error(plan, headers, bedrock)
    elif bedrock and stream and plan.steps is not None:
        headers = [(n, CONTENT_TYPE if n == "content-type" else v) for n, v in headers]
        headers = [(n, v) for n, v in headers if n != "cache-control"]
        plan.steps = [_frames(step) if isinstance(step, bytes) else step for step in plan.steps]
    plan.headers = headers
    return plan


def _error(plan: Plan, headers: list[tuple[str, str]], bedrock: bool
           ) -> list[tuple[str, str]]:
    """An error answer's body and headers in the cloud's shape (a body the fault set itself,
    not in the first-party shape, is left as it is)."""
    try:
        body: Any = json.loads(plan.body)
    except ValueError:
        return headers
    error = body.get("error") if isinstance(body, dict) and body.get("type") == "error" else None
    if not isinstance(error, dict):
        return headers
    message = str(error.get("message", ""))
    etype = str(error.get("type", ""))
    status = plan.status
    if bedrock:
        name = etype if etype.endswith("Exception") else _AWS_BY_STATUS.get(
            status, "InternalServerException" if status >= 500 else "ValidationException")
        if not any(n == "x-amzn-errortype" for n, _ in headers):
            kind = f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"
            headers.append(("x-amzn-errortype", kind))
        plan.body = json.dumps({"message": message}).encode()
    else:
        name = etype if etype.isupper() else _GOOGLE_BY_STATUS.get(
            status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        plan.body = json.dumps({"error": {"code": status, "message": message,
                                          "status": name}}).encode()
    return headers


def _frames(step: bytes) -> Step:
    """The frames of one step of server-sent events."""
    out = bytearray()
    for block in step.split(b"\n\n"):
        event, data = _event(block)
        if data is None:
            continue
        try:
            parsed = json.loads(data)
        except ValueError:
            out += _corrupt(data)
            continue
        if event == "error" or (isinstance(parsed, dict) and parsed.get("type") == "error"):
            error = parsed.get("error") if isinstance(parsed, dict) else None
            error = error if isinstance(error, dict) else {}
            etype = str(error.get("type") or "")
            name = etype if etype.endswith("Exception") else _AWS_STREAM.get(
                etype, "internalServerException")
            out += encode_message(
                {":message-type": "exception", ":exception-type": name,
                 ":content-type": "application/json"},
                json.dumps({"message": str(error.get("message", ""))}).encode())
            continue
        out += _chunk(data)
    return bytes(out)


def _event(block: bytes) -> tuple[str | None, bytes | None]:
    event, data = event_fields(block.decode("utf-8", "replace"))
    return event, (None if data is None else data.encode())


def _chunk(data: bytes) -> bytes:
    payload = json.dumps({"bytes": base64.b64encode(data).decode("ascii")}).encode()
    return encode_message({":event-type": "chunk", ":content-type": "application/json",
                           ":message-type": "event"}, payload)


def _corrupt(data: bytes) -> bytes:
    """A chunk frame whose message CRC does not match its bytes."""
    frame = bytearray(_chunk(data))
    frame[-1] ^= 0xFF
    return bytes(frame)
