"""What both drop-in clients share: transport wrapping, call scoping, error translation.

The drop-in classes subclass the official ones and touch them through their seams:

* the ``http_client`` transport (public): every request runs through
  :class:`~resilient_llm.transport.ResilientTransport`;
* ``request()`` (the SDKs' low-level public method): starts the logical call (deadline clock,
  policy, attempt cap), turns the SDK's own retries off for it, and registers the result for
  ``outcome()``;
* ``httpx2.Client._mounts`` (private to httpx2, stable across its 2.x line): the wrapped default
  transport becomes the catch-all ``all://`` mount and proxy mounts are wrapped in place, so the
  SDK's default client keeps its limits, proxies and socket options and ``_transport`` stays
  the httpx2 transport code may inspect.
"""

from __future__ import annotations

import copy
import functools
import inspect
import itertools
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import httpx2
from pydantic import BaseModel

from .._clock import SYSTEM_CLOCK, SYSTEM_RANDOM, Clock, RandomSource
from .._policy import Policy
from .._policy_values import MAX_DEADLINE
from ..context.scope import effective_policy
from ..engine.call import Call, end_call, start_call
from ..engine.classify import FailureClass
from ..events.outcome import register
from ..transport import AsyncResilientTransport, ForeignTransportError, ResilientTransport
from ..transport.legacy import legacy_client_kind, wrap_legacy_client
from .bodies import field_of, observe_cache, prepare_body
from .errors import translate_error
from .signing import Resign, note_options

__all__ = [
    "CallScope",
    "ForeignTransportError",
    "merged_signature",
    "translate_error",
    "wrap_http_client",
]

T = TypeVar("T")


def _foreign_retryable(provider: str) -> Callable[[Exception], bool]:
    """Which non-httpx2 exceptions the provider's official SDK retries (see providers.md §2.3)."""
    if provider == "anthropic":
        from anthropic import AnthropicError

        return lambda exc: not isinstance(exc, AnthropicError)
    import ssl

    import anyio

    retried = (ssl.SSLError, anyio.EndOfStream)
    return lambda exc: isinstance(exc, retried)


#: The mount under which the resilient transport serves every URL no narrower mount claims.
_ALL = "all://"


def wrap_http_client(
    client: httpx2.Client | httpx2.AsyncClient,
    *,
    policy: Policy,
    provider: str,
    clock: Clock = SYSTEM_CLOCK,
    rng: RandomSource = SYSTEM_RANDOM,
) -> None:
    """Route every request of ``client`` through a resilient transport (idempotent).

    The client may be the caller's own (``http_client=``): only the drop-in's calls become
    resilient; a request the application (or an official SDK client sharing it) sends
    through it goes out as it is, once, as before the drop-in was made.

    The wrapped default transport is added as the catch-all ``all://`` mount, and every other
    mount (proxies, the caller's own) is wrapped in place; ``client._transport`` itself stays
    the SDK's, so code that inspects it (connection-pool checks, as in the SDKs' own tests)
    keeps seeing the httpx2 transport and its pool. A ``None`` mount (a ``NO_PROXY`` host)
    means "the default transport", so it gets the wrapped default too.
    """
    from httpx2._utils import URLPattern

    from ..telemetry.otel import attach

    retryable = _foreign_retryable(provider)
    mounts: dict[Any, Any] = dict(client._mounts)
    legacy = legacy_client_kind(client)  # an httpx.Client, which openai accepts too
    is_async = isinstance(client, httpx2.AsyncClient) or legacy == "async"
    ours_type: type = AsyncResilientTransport if is_async else ResilientTransport
    if any(isinstance(t, ours_type) for t in mounts.values()):
        return

    def wrap(inner: Any) -> Any:
        tapped = attach(inner, policy, asynchronous=is_async)  # telemetry's tap and listener
        return ours_type(tapped, policy=policy, provider=provider, clock=clock, rng=rng,
                         retry_exceptions=retryable, calls_only=True)

    if legacy is not None:
        wrap_legacy_client(client, wrap, is_async=is_async)
        return
    default = wrap(client._transport)
    wrapped = {pattern: default if t is None else wrap(t) for pattern, t in mounts.items()}
    wrapped[URLPattern(_ALL)] = default
    client._mounts = dict(sorted(wrapped.items()))


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


