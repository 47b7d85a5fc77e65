"""Anthropic wire knowledge: Messages stream events, errors inside a 200 stream, rate limits.

No SDK import here: this module reads bytes and headers as the API sends them.

* Streams end with ``message_stop``; ``ping`` events are keep-alives and carry no output. A
  ``message_delta`` with a ``stop_reason`` completes the message: a stream that ends cleanly
  after it, without ``message_stop``, is complete (the SDK returns it normally).
* ``event: error`` inside a 200 stream is the same failure as its HTTP twin
  (``overloaded_error`` is a 529, ``api_error`` a 500, ``invalid_request_error`` a 400): it
  is classified as that status would be, so an overload before the first token is retried
  like a 529 while an invalid request is not retried at all. The SDK itself raises a generic
  ``APIStatusError`` with status 200 for these (anthropic-sdk-python #688) and retries none.
* ``usage`` arrives in ``message_start`` (input side, cache reads and writes) and is updated by
  ``message_delta`` (output tokens, and in newer API versions the final input counts).
* ``anthropic-ratelimit-*`` headers: see :func:`rate_limits`, which returns one
  ``RateLimit(limit, remaining, reset)`` per dimension (the frozen dataclass the pressure
  controller consumes; ``reset`` in seconds from now).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from ..engine.classify import Failure, classify_error_body
from ..engine.pressure import RateLimits as RateLimit
from ._numbers import count
from ._sse import StreamScanner

__all__ = [
    "ANTHROPIC",
    "ERROR_TYPE_STATUS",
    "RATE_LIMIT_DIMENSIONS",
    "AnthropicWire",
    "RateLimit",
    "classify_stream_error",
    "rate_limits",
    "reset_seconds",
]

#: The HTTP status each Anthropic error type arrives with when it is not inside a stream
#: (https://docs.anthropic.com/en/api/errors). An in-stream error is classified as its twin.
ERROR_TYPE_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def classify_stream_error(obj: Mapping[str, Any]) -> Failure:
    """Classify an ``event: error`` payload like the HTTP status it stands for.

    The failure keeps ``status=None`` (nothing but 200 was on the wire), so descriptions and
    outcomes do not claim an HTTP status that was never sent. Unknown types count as a 500.
    """
    error = obj.get("error")
    etype = error.get("type") if isinstance(error, Mapping) else None
    twin = ERROR_TYPE_STATUS.get(etype, 500) if isinstance(etype, str) else 500
    return replace(classify_error_body(twin, obj), status=None)


class AnthropicWire:
    """Streams end with ``message_stop`` (complete at ``message_delta``'s ``stop_reason``);
    ``ping`` events keep the connection alive."""

    name = "anthropic"

    def inspect(self, event: str | None, data: str, scanner: StreamScanner) -> None:
        if event == "ping" or scanner.opaque:
            return
        obj = scanner.parse(data)
        if not isinstance(obj, Mapping):
            return
        kind = event or obj.get("type")
        if kind not in _MESSAGE_EVENTS:
            scanner.unknown()  # (a legacy completion's stream: the SDK reads it as it comes)
            return
        scanner.recognised()
        if kind == "error":
            scanner.failure = classify_stream_error(obj)
            scanner.error_event = obj
        elif kind == "message_stop":
            scanner.terminal = True
        elif kind == "content_block_delta":
            index = obj.get("index", 0)
            index = index if isinstance(index, int) else 0
            delta = obj.get("delta")
            delta = delta if isinstance(delta, Mapping) else {}
            kind = delta.get("type")
            if kind == "text_delta" and isinstance(delta.get("text"), str):
                scanner.add_text(delta["text"], index)
            elif kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
                scanner.output(index, "tool", delta["partial_json"])
            else:  # thinking, signatures, citations: never replayed or verified
                scanner.output(index, "other", "")
        elif kind == "content_block_start":
            block = obj.get("content_block")
            block = block if isinstance(block, Mapping) else {}
            kind = block.get("type")
            name = block.get("name")
            scanner.output(obj.get("index"), "text" if kind == "text" else "tool"
                           if kind == "tool_use" else "other",
                           name=name if isinstance(name, str) else None)
        elif kind == "message_start":
            message = obj.get("message")
            if isinstance(message, Mapping) and isinstance(message.get("usage"), Mapping):
                scanner.usage = dict(message["usage"])
        elif kind == "message_delta":
            delta = obj.get("delta")
            if isinstance(delta, Mapping) and delta.get("stop_reason"):
                scanner.finished = True
            usage = obj.get("usage")
            if isinstance(usage, Mapping):
                merged = dict(scanner.usage or {})
                merged.update({k: v for k, v in usage.items() if v is not None})
                scanner.usage = merged


ANTHROPIC = AnthropicWire()

#: The events of a Messages stream (``ping`` aside), the stream this wire judges.
_MESSAGE_EVENTS = frozenset({"message_start", "content_block_start", "content_block_delta",
                             "content_block_stop", "message_delta", "message_stop", "error"})


# --- rate-limit headers ---------------------------------------------------------------------

#: Dimensions of ``anthropic-ratelimit-{dimension}-{limit,remaining,reset}`` (and the Priority
#: Tier's ``anthropic-priority-{input,output}-tokens-*``), keyed by the name used in results.
RATE_LIMIT_DIMENSIONS: Mapping[str, str] = {
    "requests": "anthropic-ratelimit-requests",
    "tokens": "anthropic-ratelimit-tokens",
    "input_tokens": "anthropic-ratelimit-input-tokens",
    "output_tokens": "anthropic-ratelimit-output-tokens",
    "priority_input_tokens": "anthropic-priority-input-tokens",
    "priority_output_tokens": "anthropic-priority-output-tokens",
}


def reset_seconds(value: str, now: float) -> float | None:
    """Seconds from ``now`` (epoch) to an RFC 3339 reset instant; ``None`` if unparseable.

    Offsets (``+02:00``) and ``Z`` are accepted; a timestamp without a zone is rejected rather
    than guessed. Instants in the past give 0.
    """
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def rate_limits(
    headers: Mapping[str, str], *, wall_clock: Callable[[], float] = time.time
) -> dict[str, RateLimit]:
    """Every rate-limit dimension present in an Anthropic response's headers.

    ``headers`` must be case-insensitive (``httpx2.Headers``) or lower-case. Resets are RFC 3339
    instants, measured against the response's ``Date`` when the local clock disagrees with it
    by more than 2 s (so a skewed host does not wait for hours or not at all). A dimension
    whose limit or remaining is missing or not a count is left out: a garbled header must
    never break a call. Token ``remaining`` values are rounded by the API (to thousands).
    """
    now = wall_clock()
    date = headers.get("date")
    if date:
        try:
            server_now = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            server_now = now
        if abs(server_now - now) > 2.0:
            now = server_now
    found: dict[str, RateLimit] = {}
    for name, prefix in RATE_LIMIT_DIMENSIONS.items():
        limit = count(headers.get(f"{prefix}-limit"), f"{prefix}-limit")
        remaining = count(headers.get(f"{prefix}-remaining"), f"{prefix}-remaining")
        if limit is None or remaining is None or limit <= 0:
            continue
        raw_reset = headers.get(f"{prefix}-reset")
        reset = reset_seconds(raw_reset, now) if raw_reset is not None else None
        found[name] = RateLimit(limit=limit, remaining=min(remaining, limit), reset=reset or 0.0)
    return found
