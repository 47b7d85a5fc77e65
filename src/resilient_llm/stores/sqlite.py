"""The SQLite ledger: durable on one host, safe across threads and processes.

Every decision runs in one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock
before reading, so two processes can never both see a key as free. The database runs in WAL
mode (readers never block the writer) with ``synchronous=FULL``: a recorded outcome survives
a power cut, which is the point of a ledger. Leases are measured on the host's wall clock
(``time.time``), the one clock every process on the host shares.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from .._errors import IdempotencyStoreUnavailable
from . import DEFAULT_RETENTION, Begin

__all__ = ["SQLiteLedger"]

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resilient_llm_idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    token TEXT,
    attempt INTEGER NOT NULL,
    lease_until REAL NOT NULL,
    payload TEXT,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS resilient_llm_idempotency_expires
    ON resilient_llm_idempotency (expires_at);
CREATE TABLE IF NOT EXISTS resilient_llm_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""


class SQLiteLedger:
    """A ledger in a SQLite file (``RESILIENT_LLM_IDEMPOTENCY_STORE=sqlite:///PATH``).

    ``busy_timeout`` bounds how long a call waits for another process's write lock before the
    store counts as unavailable. ``now`` is the store's clock (seconds, shared by every
    process on the host); tests inject one to expire leases without sleeping.
    """

    blocking = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention: float = DEFAULT_RETENTION,
        busy_timeout: float = 10.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        path = os.fspath(path)
        if path in ("", ":memory:") or path.startswith("file::memory:"):
            raise ValueError(
                "an idempotency ledger needs a file: in-memory SQLite is per connection"
            )
        self._path = path
        self._retention = retention
        self._busy_timeout = busy_timeout
        self._now = now
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._secret: bytes | None = None
        self._closed = False

    # --- connections --------------------------------------------------------------------------

    def _describe(self) -> str:
        return f"sqlite:///{self._path}"

    def _unavailable(self, exc: BaseException) -> IdempotencyStoreUnavailable:
        return IdempotencyStoreUnavailable(
            f"idempotency store {self._describe()} is unavailable "
            f"({type(exc).__name__}: {exc})"
        )

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise IdempotencyStoreUnavailable(f"idempotency store {self._describe()} is closed")
        cached = getattr(self._local, "conn", None)
        if cached is not None and cached[0] == os.getpid():
            conn: sqlite3.Connection = cached[1]
            return conn
        parent = Path(self._path).resolve().parent
        if not parent.is_dir():
            raise IdempotencyStoreUnavailable(
                f"idempotency store {self._describe()} is unavailable: directory {parent} "
                "does not exist"
            )
        # Two processes opening a new ledger at once race to switch it to WAL and create the
        # schema; SQLite answers "database is locked" there without consulting the busy
        # handler, so the set-up is retried (briefly, within busy_timeout) before giving up.
        give_up_at = time.monotonic() + self._busy_timeout
        pause = 0.005
        while True:
            try:
                conn = sqlite3.connect(self._path, timeout=self._busy_timeout,
                                       isolation_level=None, check_same_thread=False)
                try:
                    conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("PRAGMA synchronous = FULL")
                    conn.executescript(_SCHEMA)
                except BaseException:
                    conn.close()
                    raise
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > give_up_at:
                    raise self._unavailable(exc) from exc
                time.sleep(pause)
                pause = min(pause * 2, 0.2)
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
        self._local.conn = (os.getpid(), conn)
        with self._lock:
            self._connections.append(conn)
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        try:
            yield conn
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            with self._transaction() as conn:
                return work(conn)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    # --- the ledger ---------------------------------------------------------------------------

    def begin(self, key: str, fingerprint: str, *, lease: float, takeover: bool) -> Begin:
        """See :meth:`~resilient_llm.stores.Ledger.begin`."""

        def work(conn: sqlite3.Connection) -> Begin:
            now = self._now()
            row = conn.execute(
                "SELECT fingerprint, state, lease_until, payload, attempt, expires_at "
                "FROM resilient_llm_idempotency WHERE key = ?", (key,),
            ).fetchone()
            if row is not None and row[5] <= now:
                conn.execute("DELETE FROM resilient_llm_idempotency WHERE key = ?", (key,))
                row = None
            if row is None:
                token = secrets.token_hex(16)
                conn.execute(
                    "INSERT INTO resilient_llm_idempotency (key, fingerprint, state, token, "
                    "attempt, lease_until, payload, expires_at) "
                    "VALUES (?, ?, 'running', ?, 1, ?, NULL, ?)",
                    (key, fingerprint, token, now + lease, now + self._retention),
                )
                return Begin("run", token=token, attempt=1)
            stored_fp, state, lease_until, payload, attempt, _ = row
            if stored_fp != fingerprint:
                return Begin("conflict", attempt=attempt)
            if state != "running":
                return Begin("replay", succeeded=state == "succeeded", payload=payload,
                             attempt=attempt)
            if lease_until > now:
                return Begin("wait", attempt=attempt)
            if not takeover:
                return Begin("expired", attempt=attempt)
            token = secrets.token_hex(16)
            conn.execute(
                "UPDATE resilient_llm_idempotency SET token = ?, attempt = attempt + 1, "
                "lease_until = ? WHERE key = ?", (token, now + lease, key),
            )
            return Begin("run", token=token, attempt=attempt + 1)

        return self._run(work)

    def _finish(self, key: str, token: str, state: str | None, payload: str | None) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            if state is None:
                cur = conn.execute(
                    "DELETE FROM resilient_llm_idempotency WHERE key = ? AND token = ? "
                    "AND state = 'running'", (key, token),
                )
            else:
                now = self._now()
                cur = conn.execute(
                    "UPDATE resilient_llm_idempotency SET state = ?, payload = ?, token = NULL, "
                    "lease_until = 0, expires_at = ? "
                    "WHERE key = ? AND token = ? AND state = 'running'",
                    (state, payload, now + self._retention, key, token),
                )
            return cur.rowcount == 1

        return self._run(work)

    def complete(self, key: str, token: str, result: str) -> bool:
        """See :meth:`~resilient_llm.stores.Ledger.complete`."""
        return self._finish(key, token, "succeeded", result)

    def fail(self, key: str, token: str, error: str, *, retryable: bool) -> bool:
        """See :meth:`~resilient_llm.stores.Ledger.fail`."""
        return self._finish(key, token, None if retryable else "failed", error)

    def abandon(self, key: str, token: str) -> None:
        """See :meth:`~resilient_llm.stores.Ledger.abandon`."""
        self._run(lambda conn: conn.execute(
            "UPDATE resilient_llm_idempotency SET lease_until = 0 "
            "WHERE key = ? AND token = ? AND state = 'running'", (key, token),
        ))

    def forget(self, key: str) -> None:
        """See :meth:`~resilient_llm.stores.Ledger.forget`."""
        self._run(lambda conn: conn.execute(
            "DELETE FROM resilient_llm_idempotency WHERE key = ?", (key,)
        ))

    def purge(self) -> int:
        """Delete outcomes older than the retention period; returns how many went."""
        now = self._now()
        return self._run(lambda conn: conn.execute(
            "DELETE FROM resilient_llm_idempotency WHERE expires_at <= ?", (now,)
        ).rowcount)

    def secret(self) -> bytes:
        """See :meth:`~resilient_llm.stores.Ledger.secret`: created once, kept in the file."""
        if self._secret is None:

            def work(conn: sqlite3.Connection) -> str:
                conn.execute(
                    "INSERT OR IGNORE INTO resilient_llm_meta (name, value) VALUES ('secret', ?)",
                    (secrets.token_hex(32),),
                )
                row = conn.execute(
                    "SELECT value FROM resilient_llm_meta WHERE name = 'secret'"
                ).fetchone()
                return str(row[0])

            self._secret = bytes.fromhex(self._run(work))
        return self._secret

    def close(self) -> None:
        """Close every connection this ledger opened, in any thread."""
        self._closed = True
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with suppress(sqlite3.Error):
                conn.close()

    def __repr__(self) -> str:
        return f"SQLiteLedger({self._path!r})"