_MISSING: Any = object()


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

    def finish(self, result: T, usage: Any = _MISSING) -> T:
        """Hand ``result`` back with its record registered (``usage``: already read from it)."""
        record = self.call.record
        # A parsed model is neither a stream nor a raw response: skip both checks, whose
        # misses cost pydantic two ``__getattr__`` hooks and two exceptions each.
        model = isinstance(result, BaseModel)
        if not model:
            close_when_dropped(result)
        if not model and hasattr(result, "retries_taken") and hasattr(result, "http_response"):
            # Raw responses (``with_raw_response`` / ``with_streaming_response``) report the
            # retries of the one retry layer, as the official client reports its own.
            result.retries_taken = max(0, self.call.attempts - 1)
        if usage is _MISSING:
            usage = field_of(result, "usage")
        if usage is not None:
            record.usage = usage
        register(result, record)
        return result


def close_when_dropped(stream: Any) -> None:
    """Make a stream that is dropped mid-way close its upstream connection at once.

    openai's ``Stream``/``AsyncStream`` keep the generator that reads the body on themselves
    (``self._iterator = self.__stream__()``), a reference cycle: a stream the caller abandons
    (``for chunk in client...create(stream=True): break``) is closed only when the garbage
    collector runs, and until then the provider keeps generating, and billing, into a socket
    nobody reads. The generator is rebuilt on a shallow copy, as anthropic's SDK does, so the
    last reference going away closes the response. Only a stream not yet iterated is touched;
    anything else (anthropic's streams, parsed models) is left alone.
    """
    state: dict[str, Any] | None = getattr(stream, "__dict__", None)
    if state is None or not hasattr(type(stream), "__stream__"):
        return
    iterator = state.get("_iterator")
    if inspect.isgenerator(iterator):
        if inspect.getgeneratorstate(iterator) != inspect.GEN_CREATED:
            return  # already read from: not ours to replace
    elif not inspect.isasyncgen(iterator) or iterator.ag_frame is None or iterator.ag_running:
        return  # called right after request() returns, before anyone can iterate it
    twin = copy.copy(stream)
    del twin.__dict__["_iterator"]
    state["_iterator"] = twin.__stream__()
    if hasattr(iterator, "close"):
        iterator.close()  # never started: closing runs no code of the SDK


def explicit_attempts(options: Any, client_max_retries: int, client_explicit: bool) -> int | None:
    """Attempts the caller asked for through the SDK's ``max_retries`` (``None`` = policy's)."""
    per_call = getattr(options, "max_retries", _MISSING)
    if per_call is _MISSING or _is_not_given(per_call):  # the common case: the caller set none
        return client_max_retries + 1 if client_explicit else None
    if per_call is None or not isinstance(per_call, int):
        # As the official SDK does before any attempt (openai ``_validate_max_retries``):
        # turning the SDK's retries off must not hide an invalid value.
        raise TypeError("max_retries must be a non-negative integer, not "
                        f"{type(per_call).__name__}")
    if isinstance(per_call, bool):  # as before: a bool is no count, the client's value holds
        return client_max_retries + 1 if client_explicit else None
    if per_call < 0:
        raise ValueError("max_retries must be a non-negative integer")
    return per_call + 1


#: The policy's limits an explicit longer timeout lifts while they are at their defaults.
_LIFTED = ("deadline", "first_token_timeout", "stream_idle_timeout")


