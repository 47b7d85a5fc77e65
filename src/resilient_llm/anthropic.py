"""Drop-in ``Anthropic`` / ``AsyncAnthropic``: the official classes with resilience built in.

``from resilient_llm.anthropic import Anthropic`` instead of ``from anthropic import Anthropic``.
Same constructor (plus keyword-only ``policy=``), same methods, same return and error types.
Every request (``messages.create``, ``messages.create(stream=True)``, the ``messages.stream()``
helper, raw and streaming responses, the low-level ``client.post``) runs under one wall-clock
deadline with jittered backoff, one ``Idempotency-Key`` per call, guarded streams and
``outcome()``. With ``RESILIENT_LLM_ENABLED=false`` (or ``policy=Policy(enabled=False)``) the
classes behave exactly like the official ones, SDK retries included.

How it sits on the SDK (design principle 6: public seams first):

* the ``http_client`` transport (public seam): the SDK's own httpx2 client, default or the
  caller's, gets :class:`~resilient_llm._transport.ResilientTransport` under every transport,
  so its limits, proxies and TCP keep-alive options stay as the SDK set them;
* ``request()`` (the SDK's documented low-level method): opens the logical call (deadline
  clock, policy, attempt cap) and turns the SDK's retry loop off for it, so attempts never
  multiply and one layer decides every retry;
* user ``middleware=`` keeps working: it wraps the one SDK attempt, and the transport retries
  under it. Middleware is not needed by resilient-llm itself.

The SDK's timeout is left untouched unless the caller sets one, so its "streaming is required
for operations that may take longer than 10 minutes" guard (which compares ``client.timeout``
with ``DEFAULT_TIMEOUT``) still fires exactly as in the official client.

Private SDK hooks, used only where no public seam exists, are listed in
:data:`PRIVATE_HOOKS` and pinned to :data:`SUPPORTED_VERSIONS`; ``tests/test_anthropic.py``
fails loudly if a supported release drops one.
"""

from __future__ import annotations

from typing import Any, Literal

try:
    import anthropic as _anthropic
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "resilient_llm.anthropic needs the official anthropic package: "
        "pip install 'resilient-llm[anthropic]'"
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

__all__ = ["PRIVATE_HOOKS", "SUPPORTED_VERSIONS", "Anthropic", "AsyncAnthropic"]

_PROVIDER: Literal["anthropic"] = "anthropic"

#: The anthropic releases this module is written and tested against (``>=`` low, ``<`` high),
#: the same range as the ``anthropic`` extra in pyproject.
SUPPORTED_VERSIONS = ("2.10", "2.13")

#: Private attributes of the SDK client this module relies on, and why (no public seam exists):
#: ``_client`` is the httpx2 client whose transport is wrapped; ``_make_status_error_from_response``
#: builds the SDK's own status error (``_make_status_error`` is ``@final``) for a DeadlineExceeded
#: cause; ``_token_cache`` is the credentials cache the SDK invalidates and retries once on a 401.
PRIVATE_HOOKS = ("_client", "_make_status_error_from_response", "_token_cache")


def _errors(client: Any) -> dict[str, Any]:
    return {
        "status_error": client._make_status_error_from_response,
        "timeout_error": lambda request: _anthropic.APITimeoutError(request=request),
        "connection_error": lambda request: _anthropic.APIConnectionError(request=request),
    }


def _no_sdk_retries(options: Any) -> Any:
    # ``options`` is already this call's own copy (see ``request``).
    options.max_retries = 0
    return options


_UNSET = (_anthropic.Omit, _anthropic.NotGiven)


def _drop_omitted(options: Any) -> None:
    """Remove the SDK's ``omit`` / ``NOT_GIVEN`` placeholders from the top of the body.

    ``messages.create(stream=True)`` hands ``request()`` a body that still holds them; the SDK
    drops them itself when it prepares the request, so dropping them first changes nothing it
    sends, and the body the cache-key and lint code read is plain JSON data.
    """
    body = getattr(options, "json_data", None)
    if isinstance(body, dict) and any(isinstance(v, _UNSET) for v in body.values()):
        options.json_data = {k: v for k, v in body.items() if not isinstance(v, _UNSET)}


