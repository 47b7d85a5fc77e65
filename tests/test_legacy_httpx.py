"""An ``http_client`` from the legacy ``httpx`` package (which openai still accepts).

Never worse than the official SDK: where the official class works with an ``httpx.Client`` /
``httpx.AsyncClient``, so does the drop-in, with its resilience, through the caller's client
(its event hooks and transport stay in use); where the official class refuses one (anthropic),
the drop-in refuses it the same way, at construction.
"""

from __future__ import annotations

import time
from typing import Any

import anthropic
import anyio
import httpx
import openai
import pytest

import resilient_llm.anthropic as anthropic_dropin
import resilient_llm.openai as openai_dropin
from resilient_llm import DeadlineExceeded, Policy, outcome
from resilient_llm.testing import Fault, FaultProvider, FaultServer

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(client: Any, **kwargs: Any) -> Any:
    return client.chat.completions.create(model="gpt-4.1", messages=MESSAGES, **kwargs)


def test_a_legacy_client_serves_the_official_and_the_drop_in_alike(
        provider: FaultProvider, server: FaultServer) -> None:
    seen: list[str] = []
    hooks = {"request": [lambda request: seen.append(type(request).__module__)]}
    with openai.OpenAI(api_key="k", base_url=server.openai_base_url,
                       http_client=httpx.Client(event_hooks=hooks)) as official:  # type: ignore[arg-type]
        expected = chat(official).choices[0].message.content
    provider.script(Fault.status(429, headers={"retry-after": "0.01"}))
    with openai_dropin.OpenAI(api_key="k", base_url=server.openai_base_url,
                              http_client=httpx.Client(event_hooks=hooks)) as client:
        completion = chat(client)
        stream_text = "".join(chunk.choices[0].delta.content or ""
                              for chunk in chat(client, stream=True) if chunk.choices)
    assert completion.choices[0].message.content == expected == stream_text
    assert [a.failure for a in outcome(completion).attempts] == ["rate_limited", None]
    first, second = provider.requests[1:3]
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    # the caller's own client sent every call (its hooks run once per call, as officially)
    assert seen == ["httpx"] * 3


def test_a_legacy_async_client_serves_the_drop_in(provider: FaultProvider,
                                                   server: FaultServer) -> None:
    provider.script(Fault.status(503), Fault.ok(), Fault.stream_cut(after_events=0))

    async def main() -> tuple[Any, str]:
        async with openai_dropin.AsyncOpenAI(api_key="k", base_url=server.openai_base_url,
                                             http_client=httpx.AsyncClient()) as client:
            completion = await chat(client)
            text = ""
            async for chunk in await chat(client, stream=True):
                text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            return completion, text

    completion, text = anyio.run(main)
    assert [a.failure for a in outcome(completion).attempts] == ["overloaded", None]
    assert text == completion.choices[0].message.content
    assert [r.fault for r in provider.requests] == ["status", "ok", "stream_cut", "ok"]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_the_deadline_holds_through_a_legacy_client(is_async: bool, provider: FaultProvider,
                                                    server: FaultServer) -> None:
    provider.set_default(Fault.hang())
    policy = Policy(deadline=0.5)

    async def acall() -> None:
        async with openai_dropin.AsyncAzureOpenAI(
                api_key="k", api_version="2024-10-21", azure_endpoint=server.url,
                policy=policy, http_client=httpx.AsyncClient()) as client:
            await chat(client)

    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        if is_async:
            anyio.run(acall)
        else:
            with openai_dropin.AzureOpenAI(api_key="k", api_version="2024-10-21",
                                           azure_endpoint=server.url, policy=policy,
                                           http_client=httpx.Client()) as client:
                chat(client)
    assert time.monotonic() - started <= 0.5 + 0.3
    assert provider.requests and "/deployments/gpt-4.1/" in provider.requests[0].path


def test_a_legacy_transport_error_is_retried_as_its_httpx2_twin() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 0, "model": "gpt-4.1",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hi"}}]})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with openai_dropin.OpenAI(api_key="k", base_url="https://api.example.test/v1",
                              http_client=http) as client:
        completion = chat(client)
    assert len(calls) == 2
    assert [a.failure for a in outcome(completion).attempts] == ["connect_error", None]


@pytest.mark.parametrize("name", ["Anthropic", "AsyncAnthropic", "AnthropicBedrock",
                                  "AnthropicVertex"])
def test_anthropic_refuses_a_legacy_client_as_the_official_class_does(name: str) -> None:
    legacy = httpx.AsyncClient() if name.startswith("Async") else httpx.Client()
    kwargs: dict[str, Any] = {"AnthropicBedrock": {"api_key": "k", "aws_region": "us-east-1"},
                              "AnthropicVertex": {"region": "us-east5", "project_id": "p",
                                                  "access_token": "t"}}.get(
        name, {"api_key": "k"})
    with pytest.raises(TypeError) as official:
        getattr(anthropic, name)(http_client=legacy, **kwargs)
    with pytest.raises(TypeError) as ours:
        getattr(anthropic_dropin, name)(http_client=legacy, **kwargs)
    assert str(ours.value) == str(official.value)
    assert "httpx2" in str(ours.value)


def test_a_stub_or_httpx2_in_place_of_the_httpx_module_is_not_a_legacy_client(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    from types import SimpleNamespace

    import httpx2

    from resilient_llm.transport.legacy import legacy_client_kind

    monkeypatch.setitem(sys.modules, "httpx", SimpleNamespace(URL=str))
    with openai_dropin.OpenAI(api_key="k", base_url="https://api.example.test/v1") as client:
        assert legacy_client_kind(client._client) is None
    assert legacy_client_kind(object()) is None
    monkeypatch.setitem(sys.modules, "httpx", httpx2)  # httpx2 aliased under the old name
    assert legacy_client_kind(httpx2.Client()) is None
    assert legacy_client_kind(httpx2.AsyncClient()) is None
