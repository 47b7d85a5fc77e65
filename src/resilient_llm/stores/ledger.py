"""The ledger protocol and the types every store shares (its own module, so the backends
import it without importing the package that imports them)."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from .._errors import IdempotencyStoreUnavailable

__all__ = [
    "DEFAULT_RETENTION", "Action", "Begin", "Ledger", "decode_secret", "io_timeout", "within",
]

_T = TypeVar("_T")

Action = Literal["run", "wait", "replay", "conflict", "expired", "lost"]

#: How long a key's outcome is kept: 24 h, the window Stripe guarantees for its keys.
DEFAULT_RETENTION = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Begin:
    """What ``Ledger.begin`` decided for one key; see the module docstring for the actions."""

    action: Action
    #: Proof of ownership for ``complete``/``fail``/``abandon``; set only when ``action == "run"``.
    token: str | None = None
    #: For ``replay``: ``True`` if ``payload`` is a result, ``False`` if it is a recorded error.
    succeeded: bool = True
    #: For ``replay``: the stored JSON text.
    payload: str | None = None
    #: Executions started under this key so far (more than one after a lease takeover).
    attempt: int = 0
    #: For ``lost``: why the store no longer vouches for its history (in words, no secrets).
    detail: str = ""


@runtime_checkable
class Ledger(Protocol):
    """The one interface every idempotency store implements.

    Every method is atomic with respect to every other caller of the same store, including
    other threads and, for SQLite and Redis, other processes. Failures to reach the backend
    raise :class:`~resilient_llm.IdempotencyStoreUnavailable`.
    """

    #: ``True`` when calls do blocking I/O, so async callers move them to a worker thread.
    blocking: bool

    def begin(self, key: str, fingerprint: str, *, lease: float, takeover: bool) -> Begin:
        """Claim ``key`` for ``lease`` seconds, or report why not (see :class:`Begin`).

        ``takeover=True`` claims a key whose owner's lease expired (at-least-once); otherwise
        such a key answers ``expired`` (at-most-once).
        """
        ...

    def complete(self, key: str, token: str, result: str) -> bool:
        """Store the JSON ``result`` and release the lease; ``False`` if ``token`` lost the key."""
        ...

    def fail(self, key: str, token: str, error: str, *, retryable: bool) -> bool:
        """Record the JSON ``error`` for replay, or, when ``retryable``, free the key entirely."""
        ...

    def abandon(self, key: str, token: str) -> None:
        """End the lease now without an outcome: the next caller sees an expired lease."""
        ...

    def forget(self, key: str) -> None:
        """Delete everything known about ``key`` (after a human reviewed an unknown outcome)."""
        ...

    def secret(self) -> bytes:
        """A random secret created once per store and shared by all its users.

        Used to HMAC keys when no ``idempotency_secret`` is configured.
        """
        ...

    def close(self) -> None:
        """Release connections; the ledger may not be used afterwards."""
        ...


#: When the operation in progress must end (``time.monotonic()``), set by the caller's deadline.
_IO_END: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "resilient_llm_ledger_io_end", default=None
)


def within(end: float | None, op: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run the ledger operation ``op`` so that its I/O ends by ``end`` (``time.monotonic()``).

    ``@side_effect`` calls every store through this with the time left of the caller's
    deadline; the SQLite and Redis stores clip their lock waits and socket waits to it with
    :func:`io_timeout`. A store that ignores it still works, unbounded.
    """
    token = _IO_END.set(end)
    try:
        return op(*args, **kwargs)
    finally:
        _IO_END.reset(token)


def io_timeout(default: float) -> float:
    """How long a store may wait in the operation in progress: ``default``, clipped to the time
    left of the caller's deadline (``0.0`` when nothing is left)."""
    end = _IO_END.get()
    if end is None:
        return default
    return max(0.0, min(default, end - time.monotonic()))


def decode_secret(value: str, store: str) -> bytes:
    """The stored secret, or a clear error when someone edited it into something else."""
    try:
        secret = bytes.fromhex(value)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise IdempotencyStoreUnavailable(
            f"idempotency store {store} holds a corrupt secret (not 16+ bytes of hex); "
            "restore it, or set RESILIENT_LLM_IDEMPOTENCY_SECRET"
        )
    return secret
