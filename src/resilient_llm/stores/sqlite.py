"""The SQLite ledger: durable on one host, safe across threads and processes.

Every decision runs in one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock
before reading, so two processes can never both see a key as free. The database runs in WAL
mode (readers never block the writer) with ``synchronous=FULL``: a recorded outcome survives
a power cut, which is the point of a ledger. Leases are measured on the host's wall clock
(``time.time``), the one clock every process on the host shares.

Every wait (the write lock of another process, opening the file) ends by the caller's deadline:
``busy_timeout`` is clipped to what is left of it. A file that lost its history (truncated,
replaced, restored from an old backup) is detected by an epoch marker kept beside it
(``PATH.epoch``) and answered with ``lost``, so at-most-once side effects fail closed instead
of running again.
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
from .ledger import DEFAULT_RETENTION, Begin, decode_secret, io_timeout

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
        self._epoch: str | None = None
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
        busy = self._wait()
        give_up_at = time.monotonic() + busy
        pause = 0.005
        while True:
            try:
                conn = sqlite3.connect(self._path, timeout=busy,
                                       isolation_level=None, check_same_thread=False)
                try:
                    conn.execute(f"PRAGMA busy_timeout = {int(busy * 1000)}")
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

    def _wait(self) -> float:
        """How long the next lock wait may last: ``busy_timeout`` clipped to the deadline."""
        busy = io_timeout(self._busy_timeout)
        if busy <= 0:
            raise IdempotencyStoreUnavailable(
                f"idempotency store {self._describe()} was not asked: no time is left of the "
                "caller's deadline"
            )
        return busy

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            conn.execute(f"PRAGMA busy_timeout = {max(1, int(self._wait() * 1000))}")
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
            lost = None if takeover else self._lost_history(conn)
            if lost is not None:
                return Begin("lost", detail=lost)
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

    # --- the epoch marker ----------------------------------------------------------------------

    @property
    def marker_path(self) -> str:
        """The file beside the ledger that remembers its epoch (delete it to accept a loss)."""
        return self._path + ".epoch"

    def _lost_history(self, conn: sqlite3.Connection) -> str | None:
        """Why the file no longer holds the history it had, or ``None`` when it does.

        The epoch is a random id written at first use into the file and into a marker file
        beside it. A file truncated or replaced (a restore, a new volume) has no epoch or
        another one while the marker remains: the ledger lost its history.
        """
        row = conn.execute("SELECT value FROM resilient_llm_meta WHERE name = 'epoch'").fetchone()
        stored = None if row is None else str(row[0])
        try:
            with open(self.marker_path, encoding="ascii") as handle:
                marker: str | None = handle.read(64).strip() or None
        except FileNotFoundError:
            marker = None
        except OSError as exc:
            raise self._unavailable(exc) from exc
        if marker is None:  # first use (or a loss an operator accepted): adopt the epoch
            if stored is None:
                stored = secrets.token_hex(16)
                conn.execute(
                    "INSERT INTO resilient_llm_meta (name, value) VALUES ('epoch', ?)", (stored,)
                )
            self._write_marker(stored)
        elif stored != marker:
            return (f"its file holds {'no epoch' if stored is None else 'another epoch'} than "
                    f"the marker {self.marker_path} records (truncated, replaced or restored)")
        if self._epoch is not None and stored != self._epoch:
            return "its epoch changed while this process used it"
        self._epoch = stored
        return None

    def _write_marker(self, epoch: str) -> None:
        temporary = f"{self.marker_path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w", encoding="ascii") as handle:
                handle.write(epoch + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.marker_path)
        except OSError as exc:
            raise self._unavailable(exc) from exc

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

            self._secret = decode_secret(self._run(work), self._describe())
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
