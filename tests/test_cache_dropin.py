"""Prompt-cache keys, prefix lint and cache health through the drop-in OpenAI client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from resilient_llm import Policy, PromptLintError, outcome
from resilient_llm.openai import OpenAI
from resilient_llm.testing import Fault, FaultProvider, Usage

SYSTEM = "You are a support assistant for Acme. " * 40  # long enough to be cached


@pytest.fixture
def client(provider: FaultProvider) -> Iterator[OpenAI]:
    with OpenAI(base_url="http://provider.test/v1", api_key="sk-test",
                http_client=httpx2.Client(transport=provider.transport()),
                policy=Policy(cache_namespace="acme")) as c:
        yield c


def messages(user: str, system: str = SYSTEM) -> list[Any]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def test_requests_carry_a_deterministic_prompt_cache_key(
    provider: FaultProvider, client: OpenAI
) -> None:
    client.chat.completions.create(model="gpt-4.1", messages=messages("first question"))
    client.chat.completions.create(model="gpt-4.1", messages=messages("second question"))
    keys = [r.json["prompt_cache_key"] for r in provider.requests if r.json]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0].startswith("rl1-")
    other = OpenAI(base_url="http://provider.test/v1", api_key="sk-test",
                   http_client=httpx2.Client(transport=provider.transport()),
                   policy=Policy(cache_namespace="globex"))
    with other:
        other.chat.completions.create(model="gpt-4.1", messages=messages("first question"))
    assert provider.requests[-1].json is not None
    assert provider.requests[-1].json["prompt_cache_key"] != keys[0]  # tenants never share


def test_a_callers_key_is_never_overwritten(provider: FaultProvider, client: OpenAI) -> None:
    client.chat.completions.create(model="gpt-4.1", messages=messages("q"),
                                   prompt_cache_key="mine")
    assert provider.requests[-1].json is not None
    assert provider.requests[-1].json["prompt_cache_key"] == "mine"


def test_opt_out(provider: FaultProvider) -> None:
    with OpenAI(base_url="http://provider.test/v1", api_key="sk-test",
                http_client=httpx2.Client(transport=provider.transport()),
                policy=Policy(prompt_cache_key=False)) as c:
        c.chat.completions.create(model="gpt-4.1", messages=messages("q"))
    assert provider.requests[-1].json is not None
    assert "prompt_cache_key" not in provider.requests[-1].json


def test_warn_mode_reports_volatile_prefix_in_outcome(client: OpenAI) -> None:
    system = "Current time: 2026-11-22T06:30:00Z. " + SYSTEM
    answer = client.chat.completions.create(model="gpt-4.1", messages=messages("q", system))
    kinds = {finding.kind for finding in outcome(answer).findings}
    assert "timestamp" in kinds


def test_strict_mode_raises_before_anything_is_sent(provider: FaultProvider) -> None:
    with OpenAI(base_url="http://provider.test/v1", api_key="sk-test",
                http_client=httpx2.Client(transport=provider.transport()),
                policy=Policy(lint_prompts="strict")) as c, \
            pytest.raises(PromptLintError) as info:
        c.chat.completions.create(
            model="gpt-4.1",
            messages=messages("q", "Request 7f3c9a2e-5b1d-4c8e-9f0a-1b2c3d4e5f60. " + SYSTEM),
        )
    assert provider.requests == []
    assert "uuid" in str(info.value) and "7f3c9a2e" not in str(info.value)


def test_turn_four_reading_no_cached_tokens_is_flagged_cold(
    provider: FaultProvider, client: OpenAI
) -> None:
    provider.script(
        Fault.ok(usage=Usage(input_tokens=1500, output_tokens=10)),
        Fault.ok(usage=Usage(input_tokens=1600, output_tokens=10, cache_read_tokens=1400)),
        Fault.ok(usage=Usage(input_tokens=1700, output_tokens=10, cache_read_tokens=1500)),
        Fault.ok(usage=Usage(input_tokens=1800, output_tokens=10, cache_read_tokens=0)),
    )
    history: list[Any] = [{"role": "system", "content": SYSTEM},
                          {"role": "user", "content": "turn 1"}]
    findings = []
    for turn in range(1, 5):
        answer = client.chat.completions.create(model="gpt-4.1", messages=history)
        findings.append([f.kind for f in outcome(answer).findings])
        history += [{"role": "assistant", "content": "ok"},
                    {"role": "user", "content": f"turn {turn + 1}"}]
    assert findings[:3] == [[], [], []]
    assert findings[3] == ["cold_mid_session"]


def test_response_cache_serves_exact_deterministic_repeats_per_tenant(
    provider: FaultProvider,
) -> None:
    def make(namespace: str) -> OpenAI:
        return OpenAI(base_url="http://provider.test/v1", api_key="sk-test",
                      http_client=httpx2.Client(transport=provider.transport()),
                      policy=Policy(response_cache=True, cache_namespace=namespace))

    with make("acme") as acme, make("globex") as globex:
        first = acme.chat.completions.create(model="gpt-4.1", messages=messages("q"),
                                             temperature=0)
        again = acme.chat.completions.create(model="gpt-4.1", messages=messages("q"),
                                             temperature=0)
        assert len(provider.requests) == 1
        assert again.choices[0].message.content == first.choices[0].message.content
        assert again is not first and outcome(again).attempts == ()
        globex.chat.completions.create(model="gpt-4.1", messages=messages("q"), temperature=0)
        assert len(provider.requests) == 2  # never shared across namespaces
        acme.chat.completions.create(model="gpt-4.1", messages=messages("q"), temperature=0.7)
        assert len(provider.requests) == 3  # not deterministic: not cached


def test_a_fallback_gets_the_prompt_cache_key_of_its_own_model() -> None:
    """The key covers the model: a fallback's attempt carries the key its model's own traffic
    with the same prefix uses, not the primary's. A key the caller set is left alone."""
    from resilient_llm import prompt_cache_key

    messages: Any = [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "hi"}]
    provider = FaultProvider()
    provider.set_default(Fault.status(503), model="gpt-4.1")
    policy = Policy(fallbacks={"gpt-4.1": ["gpt-4.1-mini"]}, cache_secret="s" * 32)
    with OpenAI(api_key="sk-test", base_url="http://provider.test/v1", policy=policy,
                http_client=httpx2.Client(transport=provider.transport())) as client:
        client.chat.completions.create(model="gpt-4.1", messages=messages)
        client.chat.completions.create(model="gpt-4.1", messages=messages,
                                       prompt_cache_key="mine")
        client.chat.completions.create(model="gpt-4.1-mini", messages=messages)
    keys = [(r.model, r.json["prompt_cache_key"]) for r in provider.requests]
    primary, fallback, mine_primary, mine_fallback, direct = keys
    assert primary[0] == "gpt-4.1" and fallback[0] == "gpt-4.1-mini"
    assert fallback[1] != primary[1] and fallback[1] == direct[1]
    assert direct[1] == prompt_cache_key({"model": "gpt-4.1-mini", "messages": messages},
                                         secret="s" * 32)
    assert mine_primary[1] == mine_fallback[1] == "mine"
