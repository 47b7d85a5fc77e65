"""The ledger contract on every store, and once-only execution across real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from resilient_llm import IdempotencyStoreUnavailable
from resilient_llm.idempotency.side_effect import (
    ExpiredLeasePolicy,
    IdempotencyOutcomeUnknown,
    run,
    side_effect,
)
from resilient_llm.stores import Ledger, MemoryLedger, open_store, redact_url
from resilient_llm.stores.redis import RedisLedger
from resilient_llm.stores.sqlite import SQLiteLedger
from resilient_llm.testing._fake_clock import FakeClock
from tests.redis_cluster import redis_cluster  # noqa: F401
from tests.redis_server import redis_url  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


class StoreClock:
    """The clock a ledger measures leases on, advanced by the test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
def ledger_and_expire(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Ledger, Any]]:
    """A fresh ledger and a function that makes every current lease expire."""
    if request.param == "memory":
        clock = FakeClock()
        yield MemoryLedger(clock=clock), lambda: clock.advance(3600)
    elif request.param == "sqlite":
        now = StoreClock()
        ledger = SQLiteLedger(tmp_path / "ledger.db", now=now)

        def expire_sqlite() -> None:
            now.offset += 3600

        yield ledger, expire_sqlite
        ledger.close()
    else:
        url = (request.getfixturevalue("redis_url") if request.param == "redis"
               else request.getfixturevalue("redis_cluster").url())
        fleet = RedisLedger(url, prefix=f"test:{uuid.uuid4().hex}:")

        def expire_redis() -> None:
            client = fleet._client  # a cluster client scans every master
            for name in client.scan_iter(match=fleet._prefix + "*:lease"):
                client.delete(name)

        yield fleet, expire_redis
        fleet.close()


# --- the contract --------------------------------------------------------------------------------


def test_contract_run_wait_complete_replay(ledger_and_expire: tuple[Ledger, Any]) -> None:
    ledger, _ = ledger_and_expire
    first = ledger.begin("k", "fp", lease=60, takeover=False)
    assert first.action == "run" and first.token and first.attempt == 1
    assert ledger.begin("k", "fp", lease=60, takeover=False).action == "wait"
    assert ledger.begin("k", "other", lease=60, takeover=False).action == "conflict"
    assert ledger.complete("k", "not-the-owner", '"x"') is False
    assert ledger.complete("k", first.token, '{"id": 1}') is True
    again = ledger.begin("k", "fp", lease=60, takeover=False)
    assert (again.action, again.succeeded, again.payload) == ("replay", True, '{"id": 1}')
    assert ledger.begin("k", "other", lease=60, takeover=False).action == "conflict"
    ledger.forget("k")
    assert ledger.begin("k", "other", lease=60, takeover=False).action == "run"


def test_contract_failures(ledger_and_expire: tuple[Ledger, Any]) -> None:
    ledger, _ = ledger_and_expire
    token = ledger.begin("k", "fp", lease=60, takeover=False).token
    assert token is not None
    assert ledger.fail("k", token, '{"type": "x"}', retryable=False) is True
    replay = ledger.begin("k", "fp", lease=60, takeover=False)
    assert (replay.action, replay.succeeded, replay.payload) == ("replay", False, '{"type": "x"}')

    token = ledger.begin("r", "fp", lease=60, takeover=False).token
    assert token is not None
    assert ledger.fail("r", token, "", retryable=True) is True
    assert ledger.begin("r", "fp", lease=60, takeover=False).action == "run"


def test_contract_expired_lease(ledger_and_expire: tuple[Ledger, Any]) -> None:
    ledger, expire = ledger_and_expire
    dead = ledger.begin("k", "fp", lease=60, takeover=False).token
    assert dead is not None
    expire()
    assert ledger.begin("k", "fp", lease=60, takeover=False).action == "expired"
    taken = ledger.begin("k", "fp", lease=60, takeover=True)
    assert taken.action == "run" and taken.attempt == 2 and taken.token != dead
    assert ledger.begin("k", "fp", lease=60, takeover=True).action == "wait"
    assert ledger.complete("k", dead, '"late"') is False  # the dead owner lost the key
    assert taken.token is not None and ledger.complete("k", taken.token, '"ok"') is True
    assert ledger.begin("k", "fp", lease=60, takeover=True).payload == '"ok"'


