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

from ..engine.pressure import RateLimits

__all__ = ["parse_anthropic", "parse_go_duration", "parse_openai", "parse_rate_limits"]

log = logging.getLogger("resilient_llm")

_GO_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|us|µs|ns|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_go_duration(value: str) -> float | None:
    """Seconds in a Go duration (``1h2m3.5s``) or a plain number of seconds; else ``None``."""
    value = value.strip()
    # Fast paths for the common single-unit forms ("6ms", "1s", "20") seen on every response.
    number, unit = (value[:-2], 1e-3) if value.endswith("ms") else (
        (value[:-1], 1.0) if value.endswith("s") and value[-2:-1].isdigit() else (value, 1.0))
    if number.isascii() and number.replace(".", "", 1).isdigit():  # "²".isdigit() is True
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


def count(raw: str | None, name: str) -> float | None:
    """A rate-limit count from a header value; ``None`` (with a DEBUG line) when it is not one."""
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


def parse_openai(
    headers: Mapping[str, str],
) -> tuple[RateLimits | None, RateLimits | None]:
    """(requests, tokens) from OpenAI / Azure OpenAI headers (see ``providers.openai``)."""
    from .openai import rate_limits

    found = rate_limits(headers)
    return found.get("requests"), found.get("tokens")


def parse_anthropic(
    headers: Mapping[str, str], *, wall_clock: Callable[[], float] = time.time
) -> tuple[RateLimits | None, RateLimits | None]:
    """(requests, tokens) from Anthropic headers; tokens is the most restrictive token limit,
    else the input-token limit (see ``providers.anthropic``)."""
    from .anthropic import rate_limits

    found = rate_limits(headers, wall_clock=wall_clock)
    return found.get("requests"), found.get("tokens") or found.get("input_tokens")


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
