"""A claim on a key is never left behind by a caller that stopped waiting for it, a fresh
Redis ledger used by many threads at once keeps its history, and what is replayed or keyed is
what the caller passed. Real SQLite files and a real ``redis-server``."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel, SecretStr

from resilient_llm import (
    DeadlineExceeded,
    IdempotencyStoreUnavailable,
    deadline,
    run,
    side_effect,
)
from resilient_llm.idempotency.keys import canonical_json
from resilient_llm.idempotency.outcomes import decode_error, encode_error
from resilient_llm.stores.ledger import within
from resilient_llm.stores.redis import RedisLedger
from tests.redis_server import redis_url  # noqa: F401


def test_a_generator_function_is_refused_as_a_side_effect() -> None:
    with pytest.raises(TypeError, match="generator function"):
        @side_effect
        def rows() -> Any:
            yield 1

    with pytest.raises(TypeError, match="generator function"):
        @side_effect
        async def arows() -> Any:
            yield 1


class Creds(BaseModel):
    user: str
    password: SecretStr


class Plain(BaseModel):
    user: str


def test_models_that_differ_only_in_a_secret_are_two_actions(tmp_path: Path) -> None:
    ran: list[str] = []

    @side_effect(store=f"sqlite:///{tmp_path}/ledger.db")
    def set_password(creds: Creds) -> str:
        ran.append(creds.password.get_secret_value())
        return "set"

    with run("rotate"):
        assert set_password(Creds(user="u", password=SecretStr("first"))) == "set"
        assert set_password(Creds(user="u", password=SecretStr("second"))) == "set"
        assert set_password(Creds(user="u", password=SecretStr("second"))) == "set"
    assert ran == ["first", "second"]
    # a model without a secret keeps the form (and the keys) it had
    assert canonical_json(Plain(user="u")) == canonical_json({"user": "u"})


class PaymentDeclined(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(f"card declined ({code})")
        self.code = code


class Refused(Exception):
    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def test_a_recorded_failure_replays_with_its_class_arguments_and_attributes() -> None:
    for error in (PaymentDeclined("insufficient_funds"), Refused("no", status=402)):
        replayed = decode_error(encode_error(error), "charge")
        assert type(replayed) is type(error) and replayed.args == error.args
        notes = vars(replayed).pop("__notes__")
        assert vars(replayed) == vars(error) and "replayed by resilient-llm" in notes[0]
    assert str(decode_error(encode_error(PaymentDeclined("x")), "c")) == "card declined (x)"


def test_a_duplicate_that_runs_out_of_time_waiting_gets_deadline_exceeded(tmp_path: Path) -> None:
    """Not "the store is unavailable" (with advice to fail open): the store answered; the
    caller's time ran out while another execution held the key."""
    started, release = threading.Event(), threading.Event()

    @side_effect(store=f"sqlite:///{tmp_path}/ledger.db")
    def charge(order: str) -> str:
        started.set()
        release.wait(5)
        return "charged"

    first = threading.Thread(target=lambda: charge("o-1"))
    first.start()
    try:
        assert started.wait(5)
        with pytest.raises(DeadlineExceeded), deadline(0.3):
            charge("o-1")
    finally:
        release.set()
        first.join()


def test_a_cancelled_async_caller_leaves_no_claim_behind(tmp_path: Path) -> None:
    """Cancelled while the ledger waited for SQLite's lock: the claim committed after the
    cancel is freed, and the next call runs the effect (before: it waited out the lease and
    read "outcome unknown", though nothing ran)."""
    db = tmp_path / "ledger.db"
    ran: list[str] = []

    @side_effect(store=f"sqlite:///{db}", lease=30)
    async def notify(user: str) -> str:
        ran.append(user)
        return "ok"

    async def main() -> str:
        import asyncio

        with run("warm"):
            await notify("warm")  # the ledger exists
        holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock for 0.5 s
        timer = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
        timer.start()

        async def job() -> str:
            with run("job-9"):
                return await notify("ada")

        task = asyncio.ensure_future(job())
        await asyncio.sleep(0.2)
        task.cancel()  # the request handler is cancelled while the ledger waits
        with pytest.raises(asyncio.CancelledError):
            await task
        timer.join()
        await asyncio.sleep(0.3)  # the worker thread's claim, then its release
        with anyio.fail_after(5), run("job-9"):
            return await notify("ada")

    assert anyio.run(main) == "ok"
    assert ran == ["warm", "ada"]


def test_a_redis_claim_answered_after_the_caller_stopped_waiting_is_freed(
        redis_url: str) -> None:  # noqa: F811
    ledger = RedisLedger(redis_url, prefix=f"test:{uuid.uuid4().hex}:")
    ledger.begin("warm", "fp", lease=30, takeover=False)  # connected, scripts loaded
    real = ledger._begin

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.6)  # Redis answers, but after the caller's deadline
        return real(*args, **kwargs)

    ledger._begin = slow
    with pytest.raises(IdempotencyStoreUnavailable, match="did not answer"):
        within(time.monotonic() + 0.2, ledger.begin, "k", "fp", lease=30, takeover=False)
    ledger._begin = real
    for _ in range(50):  # the late claim is freed on the worker thread
        if ledger.begin("k", "fp", lease=30, takeover=False).action == "run":
            break
        time.sleep(0.05)
    else:
        pytest.fail("the late claim still holds the key")


def test_a_fresh_redis_ledger_used_by_many_threads_keeps_its_history(
        redis_url: str) -> None:  # noqa: F811
    """Threads that found no epoch marker while another created it took the marker for gone
    and marked the ledger lost: every worker failed closed until an operator stepped in."""
    for _ in range(5):
        ledger = RedisLedger(redis_url, prefix=f"test:{uuid.uuid4().hex}:")
        barrier = threading.Barrier(16)
        answers: list[str] = []

        def begin(n: int, ledger: RedisLedger = ledger, barrier: threading.Barrier = barrier,
                  answers: list[str] = answers) -> None:
            barrier.wait()
            answers.append(ledger.begin(f"k{n}", "fp", lease=30, takeover=False).action)

        threads = [threading.Thread(target=begin, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == ["run"] * 16
