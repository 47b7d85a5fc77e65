"""The opt-in local response cache: exact repeats of deterministic requests, answered in process.

An entry key covers the whole canonical body, the tenant namespace, the scope (method and URL:
the endpoint) and a hash of the credential, so two tenants, two endpoints or two API keys never
share an entry: a key the provider would reject never receives the answer cached for another.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import cachetools

from .._clock import SYSTEM_CLOCK, Clock
from .keys import _hash_form, canonical_json

if TYPE_CHECKING:
    from .._policy import Policy

__all__ = ["ResponseCache", "cached_answer", "remember_answer"]

V = TypeVar("V")


class ResponseCache(Generic[V]):
    """In-process TTL/LRU cache of responses to exact repeats of deterministic requests.

    Off by default (``Policy.response_cache``). Only requests with ``temperature`` 0 or a
    ``seed`` qualify, never streams, background runs or server-side conversations. Keys cover
    the whole canonical body, the tenant namespace, a scope (method and URL) and the
    credential's hash, so two tenants, endpoints or API keys never share an entry. Thread-safe.
    """

    def __init__(self, *, maxsize: int = 1024, ttl: float = 300.0,
                 clock: Clock | None = None) -> None:
        clock = clock or SYSTEM_CLOCK
        self._cache: cachetools.TTLCache[str, V] = cachetools.TTLCache(
            maxsize=maxsize, ttl=ttl, timer=clock.now
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_policy(cls, policy: Policy, *, clock: Clock | None = None) -> ResponseCache[Any]:
        """A cache sized by ``response_cache_size`` and ``response_cache_ttl``."""
        return ResponseCache(maxsize=policy.response_cache_size, ttl=policy.response_cache_ttl,
                             clock=clock)

    @staticmethod
    def key_for(body: Mapping[str, Any], namespace: str | None, *, scope: str = "",
                credential: str = "") -> str | None:
        """The entry key of ``body``, or None when its answer is not deterministic.

        ``credential`` is a hash of the caller's credential (never the credential itself: the
        key is hashed, but a digest is what the fleet keys hold too).
        """
        temperature, seed = body.get("temperature"), body.get("seed")
        deterministic = (
            isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
            and temperature == 0
        ) or (isinstance(seed, int) and not isinstance(seed, bool))
        if not deterministic or body.get("stream") or body.get("background") \
                or body.get("conversation") is not None:
            return None
        data = canonical_json(["rl-response/2", namespace or "", scope, credential,
                               _hash_form(body)])
        return "rlr2-" + hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()

    def get(self, key: str) -> V | None:
        """The cached response, or None."""
        with self._lock:
            value = self._cache.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def put(self, key: str, value: V) -> None:
        """Store a successful response (never an error or a partial stream)."""
        with self._lock:
            self._cache[key] = value

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)


_response_caches: dict[tuple[int, float], Any] = {}


def cached_answer(base_url: object, options: Any, policy: Policy, stream: bool, *,
                  client_headers: Any = None, auth_headers: Any = None
                  ) -> tuple[str | None, Any]:
    """(key, a copy of the cached answer) for a deterministic repeat; (None, None) otherwise.

    Off unless ``RESILIENT_LLM_RESPONSE_CACHE`` is true. Only non-streamed requests with
    ``temperature=0`` or a ``seed`` qualify; entries are scoped by tenant namespace, endpoint
    and credential (``client_headers`` and ``auth_headers``: the client's headers, overridden by
    the request's own).
    The key covers the request as it is sent: the body with ``extra_body`` merged over it (as
    the SDKs merge it), the query, and every header the request adds or that the client adds
    besides the SDK's own ``x-stainless-*`` ones (``anthropic-beta``, ``OpenAI-Project``...).
    """
    if not policy.response_cache or stream:
        return None, None
    body = getattr(options, "json_data", None)
    extra = getattr(options, "extra_json", None)
    if isinstance(body, dict) and isinstance(extra, dict) and extra:
        body = {**body, **extra}  # what the SDK sends: extra_body wins
    if not isinstance(body, dict):
        return None, None
    headers = _headers_sent(client_headers, auth_headers, options)
    params = getattr(options, "params", None)
    scope = canonical_json([f"{base_url}{getattr(options, 'url', '')}",
                            params if isinstance(params, dict) else {},
                            {name: value for name, value in headers.items()
                             if name not in _CREDENTIAL_HEADERS}])
    key = ResponseCache.key_for(body, policy.cache_namespace, scope=scope,
                                credential=_credential_digest(headers))
    if key is None:
        return None, None
    cache = _response_caches.get((policy.response_cache_size, policy.response_cache_ttl))
    hit = cache.get(key) if cache is not None else None
    return key, (hit.model_copy(deep=True) if hit is not None else None)


def remember_answer(key: str | None, policy: Policy, result: Any) -> None:
    """Keep a copy of a successful parsed answer under ``key``."""
    if key is None or not hasattr(result, "model_copy"):
        return
    slot = (policy.response_cache_size, policy.response_cache_ttl)
    cache = _response_caches.get(slot)
    if cache is None:
        cache = _response_caches[slot] = ResponseCache.from_policy(policy)
    cache.put(key, result.model_copy(deep=True))


_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key")
#: Headers that differ per attempt or per call without changing the answer.
_VOLATILE_HEADERS = ("idempotency-key", "x-request-id", "traceparent", "tracestate")


def _headers_sent(client_headers: Any, auth_headers: Any, options: Any) -> dict[str, str]:
    """The headers that shape the answer: the client's, overridden by the request's own."""
    headers: dict[str, Any] = {}
    for given in (client_headers, auth_headers, getattr(options, "headers", None)):
        if isinstance(given, Mapping):
            headers.update({str(k).lower(): v for k, v in given.items()})
    return {name: value for name, value in headers.items()
            if isinstance(value, str) and not name.startswith("x-stainless-")
            and name not in _VOLATILE_HEADERS}


def _credential_digest(headers: dict[str, str]) -> str:
    """A hash of the credential a request is sent with, as the fleet keys hash it."""
    from ..engine.pressure import TargetKey

    credential = "\n".join(f"{name}={headers[name]}" for name in _CREDENTIAL_HEADERS
                           if name in headers)
    return TargetKey.of("", credential, None).credential