def test_contract_abandon_ends_the_lease_now(ledger_and_expire: tuple[Ledger, Any]) -> None:
    ledger, _ = ledger_and_expire
    token = ledger.begin("k", "fp", lease=600, takeover=False).token
    assert token is not None
    ledger.abandon("k", "someone-else")
    assert ledger.begin("k", "fp", lease=600, takeover=False).action == "wait"
    ledger.abandon("k", token)
    assert ledger.begin("k", "fp", lease=600, takeover=False).action == "expired"


def test_contract_secret_is_stable(ledger_and_expire: tuple[Ledger, Any]) -> None:
    ledger, _ = ledger_and_expire
    assert len(ledger.secret()) == 32 and ledger.secret() == ledger.secret()


def test_secret_is_shared_by_every_user_of_a_store(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    a, b = SQLiteLedger(tmp_path / "l.db"), SQLiteLedger(tmp_path / "l.db")
    assert a.secret() == b.secret()
    assert a.secret() != SQLiteLedger(tmp_path / "other.db").secret()
    r1, r2 = RedisLedger(redis_url, prefix="shared:"), RedisLedger(redis_url, prefix="shared:")
    assert r1.secret() == r2.secret()
    for ledger in (a, b, r1, r2):
        ledger.close()


def test_redis_lease_expires_on_the_server(redis_url: str) -> None:  # noqa: F811
    ledger = RedisLedger(redis_url, prefix=f"test:{uuid.uuid4().hex}:")
    assert ledger.begin("k", "fp", lease=0.3, takeover=False).action == "run"
    assert ledger.begin("k", "fp", lease=0.3, takeover=False).action == "wait"
    time.sleep(0.35)  # PX expiry runs on the server's clock: there is none to inject
    assert ledger.begin("k", "fp", lease=0.3, takeover=False).action == "expired"
    ledger.close()


def test_sqlite_retention_forgets_old_outcomes(tmp_path: Path) -> None:
    now = StoreClock()
    ledger = SQLiteLedger(tmp_path / "l.db", retention=60, now=now)
    token = ledger.begin("k", "fp", lease=5, takeover=False).token
    assert token is not None and ledger.complete("k", token, "1")
    now.offset += 61
    assert ledger.begin("k", "fp", lease=5, takeover=False).action == "run"
    now.offset += 61
    assert ledger.purge() == 1
    ledger.close()


# --- stores, failing -----------------------------------------------------------------------------


def test_sqlite_unavailable_fails_closed(tmp_path: Path) -> None:
    calls: list[int] = []

    @side_effect(store=SQLiteLedger(tmp_path / "missing-dir" / "l.db"))
    def send(to: str) -> None:
        calls.append(1)

    with pytest.raises(IdempotencyStoreUnavailable, match="does not exist"):
        send("a")
    assert calls == []


def test_redis_unavailable_fails_closed_quickly_without_leaking_the_password() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    calls: list[int] = []
    ledger = RedisLedger(f"redis://user:hunter2secret@127.0.0.1:{port}/0")

    @side_effect(store=ledger)
    def send(to: str) -> None:
        calls.append(1)

    start = time.monotonic()
    with pytest.raises(IdempotencyStoreUnavailable) as info:
        send("a")
    assert time.monotonic() - start < 3
    assert "hunter2secret" not in str(info.value) and "did not run" in str(info.value)
    assert calls == []


def test_open_store_urls(tmp_path: Path) -> None:
    assert open_store("memory") is open_store("memory")
    assert isinstance(open_store(f"sqlite:///{tmp_path}/x.db"), SQLiteLedger)
    with pytest.raises(ValueError, match="unknown idempotency store"):
        open_store("postgres://u:pw@h/db")
    with pytest.raises(ValueError):
        SQLiteLedger(":memory:")
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


def test_50_threads_on_sqlite_execute_once(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    executions: list[int] = []
    lock = threading.Lock()

    @side_effect(store=ledger)
    def send(to: str) -> dict[str, int]:
        with lock:
            executions.append(1)
        time.sleep(0.1)
        return {"n": len(executions)}

    def worker(_: int) -> dict[str, int]:
        with run("order-1"):
            return send("a")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(worker, range(50)))
    assert executions == [1] and results == [{"n": 1}] * 50
    ledger.close()


def test_asyncio_tasks_on_sqlite_execute_once(tmp_path: Path) -> None:
    import asyncio

    ledger = SQLiteLedger(tmp_path / "l.db")
    executions: list[int] = []

    @side_effect(store=ledger)
    async def send(to: str) -> list[str]:
        executions.append(1)
        await asyncio.sleep(0.1)
        return [to]

    async def one() -> list[str]:
        async with run("order-1"):
            return await send("a")

    async def main() -> list[list[str]]:
        return list(await asyncio.gather(*(one() for _ in range(20))))

    assert asyncio.run(main()) == [["a"]] * 20
    assert executions == [1]
    ledger.close()


# --- across processes ----------------------------------------------------------------------------

CHILD = r"""
import json, os, sys, time
from resilient_llm.idempotency.side_effect import run, side_effect

store, log, go, mode, policy = sys.argv[1:6]

@side_effect(store=store, name="send_email", lease=float(os.environ["LEASE"]),
             on_expired_lease=policy)
def send_email(to: str, body: str) -> dict[str, str]:
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    if mode == "hang":
        time.sleep(60)
    time.sleep(0.3)
    return {"message_id": f"msg-{os.getpid()}"}

while not os.path.exists(go):
    time.sleep(0.005)
with run("order-1234"):
    print(json.dumps(send_email("a@example.com", body="shipped")), flush=True)
"""


def _spawn(store: str, log: Path, go: Path, *, mode: str = "send",
           policy: str = "at_most_once", lease: float = 30) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "LEASE": str(lease)}
    env = {k: v for k, v in env.items() if not k.startswith("RESILIENT_LLM_")}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, store, str(log), str(go), mode, policy],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _store_url(kind: str, tmp_path: Path, redis: str | None) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    assert redis is not None
    return redis.rsplit("/", 1)[0] + "/1"  # a db of its own: the children use default prefix


