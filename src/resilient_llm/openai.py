"""Drop-in ``OpenAI`` / ``AsyncOpenAI``: the official classes with resilience built in.

``from resilient_llm.openai import OpenAI`` instead of ``from openai import OpenAI``. Same
constructor (plus keyword-only ``policy=``), same methods, same return and error types. Every
request runs under one wall-clock deadline with jittered backoff, one ``Idempotency-Key`` per
call, guarded streams and ``outcome()``. With ``RESILIENT_LLM_ENABLED=false`` (or
``policy=Policy(enabled=False)``) the classes behave exactly like the official ones.

An explicit ``max_retries=N`` (constructor or per request) is honoured as ``N + 1`` attempts
under the deadline; otherwise ``RESILIENT_LLM_MAX_ATTEMPTS`` applies. The SDK's own retry loop
is always off, so attempts never multiply.
"""

from __future__ import annotations

from typing import Any, Literal

try:
    import openai as _openai
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "resilient_llm.openai needs the official openai package: "
        "pip install 'resilient-llm[openai]'"
    ) from exc

from ._clock import SYSTEM_CLOCK, SYSTEM_RANDOM, Clock, RandomSource
from ._dropin import (
    CallScope,
    cached_answer,
    explicit_attempts,
    merged_signature,
    model_of,
    observe_cache,
    prepare_body,
    remember_answer,
    translate_error,
)
from ._dropin import wrap_http_client as _wrap
from ._policy import Policy

__all__ = ["AsyncOpenAI", "OpenAI"]

_PROVIDER: Literal["openai"] = "openai"


def _errors(client: Any) -> dict[str, Any]:
    return {
        "status_error": client._make_status_error_from_response,
        "timeout_error": lambda request: _openai.APITimeoutError(request=request),
        "connection_error": lambda request: _openai.APIConnectionError(request=request),
    }


def _no_sdk_retries(options: Any) -> Any:
    # The SDK builds a fresh options object for every request and copies it again inside
    # request(), so turning its retries off in place is safe and saves a model copy.
    options.max_retries = 0
    return options


class OpenAI(_openai.OpenAI):
    """The official ``openai.OpenAI`` with a deadline, jittered retries and ``outcome()``."""

    _resilient_policy: Policy
    _resilient_explicit_retries: bool
    # Injected by resilient_llm.testing.use_clock(); the real clock otherwise.
    _resilient_clock: Clock = SYSTEM_CLOCK
    _resilient_rng: RandomSource = SYSTEM_RANDOM

    def __init__(self, *, policy: Policy | None = None, **kwargs: Any) -> None:
        policy = policy if policy is not None else Policy.from_env()
        self._resilient_policy = policy
        # Any max_retries the caller passes counts, the SDK's default value included; copy()
        # passes one always and corrects the flag afterwards.
        self._resilient_explicit_retries = "max_retries" in kwargs
        super().__init__(**kwargs)
        if policy.enabled:
            _wrap(self._client, policy=policy, provider=_PROVIDER)

    @property
    def policy(self) -> Policy:
        """The resilience policy of this client."""
        return self._resilient_policy

    def copy(self, *, policy: Policy | None = None, **kwargs: Any) -> Any:
        """As the official ``copy``/``with_options``; ``policy`` replaces this client's policy."""
        extra = dict(kwargs.pop("_extra_kwargs", None) or {})
        extra["policy"] = policy if policy is not None else self._resilient_policy
        client = super().copy(_extra_kwargs=extra, **kwargs)
        client._resilient_explicit_retries = self._resilient_explicit_retries or isinstance(
            kwargs.get("max_retries"), int)
        client._resilient_clock, client._resilient_rng = self._resilient_clock, self._resilient_rng
        return client

    with_options = copy

    def request(self, cast_to: Any, options: Any, *, stream: bool = False,
                stream_cls: Any = None) -> Any:
        policy = self._resilient_policy
        if not policy.enabled:
            return super().request(cast_to, options, stream=stream, stream_cls=stream_cls)
        scope = CallScope(
            policy, model_of(options),
            explicit_attempts(options, self.max_retries, self._resilient_explicit_retries),
            clock=self._resilient_clock, rng=self._resilient_rng,
        )
        try:
            prepare_body(_PROVIDER, options, scope.call.policy, scope.call.record)
            cache_key, hit = cached_answer(self.base_url, options, scope.call.policy, stream)
            if hit is not None:
                scope.call.emit("succeeded", target=scope.call.target, detail="response_cache")
                return scope.finish(hit)
            result = super().request(
                cast_to, _no_sdk_retries(options), stream=stream, stream_cls=stream_cls
            )
            remember_answer(cache_key, scope.call.policy, result)
        except Exception as exc:
            translated = translate_error(exc, **_errors(self))
            if translated is exc:
                raise
            raise translated from translated.__cause__
        finally:
            scope.close()
        observe_cache(_PROVIDER, options, scope.call.policy, scope.call.record,
                      getattr(result, "usage", None))
        return scope.finish(result)


