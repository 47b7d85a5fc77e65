"""lint_prompt: volatile content in the cacheable prefix, and no false positives."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_llm import ResilientLLMError
from resilient_llm.caching.lint import Finding, PromptLintError, check_prompt, lint_prompt
from resilient_llm.testing import Fault, FaultProvider

NOW = 1_795_330_000.0  # 2026-11-22
SHARED = " Follow the shared support policy carefully and answer politely." * 12  # > 512 chars
CORPUS = Path(__file__).parent / "data" / "ordinary_prompts.txt"


def chat(system: str, user: str = "hi") -> dict[str, Any]:
    return {"model": "gpt-4.1", "messages": [{"role": "system", "content": system},
                                             {"role": "user", "content": user}]}


def kinds(body: dict[str, Any]) -> list[str]:
    return [f.kind for f in lint_prompt(body, now=NOW)]


def ordinary_prompts() -> list[str]:
    text = CORPUS.read_text(encoding="utf-8")
    return [p.strip("\n") for p in text.split("\n%%\n")[1:] if p.strip()]


# --- the acceptance case --------------------------------------------------------------------------

def test_finds_a_timestamp_a_uuid_and_an_epoch_in_a_system_prompt() -> None:
    system = (f"You are a support agent. Current time: 2026-11-22T06:52:52Z. "
              f"Request: {uuid.uuid4()}. Cache buster {int(NOW)}." + SHARED)
    findings = lint_prompt(chat(system), now=NOW)
    assert [f.kind for f in findings] == ["timestamp", "uuid", "epoch"]
    ts = findings[0]
    assert ts.location == f"messages[0].content@{system.index('2026')}"
    assert ts.excerpt == "…gent. Current time: ‹timestamp›. Request: ‹uuid›…"
    assert ts.hint
    assert all(isinstance(f, Finding) for f in findings)


def test_ordinary_prompts_produce_no_findings() -> None:
    prompts = ordinary_prompts()
    assert len(prompts) >= 60
    for prompt in prompts:
        # As the start of a long system prompt (so per-user rules apply), as the end of one,
        # as Anthropic system blocks and as Responses instructions.
        bodies = [
            chat(prompt + SHARED), chat(SHARED + prompt),
            {"model": "claude-sonnet-4-6", "max_tokens": 5,
             "system": [{"type": "text", "text": prompt + SHARED}],
             "messages": [{"role": "user", "content": "hi"}]},
            {"model": "gpt-5", "instructions": prompt, "input": "hi"},
        ]
        for body in bodies:
            assert lint_prompt(body, now=NOW) == [], prompt[:60]


# --- what is flagged ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "kind"), [
    ("Now: 2026-11-22T06:52:52.123456+00:00.", "timestamp"),
    ("Now: 2026-11-22 06:52:52.", "timestamp"),  # str(datetime.now())
    ("Now: 2026-11-22 06:52.", "timestamp"),
    ("Date: Sun, 22 Nov 2026 06:52:52 +0000", "timestamp"),  # RFC 2822
    ("Date: Sun, 22 Nov 2026 06:52:52 GMT", "timestamp"),  # HTTP date
    ("Built Sun Nov 22 06:52:52 2026 on the CI", "timestamp"),  # time.ctime()
    ("Current time: 06:52:52", "timestamp"),
    ("stamp 20261122T065252Z", "timestamp"),  # ISO 8601 basic
    ("t=1795330000", "epoch"),
    ("t=1795330000123 ms", "epoch"),
    ("t=1795330000.482913", "epoch"),  # time.time()
    ("id 123e4567-e89b-12d3-a456-426614174000", "uuid"),
    ("Request ID: abc123def456", "request_id"),
    ("trace_id=4bf92f3577b34da6", "request_id"),
    ("from req_8f3a2b1c9d0e", "request_id"),
    ("nonce: 8f3Kq9zLm2Xw", "nonce"),
    ("cache buster 9f86d081884c7d659a2feaa0c55ad015", "nonce"),
    ("csrf aZ3kQ9mP2xW7bL4nR8tY6vC1", "nonce"),
])
def test_each_kind_is_found(text: str, kind: str) -> None:
    assert kinds(chat(text + SHARED)) == [kind]


def test_per_user_data_counts_only_before_shared_content() -> None:
    assert kinds(chat("Customer name: Alice Smith. User ID: 48213." + SHARED)) == [
        "per_user_data", "per_user_data"]
    assert kinds(chat(SHARED + "Customer name: Alice Smith.")) == []  # last: fine
    assert kinds(chat("Customer name: {name}" + SHARED)) == []  # a template placeholder


def test_epochs_far_from_now_are_not_timestamps() -> None:
    assert kinds(chat("ISBN 0306406152 and order 1234567890" + SHARED)) == []


def test_only_the_cacheable_prefix_is_linted() -> None:
    stamp = "2026-11-22T06:52:52Z"
    # The latest user turn is not part of the stable prefix.
    assert kinds(chat("Be brief.", user=f"What happened at {stamp}?")) == []
    # Anthropic: after the caller's last breakpoint is not cached, so not linted.
    system = [{"type": "text", "text": "Rules." + SHARED, "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": f"Now: {stamp}"}]
    body: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [],
                            "system": system}
    assert kinds(body) == []
    body["system"][0]["text"] += f" Now: {stamp}"
    assert kinds(body) == ["timestamp"]


def test_locations_cover_every_provider_shape() -> None:
    stamp = "Now: 2026-11-22T06:52:52Z"
    claude = {"model": "claude-sonnet-4-6", "max_tokens": 5, "system": stamp, "messages": []}
    assert lint_prompt(claude, now=NOW)[0].location == "system@5"
    claude["system"] = [{"type": "text", "text": "a"}, {"type": "text", "text": stamp}]
    assert lint_prompt(claude, now=NOW)[0].location == "system[1].text@5"
    responses = {"model": "gpt-5", "instructions": stamp, "input": "hi"}
    assert lint_prompt(responses, now=NOW)[0].location == "instructions@5"
    developer = {"model": "gpt-5", "input": [
        {"role": "developer", "content": [{"type": "input_text", "text": stamp}]}]}
    assert lint_prompt(developer, now=NOW)[0].location == "input[0].content[0].text@5"
    tools = {"model": "gpt-4.1", "messages": [], "tools": [{"type": "function", "function": {
        "name": "t", "description": f"Data as of {uuid.uuid4()}"}}]}
    assert lint_prompt(tools, now=NOW)[0].location == "tools[0].function.description@11"
    # Offsets count characters, not UTF-8 bytes.
    accented = chat("Déjà vu — ünïcode. Now: 2026-11-22T06:52:52Z")
    assert lint_prompt(accented, now=NOW)[0].location == "messages[0].content@24"


def test_a_volatile_callers_prompt_cache_key_is_flagged() -> None:
    body = {**chat("Be brief."), "prompt_cache_key": f"chat-{uuid.uuid4()}"}
    findings = lint_prompt(body, now=NOW)
    assert [(f.kind, f.location) for f in findings] == [("volatile_cache_key", "prompt_cache_key")]
    assert kinds({**chat("Be brief."), "prompt_cache_key": "support-bot-v3"}) == []


# --- no prompt text beyond a short masked excerpt -------------------------------------------------

def test_excerpts_are_short_and_masked() -> None:
    secret_value = str(uuid.uuid4())
    system = "x" * 200 + " the secret session " + secret_value + " more text " + "y" * 200
    (finding,) = lint_prompt(chat(system), now=NOW)
    assert secret_value not in finding.excerpt
    assert "‹uuid›" in finding.excerpt
    assert len(finding.excerpt) <= 20 + len("‹uuid›") + 20 + 4
    assert "x" * 30 not in finding.excerpt


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_lint_never_fails_and_excerpts_stay_short(a: str, b: str) -> None:
    findings = lint_prompt(chat(a + " 2026-11-22T06:52:52Z " + b + SHARED), now=NOW)
    assert findings
    for f in findings:
        assert len(f.excerpt) <= 60


def test_strict_error_names_locations_but_no_prompt_text() -> None:
    value = str(uuid.uuid4())
    with pytest.raises(PromptLintError) as info:
        check_prompt(chat(f"Session {value}." + SHARED), "strict")
    assert isinstance(info.value, ResilientLLMError)
    assert value not in str(info.value)
    assert "Session" not in str(info.value)
    assert "uuid at messages[0].content@8" in str(info.value)
    assert [f.kind for f in info.value.findings] == ["uuid"]


# --- modes ----------------------------------------------------------------------------------------

def test_modes(caplog: pytest.LogCaptureFixture) -> None:
    body = chat(f"Request id: {uuid.uuid4()}. Time {time.time():.0f}." + SHARED)
    assert check_prompt(body, "off") == []
    with caplog.at_level(logging.WARNING, logger="resilient_llm"):
        first = check_prompt(body, "warn")
        again = check_prompt(body, "warn")
    assert [f.kind for f in first] == ["uuid", "epoch"] == [f.kind for f in again]
    warnings = [r for r in caplog.records if r.name == "resilient_llm"]
    assert len(warnings) == 2  # once per kind and location, not once per call
    assert all("Request" not in r.getMessage() for r in warnings)
    with pytest.raises(ValueError):
        check_prompt(body, "loud")  # type: ignore[arg-type]


def test_strict_mode_raises_before_any_request_is_sent() -> None:
    provider = FaultProvider(default=Fault.ok(text="ok"))
    client = openai.OpenAI(base_url="http://fault.test/v1", api_key="test", max_retries=0,
                           http_client=httpx2.Client(transport=provider.transport()))

    def send(body: dict[str, Any]) -> None:  # what a drop-in does with lint_prompts="strict"
        check_prompt(body, "strict")
        client.chat.completions.create(**body)

    with pytest.raises(PromptLintError):
        send(chat(f"Now: 2026-11-22T06:52:52Z {uuid.uuid4()}" + SHARED))
    assert provider.requests == []
    send(chat("Be brief." + SHARED))
    assert len(provider.requests) == 1
    client.close()
