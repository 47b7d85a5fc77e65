"""Rate-limit headers of both providers, parsed into ``RateLimits`` (limit, remaining, reset).

OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, resets as Go durations
(``1s``, ``6m0s``, ``12ms``, ``1h2m3s``); Azure sends integer seconds and sometimes -1/0.
Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens}-{limit,remaining,reset}``,
resets as RFC 3339 instants, measured against the response's ``Date`` when the local clock
disagrees with it by more than 2 s. Bad values are ignored with a DEBUG log line: a header a
provider garbles must never break a call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from ..engine.pressure import RateLimits
from ._numbers import parse_go_duration
from .anthropic import rate_limits as anthropic_rate_limits
from .openai import rate_limits as openai_rate_limits

__all__ = ["parse_anthropic", "parse_go_duration", "parse_openai", "parse_rate_limits"]

def parse_openai(
    headers: Mapping[str, str],
) -> tuple[RateLimits | None, RateLimits | None]:
    """(requests, tokens) from OpenAI / Azure OpenAI headers (see ``providers.openai``)."""
    found = openai_rate_limits(headers)
    return found.get("requests"), found.get("tokens")


def parse_anthropic(
    headers: Mapping[str, str], *, wall_clock: Callable[[], float] = time.time
) -> tuple[RateLimits | None, RateLimits | None]:
    """(requests, tokens) from Anthropic headers; tokens is the most restrictive token limit,
    else the input-token limit (see ``providers.anthropic``)."""
    found = anthropic_rate_limits(headers, wall_clock=wall_clock)
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
