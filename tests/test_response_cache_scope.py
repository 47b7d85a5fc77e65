"""The opt-in response cache is scoped by credential: a key the provider would reject never
gets the answer cached for another key (the entry key holds a hash of the credential)."""

from __future__ import annotations

import json
from typing import Any

import httpx2

from resilient_llm import Policy, outcome
from resilient_llm.caching.response import ResponseCache
from resilient_llm.openai import OpenAI


class KeyedProvider:
    """Answers with the credential it saw; 401 for ``bad`` keys."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        key = request.headers["authorization"][7:]
        self.seen.append(key)
        if key.startswith("bad"):
            return httpx2.Response(401, json={"error": {"message": "invalid key",
                                                        "type": "authentication_error"}})
        return httpx2.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"for {key}"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def openai_client(provider: KeyedProvider, api_key: str) -> OpenAI:
    return OpenAI(api_key=api_key, base_url="http://provider.test/v1",
                  policy=Policy(response_cache=True, max_attempts=1),
                  http_client=httpx2.Client(transport=httpx2.MockTransport(provider)))


def ask(client: OpenAI, **extra: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "same question"}],
        temperature=0, **extra)


def test_another_credential_never_gets_the_cached_answer() -> None:
    provider = KeyedProvider()
    with openai_client(provider, "sk-alice-0001") as alice, \
            openai_client(provider, "bad-mallory") as mallory, \
            openai_client(provider, "sk-bob-0002") as bob:
        first = ask(alice)
        again = ask(alice)
        assert outcome(again).attempts == () and provider.seen == ["sk-alice-0001"]
        assert again.choices[0].message.content == first.choices[0].message.content
        try:
            ask(mallory)
            raise AssertionError("a rejected key got an answer")
        except Exception as exc:  # the provider's 401, as without the cache
            assert "401" in str(exc) or "invalid key" in str(exc)
        assert ask(bob).choices[0].message.content == "for sk-bob-0002"
        assert provider.seen == ["sk-alice-0001", "bad-mallory", "sk-bob-0002"]


def test_a_per_request_credential_is_its_own_scope() -> None:
    provider = KeyedProvider()
    with openai_client(provider, "sk-alice-0001") as alice:
        ask(alice)
        answer = ask(alice, extra_headers={"Authorization": "Bearer sk-carol-0003"})
    assert answer.choices[0].message.content == "for sk-carol-0003"


def test_key_for_folds_the_credential_in() -> None:
    body = {"model": "m", "temperature": 0, "messages": []}
    plain = ResponseCache.key_for(body, None, scope="x")
    alice = ResponseCache.key_for(body, None, scope="x", credential="a1b2")
    bob = ResponseCache.key_for(body, None, scope="x", credential="c3d4")
    assert len({plain, alice, bob}) == 3
    assert json.dumps(alice).count("a1b2") == 0
