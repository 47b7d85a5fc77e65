"""OpenAI wire knowledge: chat-completion chunks, Responses API events, error events."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._classify import classify_error_body
from ._sse import StreamScanner

__all__ = ["OPENAI", "OpenAIWire"]

_DELTA_OUTPUT_KEYS = ("tool_calls", "function_call", "refusal", "reasoning_content", "audio")


class OpenAIWire:
    """Chat completions end with ``data: [DONE]``; Responses streams with ``response.completed``."""

    name = "openai"

    def inspect(self, event: str | None, data: str, scanner: StreamScanner) -> None:
        if data == "[DONE]":
            scanner.terminal = True
            return
        obj = scanner.parse(data)
        if obj is None:
            return
        if not isinstance(obj, Mapping):
            return
        kind = obj.get("type")
        if isinstance(kind, str) and kind.startswith(("response.", "error")):
            self._responses_event(kind, obj, scanner)
            return
        if obj.get("error") and not obj.get("choices"):
            scanner.failure = classify_error_body(None, obj)
            return
        usage = obj.get("usage")
        if usage:
            scanner.usage = usage
        choices = obj.get("choices")
        if not choices:
            return
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, Mapping) else None
            if not isinstance(delta, Mapping):
                continue
            content = delta.get("content")
            if content:
                scanner.committed = True
                scanner.add_text(content)
            elif any(delta.get(key) for key in _DELTA_OUTPUT_KEYS):
                scanner.committed = True

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
        elif kind.endswith(".delta"):
            scanner.committed = True
            if kind == "response.output_text.delta":
                delta = obj.get("delta")
                if isinstance(delta, str):
                    scanner.add_text(delta)


OPENAI = OpenAIWire()
