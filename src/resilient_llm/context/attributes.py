"""``attributes(feature=..., tenant=...)``: who a call is for, on its spans, metrics and cost.

The attributes live in a contextvar, so they follow the code that makes the call (threads via
``contextvars.copy_context``, asyncio and trio tasks) without being passed around. Nested scopes
merge, the inner value winning. Keys and values are checked when the scope is created, because a
bad attribute found later, inside a listener, could only be dropped silently.

Every value becomes a metric attribute, so each distinct value is a new time series: use
bounded sets (feature names, tenant ids), never request ids or user input.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from .scoping import ContextScope, decorate

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_VALUE_LENGTH",
    "Attributes",
    "attributes",
    "current_attributes",
]

F = TypeVar("F", bound=Callable[..., Any])

#: At most this many attributes are in force at once (merged across nested scopes).
MAX_ATTRIBUTES = 16
#: The longest accepted value, in characters.
MAX_VALUE_LENGTH = 256

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")
# Namespaces resilient-llm writes itself: a user attribute there would overwrite a fact.
_RESERVED = ("gen_ai.", "server.", "error.", "resilient_llm.", "otel.")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_ATTRIBUTES: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "resilient_llm_attributes", default=_EMPTY
)


def current_attributes() -> Mapping[str, str]:
    """The attributes in force here (read-only; empty outside every scope)."""
    return _ATTRIBUTES.get()


def _validate(values: Mapping[str, Any]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in values.items():
        if not _KEY.fullmatch(key):
            raise ValueError(
                f"attribute name {key!r} is not accepted: use 1-64 characters, letters, digits, "
                "'_' and '.', starting with a letter or '_' (e.g. feature, app.tenant)"
            )
        if key.startswith(_RESERVED):
            raise ValueError(
                f"attribute name {key!r} is in a namespace resilient-llm writes itself "
                f"({', '.join(_RESERVED)}); choose another name, e.g. app.{key.rsplit('.', 1)[-1]}"
            )
        if not isinstance(value, str):
            raise ValueError(
                f"attribute {key!r} must be a string, not {type(value).__name__}: metric "
                "attributes are compared as strings, so convert it explicitly (str(...))"
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise ValueError(
                f"attribute {key!r} is {len(value)} characters long; at most "
                f"{MAX_VALUE_LENGTH} are accepted (each distinct value is a metric series)"
            )
        checked[key] = value
    return checked


def _merge(outer: Mapping[str, str], inner: Mapping[str, str]) -> Mapping[str, str]:
    if not inner:
        return outer
    merged = {**outer, **inner}
    if len(merged) > MAX_ATTRIBUTES:
        raise ValueError(
            f"{len(merged)} attributes would be in force; at most {MAX_ATTRIBUTES} are accepted "
            "(each one multiplies the number of metric series)"
        )
    return MappingProxyType(merged)


class Attributes(ContextScope):
    """The scope behind :func:`attributes`: a ``with`` / ``async with`` block or a decorator."""

    __slots__ = ("_tokens", "_values")

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values: Mapping[str, str] = MappingProxyType(_validate(values))
        self._tokens: list[contextvars.Token[Mapping[str, str]]] = []

    @property
    def values(self) -> Mapping[str, str]:
        """The attributes this scope adds."""
        return self._values

    def _enter(self) -> None:
        self._tokens.append(_ATTRIBUTES.set(_merge(_ATTRIBUTES.get(), self._values)))

    def _exit(self) -> None:
        _ATTRIBUTES.reset(self._tokens.pop())

    def __call__(self, func: F) -> F:
        values = self._values
        return decorate(func, lambda: Attributes(values))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"attributes({shown})"


def attributes(**values: str) -> Attributes:
    """Attach ``values`` (e.g. ``feature="search", tenant="acme"``) to every call inside.

    They appear on each call's span, on its metric points (so duration, tokens and cost can be
    split by them) and in its log lines and capture records. Use as ``with``, ``async with``
    or a decorator on sync or async functions. Raises ``ValueError`` at once for a key that is
    not a plain dotted name or is reserved, a value that is not a string or is longer than
    ``MAX_VALUE_LENGTH``, or more than ``MAX_ATTRIBUTES`` in force.
    """
    return Attributes(values)
