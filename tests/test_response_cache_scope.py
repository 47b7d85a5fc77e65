"""The opt-in response cache is scoped by credential: a key the provider would reject never
gets the answer cached for another key (the entry key holds a hash of the credential)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx2

from resilient_llm import Policy, outcome
from resilient_llm.anthropic import Anthropic
from resilient_llm.caching.response import ResponseCache
from resilient_llm.openai import AsyncOpenAI, OpenAI


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


def test_async_clients_are_scoped_by_credential_too() -> None:
    provider = KeyedProvider()

    def client(api_key: str) -> AsyncOpenAI:
        return AsyncOpenAI(api_key=api_key, base_url="http://provider.test/v1",
                           policy=Policy(response_cache=True, max_attempts=1),
                           http_client=httpx2.AsyncClient(
                               transport=httpx2.MockTransport(provider)))

    async def main() -> list[str | None]:
        answers = []
        async with client("sk-alice-0001") as alice, client("sk-bob-0002") as bob:
            for each in (alice, alice, bob):
                answer = await each.chat.completions.create(
                    model="gpt-4.1", messages=[{"role": "user", "content": "asked async"}],
                    temperature=0)
                answers.append(answer.choices[0].message.content)
        return answers

    assert anyio.run(main) == ["for sk-alice-0001", "for sk-alice-0001", "for sk-bob-0002"]
    assert provider.seen == ["sk-alice-0001", "sk-bob-0002"]  # alice's repeat was cached


def test_anthropic_keys_and_endpoints_are_scopes() -> None:
    seen: list[tuple[str, str]] = []

    def provider(request: httpx2.Request) -> httpx2.Response:
        key = request.headers.get("x-api-key") or request.headers["authorization"][7:]
        seen.append((request.url.host, key))
        return httpx2.Response(200, json={
            "id": "m", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": f"{request.url.host} {key}"}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1}})

    def client(api_key: str, host: str) -> Anthropic:
        return Anthropic(api_key=api_key, base_url=f"http://{host}",
                         policy=Policy(response_cache=True, max_attempts=1),
                         http_client=httpx2.Client(transport=httpx2.MockTransport(provider)))

    def ask_claude(each: Anthropic) -> str:
        answer = each.messages.create(model="claude-haiku-4-5", max_tokens=5,
                                      messages=[{"role": "user", "content": "asked claude"}],
                                      extra_body={"temperature": 0})
        block = answer.content[0]
        assert block.type == "text"
        return block.text

    with client("sk-ant-a", "one.test") as a_one, client("sk-ant-b", "one.test") as b_one, \
            client("sk-ant-a", "two.test") as a_two:
        assert ask_claude(a_one) == ask_claude(a_one) == "one.test sk-ant-a"
        assert ask_claude(b_one) == "one.test sk-ant-b"
        assert ask_claude(a_two) == "two.test sk-ant-a"
    assert seen == [("one.test", "sk-ant-a"), ("one.test", "sk-ant-b"), ("two.test", "sk-ant-a")]


def test_the_key_covers_what_is_sent_beyond_the_typed_arguments() -> None:
    """``extra_body`` (merged over the body, as the SDK sends it), ``extra_query`` and extra
    headers change the answer: a request that differs only there is never served another's
    answer, and an ``extra_body`` temperature above 0 is not deterministic."""
    seen: list[dict[str, Any]] = []

    def provider(request: httpx2.Request) -> httpx2.Response:
        sent = {"body": json.loads(request.content), "query": dict(request.url.params),
                "beta": request.headers.get("openai-beta")}
        seen.append(sent)
        return httpx2.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": json.dumps(sent)}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    variants: list[dict[str, Any]] = [
        {}, {"extra_body": {"top_p": 0.1}}, {"extra_body": {"top_p": 0.9}},
        {"extra_query": {"api-version": "1"}}, {"extra_query": {"api-version": "2"}},
        {"extra_headers": {"OpenAI-Beta": "assistants=v2"}},
    ]
    with OpenAI(api_key="sk-x", base_url="http://extras.test/v1",
                policy=Policy(response_cache=True, max_attempts=1),
                http_client=httpx2.Client(transport=httpx2.MockTransport(provider))) as client:
        def ask_with(extra: dict[str, Any]) -> Any:
            return json.loads(client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": "asked with extras"}],
                temperature=0, **extra).choices[0].message.content)

        answers = [ask_with(extra) for extra in variants]
        assert len(seen) == len(variants)  # each variant reached the provider
        assert [ask_with(extra) for extra in variants] == answers  # and each repeat was cached
        assert len(seen) == len(variants)
        assert answers[1]["body"]["top_p"] == 0.1 and answers[2]["body"]["top_p"] == 0.9
        assert answers[4]["query"] == {"api-version": "2"}
        assert answers[5]["beta"] == "assistants=v2"
        for _ in range(2):  # temperature 1 sent through extra_body: never from the cache
            ask_with({"extra_body": {"temperature": 1}})
    assert len(seen) == len(variants) + 2


def test_a_fallbacks_answer_is_not_cached_for_the_request() -> None:
    """The answer a fallback gave is not the asked-for model's: the next repeat asks that model
    again (it may be back), and a hit never reports it as the model that served."""
    from resilient_llm.testing import Fault, FaultProvider

    provider = FaultProvider()
    provider.script(Fault.status(503), model="gpt-4.1")
    policy = Policy(response_cache=True, fallbacks={"gpt-4.1": ["gpt-4.1-mini"]})
    with OpenAI(api_key="sk-test", base_url="http://provider.test/v1", policy=policy,
                http_client=httpx2.Client(transport=provider.transport())) as client:
        degraded = ask(client)
        assert outcome(degraded).degraded and degraded.model == "gpt-4.1-mini"
        fresh = ask(client)  # the primary answers now, and that answer is kept
        assert fresh.model == "gpt-4.1" and not outcome(fresh).degraded
        hit = ask(client)
        assert outcome(hit).attempts == () and hit.model == "gpt-4.1"
    assert [r.model for r in provider.requests] == ["gpt-4.1", "gpt-4.1-mini", "gpt-4.1"]
