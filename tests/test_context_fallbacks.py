"""``"*"`` in RESILIENT_LLM_CONTEXT_FALLBACKS means any model, as in RESILIENT_LLM_FALLBACKS."""

from __future__ import annotations

import httpx2
import pytest

from resilient_llm import ConfigError, Policy, outcome
from resilient_llm.engine.routing import Router
from resilient_llm.openai import OpenAI
from resilient_llm.testing import FakeClock, FakeRandom
from tests.test_routing import MESSAGES, ByModel


def test_star_entry_builds_the_context_chain_of_any_model() -> None:
    policy = Policy(context_fallbacks={"*": ["gpt-4.1"], "tiny": ["big"]})
    assert [str(t) for t in Router.for_call(policy, "gpt-4.1-mini").context_chain] == ["gpt-4.1"]
    assert [str(t) for t in Router.for_call(policy, "tiny").context_chain] == ["big"]
    assert Router.for_call(policy, "gpt-4.1").context_chain == []


def test_context_length_error_is_routed_through_a_star_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENT_LLM_CONTEXT_FALLBACKS", '{"*": ["gpt-4.1"]}')
    handler = ByModel(**{"gpt-4.1-mini": (400, "context_length_exceeded")})
    client = OpenAI(api_key="sk-test", base_url="http://provider.test/v1",
                    http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    client._resilient_clock = FakeClock()
    client._resilient_rng = FakeRandom(fixed=0.5)
    with client:
        answer = client.chat.completions.create(model="gpt-4.1-mini", messages=MESSAGES)
    assert handler.models == ["gpt-4.1-mini", "gpt-4.1"]
    assert answer.model == "gpt-4.1"
    report = outcome(answer)
    assert report.reason == "context_length" and report.served_by == "gpt-4.1"


def test_an_entry_that_can_never_apply_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENT_LLM_CONTEXT_FALLBACKS", '{"gpt-4.1-mini@eu": ["gpt-4.1"]}')
    with pytest.raises(ConfigError) as info:
        Policy.from_env()
    assert info.value.variable == "RESILIENT_LLM_CONTEXT_FALLBACKS"
    assert "never apply" in str(info.value)
