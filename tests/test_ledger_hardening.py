"""Idempotency ledgers under the caller's deadline, and ledgers that lost their history.

Each wait on a broken store (SQLite write-locked by another process, a Redis that never
answers, a Redis that hangs while the tool body runs) ends within the deadline + 0.3 s, and a
ledger that lost its history (SQLite truncated, Redis flushed or restarted empty) makes an
at-most-once side effect fail closed instead of running again.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from resilient_llm import IdempotencyStoreUnavailable, deadline, side_effect
from resilient_llm.stores import MemoryLedger, close_stores
from resilient_llm.stores.redis import RedisLedger
from resilient_llm.stores.sqlite import SQLiteLedger
from tests.redis_server import redis_url  # noqa: F401 - fixture

SLACK = 0.3


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    close_stores()


# --- a Redis that does not answer ----------------------------------------------------------------


class Proxy:
    """A TCP proxy to ``target`` that can freeze: data stops flowing both ways."""

    def __init__(self, target: tuple[str, int] | None) -> None:
        self.target = target
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            self.sockets.append(client)
            if self.target is None:  # a server that accepts and never answers
                continue
            upstream = socket.create_connection(self.target)
            self.sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.frozen.is_set() and not self.closed.is_set():
                    time.sleep(0.01)
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.closed.set()
        for sock in [self.server, *self.sockets]:
            sock.close()


@pytest.fixture
def silent_redis() -> Iterator[str]:
    proxy = Proxy(None)
    yield f"redis://127.0.0.1:{proxy.port}/0"
    proxy.close()


@pytest.fixture
def freezable_redis(redis_url: str) -> Iterator[tuple[str, Proxy]]:  # noqa: F811
    host, port = redis_url.split("://", 1)[1].split("/", 1)[0].split(":")
    proxy = Proxy((host, int(port)))
    yield f"redis://127.0.0.1:{proxy.port}/3", proxy
    proxy.close()


def test_a_redis_that_never_answers_ends_by_the_deadline(silent_redis: str) -> None:
    @side_effect(store=silent_redis)
    def charge(amount: int) -> int:
        return amount

    started = time.monotonic()
    with pytest.raises(IdempotencyStoreUnavailable, match="deadline"), deadline(2):
        charge(1)
    assert time.monotonic() - started < 2 + SLACK


def _side_effect_ends_by_the_deadline(store: str) -> None:
    """A side effect on ``store`` fails closed within ``deadline(2)`` + the slack."""

    @side_effect(store=store)
    def charge(amount: int) -> int:
        return amount

    started = time.monotonic()
    with pytest.raises(IdempotencyStoreUnavailable), deadline(2):
        charge(1)
    assert time.monotonic() - started < 2 + SLACK


def _async_side_effect_ends_by_the_deadline(store: str) -> None:
    """An async side effect on ``store`` fails closed within ``deadline(2)`` + the slack."""

    @side_effect(store=store)
    async def charge(amount: int) -> int:
        return amount

    async def main() -> None:
        async with deadline(2):
            await charge(1)

    started = time.monotonic()
    with pytest.raises(IdempotencyStoreUnavailable):
        anyio.run(main)
    assert time.monotonic() - started < 2 + SLACK


def test_a_redis_that_never_answers_ends_by_the_deadline_async(silent_redis: str) -> None:
    _async_side_effect_ends_by_the_deadline(silent_redis)


@pytest.fixture
def stopped_redis() -> str:
    """The URL of a Redis that is not running: the port refuses connections."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def test_a_stopped_redis_ends_by_the_deadline(stopped_redis: str) -> None:
    _side_effect_ends_by_the_deadline(stopped_redis)


def test_a_stopped_redis_ends_by_the_deadline_async(stopped_redis: str) -> None:
    _async_side_effect_ends_by_the_deadline(stopped_redis)


def test_redis_hung_during_the_body_ends_by_the_deadline(
    freezable_redis: tuple[str, Proxy], caplog: pytest.LogCaptureFixture,
) -> None:
    url, proxy = freezable_redis
    runs: list[int] = []

    @side_effect(store=url)
    def charge(amount: int) -> int:
        runs.append(amount)
        proxy.frozen.set()  # Redis stops answering while the effect happens
        return amount

    started = time.monotonic()
    with deadline(2):
        assert charge(7) == 7  # the effect happened: its result is returned
    assert time.monotonic() - started < 2 + SLACK
    assert runs == [7]
    assert any("could not be recorded" in r.getMessage() for r in caplog.records)


def test_redis_hung_during_the_body_ends_by_the_deadline_async(
    freezable_redis: tuple[str, Proxy],
) -> None:
    url, proxy = freezable_redis
    runs: list[int] = []

    @side_effect(store=url)
    async def charge(amount: int) -> int:
        runs.append(amount)
        proxy.frozen.set()
        return amount

    async def main() -> int:
        async with deadline(2):
            return await charge(8)

    started = time.monotonic()
    assert anyio.run(main) == 8
    assert time.monotonic() - started < 2 + SLACK
    assert runs == [8]


# --- SQLite write-locked by another process ------------------------------------------------------


