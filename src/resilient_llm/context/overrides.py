"""The policy overrides of the enclosing ``@resilient`` scopes, and the policy they make.

Kept apart from :mod:`.scope` (which builds the scopes) so that :mod:`.tools` can read the
policy in force without importing the decorator that may wrap tools.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

from .._policy import Policy

__all__ = ["OVERRIDES", "Overrides", "effective_policy", "freeze", "merged"]

# Each override is (field, hashable form, original value); sorted by field.
Overrides = tuple[tuple[str, Any, Any], ...]
OVERRIDES: contextvars.ContextVar[Overrides] = contextvars.ContextVar(
    "resilient_llm_overrides", default=()
)
_derived: dict[tuple[int, tuple[tuple[str, Any], ...]], tuple[Policy, Policy]] = {}


def freeze(value: Any) -> Any:
    """``value`` in a hashable form (mappings and sequences become sorted tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def effective_policy(base: Policy) -> Policy:
    """``base`` with the overrides of every enclosing ``@resilient`` scope applied (cached)."""
    overrides = OVERRIDES.get()
    if not overrides:
        return base
    key = (id(base), tuple((name, frozen) for name, frozen, _ in overrides))
    hit = _derived.get(key)
    if hit is not None and hit[0] is base:
        return hit[1]
    derived = base.replace(**{name: value for name, _, value in overrides})
    if len(_derived) > 1024:
        _derived.clear()
    _derived[key] = (base, derived)
    return derived


def merged(changes: Overrides) -> Overrides:
    """The overrides in force inside a scope that adds ``changes`` to the enclosing ones."""
    if not changes:
        return OVERRIDES.get()
    combined = {name: (frozen, value) for name, frozen, value in OVERRIDES.get()}
    combined.update({name: (frozen, value) for name, frozen, value in changes})
    return tuple((name, *combined[name]) for name in sorted(combined))