def _translated(client: Any, exc: Exception) -> BaseException:
    """The error to raise for ``exc``: ours (unwrapped from ``APIConnectionError``) or as is."""
    translated = translate_error(exc, **_errors(client))
    return exc if translated is exc else translated


def _refresh_credentials(client: Any, exc: Exception, resent: bool) -> bool:
    """True when a 401 should be re-sent once with a fresh token, as the official client does.

    The SDK does this inside its retry loop (``Anthropic._should_retry``), which is off here;
    only clients with a credentials provider (``_token_cache``) qualify, and only once per call.
    """
    cache = getattr(client, "_token_cache", None)
    if resent or cache is None or not isinstance(exc, _anthropic.AuthenticationError):
        return False
    cache.invalidate()
    return True


class Anthropic(_anthropic.Anthropic):
    """The official ``anthropic.Anthropic`` with a deadline, jittered retries and ``outcome()``."""

    _resilient_policy: Policy
    _resilient_explicit_retries: bool
    # Injected by tests (FakeClock / FakeRandom); the real clock otherwise.
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
        # A shallow copy (about 2 µs): the caller's options stay as they were given, as the
        # SDK promises (low-level ``client.request(cast_to, options)`` may reuse them), while
        # the body edits and the retry switch below apply to this call only.
        options = options.model_copy()
        try:
            _drop_omitted(options)
            prepare_body(_PROVIDER, options, scope.call.policy, scope.call.record)
            cache_key, hit = cached_answer(self.base_url, options, scope.call.policy, stream)
            if hit is not None:
                scope.call.emit("succeeded", target=scope.call.target, detail="response_cache")
                return scope.finish(hit)
            options = _no_sdk_retries(options)
            resent = False
            while True:
                try:
                    result = super().request(cast_to, options, stream=stream,
                                             stream_cls=stream_cls)
                    break
                except Exception as exc:
                    if _refresh_credentials(self, exc, resent):
                        resent = True
                        continue
                    translated = _translated(self, exc)
                    if translated is exc:
                        raise
                    raise translated from translated.__cause__
            remember_answer(cache_key, scope.call.policy, result)
        finally:
            scope.close()
        observe_cache(_PROVIDER, options, scope.call.policy, scope.call.record,
                      getattr(result, "usage", None))
        return scope.finish(result)


class AsyncAnthropic(_anthropic.AsyncAnthropic):
    """The official ``anthropic.AsyncAnthropic`` with a deadline, jittered retries and
    ``outcome()``."""

    _resilient_policy: Policy
    _resilient_explicit_retries: bool
    # Injected by tests (FakeClock / FakeRandom); the real clock otherwise.
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
        # A shallow copy (about 2 µs): the caller's options stay as they were given, as the
        # SDK promises (low-level ``client.request(cast_to, options)`` may reuse them), while
        # the body edits and the retry switch below apply to this call only.
        options = options.model_copy()
        try:
            _drop_omitted(options)
            prepare_body(_PROVIDER, options, scope.call.policy, scope.call.record)
            cache_key, hit = cached_answer(self.base_url, options, scope.call.policy, stream)
            if hit is not None:
                scope.call.emit("succeeded", target=scope.call.target, detail="response_cache")
                return scope.finish(hit)
            options = _no_sdk_retries(options)
            resent = False
            while True:
                try:
                    result = await super().request(cast_to, options, stream=stream,
                                                   stream_cls=stream_cls)
                    break
                except Exception as exc:
                    if _refresh_credentials(self, exc, resent):
                        resent = True
                        continue
                    translated = _translated(self, exc)
                    if translated is exc:
                        raise
                    raise translated from translated.__cause__
            remember_answer(cache_key, scope.call.policy, result)
        finally:
            scope.close()
        observe_cache(_PROVIDER, options, scope.call.policy, scope.call.record,
                      getattr(result, "usage", None))
        return scope.finish(result)


# ``inspect.signature`` (and the SDKs' own ``test_copy_signature``) see the official parameters
# plus ``policy``, whatever the installed SDK version accepts.
for _cls, _official in ((Anthropic, _anthropic.Anthropic),
                        (AsyncAnthropic, _anthropic.AsyncAnthropic)):
    for _name in ("__init__", "copy"):
        _method: Any = getattr(_cls, _name)
        _method.__signature__ = merged_signature(getattr(_official, _name), _method)
del _cls, _official, _name, _method
