"""OpenAI wire knowledge: chat-completion chunks, Responses API events, errors, rate limits.

``x-ratelimit-*`` headers: see :func:`rate_limits` (resets are Go durations such as ``6m0s``;
Azure OpenAI sends the same names with integer seconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..engine.classify import classify_error_body
from ..engine.pressure import RateLimits as RateLimit
from ._numbers import count, parse_go_duration
from ._sse import StreamScanner

__all__ = ["OPENAI", "RATE_LIMIT_DIMENSIONS", "OpenAIWire", "RateLimit", "rate_limits"]

#: The ``object`` of the stream chunks this wire judges (chat and legacy completions).
_CHUNK_OBJECTS = ("chat.completion.chunk", "text_completion")
_DELTA_OUTPUT_KEYS = ("tool_calls", "function_call", "refusal", "reasoning_content", "audio")


class OpenAIWire:
    """Chat completions end with ``data: [DONE]``, but are complete once every choice carried a
    ``finish_reason``; Responses streams end (and complete) with ``response.completed``."""

    name = "openai"

    def inspect(self, event: str | None, data: str, scanner: StreamScanner) -> None:
        if scanner.opaque:
            return  # another endpoint's stream: the SDK reads it as it comes
        if data == "[DONE]":
            scanner.terminal = True
            return
        obj = scanner.parse(data)
        if obj is None:
            return
        if not isinstance(obj, Mapping):
            scanner.unknown()
            return
        kind = obj.get("type")
        if isinstance(kind, str) and kind.startswith(("response.", "error")):
            scanner.recognised()
            self._responses_event(kind, obj, scanner)
            return
        if obj.get("error") and not obj.get("choices"):
            scanner.recognised()
            scanner.failure = classify_error_body(None, obj)
            scanner.error_event = obj
            return
        if "choices" not in obj and obj.get("object") not in _CHUNK_OBJECTS:
            # Transcriptions, speech, images, Assistants runs: events of other kinds.
            scanner.unknown()
            return
        scanner.recognised()
        usage = obj.get("usage")
        if usage:
            scanner.usage = usage
        choices = obj.get("choices")
        if not isinstance(choices, list):  # a hostile or broken event: nothing to learn
            return
        for choice in choices:
            if not isinstance(choice, Mapping):
                continue
            index = _note_finish(choice, scanner)
            delta = choice.get("delta")
            if not isinstance(delta, Mapping):
                text = choice.get("text")  # a legacy completion's chunk: output, never resumed
                if isinstance(text, str) and text:
                    scanner.output(("legacy", index), "other", text)
                continue
            content = delta.get("content")
            if isinstance(content, str) and content:
                scanner.add_text(content, ("text", index))
            elif any(delta.get(key) for key in _DELTA_OUTPUT_KEYS):
                _other_output(index, delta, scanner)

    @staticmethod
    def _responses_event(kind: str, obj: Mapping[str, Any], scanner: StreamScanner) -> None:
        if kind == "error":
            scanner.failure = classify_error_body(None, {"error": obj})
        elif kind == "response.failed":
            response = obj.get("response")
            error = response.get("error") if isinstance(response, Mapping) else None
            error = error or {"type": "server_error"}
            scanner.failure = classify_error_body(None, {"error": error})
        elif kind in ("response.completed", "response.incomplete"):
            scanner.terminal = True
            response = obj.get("response")
            if isinstance(response, Mapping) and response.get("usage"):
                scanner.usage = response["usage"]
        elif kind in ("response.created", "response.output_item.added"):
            _note_id(kind, obj, scanner)
        elif kind.endswith(".delta"):
            slot = obj.get("output_index", 0)
            slot = slot if isinstance(slot, int) else 0
            delta = obj.get("delta")
            if kind == "response.output_text.delta" and isinstance(delta, str):
                scanner.add_text(delta, slot)
            else:
                scanner.output(slot, "other", "")
        sequence = obj.get("sequence_number")
        if isinstance(sequence, int):
            scanner.sequence = sequence


OPENAI = OpenAIWire()


def _other_output(index: int, delta: Mapping[str, Any], scanner: StreamScanner) -> None:
    """Chat output that is not content: tool-call arguments (resumable), anything else not."""
    calls = delta.get("tool_calls")
    if not isinstance(calls, list) or any(delta.get(k) for k in _DELTA_OUTPUT_KEYS[1:]):
        scanner.output(("other", index), "other", "")
        return
    for call in calls:
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        name, arguments = function.get("name"), function.get("arguments")
        scanner.output(("tool", index, call.get("index", 0)), "tool",
                       arguments if isinstance(arguments, str) else "",
                       name if isinstance(name, str) else None)


def _note_id(kind: str, obj: Mapping[str, Any], scanner: StreamScanner) -> None:
    """Keep the Responses stream's response id and first output item id."""
    name, key = ("response", "response") if kind == "response.created" else ("item", "item")
    if name in scanner.ids:
        return
    value = obj.get(key)
    ident = value.get("id") if isinstance(value, Mapping) else None
    if isinstance(ident, str):
        scanner.ids[name] = ident


def _note_finish(choice: Mapping[str, Any], scanner: StreamScanner) -> int:
    """Track which chat choices carried their ``finish_reason``: the stream is finished once
    every choice seen did (``n`` > 1 streams interleave their choices). Returns the index."""
    index = choice.get("index", 0)
    if not isinstance(index, int):
        index = 0
    done = bool(choice.get("finish_reason")) or scanner.choices.get(index, False)
    scanner.choices[index] = done
    scanner.finished = all(scanner.choices.values())
    return index


# --- rate-limit headers ---------------------------------------------------------------------

#: Dimensions of ``x-ratelimit-{limit,remaining,reset}-{dimension}``, keyed by result name.
RATE_LIMIT_DIMENSIONS: Mapping[str, str] = {
    "requests": "requests",
    "tokens": "tokens",
    "project_tokens": "project-tokens",
}


def rate_limits(headers: Mapping[str, str]) -> dict[str, RateLimit]:
    """Every rate-limit dimension present in an OpenAI (or Azure OpenAI) response's headers.

    ``headers`` must be case-insensitive (``httpx2.Headers``) or lower-case. ``reset`` is the
    Go duration (``1s``, ``6m0s``, ``12ms``, ``1h2m3.5s``) or plain seconds until the bucket is
    back to its initial state, which is not necessarily the wait for one more request. A
    dimension with a missing or non-count limit/remaining (Azure's ``-1``) is left out, and an
    unreadable reset counts as 0: a garbled header must never break a call.
    """
    found: dict[str, RateLimit] = {}
    for name, suffix in RATE_LIMIT_DIMENSIONS.items():
        limit_name = f"x-ratelimit-limit-{suffix}"
        remaining_name = f"x-ratelimit-remaining-{suffix}"
        limit = count(headers.get(limit_name), limit_name)
        remaining = count(headers.get(remaining_name), remaining_name)
        if limit is None or remaining is None or limit <= 0:
            continue
        raw_reset = headers.get(f"x-ratelimit-reset-{suffix}")
        reset = parse_go_duration(raw_reset) if raw_reset is not None else None
        found[name] = RateLimit(limit=limit, remaining=min(remaining, limit), reset=reset or 0.0)
    return found
