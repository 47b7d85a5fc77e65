"""@side_effect: keys from durable identities, once-only execution, replay, leases, conflicts."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import os
import subprocess
import sys
import threading
import time
import typing
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from trio.testing import MockClock  # type: ignore[import-untyped, unused-ignore]

from resilient_llm import (
    ConfigError,
    DeadlineExceeded,
    IdempotencyConflict,
    IdempotencyStoreUnavailable,
    SideEffectOptions,
    _clock,
    deadline,
    remaining,
)
from resilient_llm.context import deadline as _deadline
from resilient_llm.idempotency.options import Options
from resilient_llm.idempotency.side_effect import (
    IdempotencyOutcomeUnknown,
    SideEffectFailed,
    arguments_digest,
    canonical_arguments,
    canonical_json,
    current_idempotency_key,
    current_run,
    derive_key,
    run,
    side_effect,
)
from resilient_llm.stores import Begin, Ledger, MemoryLedger
from resilient_llm.testing._fake_clock import FakeClock

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Deadlines and leases on a FakeClock: waiting advances virtual time, never real time."""
    clock = FakeClock()
    monkeypatch.setattr(_deadline, "SYSTEM_CLOCK", clock)
    monkeypatch.setattr(_clock, "SYSTEM_CLOCK", clock)
    return clock


class Receipt(BaseModel):
    message_id: str
    recipients: list[str]


# --- canonical arguments: fixed rules ------------------------------------------------------------


def test_canonical_form_is_pinned() -> None:
    # A change here changes every key in every ledger: it needs a new version tag.
    assert canonical_json({"b": [1, 2.5, True, None], "a": "é"}) == (
        '["d",[["a","é"],["b",["l",[["n","1"],["n","25e-1"],true,null]]]]]'
    )
    assert canonical_json(Fraction(1, 3)) == '["n","1/3"]'
    assert canonical_json(float("nan")) == '["n","NaN"]'
    assert canonical_json(b"\x00") == '["b","AA=="]'
    assert canonical_json({3, 1, 2}) == '["s",[["n","1"],["n","2"],["n","3"]]]'


def test_equivalent_numbers_agree_and_different_ones_do_not() -> None:
    same = [1, 1.0, Decimal("1"), Decimal("1.000"), Fraction(2, 2)]
    assert len({canonical_json(x) for x in same}) == 1
    assert canonical_json(0.5) == canonical_json(Decimal("0.50")) == canonical_json(Fraction(1, 2))
    assert canonical_json(-0.0) == canonical_json(0)
    assert canonical_json(float("inf")) == canonical_json(Decimal("Infinity"))
    assert canonical_json(0.1) != canonical_json(Decimal("0.1"))  # as in Python: 0.1 != Decimal
    assert canonical_json(True) != canonical_json(1)  # bool is not a number
    assert canonical_json("1") != canonical_json(1)
    assert canonical_json([1]) != canonical_json({1})


def test_unicode_is_nfc_not_nfkc() -> None:
    assert canonical_json("café") == canonical_json("cafe\u0301")
    assert canonical_json({"cafe\u0301": 1}) == canonical_json({"café": 1})
    assert canonical_json("ﬁle") != canonical_json("file")  # compatibility forms keep meaning
    with pytest.raises(ValueError, match="equal once canonicalised"):
        canonical_json({"café": 1, "cafe\u0301": 2})


def test_structured_values_reduce_to_their_json_form() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        y: float

    assert canonical_json(Point(1, 2.0)) == canonical_json({"y": 2, "x": 1})
    assert canonical_json(Receipt(message_id="m", recipients=["a"])) == canonical_json(
        {"recipients": ["a"], "message_id": "m"}
    )
    assert canonical_json((1, 2)) == canonical_json([1, 2])


def test_unsupported_values_name_the_argument_not_its_value() -> None:
    def send(to: str, attachment: object) -> None: ...

    with pytest.raises(TypeError) as info:
        canonical_arguments(inspect.signature(send), ["secret@example.com", object()], {})
    assert "attachment" in str(info.value)
    assert "secret@example.com" not in str(info.value)


