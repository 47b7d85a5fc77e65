"""Cache health: cold turns mid-session and prefix drift, per conversation."""

from __future__ import annotations

import copy
import threading
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from resilient_llm import Policy
from resilient_llm.caching.health import (
    CacheHealth,
    CacheUsage,
    anthropic_cache_usage,
    cache_usage,
    conversation_signature,
    openai_cache_usage,
)
from resilient_llm.caching.keys import prepare_anthropic_body, prepare_openai_body
from resilient_llm.testing import FakeClock, Fault, FaultProvider, Usage

SYSTEM = "You are the Acme support agent. " + "Follow the refund policy exactly. " * 200
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
         for n in ("lookup_order", "refund")]


class Conversation:
    """A chat that grows by appending turns, as an application would send it."""

    def __init__(self, system: str = SYSTEM, opener: str = "My order #1234 is late.") -> None:
        self.body: dict[str, Any] = {
            "model": "gpt-4.1", "tools": copy.deepcopy(TOOLS),
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": opener}],
        }

    def reply(self, answer: str, question: str) -> dict[str, Any]:
        self.body["messages"] += [{"role": "assistant", "content": answer},
                                  {"role": "user", "content": question}]
        return self.body


def chat_usage(cached: int, prompt: int = 9000) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": 20, "total_tokens": prompt + 20,
            "prompt_tokens_details": {"cached_tokens": cached}}


# --- the acceptance case --------------------------------------------------------------------------

def test_turn_four_with_zero_cached_tokens_is_flagged_cold_mid_session() -> None:
    clock = FakeClock()
    health = CacheHealth(clock=clock)
    convo = Conversation()
    cached_per_turn = [0, 8960, 9088, 0, 9344]  # turn 1 writes, 2-3 read, 4 goes cold
    results = []
    for turn, cached in enumerate(cached_per_turn, start=1):
        body = convo.body if turn == 1 else convo.reply(f"answer {turn}", f"question {turn}")
        results.append(health.observe_exchange(body, chat_usage(cached, 9000 + 200 * turn),
                                               provider="openai"))
        clock.advance(30)
    assert [len(r) for r in results] == [0, 0, 0, 1, 0]
    (finding,) = results[3]
    assert finding.kind == "cold_mid_session"
    assert finding.turn == 4
    assert (finding.cached_tokens, finding.previous_cached_tokens) == (0, 9088)
    assert finding.hint
    snap = health.snapshot(finding.conversation)
    assert snap is not None
    assert snap.turns == 5
    assert snap.cached_tokens == tuple(cached_per_turn)
    assert (snap.cold_turns, snap.drift_turns) == (1, 0)


def test_cold_mid_session_through_the_sdks_and_the_fault_provider() -> None:
    provider = FaultProvider()
    for cached in (0, 4096, 4224, 0):
        provider.script(Fault.ok(text="ok", usage=Usage(input_tokens=6000, output_tokens=5,
                                                        cache_read_tokens=cached)))
    http = httpx2.Client(transport=provider.transport())
    client = openai.OpenAI(base_url="http://fault.test/v1", api_key="test", max_retries=0,
                           http_client=http)
    clock = FakeClock()
    health = CacheHealth(clock=clock)
    policy = Policy(cache_namespace="acme")
    convo = Conversation()
    found = []
    for turn in range(1, 5):
        body = convo.body if turn == 1 else convo.reply("ok", f"question {turn}")
        sent = prepare_openai_body(body, policy)
        response = client.chat.completions.create(**sent)
        found += health.observe_exchange(sent, response.usage, provider="openai",
                                         namespace="acme")
        clock.advance(10)
    assert [(f.kind, f.turn) for f in found] == [("cold_mid_session", 4)]
    # Every turn of the conversation carried the same prompt-cache key.
    assert len({r.json["prompt_cache_key"] for r in provider.requests}) == 1
    client.close()


def test_anthropic_conversation_health() -> None:
    provider = FaultProvider()
    for read, write in ((0, 5000), (5000, 300), (0, 5600)):
        provider.script(Fault.ok(text="ok", usage=Usage(input_tokens=40, output_tokens=5,
                                                        cache_read_tokens=read,
                                                        cache_creation_tokens=write)))
    client = anthropic.Anthropic(base_url="http://fault.test", api_key="test", max_retries=0,
                                 http_client=httpx2.Client(transport=provider.transport()))
    health = CacheHealth(clock=FakeClock())
    body: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 50, "system": SYSTEM,
                            "messages": [{"role": "user", "content": "hello"}]}
    found = []
    for turn in range(3):
        sent = prepare_anthropic_body(body, Policy())
        response = client.messages.create(**sent)
        assert anthropic_cache_usage(response.usage).input_tokens == \
            40 + response.usage.cache_read_input_tokens + response.usage.cache_creation_input_tokens
        found += health.observe_exchange(sent, response.usage, provider="anthropic")
        body["messages"] += [{"role": "assistant", "content": "ok"},
                             {"role": "user", "content": f"more {turn}"}]
    assert [(f.kind, f.turn) for f in found] == [("cold_mid_session", 3)]
    client.close()


