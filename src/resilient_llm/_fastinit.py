"""A faster ``__init__`` for the frozen, slotted dataclasses built on every call.

The dataclass-generated ``__init__`` of a frozen class sets each field through
``object.__setattr__`` (a global lookup, an attribute lookup and a call per field). Writing
through the slots' member descriptors directly is about twice as fast and bypasses the frozen
``__setattr__`` exactly as ``object.__setattr__`` does. Same parameters, defaults, equality,
hash, repr and immutability.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["fast_frozen_init"]

C = TypeVar("C", bound=type)


def fast_frozen_init(cls: C) -> C:
    """Replace ``cls.__init__`` with one that writes through the slot descriptors.

    Classes with default factories, keyword-only fields or ``__post_init__`` keep theirs.
    """
    fields = [f for f in dataclasses.fields(cls) if f.init]
    if any(f.default_factory is not dataclasses.MISSING or f.kw_only for f in fields) \
            or hasattr(cls, "__post_init__"):
        return cls  # not covered: keep the generated __init__
    ns: dict[str, Any] = {}
    params, body = [], []
    for i, f in enumerate(fields):
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            ns[f"_d{i}"] = f.default
            params.append(f"{f.name}=_d{i}")
        ns[f"_s{i}"] = cls.__dict__[f.name].__set__
        body.append(f"    _s{i}(self, {f.name})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n", ns)
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = {f.name: f.type for f in fields} | {"return": None}
    cls.__init__ = init  # type: ignore[misc]
    return cls
