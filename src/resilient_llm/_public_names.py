"""Public names show the package a user imports them from, not the private module behind it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def show_as_package(package: str, namespace: Mapping[str, Any], names: Iterable[str]) -> None:
    """Set ``__module__`` of each name defined inside ``package`` to ``package`` itself.

    Why: reprs, tracebacks, pickles and API docs then say ``resilient_llm.Policy`` — the
    import path that is promised — instead of a private module path that may move.
    """
    inside = package + "."
    for name in names:
        obj = namespace[name]
        if getattr(obj, "__module__", "").startswith(inside):
            obj.__module__ = package