# --- drift ----------------------------------------------------------------------------------------

def test_a_timestamp_in_the_system_prompt_shows_as_prefix_drift() -> None:
    health = CacheHealth(clock=FakeClock())
    convo = Conversation(system="Current time: 2026-11-22T06:52:01Z. " + SYSTEM)
    first = health.observe_exchange(convo.body, chat_usage(0), provider="openai")
    body = convo.reply("a", "b")
    body["messages"][0]["content"] = "Current time: 2026-11-22T06:53:17Z. " + SYSTEM
    second = health.observe_exchange(body, chat_usage(0), provider="openai")
    assert first == []
    assert [(f.kind, f.turn) for f in second] == [("prefix_drift", 2)]


def test_reordered_or_added_tools_show_as_prefix_drift() -> None:
    health = CacheHealth(clock=FakeClock())
    convo = Conversation()
    assert health.observe_exchange(convo.body, chat_usage(0), provider="openai") == []
    body = convo.reply("a", "b")
    body["tools"].reverse()
    assert [f.kind for f in health.observe_exchange(body, chat_usage(8960),
                                                    provider="openai")] == ["prefix_drift"]
    body = convo.reply("c", "d")
    body["tools"].append({"type": "function", "function": {"name": "new"}})
    assert [f.kind for f in health.observe_exchange(body, chat_usage(0),
                                                    provider="openai")] == ["prefix_drift"]
    body = convo.reply("e", "f")  # unchanged again: healthy, and a zero here is cold
    assert [f.kind for f in health.observe_exchange(body, chat_usage(0),
                                                    provider="openai")] == ["cold_mid_session"]


def test_stable_tool_order_removes_the_drift() -> None:
    health = CacheHealth(clock=FakeClock())
    policy = Policy(stable_tool_order=True)
    convo = Conversation()
    sent = prepare_openai_body(convo.body, policy)
    assert health.observe_exchange(sent, chat_usage(0), provider="openai") == []
    body = convo.reply("a", "b")
    body["tools"].reverse()
    sent = prepare_openai_body(body, policy)
    assert health.observe_exchange(sent, chat_usage(8960), provider="openai") == []


# --- no false alarms ------------------------------------------------------------------------------

def test_no_cold_after_an_idle_pause_or_when_never_warm() -> None:
    clock = FakeClock()
    health = CacheHealth(clock=clock, idle_expiry=300)
    assert health.observe("c", "p", 0, 9000) == []
    assert health.observe("c", "p", 0, 9100) == []  # never warm: too short, or a new prefix
    assert health.observe("c", "p", 8960, 9200) == []
    clock.advance(301)
    assert health.observe("c", "p", 0, 9300) == []  # the entry may have expired: expected
    assert health.observe("c", "p", 0, 9400)[0].kind == "cold_mid_session"
    assert health.observe("d", "p", 0, 100) == []  # first turn of another conversation


def test_no_cold_when_the_prompt_shrank_below_what_was_cached() -> None:
    health = CacheHealth(clock=FakeClock())
    health.observe("c", "p", 0, 9000)
    health.observe("c", "p", 8960, 9100)
    assert health.observe("c", "p", 0, 4000) == []  # history truncated


# --- conversation identity ------------------------------------------------------------------------

def test_conversation_identity_survives_turns_and_volatile_system_values() -> None:
    convo = Conversation()
    first = conversation_signature(convo.body)
    later = conversation_signature(convo.reply("a", "b"))
    assert first == later
    stamped = Conversation(system="Now: 2026-11-22T06:52:01Z. " + SYSTEM)
    restamped = Conversation(system="Now: 2026-11-22T07:00:00Z. " + SYSTEM)
    a, b = conversation_signature(stamped.body), conversation_signature(restamped.body)
    assert a.key == b.key
    assert a.prefix_hash != b.prefix_hash
    assert a.key.startswith("rlc1-")
    assert SYSTEM[:10] not in a.key


def test_per_user_fields_and_session_ids_keep_conversations_apart() -> None:
    health = CacheHealth(clock=FakeClock())
    session = "e89b-12d3-a456-426614174000."
    alice = Conversation(system=f"Customer name: Alice. Session 123e4567-{session}" + SYSTEM,
                         opener="hi")
    bob = Conversation(system=f"Customer name: Bob. Session 223e4567-{session}" + SYSTEM,
                       opener="hi")
    found = []
    for turn in range(3):
        for convo in (alice, bob):
            body = convo.body if turn == 0 else convo.reply("ok", f"q{turn}")
            found += health.observe_exchange(body, chat_usage(0 if turn == 0 else 8960),
                                             provider="openai")
    assert found == []
    assert conversation_signature(alice.body).key != conversation_signature(bob.body).key


