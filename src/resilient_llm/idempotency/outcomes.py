"""Stored outcomes: how a side effect's error is recorded in a ledger and raised again."""

from __future__ import annotations

import json
import sys
from typing import Any

from .._errors import SideEffectFailed

__all__ = ["decode_error", "encode_error"]


# --- stored outcomes ----------------------------------------------------------------------------


def encode_error(exc: BaseException) -> str:
    """The error as JSON: its class, its ``args`` and the attributes JSON can hold."""
    cls = type(exc)
    args: list[Any] = list(exc.args)
    if not _storable(args):
        args = [str(exc)]
    attrs = {name: value for name, value in vars(exc).items()
             if not name.startswith("__") and _storable(value)}
    return json.dumps({"type": f"{cls.__module__}:{cls.__qualname__}", "args": args,
                       "attrs": attrs})


def _storable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def decode_error(payload: str | None, name: str) -> BaseException:
    """Rebuild a recorded error. Only classes already imported are used: nothing is imported."""
    try:
        data = json.loads(payload or "{}")
    except ValueError:
        data = {}
    type_name = str(data.get("type", "?"))
    args = data.get("args")
    args = args if isinstance(args, list) else []
    module_name, _, qualname = type_name.partition(":")
    found: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    attrs = data.get("attrs")
    exc: BaseException | None = None
    if isinstance(found, type) and issubclass(found, Exception):
        exc = _rebuilt(found, args, attrs if isinstance(attrs, dict) else {})
    if exc is None:
        exc = SideEffectFailed(
            f"side effect {name!r} failed earlier with {type_name}; that failure is replayed",
            error_type=type_name, error_args=args,
        )
    if hasattr(exc, "add_note"):
        exc.add_note(
            f"replayed by resilient-llm: side effect {name!r} already failed with this error "
            "under the same idempotency key"
        )
    return exc


def _rebuilt(cls: type[Exception], args: list[Any], attrs: dict[str, Any]) -> Exception | None:
    """An error of ``cls`` with ``args`` and ``attrs``, its constructor not run: a custom
    ``__init__`` would take the recorded message for its own arguments (``code`` became
    "card declined (insufficient_funds)"), and one with required keyword arguments could not
    be called at all. Attributes JSON could not hold are missing; ``None`` if it cannot be
    made."""
    try:
        error = cls.__new__(cls, *args)
        error.args = tuple(args)
    except Exception:
        return None
    for name, value in attrs.items():
        try:
            setattr(error, name, value)
        except Exception:  # a read-only property, a slot it lacks: the rest still counts
            continue
    return error
