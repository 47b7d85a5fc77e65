"""Numbers in rate-limit headers: counts and Go durations, parsed leniently.

Bad values are ignored with a DEBUG log line: a header a provider garbles must never break a
call. Shared by the providers' header parsers (``openai``, ``anthropic``).
"""

from __future__ import annotations

import logging
import math
import re

__all__ = ["count", "parse_go_duration"]

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
