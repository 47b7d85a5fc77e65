"""Property-based tests: arbitrary input gives a value or a clear error, never another
exception and never a hang (each example must finish well inside hypothesis' deadline).

Covered: rate-limit headers (OpenAI and Anthropic), ``Retry-After``, the SSE stream scanner
with both wires, ``Policy`` parsing of every setting, and cache-key canonicalisation. Example
counts are bounded so the file runs in seconds in CI.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import httpx2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient_llm import ConfigError, Policy, prompt_cache_key
from resilient_llm.caching.keys import canonical_json, prefix_fingerprint
from resilient_llm.engine.classify import FailureClass, parse_retry_after
from resilient_llm.engine.pressure import RateLimits
from resilient_llm.providers._ratelimits import (
    parse_go_duration,
    parse_rate_limits,
)
from resilient_llm.providers._sse import StreamScanner
from resilient_llm.providers.anthropic import ANTHROPIC
from resilient_llm.providers.openai import OPENAI

BOUNDED = settings(max_examples=150, deadline=timedelta(seconds=1),
                   suppress_health_check=[HealthCheck.too_slow])

#: Header values as a hostile server may send them: numbers, durations, dates, junk.
header_text = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{0,10})?(e-?[0-9]{1,4})?", fullmatch=True),
    st.from_regex(r"([0-9]{1,6}(\.[0-9]{1,3})?(h|m|s|ms|us|µs|ns)){1,4}", fullmatch=True),
    st.sampled_from(["inf", "-inf", "nan", "NaN", "1e309", "-0", "0", "²", "٣", "1_000",
                     "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
                     "Mon, 01 Jan 0001 00:00:00 GMT", "9999-12-31T23:59:59Z",
                     "0001-01-01T00:00:00+00:00", "2026-01-01T00:00:00"]),
)


def _is_number(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and not math.isnan(value))


@BOUNDED
@given(header_text)
def test_go_durations_parse_or_decline(value: str) -> None:
    seconds = parse_go_duration(value)
    assert seconds is None or (isinstance(seconds, float) and seconds >= 0)


openai_names = st.sampled_from([f"x-ratelimit-{kind}-{dim}" for kind in
                                ("limit", "remaining", "reset")
                                for dim in ("requests", "tokens", "project-tokens")])
anthropic_names = st.sampled_from(["date"] + [f"anthropic-ratelimit-{dim}-{kind}" for kind in
                                               ("limit", "remaining", "reset")
                                               for dim in ("requests", "tokens",
                                                           "input-tokens", "output-tokens")])


@BOUNDED
@given(st.sampled_from(["openai", "anthropic"]),
       st.lists(st.tuples(st.one_of(openai_names, anthropic_names), header_text), max_size=12))
def test_rate_limit_headers_give_limits_or_nothing(provider: str,
                                                   pairs: list[tuple[str, str]]) -> None:
    raw = [(name.encode(), value.encode("utf-8")) for name, value in pairs]
    found = parse_rate_limits(provider, raw)
    for limits in found:
        assert limits is None or isinstance(limits, RateLimits)
        if limits is not None:
            assert math.isfinite(limits.limit) and limits.limit > 0
            assert 0 <= limits.remaining <= limits.limit
            assert math.isfinite(limits.reset) and limits.reset >= 0


@BOUNDED
@given(st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms"]), header_text))
def test_retry_after_is_a_positive_finite_delay_or_none(headers: dict[str, str]) -> None:
    delay = parse_retry_after(headers, wall_clock=lambda: 1_700_000_000.0)
    assert delay is None or (math.isfinite(delay) and delay > 0)


# --- SSE -----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=10,
)
event_types = st.sampled_from([
    None, "error", "message_start", "message_delta", "message_stop", "content_block_delta",
    "ping", "response.completed", "response.failed", "response.output_text.delta"])


@st.composite
def sse_events(draw: st.DrawFn) -> bytes:
    """One event as a server might write it: well-formed, odd, or garbage."""
    import json

    body = draw(st.one_of(
        st.builds(lambda v: json.dumps(v), json_values),
        st.builds(lambda kind, payload: json.dumps({"type": kind, **payload}),
                  event_types.filter(lambda k: k is not None),
                  st.dictionaries(st.sampled_from(["delta", "choices", "error", "usage",
                                                   "response", "message"]),
                                  json_values, max_size=3)),
        st.just("[DONE]"),
        st.text(max_size=30),
    ))
    name = draw(event_types)
    head = f"event: {name}\n" if name else ""
    return (head + "".join(f"data: {line}\n" for line in body.split("\n")) + "\n").encode()


@BOUNDED
@given(st.sampled_from([OPENAI, ANTHROPIC]),
       st.lists(st.one_of(sse_events(), st.binary(max_size=40)), max_size=8),
       st.integers(min_value=1, max_value=64))
def test_sse_scanner_answers_for_any_stream(wire: Any, events: list[bytes], cut: int) -> None:
    stream = b"".join(events)
    scanner = StreamScanner(wire)
    for start in range(0, len(stream), cut):  # in arbitrary chunk sizes
        scanner.feed(stream[start:start + cut])
        if scanner.failure is not None:
            break
    scanner.finish()
    assert isinstance(scanner.text, str) and scanner.events >= 0
    assert scanner.failure is None or isinstance(scanner.failure.kind, FailureClass)



def test_chat_events_with_malformed_choices_are_ignored() -> None:
    """Found by the property above: ``choices`` that is not a list, or content that is not
    text, must not crash the scanner (the stream is judged by what it does carry)."""
    scanner = StreamScanner(OPENAI)
    scanner.feed(b'data: {"type": "message_start", "choices": true}\n\n')
    scanner.feed(b'data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\n')
    scanner.feed(b'data: {"choices": [{"index": 0, "delta": {"content": "ok"}}]}\n\n')
    assert scanner.failure is None and scanner.committed and scanner.text == "ok"


# --- Policy --------------------------------------------------------------------------------------

setting_values = st.one_of(
    st.text(max_size=30),
    header_text,
    st.from_regex(r'\{"[a-z*@\[\]]{0,6}": \[("[a-z@]{0,5}",? ?){0,3}\]\}', fullmatch=True),
    st.from_regex(r"(redis|rediss|unix|sqlite|http|https)://[a-z0-9:@./\[\]%?=-]{0,25}",
                  fullmatch=True),
)


@BOUNDED
@given(st.sampled_from(sorted(Policy.model_fields)), setting_values)
def test_every_setting_parses_or_is_a_config_error(field: str, value: str) -> None:
    try:
        policy = Policy(**{field: value})
    except ConfigError as exc:
        assert exc.field == field
        return
    assert field in type(policy).model_fields
    repr(policy)
    policy.describe()


# --- cache keys ----------------------------------------------------------------------------------

messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "user",
                                                    "assistant", "tool", "x"]),
                           "content": st.one_of(st.text(max_size=20), json_values)}),
    max_size=4,
)
requests = st.one_of(
    st.fixed_dictionaries({"model": st.one_of(st.text(max_size=10), json_values),
                           "messages": messages},
                          optional={"tools": json_values, "system": json_values,
                                    "temperature": json_values}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)


@BOUNDED
@given(requests, st.sampled_from([None, "openai", "anthropic"]))
def test_cache_keys_are_strings_or_clear_errors(request: dict[str, Any],
                                                provider: Any) -> None:
    try:
        key = prompt_cache_key(request, namespace="t", secret="s" * 16, provider=provider)
    except (TypeError, ValueError) as exc:
        assert str(exc)  # a clear error says what was wrong
        return
    assert isinstance(key, str) and key.startswith("rl1-") and len(key) <= 64
    again = prompt_cache_key(dict(reversed(list(request.items()))), namespace="t",
                             secret="s" * 16, provider=provider)
    assert again == key  # key order never matters


@BOUNDED
@given(requests)
def test_canonical_forms_are_text_or_a_clear_error(request: dict[str, Any]) -> None:
    for canonical in (canonical_json, prefix_fingerprint):
        try:
            text = canonical(request)
        except (TypeError, ValueError) as exc:
            assert str(exc)
            continue
        assert isinstance(text, str)


def test_headers_object_is_accepted() -> None:  # the driver passes httpx2.Headers
    headers = httpx2.Headers({"Retry-After": "2"})
    assert parse_retry_after(headers) == 2.0
