"""Cache health: per conversation, did each turn read the cached prefix it should have?

Two signals, from the usage every response already carries (OpenAI ``cached_tokens``,
Anthropic ``cache_read_input_tokens``):

* ``prefix_drift``: the stable prefix (tools, system prompt, schema; see
  :mod:`resilient_llm.caching.keys`) of a conversation changed between turns, so the cache built
  by earlier turns cannot be reused (a timestamp in the system prompt, tools in another order,
  a per-turn edit).
* ``cold_mid_session``: a later turn with an unchanged prefix read zero cached tokens although
  an earlier turn of the same conversation did, and it came within ``idle_expiry`` of the
  previous turn (so the entry should still have been alive).

**What a conversation is.** Its identity must survive exactly the changes we want to detect,
so it is not the prompt-cache key. It is an HMAC (scoped by namespace and secret, revealing
nothing) over the provider, the model, the system text with time values masked (the
timestamps and epochs :func:`~resilient_llm.caching.lint.lint_prompt` flags; ids and per-user
fields stay, as they often name the conversation) and the conversation's first message
(the opener, which stays fixed while turns are appended); a Responses ``conversation`` id is
used as is. Tools are left out so a tool change shows up as drift. Consequences: two
conversations of one template that open with the same message count as one (harmless: their
prefixes match); a ``previous_response_id`` chain without a ``conversation`` id looks like a
new conversation every turn (no signal, never a false one).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import cachetools

from .._clock import SYSTEM_CLOCK, Clock
from .keys import (
    Provider,
    _fingerprint,
    _hashed_text,
    _namespace,
    _opener_json,
    _prefix,
    _secret_bytes,
    _shape,
    canonical_json,
)
from .lint import _volatile_spans

__all__ = [
    "CacheHealth",
    "CacheUsage",
    "ConversationHealth",
    "ConversationSignature",
    "HealthFinding",
    "HealthKind",
    "anthropic_cache_usage",
    "cache_usage",
    "conversation_signature",
    "openai_cache_usage",
]

HealthKind = Literal["cold_mid_session", "prefix_drift"]

_HINTS: Mapping[str, str] = {
    "prefix_drift": "the stable prefix (tools, system prompt, schema) changed since the previous "
                    "turn, so the cache written by earlier turns cannot be read: keep it "
                    "byte-stable (lint_prompt shows volatile values; stable_tool_order fixes "
                    "tool order)",
    "cold_mid_session": "this turn read no cached tokens although earlier turns did and the "
                        "prefix is unchanged: check that earlier turns are resent byte-identical "
                        "(no edited history, same tool-call JSON), that the prompt-cache key did "
                        "not change, and the provider's per-key rate guidance",
}


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """Prompt-cache figures of one response, the same for every provider.

    ``input_tokens`` is the whole prompt, cached tokens included (Anthropic reports them
    apart; they are added back here), so the figures compare across providers.
    """

    cached_tokens: int
    input_tokens: int
    cache_write_tokens: int


@dataclass(frozen=True, slots=True)
class HealthFinding:
    """A cache-health signal for one turn of a conversation (for ``outcome()`` and events)."""

    kind: HealthKind
    conversation: str  # opaque conversation key (an HMAC, no prompt content)
    turn: int  # 1-based turn number within the conversation
    cached_tokens: int
    previous_cached_tokens: int
    hint: str


@dataclass(frozen=True, slots=True)
class ConversationSignature:
    """Who a request belongs to (``key``) and what its stable prefix is (``prefix_hash``)."""

    key: str
    prefix_hash: str


@dataclass(frozen=True, slots=True)
class ConversationHealth:
    """A snapshot of one tracked conversation: cached tokens of its latest turns and counts."""

    turns: int
    cached_tokens: tuple[int, ...]
    cold_turns: int
    drift_turns: int


# --- usage ----------------------------------------------------------------------------------------

def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def openai_cache_usage(usage: Any) -> CacheUsage:
    """Cache figures from an OpenAI chat (``prompt_tokens_details``) or Responses usage.

    Accepts the usage dict or the SDK's usage object. ``prompt_tokens`` / ``input_tokens``
    already include cached tokens.
    """
    total = _get(usage, "prompt_tokens")
    if total is not None:
        details = _get(usage, "prompt_tokens_details")
    else:
        total = _get(usage, "input_tokens")
        details = _get(usage, "input_tokens_details")
    return CacheUsage(_int(_get(details, "cached_tokens")), _int(total),
                      _int(_get(details, "cache_write_tokens")))


def anthropic_cache_usage(usage: Any) -> CacheUsage:
    """Cache figures from an Anthropic usage (dict or SDK object).

    Anthropic's ``input_tokens`` counts only tokens after the last breakpoint, so reads and
    writes are added back to get the whole prompt.
    """
    read = _int(_get(usage, "cache_read_input_tokens"))
    write = _int(_get(usage, "cache_creation_input_tokens"))
    return CacheUsage(read, _int(_get(usage, "input_tokens")) + read + write, write)


def cache_usage(usage: Any, provider: Provider) -> CacheUsage:
    """Cache figures from a usage of ``provider``."""
    if provider == "anthropic":
        return anthropic_cache_usage(usage)
    return openai_cache_usage(usage)


# --- conversation identity ------------------------------------------------------------------------

# Time values are masked in a conversation's identity: they change per request, and a
# conversation must survive them to show them as drift. Ids, nonces and per-user fields are not
# masked: they often name the conversation or the user (a session id), and masking them would
# merge distinct conversations and report false drift. Lint reports them instead.
_MASKED = frozenset({"timestamp", "epoch"})


def _masked_digest(text: str) -> str:
    spans = _volatile_spans(text, _MASKED)
    if not spans:
        return _hashed_text(text)
    parts: list[str] = []
    pos = 0
    for start, end in spans:
        parts.append(text[pos:start])
        parts.append("\x00")
        pos = end
    parts.append(text[pos:])
    masked = "".join(parts)
    return hashlib.sha256(masked.encode("utf-8", "surrogatepass")).hexdigest()


def conversation_signature(
    request: Mapping[str, Any],
    *,
    namespace: str | None = None,
    secret: str | bytes | None = None,
    provider: Provider | None = None,
) -> ConversationSignature:
    """The conversation key and stable-prefix hash of a request (see the module docstring).

    Compute it on the body as sent (after ``prepare_*_body``), so the prefix hash sees the wire
    tool order. ``namespace`` and ``secret`` default as in ``prompt_cache_key``.
    """
    prefix = _prefix(request, provider)
    identity: Any = None
    if prefix.shape == "responses":
        conversation = request.get("conversation")
        if isinstance(conversation, Mapping):
            conversation = conversation.get("id")
        if isinstance(conversation, str):
            identity = ["conversation", conversation]
    if identity is None:
        system = [[s.loc, _masked_digest(s.text)] for s in prefix.segs
                  if s.group == "system" and s.text is not None]
        identity = ["opener", system, _opener_json(request, prefix.shape)]
    data = canonical_json(["rl-conversation/1", prefix.provider, _namespace(namespace),
                           request.get("model"), identity])
    mac = hmac.new(_secret_bytes(secret), data.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return ConversationSignature("rlc1-" + mac.hexdigest()[:32], _fingerprint(prefix))


# --- tracker --------------------------------------------------------------------------------------

@dataclass(slots=True)
class _State:
    turns: int
    prefix_hash: str
    last_seen: float
    warm_cached: int  # cached tokens of the latest turn that read from cache; 0 = never
    cached: deque[int]
    cold_turns: int = 0
    drift_turns: int = 0


class CacheHealth:
    """Tracks cached tokens per turn per conversation and flags drift and cold turns.

    Thread-safe and bounded: at most ``maxsize`` conversations, each forgotten ``ttl`` seconds
    after its last turn, keeping the cached-token figures of its last ``history`` turns.
    ``idle_expiry`` is how long a cache entry is assumed to live without use (Anthropic's default
    TTL and OpenAI's in-memory retention are about 5 minutes); a turn after a longer pause that
    reads nothing is expected, not cold. Raise it if you use 1-hour or 24-hour retention.
    """

    def __init__(
        self,
        *,
        maxsize: int = 10_000,
        ttl: float = 3600.0,
        idle_expiry: float = 300.0,
        history: int = 32,
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock or SYSTEM_CLOCK
        self._states: cachetools.TTLCache[str, _State] = cachetools.TTLCache(
            maxsize=maxsize, ttl=ttl, timer=self._clock.now
        )
        self._lock = threading.Lock()
        self._idle_expiry = idle_expiry
        self._history = history

    def observe(
        self, conversation_key: str, prefix_hash: str, cached_tokens: int, input_tokens: int
    ) -> list[HealthFinding]:
        """Record one turn; return the findings it raises (empty when healthy).

        ``input_tokens`` is the whole prompt including cached tokens (see :class:`CacheUsage`).
        """
        cached, total = _int(cached_tokens), _int(input_tokens)
        now = self._clock.now()
        findings: list[HealthFinding] = []
        with self._lock:
            state = self._states.get(conversation_key)
            if state is None:
                self._states[conversation_key] = _State(
                    1, prefix_hash, now, cached, deque([cached], maxlen=self._history)
                )
                return findings
            state.turns += 1
            previous = state.cached[-1]
            if prefix_hash != state.prefix_hash:
                state.drift_turns += 1
                state.prefix_hash = prefix_hash
                findings.append(HealthFinding("prefix_drift", conversation_key, state.turns,
                                              cached, previous, _HINTS["prefix_drift"]))
            elif (cached == 0 and state.warm_cached > 0 and total >= state.warm_cached
                  and now - state.last_seen <= self._idle_expiry):
                state.cold_turns += 1
                findings.append(HealthFinding("cold_mid_session", conversation_key, state.turns,
                                              cached, previous, _HINTS["cold_mid_session"]))
            if cached > 0:
                state.warm_cached = cached
            state.cached.append(cached)
            state.last_seen = now
            self._states[conversation_key] = state  # refreshes the entry's TTL
        return findings

    def observe_exchange(
        self,
        request: Mapping[str, Any],
        usage: Any,
        *,
        provider: Provider | None = None,
        namespace: str | None = None,
        secret: str | bytes | None = None,
        signature: ConversationSignature | None = None,
    ) -> list[HealthFinding]:
        """:meth:`observe` from a request body as sent and the response's usage.

        Pass ``signature`` when it was computed before sending, to avoid hashing twice.
        """
        if signature is None:
            signature = conversation_signature(request, namespace=namespace, secret=secret,
                                               provider=provider)
        prov = provider or _shape(request, None)[0]
        figures = cache_usage(usage, prov)
        return self.observe(signature.key, signature.prefix_hash, figures.cached_tokens,
                            figures.input_tokens)

    def snapshot(self, conversation_key: str) -> ConversationHealth | None:
        """What is known about a conversation, or None if it is not tracked (or expired)."""
        with self._lock:
            state = self._states.get(conversation_key)
            if state is None:
                return None
            return ConversationHealth(state.turns, tuple(state.cached), state.cold_turns,
                                      state.drift_turns)

    def __len__(self) -> int:
        with self._lock:
            return len(self._states)