@pytest.fixture
def locked_sqlite(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "ledger.db"
    SQLiteLedger(path).begin("warm-up", "fp", lease=1.0, takeover=False)  # schema exists
    script = (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    yield f"sqlite:///{path}"
    holder.kill()
    holder.wait(timeout=10)
    holder.stdout.close()


def test_sqlite_write_locked_by_another_process_ends_by_the_deadline(locked_sqlite: str) -> None:
    _side_effect_ends_by_the_deadline(locked_sqlite)


def test_sqlite_write_locked_ends_by_the_deadline_async(locked_sqlite: str) -> None:
    _async_side_effect_ends_by_the_deadline(locked_sqlite)


# --- ledgers that lost their history -------------------------------------------------------------


def test_a_truncated_sqlite_ledger_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    store = f"sqlite:///{path}"
    runs: list[int] = []

    @side_effect(store=store)
    def charge(amount: int) -> int:
        runs.append(amount)
        return amount

    assert charge(1) == 1 and charge(1) == 1 and runs == [1]
    close_stores()  # the process restarts...
    for suffix in ("", "-wal", "-shm"):  # ...and finds the ledger file emptied
        target = Path(str(path) + suffix)
        if target.exists():
            target.write_bytes(b"")
    with pytest.raises(IdempotencyStoreUnavailable, match="lost its history"):
        charge(1)
    assert runs == [1]
    os.remove(str(path) + ".epoch")  # an operator checked the effects and accepts the loss
    assert charge(1) == 1 and runs == [1, 1]


def test_a_truncated_sqlite_ledger_fails_closed_async(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    runs: list[int] = []

    @side_effect(store=f"sqlite:///{path}")
    async def charge(amount: int) -> int:
        runs.append(amount)
        return amount

    assert anyio.run(charge, 1) == 1 and anyio.run(charge, 1) == 1 and runs == [1]
    close_stores()
    for suffix in ("", "-wal", "-shm"):
        target = Path(str(path) + suffix)
        if target.exists():
            target.write_bytes(b"")
    with pytest.raises(IdempotencyStoreUnavailable, match="lost its history"):
        anyio.run(charge, 1)
    assert runs == [1]


def test_at_least_once_runs_again_after_a_loss(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    runs: list[int] = []

    @side_effect(store=f"sqlite:///{path}", on_expired_lease="at_least_once")
    def charge(amount: int) -> int:
        runs.append(amount)
        return amount

    charge(2)
    close_stores()
    path.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    assert charge(2) == 2 and runs == [2, 2]


def test_a_flushed_redis_ledger_fails_closed(redis_url: str) -> None:  # noqa: F811
    url = redis_url.rsplit("/", 1)[0] + "/5"
    admin = redis.Redis.from_url(url)
    admin.flushdb()
    runs: list[int] = []

    @side_effect(store=url)
    def charge(amount: int) -> int:
        runs.append(amount)
        return amount

    try:
        assert charge(1) == 1 and runs == [1]
        admin.flushdb()  # Redis restarted empty, as without persistence
        with pytest.raises(IdempotencyStoreUnavailable, match="lost its history"):
            charge(1)
        close_stores()  # a new worker also refuses: the first that noticed left a tombstone
        with pytest.raises(IdempotencyStoreUnavailable, match="lost its history"):
            charge(1)
        assert runs == [1]
        admin.delete(RedisLedger(url).epoch_key)  # an operator accepts the loss
        assert charge(1) == 1 and runs == [1, 1]
    finally:
        admin.flushdb()
        admin.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_redis_restarted_empty_during_the_body_fails_closed_for_new_workers(
    redis_url: str, mode: str,  # noqa: F811
) -> None:
    """Redis without persistence restarts while the effect runs: the worker that ran it leaves
    the tombstone when it finds its record gone, so a worker started afterwards (no epoch seen
    yet) does not run the effect a second time."""
    url = redis_url.rsplit("/", 1)[0] + "/6"
    admin = redis.Redis.from_url(url)
    admin.flushdb()
    runs: list[int] = []

    def body(amount: int) -> int:
        runs.append(amount)
        if len(runs) == 1:
            admin.flushdb()  # killed and restarted empty while the effect happens
        return amount

    if mode == "sync":
        charge: Any = side_effect(store=url)(body)
        call = charge
    else:
        async def abody(amount: int) -> int:
            return body(amount)

        acharge = side_effect(store=url)(abody)

        def call(amount: int) -> int:
            return anyio.run(acharge, amount)

    try:
        assert call(1) == 1 and runs == [1]
        close_stores()  # a new worker, started after the restart
        with pytest.raises(IdempotencyStoreUnavailable, match="lost its history"):
            call(1)
        assert runs == [1]
    finally:
        admin.flushdb()
        admin.close()


class RecordingLedger(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.leases: list[float] = []

    def begin(self, key: str, fingerprint: str, *, lease: float, takeover: bool) -> Any:
        self.leases.append(lease)
        return super().begin(key, fingerprint, lease=lease, takeover=takeover)


def test_the_lease_follows_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = RecordingLedger()

    @side_effect(store=ledger)
    def charge(amount: int) -> int:
        return amount

    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "30")
    charge(1)
    with deadline(5):
        charge(2)
    assert ledger.leases[0] == 30.0
    assert 10.0 < ledger.leases[1] <= 14.0  # the tool's limit (5 s - 1 s reserve) + grace


def test_a_corrupt_stored_secret_is_a_clear_error(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "ledger.db"
    SQLiteLedger(path).secret()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE resilient_llm_meta SET value = 'not hex' WHERE name = 'secret'")
    with pytest.raises(IdempotencyStoreUnavailable, match="corrupt secret"):
        SQLiteLedger(path).secret()
