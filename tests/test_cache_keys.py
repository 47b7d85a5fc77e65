"""Prompt-cache keys, canonical JSON, breakpoint placement and the local response cache."""

from __future__ import annotations

import copy
import json
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from resilient_llm import Policy
from resilient_llm.caching.keys import (
    KEY_PREFIX,
    MAX_KEY_LENGTH,
    NAMESPACE_ENV,
    SECRET_ENV,
    canonical_json,
    min_cacheable_tokens,
    prefix_fingerprint,
    prepare_anthropic_body,
    prepare_openai_body,
    prompt_cache_key,
    shards_for_rate,
)
from resilient_llm.caching.response import ResponseCache
from resilient_llm.testing import FakeClock, Fault, FaultProvider

SECRET = "s3cret-for-tests-0123456789"
KEY_RE = re.compile(r"^rl1-[0-9a-f]{32}(-s\d{1,4})?$")
LONG_SYSTEM = "You are a careful assistant for Acme. Follow the policy below.\n" + (
    "Refunds are accepted within thirty days when the item is unused. " * 120
)


def tool(name: str, description: str = "Look something up.", **props: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": props or {"q": {"type": "string"}}},
        },
    }


def claude_tool(name: str, description: str = "Look something up.") -> dict[str, Any]:
    return {"name": name, "description": description,
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}


def chat_body(system: str = LONG_SYSTEM, user: str = "Where is my order?",
              tools: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4.1",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    }
    if tools is not None:
        body["tools"] = tools
    body.update(extra)
    return body


def claude_body(system: Any = LONG_SYSTEM, user: str = "Where is my order?",
                tools: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-6", "max_tokens": 256, "system": system,
        "messages": [{"role": "user", "content": user}],
    }
    if tools is not None:
        body["tools"] = tools
    body.update(extra)
    return body


def key(body: Any, **kw: Any) -> str:
    kw.setdefault("namespace", "acme")
    kw.setdefault("secret", SECRET)
    return prompt_cache_key(body, **kw)


# --- canonical JSON -------------------------------------------------------------------------------

def test_canonical_json_sorts_keys_and_drops_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == '{"a":[1,{"c":3,"d":2}],"b":1}'


def test_canonical_json_normalises_numbers_but_not_strings() -> None:
    assert canonical_json([1.0, -0.0, 0.5, 1e20, 2, True, None]) == \
        "[1,0,0.5,100000000000000000000,2,true,null]"
    assert canonical_json({"x": 1.0}) == canonical_json({"x": 1})
    # Strings are kept byte for byte: no Unicode normalisation, no escaping of non-ASCII.
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert canonical_json(nfc) == '"café"'
    assert canonical_json(nfc) != canonical_json(nfd)
    assert canonical_json("1.0") == '"1.0"'


def test_canonical_json_accepts_pydantic_models_and_mixed_keys() -> None:
    from pydantic import BaseModel

    class Part(BaseModel):
        type: str
        text: str
        extra: int | None = None

    assert canonical_json([Part(type="text", text="hi")]) == '[{"text":"hi","type":"text"}]'
    assert canonical_json({1: "a", "b": 2.0}) == '{"1":"a","b":2}'
    with pytest.raises(TypeError):
        canonical_json({"x": object()})


# --- property tests -------------------------------------------------------------------------------

json_leaf = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)
tool_names = st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), min_size=0,
                      max_size=5, unique=True)


