"""The drop-ins' request and response body hooks: prompt-cache keys and lint on the way out,
cache health on the way back (the optional response cache is ``caching/response.py``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from .._policy import Policy

__all__ = ["field_of", "observe_cache", "prepare_body"]

_MISSING: Any = object()

#: Prompts shorter than this are never cached by either provider: no health to track.
_MIN_CACHED_PROMPT = 1024
_health: Any = None


def _cache_health() -> Any:
    global _health
    if _health is None:
        from ..caching.health import CacheHealth

        _health = CacheHealth()
    return _health


def prepare_body(
    provider: Literal["openai", "anthropic"], options: Any, body: Any, policy: Policy,
    record: Any,
) -> Any:
    """Prompt-cache placement and prefix lint on ``body``, which ``options`` is about to send;
    returns the body to send (``body`` itself when nothing changes; never edited in place).

    OpenAI: set a deterministic, tenant-scoped ``prompt_cache_key`` unless the caller set one
    (or ``user``); Anthropic: add a ``cache_control`` breakpoint at the end of the stable prefix
    unless the caller placed any. Lint findings go to ``outcome().findings``; in strict mode a
    finding raises :class:`PromptLintError` before anything is sent.
    """
    if not isinstance(body, dict) or getattr(options, "method", "post").lower() != "post":
        return body
    url = str(getattr(options, "url", ""))
    if not url.endswith(("/chat/completions", "/responses", "/messages")):
        return body
    memo = _memo_key(provider, url, body, policy)
    if memo is None:
        return _prepare_body(provider, url, body, policy, record)
    hit = _prepared.get(memo)
    if hit is not None:
        changes, findings = hit
        record.findings.extend(findings)
        return {**body, **changes} if changes else body
    before = len(record.findings)
    after = _prepare_body(provider, url, body, policy, record)
    if len(_prepared) >= 512:
        _prepared.clear()
    changes = {k: v for k, v in after.items() if body.get(k) is not v}
    _prepared[memo] = (changes, tuple(record.findings[before:]))
    return after


#: Bodies whose every field is one of these (and whose system prompt is plain text) have a
#: cache key and lint findings that depend only on model, tenant and system prompt: memoised.
_PLAIN_CHAT_FIELDS = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens",
    "max_completion_tokens", "n", "stop", "seed", "metadata", "store", "logprobs",
    "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "service_tier",
})
_PLAIN_MESSAGES_FIELDS = frozenset({
    "model", "messages", "max_tokens", "stream", "temperature", "top_p", "top_k",
    "stop_sequences", "metadata", "system", "service_tier",
})
_prepared: dict[tuple[Any, ...], tuple[dict[str, Any], tuple[Any, ...]]] = {}


def _memo_key(
    provider: str, url: str, body: dict[str, Any], policy: Policy
) -> tuple[Any, ...] | None:
    """A key for bodies whose cache placement and lint depend only on model, tenant and a
    plain-text system prompt (no tools, no content blocks, no caller breakpoints)."""
    policy_part = (policy.cache_namespace, policy.cache_secret, policy.prompt_cache_key,
                   policy.cache_breakpoint, policy.lint_prompts, policy.stable_tool_order)
    if provider == "anthropic":
        prompt = body.get("system")
        if not url.endswith("/messages") or not _PLAIN_MESSAGES_FIELDS.issuperset(body) \
                or not isinstance(prompt, (str, type(None))):
            return None
        for message in body.get("messages") or ():
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                return None
        return ("anthropic", body.get("model"), prompt, *policy_part)
    if not url.endswith("/chat/completions") or not _PLAIN_CHAT_FIELDS.issuperset(body):
        return None
    system: list[str] = []
    for message in body.get("messages") or ():
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer"):
            break
        content = message.get("content")
        if not isinstance(content, str):
            return None
        system.append(content)
    return ("openai", body.get("model"), tuple(system), *policy_part)


def _prepare_body(provider: Literal["openai", "anthropic"], url: str, body: dict[str, Any],
                  policy: Policy, record: Any) -> dict[str, Any]:
    if policy.lint_prompts != "off":  # on the caller's body: our own key is not volatile
        from ..caching.lint import check_prompt

        record.findings.extend(check_prompt(body, policy.lint_prompts, provider=provider))
    if provider == "openai":
        from ..caching.keys import keyed_api

        api = keyed_api(url)
        if api is not None and (policy.prompt_cache_key or policy.stable_tool_order):
            from ..caching.keys import prepare_openai_body

            return prepare_openai_body(body, policy, api=api, namespace=policy.cache_namespace)
    elif url.endswith("/messages") and (policy.cache_breakpoint or policy.stable_tool_order):
        from ..caching.keys import prepare_anthropic_body

        return prepare_anthropic_body(body, policy)
    return body


def observe_cache(
    provider: Literal["openai", "anthropic"], options: Any, policy: Policy, record: Any,
    usage: Any,
) -> None:
    """Track cached tokens per conversation; flag cold mid-session turns and prefix drift."""
    if usage is None:
        return
    if provider == "anthropic":  # its input_tokens leaves out what the cache read or wrote
        prompt = (field_of(usage, "input_tokens") or 0) \
            + (field_of(usage, "cache_read_input_tokens") or 0) \
            + (field_of(usage, "cache_creation_input_tokens") or 0)
    else:  # chat completions, or the Responses API
        prompt = field_of(usage, "prompt_tokens") or field_of(usage, "input_tokens") or 0
    if prompt < _MIN_CACHED_PROMPT:
        return
    body = getattr(options, "json_data", None)
    if not isinstance(body, dict):
        return
    record.findings.extend(_cache_health().observe_exchange(
        body, usage, provider=provider, namespace=policy.cache_namespace,
        secret=policy.cache_secret.get_secret_value() if policy.cache_secret else None,
    ))


#: (class, name) -> whether the class itself has the attribute (a field never does).
_class_has: dict[tuple[type, str], bool] = {}


def field_of(obj: Any, name: str) -> Any:
    """``getattr(obj, name, None)`` without pydantic's slow miss (two ``__getattr__`` hooks and
    two exceptions) when a model lacks the field: for a pydantic model whose class has no such
    attribute, pydantic itself only looks in ``__dict__`` and ``__pydantic_extra__``."""
    cls = type(obj)
    key = (cls, name)
    has = _class_has.get(key)
    if has is None:
        has = _class_has[key] = hasattr(cls, name) or not isinstance(obj, BaseModel)
    if has:
        return getattr(obj, name, None)
    value = obj.__dict__.get(name, _MISSING)
    if value is not _MISSING:
        return value
    extra = obj.__pydantic_extra__
    return extra.get(name) if extra else None
