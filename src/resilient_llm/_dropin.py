"""What both drop-in clients share: transport wrapping, call scoping, error translation.

The drop-in classes subclass the official ones and touch them through their seams:

* the ``http_client`` transport (public): every request runs through
  :class:`~resilient_llm._transport.ResilientTransport`;
* ``request()`` (the SDKs' low-level public method): starts the logical call (deadline clock,
  policy, attempt cap), turns the SDK's own retries off for it, and registers the result for
  ``outcome()``;
* ``httpx2.Client._transport`` / ``_mounts`` (private to httpx2, stable across its 2.x line):
  wrapped in place so the SDK's default client keeps its limits, proxies and socket options.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import httpx2

from ._classify import FailureClass
from ._clock import SYSTEM_CLOCK, SYSTEM_RANDOM, Clock, RandomSource
from ._engine import Call, end_call, start_call
from ._errors import (
    AllTargetsFailed,
    CircuitOpen,
    DeadlineExceeded,
    ResilientLLMError,
    RetryBudgetExhausted,
)
from ._outcome import register
from ._policy import Policy
from ._scope import effective_policy
from ._transport import AsyncResilientTransport, ResilientTransport

__all__ = ["CallScope", "merged_signature", "translate_error", "wrap_http_client"]

T = TypeVar("T")


def wrap_http_client(
    client: httpx2.Client | httpx2.AsyncClient,
    *,
    policy: Policy,
    provider: str,
    clock: Clock = SYSTEM_CLOCK,
    rng: RandomSource = SYSTEM_RANDOM,
) -> None:
    """Put a resilient transport under every transport of ``client`` (idempotent)."""
    if isinstance(client, httpx2.AsyncClient):
        def wrap_async(inner: Any) -> Any:
            if inner is None or isinstance(inner, AsyncResilientTransport):
                return inner
            return AsyncResilientTransport(
                inner, policy=policy, provider=provider, clock=clock, rng=rng
            )

        client._transport = wrap_async(client._transport)
        client._mounts = {pattern: wrap_async(t) for pattern, t in client._mounts.items()}
        return

    def wrap(inner: Any) -> Any:
        if inner is None or isinstance(inner, ResilientTransport):
            return inner
        return ResilientTransport(inner, policy=policy, provider=provider, clock=clock, rng=rng)

    client._transport = wrap(client._transport)
    client._mounts = {pattern: wrap(t) for pattern, t in client._mounts.items()}


def merged_signature(official: Callable[..., Any], extra: Callable[..., Any]) -> inspect.Signature:
    """The official signature plus ``extra``'s keyword-only parameters (for ``inspect``)."""
    sig = inspect.signature(official)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in params}
    params.extend(
        p for p in inspect.signature(extra).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in names
    )
    return sig.replace(parameters=params)


def model_of(options: Any) -> str | None:
    body = getattr(options, "json_data", None)
    if isinstance(body, dict):
        model = body.get("model")
        if isinstance(model, str):
            return model
    return None


_CACHEABLE_PATHS: dict[str, Literal["chat", "responses"]] = {
    "/chat/completions": "chat", "/responses": "responses",
}
#: Prompts shorter than this are never cached by either provider: no health to track.
_MIN_CACHED_PROMPT = 1024
_health: Any = None


def _cache_health() -> Any:
    global _health
    if _health is None:
        from ._cache_health import CacheHealth

        _health = CacheHealth()
    return _health


def prepare_body(
    provider: Literal["openai", "anthropic"], options: Any, policy: Policy, record: Any
) -> None:
    """Prompt-cache placement and prefix lint on the body the SDK is about to send.

    OpenAI: set a deterministic, tenant-scoped ``prompt_cache_key`` unless the caller set one
    (or ``user``); Anthropic: add a ``cache_control`` breakpoint at the end of the stable prefix
    unless the caller placed any. Lint findings go to ``outcome().findings``; in strict mode a
    finding raises :class:`PromptLintError` before anything is sent.
    """
    body = getattr(options, "json_data", None)
    if not isinstance(body, dict) or getattr(options, "method", "post").lower() != "post":
        return
    url = str(getattr(options, "url", ""))
    if not url.endswith(("/chat/completions", "/responses", "/messages")):
        return
    if policy.lint_prompts != "off":  # on the caller's body: our own key is not volatile
        from ._prompt_lint import check_prompt

        record.findings.extend(check_prompt(body, policy.lint_prompts, provider=provider))
    if provider == "openai":
        api = next((kind for suffix, kind in _CACHEABLE_PATHS.items() if url.endswith(suffix)),
                   None)
        if api is None:
            return
        if policy.prompt_cache_key or policy.stable_tool_order:
            from ._cache_keys import prepare_openai_body

            body = prepare_openai_body(body, policy, api=api, namespace=policy.cache_namespace)
    else:
        if not url.endswith("/messages"):
            return
        if policy.cache_breakpoint or policy.stable_tool_order:
            from ._cache_keys import prepare_anthropic_body

            body = prepare_anthropic_body(body, policy)
    options.json_data = body


