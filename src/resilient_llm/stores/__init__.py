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
  cancelled) and the caller did not ask to take it over: the outcome is unknown;
- ``lost``: the store lost its history (a SQLite file truncated or replaced, Redis restarted
  without persistence or flushed), detected by an epoch marker written at first use; asked
  only without takeover (at-most-once), which then fails closed.

``@side_effect`` runs every call through :func:`~.ledger.within` with the time left of the
caller's deadline: the SQLite and Redis stores end their waits (locks, sockets) by then.
Durability is the store's: SQLite needs a file on a local disk that is not swapped under a
running ledger; Redis needs persistence (``appendonly yes``; ``appendfsync always`` for an
outcome that must survive a crash of Redis itself). See ``docs/security.md``.

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

from .._instances import Instances
from .._urls import redact_url
from .ledger import DEFAULT_RETENTION, Action, Begin, Ledger
from .memory import MemoryLedger

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


def open_store(url: str) -> Ledger:
    """The process-wide ledger for ``url`` (``memory``, ``sqlite:///PATH``, ``redis://...``).

    One instance per URL, so every ``@side_effect`` that names the same store shares its
    connections (and, for ``memory``, its entries). ``sqlite:///rel/path.db`` is relative to
    the working directory, ``sqlite:////abs/path.db`` is absolute (the SQLAlchemy convention).
    """
    return _OPEN.get(url)


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


_OPEN: Instances[str, Ledger] = Instances(_create)


def close_stores() -> None:
    """Close every ledger :func:`open_store` opened (tests, or before forking workers)."""
    for ledger in _OPEN.drain():
        ledger.close()
