"""Deterministic prompt-cache keys, prefix fingerprints, breakpoint placement, response cache.

Everything here is a pure function over the JSON request body the SDK sends (``model``,
``messages``, ``tools``, ... for OpenAI chat; ``input``/``instructions`` for OpenAI Responses;
``system``/``messages``/``tools`` for Anthropic). Nothing mutates the caller's objects.

Vocabulary (see ``docs/prompt-caching.md``):

* the **stable prefix** of a request is the part that is meant to be byte-identical across the
  turns of a conversation and across conversations built from the same template: tools, then
  the system prompt (Anthropic ``system``; OpenAI leading ``system``/``developer`` messages,
  Responses ``instructions``), plus the settings that render into it (structured-output schema,
  reasoning effort, verbosity). When the caller placed breakpoints (``cache_control`` /
  ``prompt_cache_breakpoint``) inside it, it ends at the last of them. Messages never enter it:
  they grow every turn, and a key that includes them changes mid-conversation.
* the **opener** is the first message after the stable prefix. It stays fixed while a
  conversation grows by appending, so it picks a conversation's shard.
* **canonical JSON**: ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
  after number normalisation (an integral float is written as the integer, ``-0.0`` as ``0``,
  other floats in Python's shortest round-trip form). Strings are never altered. For hashing,
  a prompt text (system/instructions text, message text part) of 1 024 characters or more
  enters as its SHA-256 (a hash tree: as collision resistant as hashing the bytes, and a
  prompt string reused across calls costs one dictionary lookup).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from .._policy import Policy

__all__ = [
    "CACHE_KEYED_PATHS",
    "KEY_PREFIX",
    "MAX_KEY_LENGTH",
    "MAX_SHARDS",
    "NAMESPACE_ENV",
    "PER_KEY_RPM",
    "SECRET_ENV",
    "Provider",
    "canonical_json",
    "keyed_api",
    "min_cacheable_tokens",
    "prefix_fingerprint",
    "prepare_anthropic_body",
    "prepare_openai_body",
    "prompt_cache_key",
    "rekeyed_for_model",
    "shards_for_rate",
]

Provider = Literal["openai", "anthropic"]
_Shape = Literal["chat", "responses", "messages"]

NAMESPACE_ENV = "RESILIENT_LLM_CACHE_NAMESPACE"
SECRET_ENV = "RESILIENT_LLM_CACHE_SECRET"
KEY_PREFIX = "rl1-"
MAX_KEY_LENGTH = 64  # OpenAI rejects longer prompt_cache_key values
MAX_SHARDS = 1024
PER_KEY_RPM = 15.0  # OpenAI: above ≈15 requests/min per prefix+key, traffic overflows machines

# Used when no secret is configured. It is printed here, so it is NOT a secret: keys made with it
# still separate namespaces and hide the prompt from a casual reader, but anyone can recompute
# the key of a guessed prompt. Set RESILIENT_LLM_CACHE_SECRET (≥ 16 characters) in production.
_PUBLIC_SALT = b"resilient-llm/prompt-cache-key/v1/public-salt-not-a-secret"
_warned_public_salt = False

logger = logging.getLogger("resilient_llm.caching")

_LONG_TEXT = 1024  # characters; longer texts are hashed on their own (see module docstring)
_MARKERS = ("cache_control", "prompt_cache_breakpoint")
_SYSTEM_ROLES = ("system", "developer")
_CHARS_PER_TOKEN = 3.0  # deliberately low: over-estimating tokens only adds a harmless breakpoint
_EPHEMERAL: Mapping[str, str] = {"type": "ephemeral"}


# --- canonical JSON -------------------------------------------------------------------------------

def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``: same value, same text, in any process.

    Sorted keys, no whitespace, ``ensure_ascii=False``; integral floats become integers and
    ``-0.0`` becomes ``0``; strings are kept byte for byte. Pydantic models are dumped as the SDK
    would send them (``mode="json"``, unset fields left out).
    """
    try:
        text = _dumps(value)
    except TypeError:  # non-string keys of mixed types cannot be sorted as they are
        return _dumps(_normalise(value))
    # Every integral float prints with ".0" or "e+"; without either, nothing needs normalising.
    if ".0" in text or "e+" in text:
        text = _dumps(_normalise(value))
    return text


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _json_default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", exclude_unset=True)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot canonicalise a {type(value).__name__} in a request body")


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
)