def observe_cache(
    provider: Literal["openai", "anthropic"], options: Any, policy: Policy, record: Any,
    usage: Any,
) -> None:
    """Track cached tokens per conversation; flag cold mid-session turns and prefix drift."""
    if usage is None:
        return
    prompt = getattr(usage, "prompt_tokens", None) or getattr(usage, "input_tokens", None) or 0
    cached_anthropic = (getattr(usage, "cache_read_input_tokens", None) or 0) + \
        (getattr(usage, "cache_creation_input_tokens", None) or 0)
    if prompt + cached_anthropic < _MIN_CACHED_PROMPT:
        return
    body = getattr(options, "json_data", None)
    if not isinstance(body, dict):
        return
    record.findings.extend(_cache_health().observe_exchange(
        body, usage, provider=provider, namespace=policy.cache_namespace,
        secret=policy.cache_secret,
    ))


_response_caches: dict[tuple[int, float], Any] = {}


def cached_answer(base_url: object, options: Any, policy: Policy, stream: bool) -> tuple[
    str | None, Any
]:
    """(key, a copy of the cached answer) for a deterministic repeat; (None, None) otherwise.

    Off unless ``RESILIENT_LLM_RESPONSE_CACHE`` is true. Only non-streamed requests with
    ``temperature=0`` or a ``seed`` qualify; entries are scoped by tenant namespace and endpoint.
    """
    if not policy.response_cache or stream:
        return None, None
    body = getattr(options, "json_data", None)
    if not isinstance(body, dict):
        return None, None
    from ._cache_keys import ResponseCache

    key = ResponseCache.key_for(body, policy.cache_namespace,
                                scope=f"{base_url}{getattr(options, 'url', '')}")
    if key is None:
        return None, None
    cache = _response_caches.get((policy.response_cache_size, policy.response_cache_ttl))
    hit = cache.get(key) if cache is not None else None
    return key, (hit.model_copy(deep=True) if hit is not None else None)


def remember_answer(key: str | None, policy: Policy, result: Any) -> None:
    """Keep a copy of a successful parsed answer under ``key``."""
    if key is None or not hasattr(result, "model_copy"):
        return
    from ._cache_keys import ResponseCache

    slot = (policy.response_cache_size, policy.response_cache_ttl)
    cache = _response_caches.get(slot)
    if cache is None:
        cache = _response_caches[slot] = ResponseCache.from_policy(policy)
    cache.put(key, result.model_copy(deep=True))


class CallScope:
    """Start a call when a drop-in client method is entered; end it when it returns."""

    __slots__ = ("_token", "call")

    def __init__(
        self,
        policy: Policy,
        target: str | None,
        max_attempts: int | None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: RandomSource = SYSTEM_RANDOM,
    ) -> None:
        self.call: Call
        self.call, self._token = start_call(
            effective_policy(policy), target=target, max_attempts=max_attempts,
            clock=clock, rng=rng,
        )

    def close(self) -> None:
        end_call(self._token)

    def finish(self, result: T) -> T:
        record = self.call.record
        usage = getattr(result, "usage", None)
        if usage is not None:
            record.usage = usage
        register(result, record)
        return result


def explicit_attempts(options: Any, client_max_retries: int, client_explicit: bool) -> int | None:
    """Attempts the caller asked for through the SDK's ``max_retries`` (``None`` = policy's)."""
    per_call = getattr(options, "max_retries", None)
    if isinstance(per_call, int) and not isinstance(per_call, bool):
        return per_call + 1
    if client_explicit:
        return client_max_retries + 1
    return None


def translate_error(
    exc: BaseException,
    *,
    status_error: Callable[[httpx2.Response], BaseException],
    timeout_error: Callable[[httpx2.Request], BaseException],
    connection_error: Callable[[httpx2.Request], BaseException],
) -> BaseException:
    """Our error with its cause in the provider's own exception type, or ``exc`` unchanged.

    The transport raises resilient-llm errors; some SDKs wrap foreign exceptions (anthropic
    turns them into ``APIConnectionError``): unwrap those so users see ours.
    """
    ours = exc
    if not isinstance(ours, ResilientLLMError):
        cause = exc.__cause__
        if isinstance(cause, ResilientLLMError):
            ours = cause
        else:
            return exc
    def sdk_error(cause: BaseException | None) -> BaseException | None:
        mapped: BaseException | None = None
        if isinstance(cause, httpx2.HTTPStatusError):
            mapped = status_error(cause.response)
        elif isinstance(cause, httpx2.TimeoutException) and _has_request(cause):
            mapped = timeout_error(cause.request)
        elif isinstance(cause, httpx2.TransportError) and _has_request(cause):
            mapped = connection_error(cause.request)
        if mapped is not None:
            mapped.__cause__ = cause
        return mapped

    if isinstance(ours, (DeadlineExceeded, RetryBudgetExhausted)):
        mapped = sdk_error(ours.cause)
        if mapped is not None:
            ours.cause = mapped
            ours.__cause__ = mapped
    elif isinstance(ours, AllTargetsFailed):
        ours.causes = {t: sdk_error(c) or c for t, c in ours.causes.items()}
        last = next(reversed(ours.causes.values()), None)
        ours.__cause__ = last
    elif isinstance(ours, CircuitOpen):
        ours.__cause__ = sdk_error(ours.__cause__) or ours.__cause__
    return ours


def _has_request(exc: httpx2.RequestError) -> bool:
    try:
        exc.request  # noqa: B018 - raises RuntimeError when unset
    except RuntimeError:
        return False
    return True


__all__ += ["FailureClass", "explicit_attempts", "model_of"]
