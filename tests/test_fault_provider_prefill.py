"""The fault provider's answers to a final assistant turn (prefill), as the real APIs give them.

Stream recovery resumes a broken answer by prefill where a target supports it; its tests need a
provider that continues from a prefill, ignores it, or rejects it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from resilient_llm.testing import Fault, FaultProvider

FULL = "The quick brown fox jumps over the lazy dog."


@pytest.fixture
def provider() -> Iterator[FaultProvider]:
    provider = FaultProvider(default=Fault.ok(text=FULL))
    yield provider
    provider.reset()


def _anthropic(provider: FaultProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="test",
        base_url="http://fault.test",
        max_retries=0,
        http_client=httpx2.Client(transport=provider.transport()),
    )


def _openai(provider: FaultProvider) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="test",
        base_url="http://fault.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=provider.transport()),
    )


def _text(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def _messages(prefill: str | list[dict[str, str]]) -> Any:
    return [{"role": "user", "content": "fox?"}, {"role": "assistant", "content": prefill}]


def test_anthropic_continues_after_the_prefill_json_and_stream(provider: FaultProvider) -> None:
    client = _anthropic(provider)
    message = client.messages.create(
        model="claude-x", max_tokens=64, messages=_messages("The quick brown")
    )
    assert _text(message) == " fox jumps over the lazy dog."
    with client.messages.stream(
        model="claude-x",
        max_tokens=64,
        messages=_messages([{"type": "text", "text": "The quick"}]),
    ) as stream:
        streamed = "".join(stream.text_stream)
    assert streamed == " brown fox jumps over the lazy dog."
    assert [r.prefill for r in provider.requests] == ["The quick brown", "The quick"]


def test_anthropic_rejects_a_prefill_with_trailing_white_space(provider: FaultProvider) -> None:
    provider.script(Fault.ok(text="scripted"))
    client = _anthropic(provider)
    with pytest.raises(anthropic.BadRequestError, match="trailing whitespace"):
        client.messages.create(
            model="claude-x", max_tokens=64, messages=_messages("The quick ")
        )
    # The refused request did not consume the scripted answer.
    assert provider.pending() == 1
    assert provider.requests[-1].fault == "prefill_rejected"


def test_openai_chat_ignores_a_final_assistant_turn_by_default(provider: FaultProvider) -> None:
    completion = _openai(provider).chat.completions.create(
        model="gpt-x", messages=_messages("The quick brown")
    )
    assert completion.choices[0].message.content == FULL
    assert provider.requests[-1].prefill == "The quick brown"


def test_openai_compatible_server_that_continues(provider: FaultProvider) -> None:
    provider.set_prefill("continue", model="gpt-x")
    stream = _openai(provider).chat.completions.create(
        model="gpt-x",
        messages=_messages("The quick brown"),
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == " fox jumps over the lazy dog."


def test_reject_mode_answers_400_for_one_model_only(provider: FaultProvider) -> None:
    provider.set_prefill("reject", model="claude-no-prefill")
    client = _anthropic(provider)
    with pytest.raises(anthropic.BadRequestError, match="does not support assistant message"):
        client.messages.create(
            model="claude-no-prefill", max_tokens=64, messages=_messages("The")
        )
    ok = client.messages.create(
        model="claude-other", max_tokens=64, messages=_messages("The")
    )
    assert _text(ok) == " quick brown fox jumps over the lazy dog."


def test_a_diverging_continuation_answers_the_whole_scripted_text(provider: FaultProvider) -> None:
    # The scripted text does not start with the prefill: the "model" went another way.
    provider.script(Fault.ok(text="Something else entirely."))
    message = _anthropic(provider).messages.create(
        model="claude-x", max_tokens=64, messages=_messages("The quick")
    )
    assert _text(message) == "Something else entirely."


def test_user_turn_last_has_no_prefill(provider: FaultProvider) -> None:
    _openai(provider).chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "hi"}]
    )
    assert provider.requests[-1].prefill is None


def test_prefill_mode_is_validated() -> None:
    with pytest.raises(ValueError, match="prefill must be one of"):
        FaultProvider(prefill="resume")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefill must be one of"):
        FaultProvider().set_prefill("yes")  # type: ignore[arg-type]


def test_prefill_over_a_real_loopback_server() -> None:
    provider = FaultProvider(default=Fault.ok(text=FULL))
    with provider.serve() as server:
        client = anthropic.Anthropic(api_key="test", base_url=server.url, max_retries=0)
        with client:
            message = client.messages.create(
                model="claude-x", max_tokens=64, messages=_messages("The quick brown fox")
            )
    assert _text(message) == " jumps over the lazy dog."
