"""Rate-limit headers of both providers, parsed into ``RateLimits`` (limit, remaining, reset).

OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, resets as Go durations
(``1s``, ``6m0s``, ``12ms``, ``1h2m3s``); Azure sends integer seconds and sometimes -1/0.
Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens}-{limit,remaining,reset}``,
resets as RFC 3339 instants, measured against the response's ``Date`` when the local clock
disagrees with it by more than 2 s. Bad values are ignored with a DEBUG log line: a header a
provider garbles must never break a call.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

from .._pressure import RateLimits

__all__ = ["parse_anthropic", "parse_go_duration", "parse_openai", "parse_rate_limits"]

log = logging.getLogger("resilient_llm")

_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_go_duration(value: str) -> float | None:
    """Seconds in a Go duration (``1h2m3.5s``) or a plain number of seconds; else ``None``."""
    value = value.strip()
    # Fast paths for the common single-unit forms ("6ms", "1s", "20") seen on every response.
    number, unit = (value[:-2], 1e-3) if value.endswith("ms") else (
        (value[:-1], 1.0) if value.endswith("s") and value[-2:-1].isdigit() else (value, 1.0))
    if number.replace(".", "", 1).isdigit():
        return float(number) * unit
    total, position = 0.0, 0
    for match in _GO_PART.finditer(value):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    if position != len(value) or position == 0:
        return None
    return total


def _number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        log.debug("ignoring rate-limit header %s: not a number", name)
        return None
    if not math.isfinite(value) or value < 0:
        log.debug("ignoring rate-limit header %s: %r is not a count", name, raw)
        return None
    return value


def _dimension(
    headers: Mapping[str, str], limit: str, remaining: str, reset: str,
    parse_reset: Callable[[str], float | None],
) -> RateLimits | None:
    lim = _number(headers, limit)
    rem = _number(headers, remaining)
    raw_reset = headers.get(reset)
    if lim is None or rem is None or lim <= 0:
        return None
    seconds = parse_reset(raw_reset) if raw_reset is not None else 0.0
    if seconds is None:
        log.debug("ignoring rate-limit header %s: unparseable reset", reset)
        seconds = 0.0
    return RateLimits(limit=lim, remaining=min(rem, lim), reset=seconds)


def parse_openai(
    headers: Mapping[str, str],
) -> tuple[RateLimits | None, RateLimits | None]:
    """(requests, tokens) from OpenAI / Azure OpenAI headers."""
    requests = _dimension(
        headers, "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests", parse_go_duration,
    )
    tokens = _dimension(
        headers, "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens", parse_go_duration,
    )
    return requests, tokens


def parse_anthropic(
    headers: Mapping[str, str], *, wall_clock: Callable[[], float] = time.time
) -> tuple[RateLimits | None, RateLimits | None]:
    """(requests, tokens) from Anthropic headers; tokens is the most restrictive token limit."""
    now = wall_clock()
    date = headers.get("date")
    if date:
        try:
            server_now = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            server_now = now
        if abs(server_now - now) > 2.0:
            now = server_now

    def reset(value: str) -> float | None:
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - now)

    requests = _dimension(
        headers, "anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset", reset,
    )
    tokens = _dimension(
        headers, "anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset", reset,
    ) or _dimension(
        headers, "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset",
        reset,
    )
    return requests, tokens


def parse_rate_limits(
    provider: str, raw: Iterable[tuple[bytes, bytes]]
) -> tuple[RateLimits | None, RateLimits | None]:
    """Rate limits from a response's raw headers, for ``provider``.

    One pass over the raw header list picks out the few rate-limit headers (and ``date``),
    so a response without them costs a scan, not a dozen case-insensitive lookups.
    """
    prefix = b"anthropic-ratelimit-" if provider == "anthropic" else b"x-ratelimit-"
    found: dict[str, str] = {}
    for name, value in raw:
        lowered = name.lower()
        if lowered.startswith(prefix) or lowered == b"date":
            found[lowered.decode("latin-1")] = value.decode("latin-1")
    if len(found) < 2:
        return None, None
    if provider == "anthropic":
        return parse_anthropic(found)
    return parse_openai(found)
