"""Anthropic wire knowledge: Messages stream events, ``event: error`` inside a 200 stream."""

from __future__ import annotations

from collections.abc import Mapping

from .._classify import classify_error_body
from ._sse import StreamScanner

__all__ = ["ANTHROPIC", "AnthropicWire"]


class AnthropicWire:
    """Streams end with ``message_stop``; ``ping`` events keep the connection alive."""

    name = "anthropic"

    def inspect(self, event: str | None, data: str, scanner: StreamScanner) -> None:
        if event == "ping":
            return
        obj = scanner.parse(data)
        if not isinstance(obj, Mapping):
            return
        kind = event or obj.get("type")
        if kind == "error":
            scanner.failure = classify_error_body(None, obj)
        elif kind == "message_stop":
            scanner.terminal = True
        elif kind == "content_block_delta":
            scanner.committed = True
            delta = obj.get("delta")
            if isinstance(delta, Mapping) and delta.get("type") == "text_delta":
                text = delta.get("text")
                if isinstance(text, str):
                    scanner.add_text(text)
        elif kind == "message_start":
            message = obj.get("message")
            if isinstance(message, Mapping) and isinstance(message.get("usage"), Mapping):
                scanner.usage = dict(message["usage"])
        elif kind == "message_delta":
            usage = obj.get("usage")
            if isinstance(usage, Mapping):
                merged = dict(scanner.usage or {})
                merged.update({k: v for k, v in usage.items() if v is not None})
                scanner.usage = merged


ANTHROPIC = AnthropicWire()