class AsyncOpenAI(_openai.AsyncOpenAI):
    """The official ``openai.AsyncOpenAI`` with a deadline, jittered retries and ``outcome()``."""

    _resilient_policy: Policy
    _resilient_explicit_retries: bool
    # Injected by resilient_llm.testing.use_clock(); the real clock otherwise.
    _resilient_clock: Clock = SYSTEM_CLOCK
    _resilient_rng: RandomSource = SYSTEM_RANDOM

    def __init__(self, *, policy: Policy | None = None, **kwargs: Any) -> None:
        policy = policy if policy is not None else Policy.from_env()
        self._resilient_policy = policy
        # Any max_retries the caller passes counts, the SDK's default value included; copy()
        # passes one always and corrects the flag afterwards.
        self._resilient_explicit_retries = "max_retries" in kwargs
        super().__init__(**kwargs)
        if policy.enabled:
            _wrap(self._client, policy=policy, provider=_PROVIDER)

    @property
    def policy(self) -> Policy:
        """The resilience policy of this client."""
        return self._resilient_policy

    def copy(self, *, policy: Policy | None = None, **kwargs: Any) -> Any:
        """As the official ``copy``/``with_options``; ``policy`` replaces this client's policy."""
        extra = dict(kwargs.pop("_extra_kwargs", None) or {})
        extra["policy"] = policy if policy is not None else self._resilient_policy
        client = super().copy(_extra_kwargs=extra, **kwargs)
        client._resilient_explicit_retries = self._resilient_explicit_retries or isinstance(
            kwargs.get("max_retries"), int)
        client._resilient_clock, client._resilient_rng = self._resilient_clock, self._resilient_rng
        return client

    with_options = copy

    async def request(self, cast_to: Any, options: Any, *, stream: bool = False,
                      stream_cls: Any = None) -> Any:
        policy = self._resilient_policy
        if not policy.enabled:
            return await super().request(cast_to, options, stream=stream, stream_cls=stream_cls)
        scope = CallScope(
            policy, model_of(options),
            explicit_attempts(options, self.max_retries, self._resilient_explicit_retries),
            clock=self._resilient_clock, rng=self._resilient_rng,
        )
        try:
            prepare_body(_PROVIDER, options, scope.call.policy, scope.call.record)
            cache_key, hit = cached_answer(self.base_url, options, scope.call.policy, stream)
            if hit is not None:
                scope.call.emit("succeeded", target=scope.call.target, detail="response_cache")
                return scope.finish(hit)
            result = await super().request(
                cast_to, _no_sdk_retries(options), stream=stream, stream_cls=stream_cls
            )
            remember_answer(cache_key, scope.call.policy, result)
        except Exception as exc:
            translated = translate_error(exc, **_errors(self))
            if translated is exc:
                raise
            raise translated from translated.__cause__
        finally:
            scope.close()
        observe_cache(_PROVIDER, options, scope.call.policy, scope.call.record,
                      getattr(result, "usage", None))
        return scope.finish(result)


# ``inspect.signature`` (and the SDKs' own ``test_copy_signature``) see the official parameters
# plus ``policy``, whatever the installed SDK version accepts.
for _cls, _official in ((OpenAI, _openai.OpenAI), (AsyncOpenAI, _openai.AsyncOpenAI)):
    for _name in ("__init__", "copy"):
        _method: Any = getattr(_cls, _name)
        _method.__signature__ = merged_signature(getattr(_official, _name), _method)
del _cls, _official, _name, _method
