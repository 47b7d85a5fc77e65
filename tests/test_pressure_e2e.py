"""Pressure control over real loopback HTTP with the official SDKs: symptoms of the pressure
issue reproduced against the fault server, and shown gone.

Each test takes real (short) time: it proves wall-clock behaviour the simulator models.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from resilient_llm import Policy, outcome
from resilient_llm.anthropic import Anthropic
from resilient_llm.openai import OpenAI
from resilient_llm.testing import Fault, FaultProvider, FaultServer

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]

pytestmark = pytest.mark.slow


@pytest.fixture
def provider() -> FaultProvider:
    return FaultProvider()


@pytest.fixture
def server(provider: FaultProvider) -> Iterator[FaultServer]:
    with provider.serve() as running:
        yield running


@pytest.mark.parametrize("fault", [
    Fault.status(429, headers={"retry-after": "1"}),
    Fault.status(503),
])
def test_one_transient_fault_under_a_two_second_deadline_is_retried(
    provider: FaultProvider, server: FaultServer, monkeypatch: pytest.MonkeyPatch,
    fault: Fault,
) -> None:
    """Symptom 1: the call used to raise DeadlineExceeded after one attempt in ~0 s."""
    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "2")
    for _ in range(2):  # the second call runs on the state the first one left
        provider.script(fault, Fault.ok(text="done"))
        with OpenAI(base_url=server.openai_base_url, api_key="sk-test") as client:
            start = time.monotonic()
            answer = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            took = time.monotonic() - start
        assert answer.choices[0].message.content == "done"
        assert took < 2.0
        assert [a.status for a in outcome(answer).attempts][-1] == 200
    official = openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test", max_retries=2)
    provider.script(fault, Fault.ok(text="done"))
    with official:
        assert official.chat.completions.create(
            model="gpt-4.1", messages=MESSAGES).choices[0].message.content == "done"


def test_one_anthropic_529_under_a_two_second_deadline_is_retried(
    provider: FaultProvider, server: FaultServer,
) -> None:
    provider.script(Fault.status(529), Fault.ok(text="done"))
    with Anthropic(base_url=server.anthropic_base_url, api_key="sk-ant-test",
                   policy=Policy(deadline=2)) as client:
        start = time.monotonic()
        message = client.messages.create(model="claude-test", max_tokens=16,
                                         messages=[{"role": "user", "content": "hello"}])
        assert time.monotonic() - start < 2.0
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock) and block.text == "done"


def test_an_idle_provider_does_not_look_saturated_to_batch_calls(
    provider: FaultProvider, server: FaultServer,
) -> None:
    """Symptom 3: the third batch call used to go to the fallback with reason ``saturated``."""
    policy = Policy(priority="batch", fallbacks={"gpt-4.1": ("gpt-4.1-mini",)}, deadline=10)
    with OpenAI(base_url=server.openai_base_url, api_key="sk-test", policy=policy) as client:
        for _ in range(8):
            answer = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            assert outcome(answer).served_by == "gpt-4.1"
    assert all(r.model == "gpt-4.1" for r in provider.requests)


def test_one_absurd_rate_limit_header_does_not_block_the_target(
    provider: FaultProvider, server: FaultServer,
) -> None:
    """Symptom 5: one response with remaining 0 and a reset of 99999999h used to fail the next
    19 of 20 calls in ~1 ms."""
    absurd = {"x-ratelimit-limit-tokens": "1000000", "x-ratelimit-remaining-tokens": "0",
              "x-ratelimit-reset-tokens": "99999999h", "x-ratelimit-limit-requests": "1000",
              "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "99999999h",
              "retry-after": "0"}
    provider.script(Fault.status(429, headers=absurd))
    with OpenAI(base_url=server.openai_base_url, api_key="sk-test",
                policy=Policy(deadline=5)) as client:
        start = time.monotonic()
        for _ in range(5):
            answer = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            assert answer.choices
        assert time.monotonic() - start < 5.0