def _normalise(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value) if value else 0
        return value
    if isinstance(value, Mapping):
        return {_key_text(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return _normalise(_json_default(value))


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    return _dumps(_normalise(key))


# Digests of long texts, keyed by the identity of the string: a prompt constant reused across
# calls costs one dictionary lookup, and a new string is not hashed twice (str hash + SHA-256).
# Each entry holds its string, so an id cannot be reused while its entry lives. Bounded by
# characters; cleared wholesale when full.
_digests: dict[int, tuple[str, str]] = {}
_digest_chars = 0
_digest_lock = threading.Lock()
_DIGEST_MAX_CHARS = 8_000_000
_DIGEST_MAX_ITEMS = 4096


def _text_digest(text: str) -> str:
    global _digest_chars
    entry = _digests.get(id(text))
    if entry is not None and entry[0] is text:
        return entry[1]
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    with _digest_lock:
        if _digest_chars + len(text) > _DIGEST_MAX_CHARS or len(_digests) >= _DIGEST_MAX_ITEMS:
            _digests.clear()
            _digest_chars = 0
        _digests[id(text)] = (text, digest)
        _digest_chars += len(text)
    return digest


def _hashed_text(text: str) -> str:
    """A text as it enters a hash: itself, or a marked digest when long."""
    return text if len(text) < _LONG_TEXT else "\x00sha256:" + _text_digest(text)


def _hash_form(value: Any) -> Any:
    """``value`` with numbers normalised and long strings replaced by digests."""
    if isinstance(value, str):
        return _hashed_text(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return _normalise(value)
    if isinstance(value, Mapping):
        return {_key_text(k): _hash_form(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_hash_form(v) for v in value]
    return _hash_form(_json_default(value))


# --- the stable prefix ----------------------------------------------------------------------------

class _Segment(NamedTuple):
    """One piece of the stable prefix: a text (``text`` set) or a JSON object (``obj``)."""

    group: str  # "tools", "format" or "system"
    loc: str  # where it sits in the body, e.g. "system[0].text", "tools[2]"
    text: str | None
    obj: Any  # JSON segments: the object without breakpoint markers; texts: the part's type
    marked: bool  # carries a caller breakpoint
    name: str  # tool name ("" otherwise), for tool-order canonicalisation


def _shape(body: Mapping[str, Any], provider: str | None) -> tuple[Provider, _Shape]:
    if provider == "anthropic":
        return "anthropic", "messages"
    if provider not in (None, "openai"):
        raise ValueError(f"provider must be 'openai', 'anthropic' or None, not {provider!r}")
    if "input" in body or "instructions" in body:
        return "openai", "responses"
    if provider is None:
        model = body.get("model")
        if "system" in body or (isinstance(model, str) and model.startswith("claude")):
            return "anthropic", "messages"
        tools = body.get("tools")
        if isinstance(tools, list) and any(
            isinstance(t, Mapping) and "input_schema" in t for t in tools
        ):
            return "anthropic", "messages"
    return "openai", "chat"


def _items(value: Any) -> Sequence[Any]:
    return value if isinstance(value, (list, tuple)) else ()


def _strip(obj: Any) -> Any:
    if isinstance(obj, Mapping) and any(m in obj for m in _MARKERS):
        return {k: v for k, v in obj.items() if k not in _MARKERS}
    return obj


def _is_marked(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(obj.get(m) is not None for m in _MARKERS)


def _tool_name(tool: Any) -> str:
    if isinstance(tool, Mapping):
        name = tool.get("name")
        if isinstance(name, str):
            return name
        function = tool.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return str(function["name"])
    return ""


def _tool_segments(body: Mapping[str, Any], out: list[_Segment]) -> None:
    for field in ("tools", "functions"):
        for i, tool in enumerate(_items(body.get(field))):
            out.append(_Segment("tools", f"{field}[{i}]", None, _strip(tool), _is_marked(tool),
                                _tool_name(tool)))


def _content_segments(content: Any, loc: str, group: str, out: list[_Segment]) -> None:
    if isinstance(content, str):
        out.append(_Segment(group, loc, content, None, False, ""))
        return
    if not isinstance(content, (list, tuple)):
        if content is not None:
            out.append(_Segment(group, loc, None, content, False, ""))
        return
    for j, part in enumerate(content):
        marked = _is_marked(part)
        if isinstance(part, Mapping) and isinstance(part.get("text"), str):
            rest = {k: v for k, v in part.items() if k != "text" and k not in _MARKERS}
            kind: Any = rest.get("type") if len(rest) == 1 and "type" in rest else rest
            out.append(_Segment(group, f"{loc}[{j}].text", part["text"], kind, marked, ""))
        else:
            out.append(_Segment(group, f"{loc}[{j}]", None, _strip(part), marked, ""))


def _message_segments(message: Any, loc: str, group: str, out: list[_Segment]) -> None:
    if not isinstance(message, Mapping):
        out.append(_Segment(group, loc, None, message, False, ""))
        return
    header = {k: v for k, v in message.items() if k != "content" and k not in _MARKERS}
    out.append(_Segment(group, loc, None, header, _is_marked(message), ""))
    if "content" in message:
        _content_segments(message["content"], f"{loc}.content", group, out)


def _head(body: Mapping[str, Any], shape: _Shape) -> list[_Segment]:
    """The stable prefix in wire order, cut after the caller's last breakpoint inside it."""
    segs: list[_Segment] = []
    _tool_segments(body, segs)
    if shape == "messages":
        system = body.get("system")
        if isinstance(system, str):
            if system:
                segs.append(_Segment("system", "system", system, None, False, ""))
        else:
            _content_segments(system, "system", "system", segs)
        segs.extend(
            _Segment("format", field, None, _strip(body[field]), False, "")
            for field in ("output_format", "output_config")
            if body.get(field) is not None
        )
    else:
        if shape == "chat":
            settings = {k: body[k] for k in ("reasoning_effort", "verbosity")
                        if body.get(k) is not None}
            if body.get("response_format") is not None:
                segs.append(_Segment("format", "response_format", None, body["response_format"],
                                     False, ""))
            messages, field = body.get("messages"), "messages"
        else:
            reasoning = body.get("reasoning")
            settings = ({"reasoning.effort": reasoning["effort"]}
                        if isinstance(reasoning, Mapping) and reasoning.get("effort") is not None
                        else {})
            if body.get("text") is not None:
                segs.append(_Segment("format", "text", None, body["text"], False, ""))
            instructions = body.get("instructions")
            if isinstance(instructions, str):
                if instructions:
                    segs.append(_Segment("system", "instructions", instructions, None, False, ""))
            elif instructions is not None:
                segs.append(_Segment("system", "instructions", None, instructions, False, ""))
            messages, field = body.get("input"), "input"
        if settings:
            segs.append(_Segment("format", "settings", None, settings, False, ""))
        for i, message in enumerate(_items(messages)):
            if not isinstance(message, Mapping) or message.get("role") not in _SYSTEM_ROLES:
                break
            _message_segments(message, f"{field}[{i}]", "system", segs)
    last = max((i for i, s in enumerate(segs) if s.marked), default=len(segs) - 1)
    return segs[: last + 1]


def _opener(body: Mapping[str, Any], shape: _Shape) -> list[_Segment] | None:
    """The first message after the stable prefix, markers stripped; None when there is none."""
    segs: list[_Segment] = []
    if shape == "responses":
        value = body.get("input")
        if isinstance(value, str):
            _content_segments(value, "input", "opener", segs)
            return segs
        field = "input"
    else:
        value, field = body.get("messages"), "messages"
    for i, message in enumerate(_items(value)):
        if shape != "messages" and isinstance(message, Mapping) \
                and message.get("role") in _SYSTEM_ROLES:
            continue
        _message_segments(message, f"{field}[{i}]", "opener", segs)
        return segs
    return None


def _part(seg: _Segment) -> str:
    """The canonical JSON of one segment. Tools carry no index: their order is the list's."""
    if seg.text is not None:
        return canonical_json([seg.loc, "t", seg.obj, _hashed_text(seg.text)])
    return canonical_json(["tools" if seg.group == "tools" else seg.loc, "j", seg.obj])


def _joined(segs: Sequence[_Segment], parts: Sequence[str], *, sort_tools: bool) -> str:
    """The canonical JSON list of the segments; with ``sort_tools``, tools ordered by name.

    Ties (duplicate names, several unnamed built-in tools) are broken by the tool's canonical
    JSON, so the order is total and the result independent of the order the caller used.
    """
    if not sort_tools:
        return "[" + ",".join(parts) + "]"
    tools = sorted((s.name, p) for s, p in zip(segs, parts, strict=True) if s.group == "tools")
    rest = [p for s, p in zip(segs, parts, strict=True) if s.group != "tools"]
    return "[" + ",".join([p for _, p in tools] + rest) + "]"


class _Prefix(NamedTuple):
    provider: Provider
    shape: _Shape
    segs: list[_Segment]
    parts: list[str]


def _prefix(body: Mapping[str, Any], provider: str | None) -> _Prefix:
    prov, shape = _shape(body, provider)
    segs = _head(body, shape)
    return _Prefix(prov, shape, segs, [_part(s) for s in segs])


def _key_data(prefix: _Prefix, namespace: str, model: Any) -> bytes:
    header = canonical_json(["rl-prompt-cache-key/1", prefix.provider, namespace, model])
    text = header + "\n" + _joined(prefix.segs, prefix.parts, sort_tools=True)
    return text.encode("utf-8", "surrogatepass")


def _fingerprint(prefix: _Prefix) -> str:
    text = "rl-prefix/1\n" + _joined(prefix.segs, prefix.parts, sort_tools=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _opener_json(body: Mapping[str, Any], shape: _Shape) -> str | None:
    opener = _opener(body, shape)
    return None if opener is None else "[" + ",".join(_part(s) for s in opener) + "]"


# --- keys -----------------------------------------------------------------------------------------

def _public_salt() -> bytes:
    """The public salt, with one warning per process: keys made with it can be recomputed."""
    global _warned_public_salt
    if not _warned_public_salt:
        _warned_public_salt = True
        logger.warning(
            "prompt-cache keys use a public salt because %s is not set: anyone who guesses a "
            "prompt can recompute its key. Set %s (at least 16 random characters) in "
            "production; see the security page of the docs", SECRET_ENV, SECRET_ENV,
        )
    return _PUBLIC_SALT


def _policy_secret(policy: Policy) -> bytes:
    secret = policy.cache_secret
    return secret.get_secret_value().encode("utf-8") if secret else _public_salt()


def _secret_bytes(secret: str | bytes | None) -> bytes:
    if secret is None:
        secret = os.environ.get(SECRET_ENV) or None
    if secret is None:
        return _public_salt()
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not secret:
        raise ValueError("the cache secret must not be empty")
    return secret


def _namespace(namespace: str | None) -> str:
    if namespace is None:
        return os.environ.get(NAMESPACE_ENV, "")
    return namespace


def _hmac_hex(key: bytes, material: Any) -> str:
    data = canonical_json(material).encode("utf-8", "surrogatepass")
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _shard_identity(body: Mapping[str, Any], shape: _Shape) -> Any:
    if shape == "responses":
        conversation = body.get("conversation")
        if isinstance(conversation, Mapping):
            conversation = conversation.get("id")
        if isinstance(conversation, str):
            return ["conversation", conversation]
        if body.get("previous_response_id") is not None:
            return None  # input holds only the new turn: no stable identity in the body
    return _opener_json(body, shape)


def prompt_cache_key(
    request: Mapping[str, Any],
    *,
    namespace: str | None = None,
    secret: str | bytes | None = None,
    shards: int = 1,
    provider: Provider | None = None,
    shard_key: str | None = None,
) -> str:
    """A deterministic key for the request's stable prefix, scoped to a tenant namespace.

    ``rl1-`` + 32 hex characters of HMAC-SHA256(secret, [provider, namespace, model, canonical
    stable prefix with tools sorted by name]), plus ``-s<N>`` when ``shards`` > 1. Same input,
    same key, in any process and under any ``PYTHONHASHSEED``; another namespace or any other
    byte of the prefix gives another key; the key reveals nothing about the prompt.

    ``namespace`` defaults to ``RESILIENT_LLM_CACHE_NAMESPACE`` (no namespace when unset; pass
    ``""`` for none explicitly). ``secret`` defaults to ``RESILIENT_LLM_CACHE_SECRET``, else a
    public library salt that is *not* secret. ``shards`` splits one prefix over several keys so
    each stays under the provider's per-key rate guidance (see :func:`shards_for_rate`); a
    conversation keeps its shard (chosen from ``shard_key``, the Responses ``conversation`` id, or
    the conversation's first message; shard 0 for ``previous_response_id`` chains without one).
    """
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be a whole number from 1 to {MAX_SHARDS}")
    key = _secret_bytes(secret)
    ns = _namespace(namespace)
    prefix = _prefix(request, provider)
    digest = hmac.new(key, _key_data(prefix, ns, request.get("model")), hashlib.sha256)
    out = KEY_PREFIX + digest.hexdigest()[:32]
    if shards > 1:
        identity = (["key", shard_key] if shard_key is not None
                    else _shard_identity(request, prefix.shape))
        shard = 0
        if identity is not None:
            mac = _hmac_hex(key, ["rl-shard/1", ns, identity])
            shard = int(mac[:16], 16) % shards
        out += f"-s{shard}"
    return out


def prefix_fingerprint(request: Mapping[str, Any], *, provider: Provider | None = None) -> str:
    """SHA-256 (32 hex) of the stable prefix exactly in wire order: tool order counts.

    Unlike :func:`prompt_cache_key` it is not scoped or keyed: it compares the prefix of two
    requests, e.g. the turns of one conversation, to explain cache misses (prefix drift).
    """
    return _fingerprint(_prefix(request, provider))


def shards_for_rate(requests_per_minute: float, *, per_key_rpm: float = PER_KEY_RPM) -> int:
    """How many shards keep each key of one prefix under ``per_key_rpm`` (OpenAI: ≈ 15/min)."""
    if not math.isfinite(requests_per_minute) or requests_per_minute < 0 or per_key_rpm <= 0:
        raise ValueError("rates must be finite, requests_per_minute ≥ 0, per_key_rpm > 0")
    return max(1, min(MAX_SHARDS, math.ceil(requests_per_minute / per_key_rpm)))


# --- placement ------------------------------------------------------------------------------------

def _sorted_tools(tools: Sequence[Any]) -> list[Any]:
    names = [_tool_name(t) for t in tools]
    if len(set(names)) == len(names):
        return [t for _, t in sorted(zip(names, tools, strict=True), key=lambda p: p[0])]
    return sorted(tools, key=lambda t: (_tool_name(t), canonical_json(t)))


def prepare_openai_body(
    body: Mapping[str, Any],
    policy: Policy,
    *,
    api: Literal["chat", "responses"] | None = None,
    namespace: str | None = None,
    shards: int = 1,
    shard_key: str | None = None,
) -> dict[str, Any]:
    """A new body with ``prompt_cache_key`` set and, with ``stable_tool_order``, tools sorted.

    ``api`` is the endpoint (``/chat/completions`` → ``"chat"``, ``/responses`` →
    ``"responses"``); when None it is inferred and only bodies with ``messages``, or with
    Responses-only fields, get a key (an embeddings body looks like a bare Responses body).
    The key is never set over a caller's ``prompt_cache_key``, nor when the caller set the
    deprecated ``user`` field that the key replaces (the caller already chose the routing).
    Namespace and secret come from ``policy`` (``cache_namespace``, ``cache_secret``);
    ``namespace`` overrides the policy's, e.g. with a per-call tenant.
    """
    out = dict(body)
    if api is None:
        if "messages" in body:
            api = "chat"
        elif any(k in body for k in ("instructions", "previous_response_id", "conversation",
                                      "reasoning", "text", "tools")):
            api = "responses"
        else:
            return out
    tools = out.get("tools")
    if policy.stable_tool_order and isinstance(tools, (list, tuple)) and len(tools) > 1:
        out["tools"] = _sorted_tools(tools)
    if policy.prompt_cache_key and out.get("prompt_cache_key") is None and not out.get("user"):
        ns = namespace if namespace is not None else (policy.cache_namespace or "")
        out["prompt_cache_key"] = prompt_cache_key(
            out, namespace=ns, secret=_policy_secret(policy), shards=shards,
            provider="openai", shard_key=shard_key,
        )
    return out


#: The OpenAI paths whose bodies get a ``prompt_cache_key``, by the path's end, and their API.
CACHE_KEYED_PATHS: Mapping[str, Literal["chat", "responses"]] = {
    "/chat/completions": "chat", "/responses": "responses",
}


def keyed_api(path: str) -> Literal["chat", "responses"] | None:
    """The API of an OpenAI ``path`` whose bodies get a ``prompt_cache_key``, else ``None``."""
    return next((api for end, api in CACHE_KEYED_PATHS.items() if path.endswith(end)), None)


def rekeyed_for_model(body: dict[str, Any], asked: object, policy: Policy,
                      api: Literal["chat", "responses"]) -> dict[str, Any]:
    """``body``, already renamed to a fallback's model, with the ``prompt_cache_key`` this
    library set for the model ``asked`` made again for the fallback's (the key covers the
    model: the fallback's answers share a cache with its own traffic). A key the caller set
    stays."""
    key = body.get("prompt_cache_key")
    if key is None or not policy.prompt_cache_key:
        return body
    before = {name: value for name, value in body.items() if name != "prompt_cache_key"}
    ours = prepare_openai_body({**before, "model": asked}, policy, api=api,
                               namespace=policy.cache_namespace).get("prompt_cache_key")
    if ours != key:
        return body
    return prepare_openai_body(before, policy, api=api, namespace=policy.cache_namespace)


_MODEL_RE = re.compile(r"(opus|sonnet|haiku|fable|mythos)-(\d{1,2})(?:-(\d{1,2}))?(?!\d)")
_OLD_MODEL_RE = re.compile(r"claude-(\d)(?:-(\d))?-(opus|sonnet|haiku)")
# Minimum cacheable prefix in tokens (reference: caching-idempotency-telemetry.md §2).
_MIN_TOKENS: Mapping[tuple[str, int, int | None], int] = {
    ("opus", 5, None): 512, ("opus", 5, 5): 512, ("sonnet", 5, 5): 512, ("haiku", 5, 5): 512,
    ("fable", 5, None): 512, ("mythos", 5, None): 512,
    ("opus", 4, 8): 1024, ("sonnet", 5, None): 1024, ("sonnet", 4, 6): 1024,
    ("sonnet", 4, 5): 1024, ("opus", 4, 1): 1024, ("opus", 4, None): 1024,
    ("sonnet", 4, None): 1024,
    ("opus", 4, 7): 2048, ("haiku", 3, 5): 2048, ("haiku", 3, None): 2048,
    ("opus", 4, 6): 4096, ("opus", 4, 5): 4096, ("haiku", 4, 5): 4096,
}
_DEFAULT_MIN_TOKENS = 1024


def min_cacheable_tokens(model: str) -> int:
    """The smallest prefix an Anthropic model caches, in tokens (1 024 when unknown).

    Below it a request silently runs uncached. Providers change these; verify with usage.
    """
    name = model.lower().replace(".", "-")
    if "mythos-preview" in name:
        return 2048
    match = _MODEL_RE.search(name)
    if match:
        family, major = match.group(1), int(match.group(2))
        minor = int(match.group(3)) if match.group(3) else None
    else:
        old = _OLD_MODEL_RE.search(name)
        if not old:
            return _DEFAULT_MIN_TOKENS
        family, major = old.group(3), int(old.group(1))
        minor = int(old.group(2)) if old.group(2) else None
    found = _MIN_TOKENS.get((family, major, minor))
    if found is None:
        found = _MIN_TOKENS.get((family, major, None), _DEFAULT_MIN_TOKENS)
    return found


def _has_breakpoint(body: Mapping[str, Any]) -> bool:
    if body.get("cache_control") is not None:
        return True
    system = body.get("system")
    blocks: list[Any] = [*_items(body.get("tools")), *_items(system)]
    for message in _items(body.get("messages")):
        if isinstance(message, Mapping):
            blocks.extend(_items(message.get("content")))
    return any(_is_marked(b) for b in blocks)


def _prefix_chars(segs: Sequence[_Segment]) -> int:
    total = 0
    for s in segs:
        total += len(s.text) if s.text is not None else len(canonical_json(s.obj))
    return total


def prepare_anthropic_body(body: Mapping[str, Any], policy: Policy) -> dict[str, Any]:
    """A new body with a ``cache_control`` breakpoint at the end of the stable prefix.

    The breakpoint goes on the last system block (a string ``system`` becomes one text block,
    which the API treats the same), else on the last tool. It is added only when the caller
    set no breakpoint anywhere and no top-level ``cache_control`` (so the 4-breakpoint limit
    holds: we add one to none), and when the prefix, estimated at 3 characters per token,
    reaches :func:`min_cacheable_tokens` for the model. With ``stable_tool_order`` tools are
    sorted by name, unless a caller breakpoint sits on a tool (moving it would change what the
    caller chose to cache).
    """
    out = dict(body)
    tools = out.get("tools")
    if policy.stable_tool_order and isinstance(tools, (list, tuple)) and len(tools) > 1 \
            and not any(_is_marked(t) for t in tools):
        out["tools"] = _sorted_tools(tools)
    if not policy.cache_breakpoint or _has_breakpoint(out):
        return out
    head = _head(out, "messages")
    model = out.get("model")
    minimum = min_cacheable_tokens(model if isinstance(model, str) else "")
    if not head or _prefix_chars(head) / _CHARS_PER_TOKEN < minimum:
        return out
    system = out.get("system")
    if isinstance(system, str) and system:
        out["system"] = [{"type": "text", "text": system, "cache_control": dict(_EPHEMERAL)}]
    elif isinstance(system, (list, tuple)) and system and isinstance(system[-1], Mapping):
        out["system"] = [*system[:-1], {**system[-1], "cache_control": dict(_EPHEMERAL)}]
    else:
        tools = out.get("tools")
        if isinstance(tools, (list, tuple)) and tools and isinstance(tools[-1], Mapping):
            out["tools"] = [*tools[:-1], {**tools[-1], "cache_control": dict(_EPHEMERAL)}]
    return out