def test_conversations_are_separated_by_opener_template_model_and_namespace() -> None:
    base = conversation_signature(Conversation().body, namespace="acme").key
    assert conversation_signature(Conversation(opener="Hi").body, namespace="acme").key != base
    assert conversation_signature(Conversation(system="Other.").body, namespace="acme").key != base
    assert conversation_signature(Conversation().body, namespace="globex").key != base
    other_model = Conversation().body
    other_model["model"] = "gpt-4.1-mini"
    assert conversation_signature(other_model, namespace="acme").key != base


def test_responses_conversation_ids_and_anthropic_markers() -> None:
    body = {"model": "gpt-5", "instructions": "x", "input": "turn 1", "conversation": "conv_1"}
    assert conversation_signature(body).key == \
        conversation_signature({**body, "input": "turn 2"}).key
    assert conversation_signature({**body, "conversation": {"id": "conv_1"}}).key == \
        conversation_signature(body).key
    claude: dict[str, Any] = {"model": "claude-sonnet-4-6", "system": SYSTEM,
                              "messages": [{"role": "user", "content": "hello"}]}
    marked = copy.deepcopy(claude)
    marked["messages"][0]["content"] = [{"type": "text", "text": "hello",
                                         "cache_control": {"type": "ephemeral"}}]
    unmarked = copy.deepcopy(marked)
    del unmarked["messages"][0]["content"][0]["cache_control"]
    assert conversation_signature(marked) == conversation_signature(unmarked)


# --- usage extraction -----------------------------------------------------------------------------

def test_usage_extraction_from_dicts_and_sdk_objects() -> None:
    assert openai_cache_usage(chat_usage(1920, 2006)) == CacheUsage(1920, 2006, 0)
    responses = {"input_tokens": 5000, "output_tokens": 3,
                 "input_tokens_details": {"cached_tokens": 4096, "cache_write_tokens": 128}}
    assert openai_cache_usage(responses) == CacheUsage(4096, 5000, 128)
    assert openai_cache_usage({"prompt_tokens": 10}) == CacheUsage(0, 10, 0)
    assert openai_cache_usage(None) == CacheUsage(0, 0, 0)
    claude = {"input_tokens": 50, "output_tokens": 3, "cache_read_input_tokens": 4000,
              "cache_creation_input_tokens": None}
    assert anthropic_cache_usage(claude) == CacheUsage(4000, 4050, 0)
    assert cache_usage(claude, "anthropic") == CacheUsage(4000, 4050, 0)
    from openai.types import CompletionUsage
    from openai.types.completion_usage import PromptTokensDetails

    sdk = CompletionUsage(prompt_tokens=2006, completion_tokens=300, total_tokens=2306,
                          prompt_tokens_details=PromptTokensDetails(cached_tokens=1920))
    assert openai_cache_usage(sdk) == CacheUsage(1920, 2006, 0)
    sdk_claude = anthropic.types.Usage(input_tokens=10, output_tokens=1,
                                       cache_read_input_tokens=2048,
                                       cache_creation_input_tokens=100)
    assert anthropic_cache_usage(sdk_claude) == CacheUsage(2048, 2158, 100)


# --- bounds and threads ---------------------------------------------------------------------------

def test_the_tracker_is_bounded_and_forgets_idle_conversations() -> None:
    clock = FakeClock()
    health = CacheHealth(clock=clock, maxsize=3, ttl=60, history=2)
    for name in "abcd":
        health.observe(name, "p", 1, 10)
    assert len(health) == 3
    for cached in (5, 6, 7):
        health.observe("d", "p", cached, 10)
    snap = health.snapshot("d")
    assert snap is not None
    assert snap.cached_tokens == (6, 7)
    clock.advance(61)
    assert health.snapshot("d") is None
    assert len(health) == 0


def test_concurrent_turns_are_all_counted() -> None:
    health = CacheHealth(clock=FakeClock())

    def work() -> None:
        for _ in range(250):
            health.observe("shared", "p", 100, 1000)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = health.snapshot("shared")
    assert snap is not None
    assert snap.turns == 1000


@pytest.mark.parametrize("bad", [-5, None, True, "7"])
def test_odd_token_figures_count_as_zero(bad: Any) -> None:
    health = CacheHealth(clock=FakeClock())
    health.observe("c", "p", 100, 1000)
    assert health.observe("c", "p", bad, 1000)[0].kind == "cold_mid_session"