def call_policy(policy: Policy, options: Any, client_timeout: Any, sdk_default: Any) -> Policy:
    """``policy``, with its default deadline, first-token and stream-idle limits raised to the
    read timeout the caller set (per call, or on the client) when that is longer.

    The defaults stand for the official client's 600 s per attempt: a caller who asked the SDK
    to wait 900 s for a long non-streamed answer, or for a reasoning model's first token, is
    not cut short after the provider did, and billed, the work. A limit set in the
    environment, a policy or a scope is the caller's own and holds; the SDK's default timeout
    lifts nothing.
    """
    timeout = getattr(options, "timeout", None)
    if timeout is None or _is_not_given(timeout):
        timeout = client_timeout
    if timeout == sdk_default:  # (anthropic passes it per call for a long non-streamed answer)
        return policy
    read = timeout.read if isinstance(timeout, httpx2.Timeout) else timeout
    if isinstance(read, bool) or not isinstance(read, (int, float)):
        return policy
    lifted = {name: min(float(read), MAX_DEADLINE) for name in _LIFTED
              if read > getattr(policy, name) and policy.source(name) == "default"}
    return policy.replace(**lifted) if lifted else policy


def _is_not_given(value: object) -> bool:
    """The SDKs' ``NotGiven`` sentinel (``options.max_retries`` when the caller set none)."""
    return type(value).__name__ == "NotGiven"


__all__ += ["FailureClass", "explicit_attempts", "model_of"]


# --- the drop-in classes' shared body ---------------------------------------------------------


def _without_placeholders(body: Any) -> Any:
    """``body`` without the SDKs' top-level ``omit`` / ``NOT_GIVEN`` placeholders (a new dict;
    ``body`` itself when it holds none).

    Some SDK paths (anthropic ``messages.create``) hand ``request()`` a body that still holds
    them, about twenty per call; the SDK drops them itself when it prepares the request, so
    dropping them first changes nothing it sends, and the body the cache-key and lint code read
    is plain data. The scan runs in C (``map`` over a type → keep table), not per key in Python.
    """
    if not isinstance(body, dict):
        return body
    keep = list(map(_KEEP.__getitem__, map(type, body.values())))
    return body if all(keep) else dict(itertools.compress(body.items(), keep))


class _KeepTable(dict[type, bool]):
    """Value type → False for the SDKs' placeholder types (known by name), True otherwise."""

    def __missing__(self, kind: type) -> bool:
        if len(self) > 256:
            self.clear()
        keep = self[kind] = kind.__name__ not in _PLACEHOLDERS
        return keep


_PLACEHOLDERS = frozenset({"Omit", "NotGiven"})
_KEEP = _KeepTable()


def _refresh_credentials(client: Any, exc: Exception, resent: bool) -> bool:
    """True when a 401 should be re-sent once with a fresh token, as the official client does.

    The SDK does this inside its retry loop, which is off here; only clients with a credentials
    cache (``_token_cache``) qualify, and only once per call.
    """
    cache = getattr(client, "_token_cache", None)
    if resent or cache is None or not isinstance(exc, client._resilient_auth_error):
        return False
    cache.invalidate()
    return True


def own_function(func: Callable[..., Any]) -> Any:
    """A distinct function object with ``func``'s code, so each drop-in class can carry its
    own ``__signature__`` (the official constructor's parameters plus ``policy``)."""
    import types

    clone = types.FunctionType(func.__code__, func.__globals__, func.__name__,
                               func.__defaults__, func.__closure__)
    clone.__kwdefaults__ = func.__kwdefaults__
    clone.__doc__, clone.__qualname__ = func.__doc__, func.__qualname__
    return clone