@st.composite
def chat_bodies(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(tool_names)
    tools = [
        {"type": "function", "function": {
            "name": n, "description": draw(st.text(max_size=30)),
            "parameters": {"type": "object", "properties": {"p": draw(json_value)}}}}
        for n in names
    ]
    body = chat_body(system=draw(st.text(max_size=40) | st.just(LONG_SYSTEM)),
                     user=draw(st.text(max_size=20)), tools=tools or None)
    if draw(st.booleans()):
        body["response_format"] = {"type": "json_schema", "json_schema": draw(json_value)}
    return body


def reorder(value: Any, rnd: random.Random) -> Any:
    """The same JSON value with every object's keys in a shuffled order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: reorder(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [reorder(v, rnd) for v in value]
    return value


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(chat_bodies(), st.randoms(use_true_random=False))
def test_key_is_equal_under_dict_reordering(body: dict[str, Any], rnd: random.Random) -> None:
    again = reorder(body, rnd)
    assert key(again) == key(body)
    assert prefix_fingerprint(again) == prefix_fingerprint(body)


@FAST
@given(chat_bodies(), st.randoms(use_true_random=False))
def test_key_ignores_tool_order_and_fingerprint_does_not(body: dict[str, Any],
                                                          rnd: random.Random) -> None:
    tools = body.get("tools") or []
    shuffled = list(tools)
    rnd.shuffle(shuffled)
    other = {**body, "tools": shuffled} if tools else body
    assert key(other) == key(body)
    if shuffled != tools:
        assert prefix_fingerprint(other) != prefix_fingerprint(body)
    # stable_tool_order puts the same bytes on the wire for every order.
    policy = Policy(stable_tool_order=True)
    assert prepare_openai_body(other, policy)["tools" if tools else "model"] == \
        prepare_openai_body(body, policy)["tools" if tools else "model"]


@FAST
@given(chat_bodies(), st.text(min_size=1, max_size=10), st.text(min_size=1, max_size=10))
def test_keys_differ_across_namespaces(body: dict[str, Any], a: str, b: str) -> None:
    assume(a != b)
    assert key(body, namespace=a) != key(body, namespace=b)


@FAST
@given(chat_bodies(), st.data())
def test_any_change_of_prefix_content_changes_the_key(body: dict[str, Any],
                                                      data: st.DataObject) -> None:
    changed = copy.deepcopy(body)
    tools = changed.get("tools") or []
    what = data.draw(st.sampled_from(["system", "model", "tool_added"]
                                     + (["description", "schema"] if tools else [])))
    if what == "system":
        new = data.draw(st.text(max_size=40))
        assume(new != changed["messages"][0]["content"])
        changed["messages"][0]["content"] = new
    elif what == "model":
        changed["model"] = "gpt-4.1-mini"
    elif what == "tool_added":
        names = {t["function"]["name"] for t in tools}
        changed["tools"] = [*tools, tool("zz_new" if "zz_new" not in names else "zz_new2")]
    else:
        i = data.draw(st.integers(0, len(tools) - 1))
        function = changed["tools"][i]["function"]
        if what == "description":
            new = data.draw(st.text(max_size=30))
            assume(new != function["description"])
            function["description"] = new
        else:
            props = function["parameters"]["properties"]
            value = data.draw(json_value)
            assume(canonical_json(value) != canonical_json(props["p"]))
            props["p"] = value
    assert key(changed) != key(body)
    if what != "model":  # the fingerprint compares prefixes; the model is not part of one
        assert prefix_fingerprint(changed) != prefix_fingerprint(body)


@FAST
@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=40))
def test_messages_after_the_prefix_never_change_the_key(system: str, u1: str, u2: str) -> None:
    first = chat_body(system=system, user=u1)
    later = copy.deepcopy(first)
    later["messages"] += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": u2}]
    assert key(later) == key(first)
    assert key(chat_body(system=system, user=u2)) == key(first)


KEY_SCRIPT = """
import json, sys
from resilient_llm.caching.keys import prompt_cache_key, prefix_fingerprint
bodies = json.loads(sys.stdin.read())
out = [[prompt_cache_key(b, namespace="acme", secret="s3cret-for-tests-0123456789", shards=8),
        prefix_fingerprint(b)] for b in bodies]
print(json.dumps(out))
"""


def test_keys_are_equal_across_processes_with_different_hash_seeds() -> None:
    bodies = [
        chat_body(tools=[tool("b"), tool("a", x={"type": "number", "minimum": 0.0})]),
        chat_body(system="short", user="héllo ✓", temperature=0),
        claude_body(system=[{"type": "text", "text": LONG_SYSTEM}], tools=[claude_tool("t")]),
        {"model": "gpt-5", "instructions": "Be brief.", "input": "hi", "tools": [
            {"type": "function", "name": "f", "parameters": {}}]},
    ]
    expected = [[prompt_cache_key(b, namespace="acme", secret=SECRET, shards=8),
                 prefix_fingerprint(b)] for b in bodies]
    src = str(Path(__file__).resolve().parents[1] / "src")
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed,
               "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
        done = subprocess.run([sys.executable, "-c", KEY_SCRIPT], input=json.dumps(bodies),
                              capture_output=True, text=True, env=env, timeout=60, check=True)
        assert json.loads(done.stdout) == expected


# --- key format, secrets, namespaces, shards ------------------------------------------------------

def test_key_format_fits_openai_limit() -> None:
    for shards in (1, 7, 1024):
        k = key(chat_body(), shards=shards)
        assert KEY_RE.match(k), k
        assert len(k) <= MAX_KEY_LENGTH
        assert k.startswith(KEY_PREFIX)
    assert LONG_SYSTEM[:20] not in key(chat_body())


def test_secret_changes_the_key_and_defaults_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = chat_body()
    assert key(body, secret="another-secret-0123456789") != key(body)
    public = prompt_cache_key(body, namespace="acme")  # no secret anywhere: public salt
    monkeypatch.setenv(SECRET_ENV, SECRET)
    assert prompt_cache_key(body, namespace="acme") == key(body) != public
    monkeypatch.setenv(NAMESPACE_ENV, "acme")
    assert prompt_cache_key(body) == key(body)
    assert prompt_cache_key(body, namespace="") != key(body)  # explicit "" = no namespace
    with pytest.raises(ValueError):
        prompt_cache_key(body, secret=b"")


def test_provider_is_part_of_the_key() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert key(body, provider="openai") != key(body, provider="anthropic")
    with pytest.raises(ValueError):
        key(body, provider="gemini")


def test_shards_keep_a_conversation_on_one_shard_and_spread_conversations() -> None:
    shards = 8
    turn1 = chat_body(user="conversation opener 1")
    turn2 = copy.deepcopy(turn1)
    turn2["messages"] += [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]
    assert key(turn1, shards=shards) == key(turn2, shards=shards)
    used = {key(chat_body(user=f"opener {i}"), shards=shards) for i in range(64)}
    assert len(used) == shards  # 64 conversations reach every shard
    base = key(turn1)
    assert all(k.startswith(base + "-s") for k in used)
    assert key(turn1, shards=shards, shard_key="c1") == key(turn2, shards=shards, shard_key="c1")
    chained = {"model": "gpt-5", "instructions": "x", "input": "next turn",
               "previous_response_id": "resp_1"}
    assert key(chained, shards=shards).endswith("-s0")
    for bad in (0, MAX_SHARDS_PLUS_ONE, True, 2.0):
        with pytest.raises(ValueError):
            key(turn1, shards=bad)


MAX_SHARDS_PLUS_ONE = 1025


def test_shards_for_rate_follows_the_per_key_guidance() -> None:
    assert shards_for_rate(0) == 1
    assert shards_for_rate(15) == 1
    assert shards_for_rate(16) == 2
    assert shards_for_rate(600) == 40
    assert shards_for_rate(10**9) == 1024
    with pytest.raises(ValueError):
        shards_for_rate(-1)


# --- what the stable prefix is --------------------------------------------------------------------

def test_responses_prefix_is_instructions_tools_and_format() -> None:
    body: dict[str, Any] = {"model": "gpt-5", "instructions": LONG_SYSTEM, "input": "hi",
                            "text": {"format": {"type": "text"}}, "reasoning": {"effort": "low"}}
    assert key({**body, "input": "other"}) == key(body)
    assert key({**body, "instructions": "other"}) != key(body)
    assert key({**body, "reasoning": {"effort": "high"}}) != key(body)
    assert key({**body, "reasoning": {"effort": "low", "summary": "auto"}}) == key(body)
    assert key({**body, "text": {"format": {"type": "json_object"}}}) != key(body)
    as_items: dict[str, Any] = {**body, "instructions": None, "input": [
        {"role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"role": "user", "content": "hi"}]}
    changed = copy.deepcopy(as_items)
    changed["input"][0]["content"][0]["text"] = "other rules"
    assert key(changed) != key(as_items)
    changed["input"][0]["content"][0]["text"] = "rules"
    changed["input"][1]["content"] = "bye"
    assert key(changed) == key(as_items)


def test_anthropic_prefix_ends_at_the_callers_last_breakpoint_and_ignores_markers() -> None:
    cached = {"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}
    body = claude_body(system=[cached, {"type": "text", "text": "Today is Monday."}])
    later = claude_body(system=[cached, {"type": "text", "text": "Today is Tuesday."}])
    assert key(later) == key(body)  # after the breakpoint: not part of the cached prefix
    unmarked = claude_body(system=[{"type": "text", "text": LONG_SYSTEM}])
    marked_only = claude_body(system=[cached])
    assert key(marked_only) == key(unmarked)  # a marker is not content
    assert prefix_fingerprint(marked_only) == prefix_fingerprint(unmarked)
    assert key(claude_body(system=LONG_SYSTEM)) != key(claude_body(system=LONG_SYSTEM + "!"))


def test_long_texts_hash_like_their_bytes() -> None:
    # The hash tree (long texts enter as SHA-256) keeps every byte significant.
    a = chat_body(system=LONG_SYSTEM)
    b = chat_body(system=LONG_SYSTEM[:-1] + "?")
    c = chat_body(system="".join(list(LONG_SYSTEM)))  # equal text, another object
    assert key(a) != key(b)
    assert key(a) == key(c)


# --- prepare_openai_body --------------------------------------------------------------------------

def test_prepare_openai_sets_a_key_without_touching_the_callers_body() -> None:
    body = chat_body(tools=[tool("b"), tool("a")])
    before = copy.deepcopy(body)
    out = prepare_openai_body(body, Policy(cache_namespace="acme", cache_secret=SECRET))
    assert body == before
    assert out["prompt_cache_key"] == key(body)
    assert [t["function"]["name"] for t in out["tools"]] == ["b", "a"]  # order kept by default
    sorted_ = prepare_openai_body(body, Policy(stable_tool_order=True))
    assert [t["function"]["name"] for t in sorted_["tools"]] == ["a", "b"]
    assert body == before


def test_prepare_openai_never_overrides_the_caller() -> None:
    policy = Policy()
    assert prepare_openai_body(chat_body(prompt_cache_key="mine"), policy)["prompt_cache_key"] \
        == "mine"
    assert "prompt_cache_key" not in prepare_openai_body({**chat_body(), "user": "u-1"}, policy)
    assert "prompt_cache_key" in prepare_openai_body(chat_body(prompt_cache_key=None), policy)
    off = Policy(prompt_cache_key=False)
    assert "prompt_cache_key" not in prepare_openai_body(chat_body(), off)
    # An embeddings body has the shape of a bare Responses body: untouched unless told.
    embeddings = {"model": "text-embedding-3-small", "input": "hello"}
    assert prepare_openai_body(embeddings, policy) == embeddings
    assert "prompt_cache_key" in prepare_openai_body(embeddings, policy, api="responses")
    responses = {"model": "gpt-5", "instructions": "Be brief.", "input": "hi"}
    assert prepare_openai_body(responses, policy)["prompt_cache_key"].startswith(KEY_PREFIX)


def test_prepare_openai_namespace_argument_overrides_the_policy() -> None:
    body = chat_body()
    policy = Policy(cache_namespace="acme", cache_secret=SECRET)
    assert prepare_openai_body(body, policy, namespace="globex")["prompt_cache_key"] == \
        key(body, namespace="globex")
    assert prepare_openai_body(body, policy, shards=4)["prompt_cache_key"] == key(body, shards=4)


# --- prepare_anthropic_body -----------------------------------------------------------------------

def count_breakpoints(body: dict[str, Any]) -> int:
    blocks: list[Any] = [*body.get("tools", []),
                         *(body["system"] if isinstance(body.get("system"), list) else [])]
    for message in body["messages"]:
        if isinstance(message["content"], list):
            blocks += message["content"]
    return sum(1 for b in blocks if isinstance(b, dict) and "cache_control" in b)


def test_prepare_anthropic_adds_one_breakpoint_at_the_end_of_the_stable_prefix() -> None:
    body = claude_body(tools=[claude_tool("t")])
    before = copy.deepcopy(body)
    out = prepare_anthropic_body(body, Policy())
    assert body == before
    assert out["system"] == [{"type": "text", "text": LONG_SYSTEM,
                              "cache_control": {"type": "ephemeral"}}]
    assert count_breakpoints(out) == 1
    blocks = claude_body(system=[{"type": "text", "text": "a"}, {"type": "text",
                                                                 "text": LONG_SYSTEM}])
    out = prepare_anthropic_body(blocks, Policy())
    assert "cache_control" not in out["system"][0]
    assert out["system"][1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in blocks["system"][1]
    no_system: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 5,
                 "messages": [{"role": "user", "content": "hi"}],
                 "tools": [claude_tool("a"), claude_tool("b", "x" * 5000)]}
    out = prepare_anthropic_body(no_system, Policy())
    assert out["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in no_system["tools"][-1]


@pytest.mark.parametrize("where", ["top", "system", "tool", "message"])
def test_prepare_anthropic_respects_any_caller_breakpoint(where: str) -> None:
    mark = {"type": "ephemeral", "ttl": "1h"}
    body = claude_body(system=[{"type": "text", "text": LONG_SYSTEM}], tools=[claude_tool("t")])
    if where == "top":
        body["cache_control"] = mark
    elif where == "system":
        body["system"][0]["cache_control"] = mark
    elif where == "tool":
        body["tools"][0]["cache_control"] = mark
    else:
        body["messages"][0]["content"] = [{"type": "text", "text": "hi", "cache_control": mark}]
    out = prepare_anthropic_body(body, Policy())
    assert out == body
    assert count_breakpoints(out) <= 4


def test_prepare_anthropic_skips_short_prefixes_and_honours_the_policy() -> None:
    short = claude_body(system="Be brief.")
    assert prepare_anthropic_body(short, Policy()) == short
    # Haiku 4.5 needs 4 096 tokens: ~6 000 characters is not enough, ~13 000 is.
    mid = claude_body(system="x" * 6000, model="claude-haiku-4-5")
    assert prepare_anthropic_body(mid, Policy()) == mid
    assert prepare_anthropic_body(claude_body(system="x" * 13000, model="claude-haiku-4-5"),
                                  Policy())["system"][0]["cache_control"]
    body = claude_body()
    assert prepare_anthropic_body(body, Policy(cache_breakpoint=False)) == body


def test_prepare_anthropic_sorts_tools_unless_the_caller_marked_one() -> None:
    body = claude_body(tools=[claude_tool("b"), claude_tool("a")])
    out = prepare_anthropic_body(body, Policy(stable_tool_order=True))
    assert [t["name"] for t in out["tools"]] == ["a", "b"]
    body["tools"][1] = {**body["tools"][1], "cache_control": {"type": "ephemeral"}}
    out = prepare_anthropic_body(body, Policy(stable_tool_order=True))
    assert [t["name"] for t in out["tools"]] == ["b", "a"]


@pytest.mark.parametrize(("model", "minimum"), [
    ("claude-opus-4-5-20251101", 4096), ("claude-haiku-4-5", 4096), ("claude-opus-4-6", 4096),
    ("claude-opus-4-7", 2048), ("claude-3-5-haiku-20241022", 2048), ("claude-3-haiku", 2048),
    ("claude-sonnet-4-5-20250929", 1024), ("claude-sonnet-4-6", 1024), ("claude-opus-4-1", 1024),
    ("claude-opus-4-20250514", 1024), ("claude-sonnet-5", 1024), ("claude-opus-4-8", 1024),
    ("claude-opus-5", 512), ("claude-sonnet-5.5", 512), ("claude-fable-5", 512),
    ("claude-mythos-preview", 2048), ("some-new-model", 1024),
])
def test_min_cacheable_tokens(model: str, minimum: int) -> None:
    assert min_cacheable_tokens(model) == minimum


# --- on the wire, through the official SDKs and the fault-injecting provider ----------------------

def test_openai_requests_carry_a_prompt_cache_key_and_keep_the_callers() -> None:
    provider = FaultProvider(default=Fault.ok(text="ok"))
    client = openai.OpenAI(base_url="http://fault.test/v1", api_key="test", max_retries=0,
                           http_client=httpx2.Client(transport=provider.transport()))
    policy = Policy(cache_namespace="acme", cache_secret=SECRET)
    kwargs = chat_body(tools=[tool("lookup")])
    client.chat.completions.create(**prepare_openai_body(kwargs, policy))
    client.chat.completions.create(**prepare_openai_body({**kwargs, "prompt_cache_key": "mine"},
                                                         policy))
    client.responses.create(**prepare_openai_body(
        {"model": "gpt-5", "instructions": LONG_SYSTEM, "input": "hi"}, policy, api="responses"))
    sent = [r.json for r in provider.requests]
    assert sent[0]["prompt_cache_key"] == key(kwargs)
    assert sent[1]["prompt_cache_key"] == "mine"
    assert KEY_RE.match(sent[2]["prompt_cache_key"])
    client.close()


def test_anthropic_requests_carry_a_cache_control_breakpoint_and_keep_the_callers() -> None:
    provider = FaultProvider(default=Fault.ok(text="ok"))
    client = anthropic.Anthropic(base_url="http://fault.test", api_key="test", max_retries=0,
                                 http_client=httpx2.Client(transport=provider.transport()))
    body = claude_body(tools=[claude_tool("lookup")])
    client.messages.create(**prepare_anthropic_body(body, Policy()))
    own = claude_body(system=[{"type": "text", "text": LONG_SYSTEM,
                               "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
    client.messages.create(**prepare_anthropic_body(own, Policy()))
    first, second = (r.json for r in provider.requests)
    assert first["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in first["tools"][0]
    assert second["system"] == own["system"]
    client.close()


# --- ResponseCache --------------------------------------------------------------------------------

def test_response_cache_only_keys_deterministic_requests() -> None:
    rc: ResponseCache[str] = ResponseCache()
    assert rc.key_for(chat_body(), "acme") is None  # default temperature: not deterministic
    assert rc.key_for(chat_body(temperature=0.7), "acme") is None
    assert rc.key_for(chat_body(temperature=0, stream=True), "acme") is None
    assert rc.key_for({"model": "gpt-5", "input": "x", "seed": 1, "background": True}, "a") is None
    assert rc.key_for({"model": "gpt-5", "input": "x", "seed": 1, "conversation": "c"}, "a") \
        is None
    assert rc.key_for(chat_body(temperature=True), "acme") is None
    assert rc.key_for(chat_body(temperature=0), "acme") is not None
    assert rc.key_for(chat_body(seed=7, temperature=1), "acme") is not None


def test_response_cache_keys_are_canonical_and_never_shared_across_namespaces() -> None:
    rc: ResponseCache[str] = ResponseCache()
    body = chat_body(temperature=0, tools=[tool("a"), tool("b")])
    k = rc.key_for(body, "acme")
    assert k is not None
    assert rc.key_for(reorder(body, random.Random(1)), "acme") == k
    assert rc.key_for({**body, "temperature": 0.0}, "acme") == k
    assert rc.key_for(body, "globex") != k
    assert rc.key_for(body, None) != k
    assert rc.key_for(body, "acme", scope="POST https://other/v1/chat/completions") != k
    swapped = {**body, "tools": [tool("b"), tool("a")]}
    assert rc.key_for(swapped, "acme") != k  # an exact repeat means the same tool order
    assert rc.key_for({**body, "messages": body["messages"] + [{"role": "user", "content": "?"}]},
                      "acme") != k


def test_response_cache_get_put_ttl_and_bound() -> None:
    clock = FakeClock()
    rc: ResponseCache[str] = ResponseCache(maxsize=2, ttl=10, clock=clock)
    assert rc.get("a") is None
    rc.put("a", "A")
    assert rc.get("a") == "A"
    assert (rc.hits, rc.misses) == (1, 1)
    clock.advance(11)
    assert rc.get("a") is None
    for name in "xyz":
        rc.put(name, name.upper())
    assert len(rc) == 2
    rc2 = ResponseCache.from_policy(Policy(response_cache=True, response_cache_size=3,
                                           response_cache_ttl=5), clock=clock)
    rc2.put("k", 1)
    clock.advance(6)
    assert rc2.get("k") is None


def test_response_cache_is_thread_safe() -> None:
    rc: ResponseCache[int] = ResponseCache(maxsize=64)

    def work(n: int) -> None:
        for i in range(300):
            rc.put(f"{n}-{i % 50}", i)
            rc.get(f"{(n + 1) % 4}-{i % 50}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(rc) <= 64
    assert rc.hits + rc.misses == 1200
