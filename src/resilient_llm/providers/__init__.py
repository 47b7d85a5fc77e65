"""Wire knowledge of each provider: stream events, error shapes, usage. No SDK imports here."""

from __future__ import annotations

from ._sse import StreamScanner, Wire
from .anthropic import ANTHROPIC
from .openai import OPENAI

__all__ = ["ANTHROPIC", "OPENAI", "StreamScanner", "Wire", "wire_for"]


def wire_for(name: str) -> Wire:
    """The wire knowledge for ``openai`` or ``anthropic``."""
    if name == "openai":
        return OPENAI
    if name == "anthropic":
        return ANTHROPIC
    raise ValueError(f"unknown provider {name!r}: expected 'openai' or 'anthropic'")
