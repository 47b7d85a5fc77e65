"""Stored outcomes: how a side effect's error is recorded in a ledger and raised again."""

from __future__ import annotations

import json
import sys
from typing import Any

from .._errors import SideEffectFailed

__all__ = ["decode_error", "encode_error"]


# --- stored outcomes ----------------------------------------------------------------------------


def encode_error(exc: BaseException) -> str:
    cls = type(exc)
    args: list[Any] = list(exc.args)
    try:
        json.dumps(args, allow_nan=False)
    except (TypeError, ValueError):
        args = [str(exc)]
    return json.dumps({"type": f"{cls.__module__}:{cls.__qualname__}", "args": args})


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
    exc: BaseException | None = None
    if isinstance(found, type) and issubclass(found, Exception):
        try:
            exc = found(*args)
        except Exception:
            exc = None
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
