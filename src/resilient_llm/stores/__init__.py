"""Idempotency ledgers: one protocol, three stores.

A ledger records, per idempotency key, whether a side effect is running (under a lease), has
succeeded (with its JSON result) or has failed (with its JSON error). ``@side_effect`` drives it:

``begin(key, fingerprint)`` answers with one :class:`Begin` action:

- ``run``: the key was free (or its expired lease was taken over): execute, then call
  ``complete`` or ``fail`` with the returned ``token``;
- ``wait``: another execution holds a live lease: poll ``begin`` again later;
- ``replay``: a result or a non-retryable failure is stored: return it or raise it again;
- ``conflict``: the key is known with a different argument fingerprint;
- ``expired``: the owner's lease ran out before it recorded an outcome (it crashed or was
  cancelled) and the caller did not ask to take it over: the outcome is unknown.

Stores:

=====================  =================================  ===================================
URL                    class                              scope and notion of time
=====================  =================================  ===================================
``memory``             :class:`MemoryLedger`              one process; injected clock
``sqlite:///PATH``     :class:`~.sqlite.SQLiteLedger`      processes on one host (WAL); wall
                                                          clock of the host
``redis://HOST/DB``    :class:`~.redis.RedisLedger`        a fleet; leases expire on the Redis
                                                          server (``PX``), not on clients
=====================  =================================  ===================================

``import resilient_llm.stores`` imports neither ``sqlite3`` nor ``redis``: :func:`open_store`
loads a backend the first time its URL is used.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from .._urls import redact_url

__all__ = [
    "DEFAULT_RETENTION",
    "Action",
    "Begin",
    "Ledger",
    "MemoryLedger",
    "close_stores",
    "open_store",
    "redact_url",
]

Action = Literal["run", "wait", "replay", "conflict", "expired"]

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


_OPEN: dict[str, Ledger] = {}
_OPEN_LOCK = threading.Lock()


def open_store(url: str) -> Ledger:
    """The process-wide ledger for ``url`` (``memory``, ``sqlite:///PATH``, ``redis://...``).

    One instance per URL, so every ``@side_effect`` that names the same store shares its
    connections (and, for ``memory``, its entries). ``sqlite:///rel/path.db`` is relative to
    the working directory, ``sqlite:////abs/path.db`` is absolute (the SQLAlchemy convention).
    """
    with _OPEN_LOCK:
        ledger = _OPEN.get(url)
        if ledger is not None:
            return ledger
        ledger = _create(url)
        _OPEN[url] = ledger
        return ledger


def _create(url: str) -> Ledger:
    if url == "memory":
        return MemoryLedger()
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteLedger

        path = url[len("sqlite:///"):].split("?", 1)[0]
        return SQLiteLedger(path)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisLedger

        return RedisLedger(url)
    raise ValueError(
        f"unknown idempotency store {redact_url(url)!r}: expected memory, sqlite:///PATH "
        "or redis://HOST:PORT/DB"
    )


def close_stores() -> None:
    """Close every ledger :func:`open_store` opened (tests, or before forking workers)."""
    with _OPEN_LOCK:
        ledgers = list(_OPEN.values())
        _OPEN.clear()
    for ledger in ledgers:
        ledger.close()


# Imported last: the backend modules import ``Begin`` from this package.
from .memory import MemoryLedger  # noqa: E402