def test_arguments_bind_by_name_with_defaults() -> None:
    def send(to: str, subject: str = "hi", *, cc: tuple[str, ...] = ()) -> None: ...

    sig = inspect.signature(send)
    forms: list[tuple[list[Any], dict[str, Any]]] = [
        (["a@x"], {}),
        ([], {"to": "a@x"}),
        (["a@x", "hi"], {}),
        (["a@x"], {"cc": [], "subject": "hi"}),
    ]
    assert len({arguments_digest(sig, a, k) for a, k in forms}) == 1
    assert arguments_digest(sig, ["a@x"], {}) != arguments_digest(sig, ["b@x"], {})
    assert arguments_digest(sig, ["a@x"], {}, ignore={"to"}) == arguments_digest(
        sig, ["b@x"], {}, ignore={"to"}
    )


# --- canonical arguments: properties -------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                   max_size=4),
    max_leaves=20,
)


def _reorder(value: Any, rnd: Any) -> Any:
    if isinstance(value, dict):
        items = [(k, _reorder(v, rnd)) for k, v in value.items()]
        rnd.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [_reorder(v, rnd) for v in value]
    return value


def _nfd(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFD", value)
    if isinstance(value, dict):
        return {unicodedata.normalize("NFD", k): _nfd(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nfd(v) for v in value]
    return value


def _strict_equal(a: Any, b: Any) -> bool:
    """Equality under the documented rules: bool apart from numbers, strings compared as NFC."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, str) and isinstance(b, str):
        return unicodedata.normalize("NFC", a) == unicodedata.normalize("NFC", b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        ka = {unicodedata.normalize("NFC", k): v for k, v in a.items()}
        kb = {unicodedata.normalize("NFC", k): v for k, v in b.items()}
        return ka.keys() == kb.keys() and all(_strict_equal(ka[k], kb[k]) for k in ka)
    return a is None and b is None


def _nfc_unique_keys(value: Any) -> bool:
    if isinstance(value, dict):
        keys = [unicodedata.normalize("NFC", k) for k in value]
        return len(set(keys)) == len(keys) and all(_nfc_unique_keys(v) for v in value.values())
    if isinstance(value, list):
        return all(_nfc_unique_keys(v) for v in value)
    return True


@settings(max_examples=200, deadline=None)
@given(json_values.filter(_nfc_unique_keys), st.randoms(use_true_random=False))
def test_property_stable_under_dict_order(value: Any, rnd: Any) -> None:
    assert canonical_json(_reorder(value, rnd)) == canonical_json(value)


@settings(max_examples=200, deadline=None)
@given(json_values.filter(_nfc_unique_keys))
def test_property_stable_under_unicode_normalisation(value: Any) -> None:
    assert canonical_json(_nfd(value)) == canonical_json(value)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_property_integers_in_every_form(n: int) -> None:
    forms = [n, Decimal(n), Decimal(n).scaleb(2).scaleb(-2), Fraction(n * 7, 7)]
    if abs(n) <= 2**53:
        forms.append(float(n))
    assert len({canonical_json(x) for x in forms}) == 1


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False))
def test_property_floats_equal_their_exact_decimal_and_fraction(x: float) -> None:
    forms: list[Any] = [x, Decimal(x)]
    if x not in (float("inf"), float("-inf")):
        forms.append(Fraction(x))
    assert len({canonical_json(f) for f in forms}) == 1
    # And the text round-trips to the same value (the form is exact, not rounded).
    token = json.loads(canonical_json(x))[1]
    if "/" not in token and "Infinity" not in token:
        mantissa, _, exp = token.partition("e-")
        assert Fraction(int(mantissa), 10 ** int(exp or 0)) == Fraction(x)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_property_canonical_form_is_injective(a: Any, b: Any) -> None:
    if not (_nfc_unique_keys(a) and _nfc_unique_keys(b)):
        return
    assert (canonical_json(a) == canonical_json(b)) == _strict_equal(a, b)


# --- keys ----------------------------------------------------------------------------------------


def test_key_derivation_uses_durable_identities_only() -> None:
    secret = b"s" * 32
    base = {"run": ("order-1",), "tool": "send", "kind": "args", "identity": "d"}
    key = derive_key(secret, **base)  # type: ignore[arg-type]
    assert len(key) == 64 and key == derive_key(secret, **base)  # type: ignore[arg-type]
    for change in ({"run": ("order-2",)}, {"run": ("order", "-1")}, {"run": ()},
                   {"tool": "charge"}, {"kind": "call"}, {"identity": "e"}):
        assert derive_key(secret, **{**base, **change}) != key  # type: ignore[arg-type]
    assert derive_key(b"t" * 32, **base) != key  # type: ignore[arg-type]


def test_run_scopes_nest_and_with_options_overrides() -> None:
    ledger = MemoryLedger()

    @side_effect(store=ledger)
    def send(to: str) -> None: ...

    assert current_run() == ()
    with run("order-1"):
        k1 = send.key_for("a")
        with run("refund"):
            assert current_run() == ("order-1", "refund")
            k_nested = send.key_for("a")
    with run("order-1"):
        assert send.key_for("a") == k1  # same durable identity, same key: no clock, no UUID
    assert send.key_for("a") not in (k1, k_nested)
    calls: list[str] = []

    @side_effect(store=ledger)
    def record(x: str) -> str:
        calls.append(x)
        return current_idempotency_key() or ""

    with run("order-1"):
        inside = record("v")
    assert record.with_options(run_id="order-1")("v") == inside
    assert calls == ["v"]
    with pytest.raises(ValueError):
        run("  ")
    with pytest.raises(TypeError):
        run(1234)  # type: ignore[arg-type]


def test_secret_from_policy_changes_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    @side_effect(store=MemoryLedger())
    def send(to: str) -> None: ...

    monkeypatch.setenv("RESILIENT_LLM_IDEMPOTENCY_SECRET", "a" * 32)
    k_a = send.key_for("x")
    monkeypatch.setenv("RESILIENT_LLM_IDEMPOTENCY_SECRET", "b" * 32)
    assert send.key_for("x") != k_a
    assert send.key_for("x") == send.key_for("x")


# --- once, under concurrency ---------------------------------------------------------------------


def test_50_threads_execute_once_and_share_the_result() -> None:
    ledger = MemoryLedger()
    executions: list[int] = []
    lock = threading.Lock()

    @side_effect(store=ledger)
    def send_email(to: str, body: str) -> Receipt:
        with lock:
            executions.append(1)
        time.sleep(0.1)
        return Receipt(message_id=f"msg-{len(executions)}", recipients=[to])

    barrier = threading.Barrier(50)

    def worker(_: int) -> Receipt:
        barrier.wait()
        with run("order-1234"):
            return send_email("a@example.com", body="Your order shipped")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(worker, range(50)))
    assert executions == [1]
    assert all(isinstance(r, Receipt) for r in results)
    assert {r.model_dump_json() for r in results} == {results[0].model_dump_json()}


def test_50_asyncio_tasks_execute_once_and_share_the_result() -> None:
    ledger = MemoryLedger()
    executions: list[int] = []

    @side_effect(store=ledger)
    async def send_email(to: str) -> Receipt:
        executions.append(1)
        await asyncio.sleep(0.05)
        return Receipt(message_id="msg-1", recipients=[to])

    async def one() -> Receipt:
        with run("order-1234"):
            return await send_email("a@example.com")

    async def main() -> list[Receipt]:
        return list(await asyncio.gather(*(one() for _ in range(50))))

    results = asyncio.run(main())
    assert executions == [1]
    assert all(r == results[0] and isinstance(r, Receipt) for r in results)


# --- replay --------------------------------------------------------------------------------------


def test_replay_returns_the_declared_type() -> None:
    ledger = MemoryLedger()
    calls: list[int] = []

    @side_effect(store=ledger)
    def charge(order: str, cents: int) -> tuple[Receipt, Decimal]:
        calls.append(1)
        return Receipt(message_id="ch_1", recipients=[order]), Decimal("12.50")

    first = charge("o-1", 1250)
    again = charge("o-1", cents=1250)
    assert calls == [1]
    assert again == first
    assert isinstance(again, tuple) and isinstance(again[0], Receipt)
    assert isinstance(again[1], Decimal)


def test_unannotated_result_replays_as_json() -> None:
    ledger = MemoryLedger()

    @side_effect(store=ledger)
    def act(x: int):
        return {"x": x}

    assert act(1) == {"x": 1}
    assert act(1) == {"x": 1}


def test_result_that_cannot_be_stored_fails_consistently() -> None:
    ledger = MemoryLedger()
    calls: list[int] = []

    @side_effect(store=ledger)
    def act(x: int) -> Any:
        calls.append(1)
        return object()

    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        act(1)
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        act(1)
    assert calls == [1]


class PaymentDeclined(Exception):
    pass


def test_recorded_failure_replays_as_the_same_error() -> None:
    ledger = MemoryLedger()
    calls: list[int] = []

    @side_effect(store=ledger)
    def charge(order: str) -> str:
        calls.append(1)
        raise PaymentDeclined("card declined", 402)

    for _ in range(3):
        with pytest.raises(PaymentDeclined) as info:
            charge("o-1")
    assert info.value.args == ("card declined", 402)
    assert calls == [1]


def test_retryable_failure_runs_again() -> None:
    ledger = MemoryLedger()
    calls: list[int] = []

    @side_effect(store=ledger)
    def send(to: str) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionRefusedError("smtp down")
        return "sent"

    with pytest.raises(ConnectionRefusedError):
        send("a")
    assert send("a") == "sent"
    assert send("a") == "sent"
    assert calls == [1, 1]

    @side_effect(store=ledger, retryable=lambda exc: isinstance(exc, KeyError))
    def other(x: int) -> int:
        calls.append(2)
        raise KeyError("x")

    for _ in range(2):
        with pytest.raises(KeyError):
            other(1)
    assert calls.count(2) == 2


def test_failure_of_an_unknown_type_replays_as_side_effect_failed() -> None:
    ledger = MemoryLedger()

    class LocalError(Exception):  # not reachable by module path
        pass

    @side_effect(store=ledger)
    def act(x: int) -> None:
        raise LocalError("boom")

    with pytest.raises(LocalError):
        act(1)
    with pytest.raises(SideEffectFailed) as info:
        act(1)
    assert info.value.error_type.endswith("LocalError")
    assert info.value.error_args == ["boom"]


# --- conflicts -----------------------------------------------------------------------------------


def test_same_tool_call_id_with_other_arguments_conflicts() -> None:
    ledger = MemoryLedger()

    @side_effect(store=ledger)
    def send_email(to: str, body: str) -> str:
        return "sent"

    with run("order-1234"):
        call = send_email.with_options(tool_call_id="call_abc")
        assert call("a@example.com", "hello") == "sent"
        assert call("a@example.com", "hello") == "sent"
        with pytest.raises(IdempotencyConflict) as info:
            call("a@example.com", "regenerated body")
    assert "regenerated" not in str(info.value) and "a@example.com" not in str(info.value)
    # Without a call id the arguments are the identity: other arguments, another action.
    assert send_email("a@example.com", "other") == "sent"


def test_custom_key_overrides_identity() -> None:
    ledger = MemoryLedger()
    calls: list[int] = []

    @side_effect(store=ledger, key=lambda order, cents: f"charge:{order}")
    def charge(order: str, cents: int) -> int:
        calls.append(cents)
        return cents

    assert charge("o-1", 100) == 100
    assert charge("o-1", 100) == 100
    with pytest.raises(IdempotencyConflict):
        charge("o-1", 200)
    assert charge("o-2", 200) == 200
    assert calls == [100, 200]

    @side_effect(store=ledger, key=lambda order: "")
    def bad(order: str) -> None: ...

    with pytest.raises(TypeError):
        bad("x")


# --- leases, on the fake clock -------------------------------------------------------------------


def _crashed_owner(ledger: Ledger, func: Any, *args: Any, lease: float) -> str:
    """Claim the key a call would use, as a process that then dies would."""
    key = func.key_for(*args)
    plan = func.__side_effect__._plan(None, None, args, {}, budget=False)
    plan.identify(ledger.secret(), func.name)
    begun = ledger.begin(key, plan.fingerprint, lease=lease, takeover=False)
    assert begun.action == "run"
    return str(key)


def test_expired_lease_at_most_once_raises_for_review(fake_clock: FakeClock) -> None:
    ledger = MemoryLedger(clock=fake_clock)
    calls: list[str] = []

    @side_effect(store=ledger, lease=30)
    def send(to: str) -> str:
        calls.append(to)
        return "sent"

    _crashed_owner(ledger, send, "a", lease=30)
    start = fake_clock.now()
    with pytest.raises(IdempotencyOutcomeUnknown) as info:
        send("a")  # waits (virtually) until the dead owner's lease runs out
    assert fake_clock.now() - start == pytest.approx(30, abs=0.3)
    assert info.value.attempt == 1 and calls == []
    # After a human checked that no email went out:
    send.forget("a")
    assert send("a") == "sent"
    assert calls == ["a"]


def test_expired_lease_at_least_once_runs_again(fake_clock: FakeClock) -> None:
    ledger = MemoryLedger(clock=fake_clock)
    calls: list[str] = []

    @side_effect(store=ledger, on_expired_lease="at_least_once")
    def send(to: str) -> str:
        calls.append(to)
        return "sent"

    _crashed_owner(ledger, send, "a", lease=30)
    fake_clock.advance(31)
    assert send("a") == "sent"
    assert send("a") == "sent"
    assert calls == ["a"]


def test_waiting_duplicate_is_bounded_by_its_deadline(fake_clock: FakeClock) -> None:
    ledger = MemoryLedger(clock=fake_clock)

    @side_effect(store=ledger, reserve=1.0)
    def send(to: str) -> str:
        return "sent"

    _crashed_owner(ledger, send, "a", lease=600)
    start = fake_clock.now()
    with deadline(5), pytest.raises(DeadlineExceeded, match="gave up waiting"):
        send("a")
    assert fake_clock.now() - start == pytest.approx(4.0)  # its limit: 5 s − 1 s reserve


def test_no_time_left_means_not_started(fake_clock: FakeClock) -> None:
    ledger = MemoryLedger(clock=fake_clock)
    calls: list[int] = []

    @side_effect(store=ledger, reserve=1.0)
    def send(to: str) -> None:
        calls.append(1)

    with deadline(5):
        fake_clock.advance(4.5)
        with pytest.raises(DeadlineExceeded, match="not started"):
            send("a")
    assert calls == []
    assert ledger.begin(send.key_for("a"), "x", lease=1, takeover=False).action == "run"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
async def test_async_side_effect_cancelled_at_its_limit_leaves_outcome_unknown(
    anyio_backend: object,
) -> None:
    ledger = MemoryLedger()
    calls: list[int] = []

    @side_effect(store=ledger, reserve=1.0)
    async def send(to: str) -> str:
        calls.append(1)
        await anyio.sleep(60)
        return "sent"

    async with deadline(5):
        with pytest.raises(DeadlineExceeded, match="exceeded its limit"):
            await send("a")
    # The email may have gone out before the cancel: at-most-once refuses to guess.
    with pytest.raises(IdempotencyOutcomeUnknown):
        await send("a")
    assert calls == [1]


# --- the store, failing --------------------------------------------------------------------------


class DownLedger:
    """A ledger whose backend is unreachable."""

    blocking = False

    def _down(self, *args: Any, **kwargs: Any) -> Any:
        raise IdempotencyStoreUnavailable("idempotency store test:// is unavailable (down)")

    begin = complete = fail = abandon = forget = secret = _down

    def close(self) -> None: ...


def test_store_unavailable_fails_closed() -> None:
    calls: list[int] = []

    @side_effect(store=DownLedger())
    def send(to: str) -> None:
        calls.append(1)

    with pytest.raises(IdempotencyStoreUnavailable, match="did not run") as info:
        send("secret@example.com")
    assert "secret@example.com" not in str(info.value)
    assert calls == []


def test_store_unavailable_can_fail_open(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    @side_effect(store=DownLedger(), fail_open=True)
    def send(to: str) -> str:
        calls.append(1)
        return "sent"

    with caplog.at_level(logging.WARNING, logger="resilient_llm.idempotency"):
        assert send("secret@example.com") == "sent"
    assert calls == [1]
    assert "without a ledger" in caplog.text and "secret@example.com" not in caplog.text


class SilentLedger(DownLedger):
    """A store that never answers: each operation waits as long as it may, then gives up."""

    def _down(self, *args: Any, **kwargs: Any) -> Any:
        from resilient_llm.stores.ledger import io_timeout

        time.sleep(io_timeout(5.0))
        raise IdempotencyStoreUnavailable("idempotency store test:// did not answer")

    begin = complete = fail = abandon = forget = secret = _down


def test_a_store_that_never_answers_leaves_a_fail_open_function_time_to_run() -> None:
    """Under a deadline the store may take half the time left before the function runs: with
    ``fail_open`` the function then runs without it (the wait took the whole limit, and the
    function, promised to run, never did)."""
    calls: list[float | None] = []

    @side_effect(store=SilentLedger(), fail_open=True, reserve=0)
    def send(to: str) -> str:
        calls.append(remaining())
        return "sent"

    with deadline(0.6):
        assert send("a@example.com") == "sent"
    (left,) = calls
    assert left is not None and 0.05 < left < 0.35


def test_store_failing_after_execution_still_returns_the_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class FlakyLedger(MemoryLedger):
        def complete(self, key: str, token: str, result: str) -> bool:
            raise IdempotencyStoreUnavailable("down")

    @side_effect(store=FlakyLedger())
    def send(to: str) -> str:
        return "sent"

    with caplog.at_level(logging.WARNING, logger="resilient_llm.idempotency"):
        assert send("a") == "sent"
    assert "could not be recorded" in caplog.text


def test_policy_from_environment_chooses_store_and_lease_policy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from resilient_llm.stores import close_stores

    monkeypatch.setenv("RESILIENT_LLM_IDEMPOTENCY_STORE", f"sqlite:///{tmp_path}/ledger.db")
    calls: list[int] = []

    @side_effect
    def send(to: str) -> int:
        calls.append(1)
        return len(calls)

    try:
        assert send("a") == 1 and send("a") == 1
        assert (tmp_path / "ledger.db").exists()
    finally:
        close_stores()


def test_methods_ignore_self() -> None:
    ledger = MemoryLedger()

    class Mailer:
        def __init__(self) -> None:
            self.sent: list[str] = []

        @side_effect(store=ledger, ignore=("self",))
        def send(self, to: str) -> str:
            self.sent.append(to)
            return f"sent to {len(self.sent)}"

    a, b = Mailer(), Mailer()
    assert a.send("x") == "sent to 1"
    assert b.send("x") == "sent to 1"  # replayed: a restarted worker has a new Mailer
    assert b.sent == []
    with pytest.raises(ValueError):
        side_effect(ignore=("nope",))(lambda x: x)


def test_options_are_checked_when_decorating_and_name_what_is_wrong() -> None:
    with pytest.raises(TypeError, match=r"unknown options \['kye'\]; it takes clock, "):
        side_effect(kye=lambda: "k")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="timeout must be a positive"):
        side_effect(timeout=0)
    with pytest.raises(ValueError, match="on_expired_lease must be"):
        side_effect(on_expired_lease="sometimes")  # type: ignore[call-overload]
    options = Options({"reserve": 0, "lease": timedelta(minutes=2), "ignore": ["self"]})
    assert (options.reserve, options.lease, options.timeout) == (0.0, 120.0, None)
    assert options.ignore == frozenset({"self"})
    assert Options({}).retryable == (ConnectionRefusedError,)


def test_an_option_set_can_be_typed_and_shared() -> None:
    shared: SideEffectOptions = {"store": MemoryLedger(), "name": "billing.charge"}
    calls: list[int] = []

    @side_effect(**shared)
    def charge(cents: int) -> int:
        calls.append(cents)
        return cents

    assert charge(5) == 5 and charge(5) == 5
    assert calls == [5] and charge.name == "billing.charge"


def test_the_decorators_type_hints_resolve_at_run_time() -> None:
    # Frameworks that introspect decorators (get_type_hints, signature(eval_str=True)) must
    # be able to resolve every annotation, the options' type included.
    hints = typing.get_type_hints(side_effect)
    assert typing.get_args(hints["options"]) == (SideEffectOptions,)
    assert "options" in inspect.signature(side_effect, eval_str=True).parameters


def test_begin_values_are_plain_data() -> None:
    assert Begin("wait").token is None


def test_decorated_functions_keep_their_shape() -> None:
    @side_effect(store=MemoryLedger())
    async def notify(user: str, *, urgent: bool = False) -> str:
        """Notify a user."""
        return user

    @side_effect(store=MemoryLedger())
    def send(to: str) -> str:
        return to

    # Agent frameworks build tool schemas from these and decide whether to await.
    assert inspect.iscoroutinefunction(notify)
    assert inspect.iscoroutinefunction(notify.with_options(run_id="r"))
    assert not inspect.iscoroutinefunction(send)
    assert str(inspect.signature(notify)) == "(user: 'str', *, urgent: 'bool' = False) -> 'str'"
    assert notify.__doc__ == "Notify a user." and notify.__name__ == "notify"
    assert send.name.endswith("test_decorated_functions_keep_their_shape.<locals>.send")


# --- packaging -----------------------------------------------------------------------------------


def test_import_is_lazy_about_redis_and_sqlite() -> None:
    code = (
        "import sys, resilient_llm, resilient_llm.idempotency.side_effect, "
        "resilient_llm.context.tools, resilient_llm.stores; "
        "assert 'redis' not in sys.modules, 'redis'; assert 'sqlite3' not in sys.modules, 'sqlite3'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=30)


def test_example_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env = {k: v for k, v in env.items() if not k.startswith("RESILIENT_LLM_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "idempotent_tools.py")],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "emails sent: 1" in proc.stdout
    assert "two processes on SQLite, emails sent: 1" in proc.stdout


@pytest.mark.parametrize(("store", "accepted"), [
    ("postgres://user:hunter2@db/x", "unknown store"),
    ("sqlite:///", "missing path"),
    ("redis://user:hunter2@host:99999/0", "does not parse"),
])
def test_a_bad_store_is_refused_where_the_function_is_decorated(store: str,
                                                                accepted: str) -> None:
    """As a bad ``RESILIENT_LLM_IDEMPOTENCY_STORE`` is refused where a client is built: not at
    the first call, and without the URL's password."""
    with pytest.raises(ConfigError, match=r"side_effect\(store=\.\.\.\)=") as info:
        side_effect(store=store)(lambda: None)
    assert accepted in str(info.value) and "hunter2" not in str(info.value)
    with pytest.raises(TypeError, match="takes a store URL or a Ledger, got int"):
        side_effect(store=5)(lambda: None)  # type: ignore[call-overload]