def _flush_redis_db(url: str) -> None:
    import redis as redis_py

    client = redis_py.Redis.from_url(url, protocol=2)
    client.flushdb()
    client.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_two_processes_execute_once_in_total(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis = request.getfixturevalue("redis_url") if kind == "redis" else None
    store = _store_url(kind, tmp_path, redis)
    if kind == "redis":
        _flush_redis_db(store)
    log, go = tmp_path / "sent.log", tmp_path / "go"
    children = [_spawn(store, log, go) for _ in range(2)]
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        outputs.append(json.loads(out))
    assert len(log.read_text().splitlines()) == 1
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("policy", ["at_most_once", "at_least_once"])
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_killed_owner_leaves_a_lease_handled_per_policy(
    kind: str, policy: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis = request.getfixturevalue("redis_url") if kind == "redis" else None
    store = _store_url(kind, tmp_path, redis)
    if kind == "redis":
        _flush_redis_db(store)
    log, go = tmp_path / "sent.log", tmp_path / "go"
    go.touch()
    lease = 30.0 if kind == "sqlite" else 0.3
    child = _spawn(store, log, go, mode="hang", lease=lease)
    limit = time.monotonic() + 20
    while not (log.exists() and log.read_text()) and time.monotonic() < limit:
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)  # dies mid-execution, holding the lease
    child.communicate(timeout=10)

    if kind == "sqlite":
        # The store's clock, not ours, decides: move it past the lease instead of sleeping.
        now = StoreClock()
        now.offset = 3600
        ledger: Ledger = SQLiteLedger(tmp_path / "ledger.db", now=now)
    else:
        ledger = RedisLedger(store)  # the 0.3 s lease expires on the server
    sent: list[str] = []

    @side_effect(store=ledger, name="send_email",
                 on_expired_lease=cast(ExpiredLeasePolicy, policy))
    def send_email(to: str, body: str) -> dict[str, str]:
        sent.append(to)
        return {"message_id": "msg-next"}

    with run("order-1234"):
        if policy == "at_most_once":
            with pytest.raises(IdempotencyOutcomeUnknown):
                send_email("a@example.com", body="shipped")
            assert sent == []
        else:
            assert send_email("a@example.com", body="shipped") == {"message_id": "msg-next"}
            assert send_email("a@example.com", body="shipped") == {"message_id": "msg-next"}
            assert sent == ["a@example.com"]
    ledger.close()
