"""Opt-in content attributes: the messages sent and received, as the GenAI conventions
shape them (``gen_ai.input.messages``, ``gen_ai.system_instructions``,
``gen_ai.output.messages``, JSON strings).

Only read when ``capture_content`` is on. Even then every credential value seen in a
credential header, and any string shaped like an API key or bearer token, is masked, and each
attribute is cut at 64 KiB.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .redact import redact_text
from .tap import Exchange

if TYPE_CHECKING:
    from .summary import Answer

__all__ = ["MAX_CONTENT", "content_attributes"]

#: Characters of one content attribute; longer ones are cut and end with "…".
MAX_CONTENT = 64 * 1024


def _clip(text: str) -> str:
    return text if len(text) <= MAX_CONTENT else text[:MAX_CONTENT] + "…"


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for item in content:
            if isinstance(item, Mapping):
                text = item.get("text")
                kind = item.get("type") or "unknown"
                if isinstance(text, str):
                    parts.append({"type": "text", "content": text})
                else:
                    parts.append({"type": str(kind)})
    return parts


def content_attributes(exchange: Exchange | None, answer: Answer) -> dict[str, str]:
    """``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON strings), credentials
    masked; only called when content capture is on."""
    out: dict[str, str] = {}
    body: Any = None
    if exchange is not None:
        raw = exchange.request_body()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
    if isinstance(body, Mapping):
        source = body.get("messages")
        if source is None and "input" in body:
            source = body["input"]
            if isinstance(source, str):
                source = [{"role": "user", "content": source}]
        messages = [{"role": str(message.get("role", "user")),
                     "parts": _parts(message.get("content"))}
                    for message in source or () if isinstance(message, Mapping)]
        if messages:
            out["gen_ai.input.messages"] = _clip(redact_text(
                json.dumps(messages, ensure_ascii=False)))
        system = body.get("system") or body.get("instructions")
        if system:
            out["gen_ai.system_instructions"] = _clip(redact_text(
                json.dumps(_parts(system), ensure_ascii=False)))
    output: list[dict[str, Any]] = []
    if answer.output_text is not None:
        output.append({"role": "assistant", "parts": _parts(answer.output_text)})
    elif exchange is not None:
        reply = exchange.response_json()
        if isinstance(reply, Mapping):
            for choice in reply.get("choices") or ():
                message = choice.get("message") if isinstance(choice, Mapping) else None
                if isinstance(message, Mapping):
                    output.append({"role": "assistant", "parts": _parts(message.get("content")),
                                   "finish_reason": choice.get("finish_reason")})
            if isinstance(reply.get("content"), list):  # Anthropic
                output.append({"role": "assistant", "parts": _parts(reply["content"]),
                               "finish_reason": reply.get("stop_reason")})
            output.extend(  # Responses API
                {"role": "assistant", "parts": _parts(item.get("content"))}
                for item in reply.get("output") or ()
                if isinstance(item, Mapping) and item.get("type") == "message")
    if output:
        out["gen_ai.output.messages"] = _clip(redact_text(
            json.dumps(output, ensure_ascii=False)))
    return out