def _as_keywords(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Positional constructor arguments as keywords, named as the official ``__init__`` names
    them (so ``max_retries`` passed by position still counts as explicit)."""
    init: Any = cls.__dict__.get("__init__", cls.__init__)  # type: ignore[misc]
    params = [p for p in inspect.signature(init).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]  # without self
    if len(args) > len(params):
        raise TypeError(f"{cls.__name__}() takes at most {len(params)} positional arguments "
                        f"({len(args)} given)")
    named = {p.name: value for p, value in zip(params, args, strict=False)}
    clash = named.keys() & kwargs.keys()
    if clash:
        raise TypeError(f"{cls.__name__}() got multiple values for argument "
                        f"{sorted(clash)[0]!r}")
    return {**named, **kwargs}


def cloud_region(client: Any) -> str | None:
    """The cloud region a client was made for (Bedrock, AWS and Mantle ``aws_region``, Vertex
    ``region``), or ``None`` (first-party APIs, Azure, Foundry)."""
    for argument in ("aws_region", "region"):
        value = getattr(client, argument, None)
        if isinstance(value, str) and value:
            return value
    return None


def _takes_policy(cls: type) -> bool:
    """Does the constructor of ``cls`` (a drop-in, or a user's subclass of one) take
    ``policy=``?"""
    return _init_takes_policy(cls.__init__)  # type: ignore[misc]


@functools.lru_cache(maxsize=256)
def _init_takes_policy(init: Callable[..., Any]) -> bool:
    params = inspect.signature(init).parameters.values()
    return any(p.name == "policy" or p.kind is p.VAR_KEYWORD for p in params)


def _in_cloud_region(policy: Policy, region: str | None) -> Policy:
    """``policy`` with the client's cloud region as its ``region`` when it names none, so that
    ``RESILIENT_LLM_ALLOWED_REGIONS`` judges a Bedrock or Vertex client by the region it sends
    to (a region name the policy cannot hold leaves the policy as it is: unknown, which an
    allow-list refuses)."""
    if region is None or policy.region is not None or not policy.enabled:
        return policy
    try:
        return policy.replace(region=region)
    except ValueError:
        return policy


class DropIn:
    """Shared by the four drop-in classes: construction, ``policy``, ``copy``, call set-up.

    Each class lists this mixin before the official class, so ``super()`` here reaches the
    official implementation; the provider module supplies the ``_resilient_*`` class attributes.
    """

    _resilient_provider: Literal["openai", "anthropic"]
    _resilient_timeout_error: type[Exception]
    _resilient_connection_error: type[Exception]
    _resilient_auth_error: type[Exception]
    #: The SDK's own default timeout: a client built without ``timeout=`` has it.
    _resilient_default_timeout: Any
    _resilient_policy: Policy
    #: The policy calls run under: ``_resilient_policy`` in the client's cloud region.
    _resilient_call_policy: Policy
    _resilient_explicit_retries: bool
    # Injected by tests (FakeClock / FakeRandom); the real clock otherwise.
    _resilient_clock: Clock = SYSTEM_CLOCK
    _resilient_rng: RandomSource = SYSTEM_RANDOM

    def __init__(self, *args: Any, policy: Policy | None = None, **kwargs: Any) -> None:
        if args:  # some official constructors (AnthropicBedrock, ...) take positional arguments
            kwargs = _as_keywords(type(self), args, kwargs)
        # A policy given here keeps the environment under the settings it does not make.
        policy = _given_policy(policy, default=None)
        self._resilient_policy = policy
        # Any max_retries the caller passes counts, the SDK's default value included; copy()
        # passes one always and corrects the flag afterwards.
        self._resilient_explicit_retries = "max_retries" in kwargs
        super().__init__(**kwargs)
        self._resilient_call_policy = _in_cloud_region(policy, cloud_region(self))
        if policy.enabled:
            wrap_http_client(self._client, policy=policy,  # type: ignore[attr-defined]
                             provider=self._resilient_provider)
            if policy.redis_url:  # the fleet's link, ready by the first call
                from ..fleet.link import warm_link

                warm_link(policy.redis_url)

    @property
    def policy(self) -> Policy:
        """The resilience policy of this client."""
        return self._resilient_policy

    def copy(self, *, policy: Policy | None = None, **kwargs: Any) -> Any:
        """As the official ``copy``/``with_options``; ``policy`` replaces this client's policy."""
        extra = dict(kwargs.pop("_extra_kwargs", None) or {})
        extra.update(self._resilient_inherited(kwargs))
        policy = _given_policy(policy, default=self._resilient_policy)
        takes_policy = _takes_policy(type(self))
        if takes_policy:
            extra["policy"] = policy
        client = super().copy(_extra_kwargs=extra, **kwargs)  # type: ignore[misc]
        if client._resilient_policy is not policy:  # a user's subclass that drops ``policy``
            client._resilient_policy = policy
            client._resilient_call_policy = _in_cloud_region(policy, cloud_region(client))
        client._resilient_explicit_retries = self._resilient_explicit_retries or isinstance(
            kwargs.get("max_retries"), int)
        for injected in ("_resilient_clock", "_resilient_rng"):  # set by tests, not by default
            if injected in self.__dict__:
                setattr(client, injected, self.__dict__[injected])
        return client

    with_options = copy

    def regional(self, region: str | None) -> DropIn:
        """This client, or a copy of it for another cloud region (cached), to sign for it."""
        own = cloud_region(self)
        if region is None or own is None or region == own.lower():
            return self
        copies: dict[str, DropIn] = self.__dict__.setdefault("_resilient_regional", {})
        found = copies.get(region)
        if found is None:
            argument = "aws_region" if hasattr(self, "aws_region") else "region"
            options: dict[str, Any] = {argument: region}
            found = copies[region] = self.copy(**options)
        return found

    def _resilient_inherited(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """What a copy must be given that the official ``copy`` hands only to the official
        class itself (none here; see the anthropic drop-in)."""
        return {}

    def _resilient_errors(self) -> dict[str, Any]:
        timeout_error, connection_error = (
            self._resilient_timeout_error, self._resilient_connection_error)
        return {
            "status_error": self._make_status_error_from_response,  # type: ignore[attr-defined]
            "timeout_error": lambda request: timeout_error(request=request),  # type: ignore[call-arg]
            "connection_error": lambda request: connection_error(request=request),  # type: ignore[call-arg]
            "provider": self._resilient_provider,
        }

    def _resilient_begin(
        self, options: Any, stream: bool
    ) -> tuple[CallScope, Any, str | None, Any]:
        """Open the call; returns (scope, this call's options, response-cache key, cache hit)."""
        policy = call_policy(self._resilient_call_policy, options,
                             getattr(self, "timeout", None), self._resilient_default_timeout)
        scope = CallScope(
            policy, model_of(options),
            explicit_attempts(options, self.max_retries,  # type: ignore[attr-defined]
                              self._resilient_explicit_retries),
            clock=self._resilient_clock, rng=self._resilient_rng,
        )
        try:
            call = scope.call
            body = getattr(options, "json_data", None)
            sent = prepare_body(self._resilient_provider, options, _without_placeholders(body),
                                call.policy, call.record)
            update: dict[str, Any] = {"max_retries": 0}  # one retry layer: ours
            if sent is not body:
                update["json_data"] = sent
            # A shallow copy (about 2 µs) with the edits: the caller's options stay as given, as
            # the SDKs promise (low-level ``request(cast_to, options)`` may reuse them).
            options = options.model_copy(update=update)
            key, hit = None, None
            if call.policy.response_cache:  # off by default: no call at all then
                from ..caching.response import cached_answer

                key, hit = cached_answer(
                    self.base_url, options, call.policy, stream,  # type: ignore[attr-defined]
                    client_headers=getattr(self, "default_headers", None),
                    auth_headers=getattr(self, "auth_headers", None))
            if hit is not None:
                call.emit("succeeded", target=call.target, detail="response_cache")
        except BaseException:
            scope.close()
            raise
        return scope, options, key, hit

    def _resilient_failed(self, exc: Exception, resent: bool) -> bool:
        """After a failed SDK request: True to re-send once (401 refresh); else raise ours."""
        if _refresh_credentials(self, exc, resent):
            return True
        translated = translate_error(exc, **self._resilient_errors())
        try:
            if translated is exc:
                raise exc
            raise translated from translated.__cause__
        finally:  # the error's traceback holds this frame: no cycle through its locals
            del exc, translated

    def _resilient_end(self, scope: CallScope, options: Any, key: str | None, result: T) -> T:
        record = scope.call.record
        # A fallback's answer is not kept for the request: the target it asked for may be back
        # at the next call, and a hit would report that target as the one that served.
        if key is not None and not record.degraded_by(record.served_by):
            from ..caching.response import remember_answer

            remember_answer(key, scope.call.policy, result)
        usage = field_of(result, "usage")
        observe_cache(self._resilient_provider, options, scope.call.policy, scope.call.record,
                      usage)
        return scope.finish(result, usage)


class SyncDropIn(DropIn):
    """``request()`` of the sync drop-ins: the logical call around the SDK's one attempt."""

    def _prepare_options(self, options: Any) -> Any:
        # The SDK's per-call credentials (Azure's token provider): noted, to be asked again
        # for each attempt after the first (see Resign).
        prepared = super()._prepare_options(options)  # type: ignore[misc]
        note_options(options, prepared)
        return prepared

    def _prepare_request(self, request: httpx2.Request) -> None:
        # The SDK's per-attempt step (signing, token refresh): run again by the transport for
        # each attempt it sends after the first and each target it rewrites the request for.
        before = request.headers.raw
        super()._prepare_request(request)  # type: ignore[misc]
        Resign.attach(self, DropIn, before, request)

    def request(self, cast_to: Any, options: Any, *, stream: bool = False,
                stream_cls: Any = None) -> Any:
        if not self._resilient_policy.enabled:
            return super().request(  # type: ignore[misc]
                cast_to, options, stream=stream, stream_cls=stream_cls)
        scope, options, key, hit = self._resilient_begin(options, stream)
        if hit is not None:
            scope.close()
            return scope.finish(hit)
        resent = False
        try:
            while True:
                try:
                    result = super().request(  # type: ignore[misc]
                        cast_to, options, stream=stream, stream_cls=stream_cls)
                    break
                except Exception as exc:
                    resent = self._resilient_failed(exc, resent)
        finally:
            scope.close()
        return self._resilient_end(scope, options, key, result)


class AsyncDropIn(DropIn):
    """``request()`` of the async drop-ins."""

    async def _prepare_options(self, options: Any) -> Any:
        prepared = await super()._prepare_options(options)  # type: ignore[misc]
        note_options(options, prepared)
        return prepared

    async def _prepare_request(self, request: httpx2.Request) -> None:
        before = request.headers.raw
        await super()._prepare_request(request)  # type: ignore[misc]
        Resign.attach(self, DropIn, before, request)

    async def request(self, cast_to: Any, options: Any, *, stream: bool = False,
                      stream_cls: Any = None) -> Any:
        if not self._resilient_policy.enabled:
            return await super().request(  # type: ignore[misc]
                cast_to, options, stream=stream, stream_cls=stream_cls)
        scope, options, key, hit = self._resilient_begin(options, stream)
        if hit is not None:
            scope.close()
            return scope.finish(hit)
        resent = False
        try:
            while True:
                try:
                    result = await super().request(  # type: ignore[misc]
                        cast_to, options, stream=stream, stream_cls=stream_cls)
                    break
                except Exception as exc:
                    resent = self._resilient_failed(exc, resent)
        finally:
            scope.close()
        return self._resilient_end(scope, options, key, result)


def finish_class(cls: type, official: type) -> None:
    """Give ``cls`` its own ``__init__``/``copy`` functions carrying the official signature plus
    ``policy`` (``inspect.signature`` and the SDKs' ``test_copy_signature`` read them)."""
    for name in ("__init__", "copy"):
        method = own_function(getattr(DropIn, name))
        method.__signature__ = merged_signature(getattr(official, name), method)
        setattr(cls, name, method)
    cls.with_options = cls.copy  # type: ignore[attr-defined]


def _given_policy(policy: object, *, default: Policy | None) -> Policy:
    """The policy a client runs under: ``policy=`` over the environment, else ``default`` (the
    environment's when ``None``)."""
    if policy is None:
        return Policy.from_env() if default is None else default
    if not isinstance(policy, Policy):
        hint = " (a dict of settings: policy=Policy(**settings))" if isinstance(policy, dict) \
            else ""
        raise TypeError(f"policy= takes a resilient_llm.Policy, got {type(policy).__name__}"
                        f"{hint}")
    return policy.over_env()
