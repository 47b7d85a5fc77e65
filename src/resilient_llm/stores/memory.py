"""The in-process ledger: a cachetools ``TTLCache`` behind a lock.

Right for one process (tests, scripts, a single worker). It forgets everything on restart, so
a replayed step after a crash runs again: use SQLite or Redis when that matters.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

from cachetools import TTLCache

from .._clock import SYSTEM_CLOCK, Clock
from .ledger import DEFAULT_RETENTION, Begin

__all__ = ["MemoryLedger"]


@dataclass(slots=True)
class _Entry:
    state: str  # running | succeeded | failed
    fingerprint: str
    token: str | None
    lease_until: float
    payload: str | None
    attempt: int


class MemoryLedger:
    """A ledger in this process's memory (``RESILIENT_LLM_IDEMPOTENCY_STORE=memory``).

    Leases are measured on ``clock`` (inject a ``FakeClock`` in tests). At most ``maxsize``
    keys are kept; past that the least recently used outcome is dropped, so size it above the
    number of side effects you run within ``retention`` seconds.
    """

    blocking = False

    def __init__(
        self,
        *,
        retention: float = DEFAULT_RETENTION,
        maxsize: int = 100_000,
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        self._entries: TTLCache[str, _Entry] = TTLCache(
            maxsize=maxsize, ttl=retention, timer=self._clock.now
        )
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(32)

    def begin(self, key: str, fingerprint: str, *, lease: float, takeover: bool) -> Begin:
        """See :meth:`Ledger.begin`."""
        with self._lock:
            now = self._clock.now()
            entry = self._entries.get(key)
            if entry is None:
                token = secrets.token_hex(16)
                self._entries[key] = _Entry("running", fingerprint, token, now + lease, None, 1)
                return Begin("run", token=token, attempt=1)
            if entry.fingerprint != fingerprint:
                return Begin("conflict", attempt=entry.attempt)
            if entry.state != "running":
                return Begin("replay", succeeded=entry.state == "succeeded",
                             payload=entry.payload, attempt=entry.attempt)
            if entry.lease_until > now:
                return Begin("wait", attempt=entry.attempt)
            if not takeover:
                return Begin("expired", attempt=entry.attempt)
            entry.token = secrets.token_hex(16)
            entry.attempt += 1
            entry.lease_until = now + lease
            return Begin("run", token=entry.token, attempt=entry.attempt)

    def _owned(self, key: str, token: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None or entry.state != "running" or entry.token != token:
            return None
        return entry

    def complete(self, key: str, token: str, result: str) -> bool:
        """See :meth:`Ledger.complete`."""
        with self._lock:
            entry = self._owned(key, token)
            if entry is None:
                return False
            entry.state, entry.payload, entry.token = "succeeded", result, None
            self._entries[key] = entry  # restart the retention period
            return True

    def fail(self, key: str, token: str, error: str, *, retryable: bool) -> bool:
        """See :meth:`Ledger.fail`."""
        with self._lock:
            entry = self._owned(key, token)
            if entry is None:
                return False
            if retryable:
                del self._entries[key]
                return True
            entry.state, entry.payload, entry.token = "failed", error, None
            self._entries[key] = entry
            return True

    def abandon(self, key: str, token: str) -> None:
        """See :meth:`Ledger.abandon`."""
        with self._lock:
            entry = self._owned(key, token)
            if entry is not None:
                entry.lease_until = self._clock.now()

    def forget(self, key: str) -> None:
        """See :meth:`Ledger.forget`."""
        with self._lock:
            self._entries.pop(key, None)

    def secret(self) -> bytes:
        """See :meth:`Ledger.secret`: random per instance, since entries die with the process."""
        return self._secret

    def close(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def __repr__(self) -> str:
        return f"MemoryLedger(entries={len(self._entries)})"

