"""The event stream: listeners, the built-in listener's quiet kinds, and failure isolation."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from resilient_llm.events import bus
from resilient_llm.events.bus import ALL_KINDS, Event, emit, needed, set_builtin, start, subscribe
from resilient_llm.events.outcome import CallRecord


@pytest.fixture(autouse=True)
def _no_builtin() -> Iterator[None]:
    """Each test installs its own built-in listener; the previous one comes back after."""
    saved = (bus._builtin, bus._quiet_for)
    set_builtin(None)
    yield
    set_builtin(*saved)


def _record() -> CallRecord:
    return CallRecord(requested="m", deadline_budget=10.0)


def test_a_subscribed_listener_sees_every_event_until_it_unsubscribes() -> None:
    seen: list[tuple[CallRecord, str]] = []
    unsubscribe = subscribe(lambda record, event: seen.append((record, event.kind)))
    record = _record()
    start(record)
    try:
        assert needed(record, "attempt_started")
        emit(record, Event("succeeded", 1.5, 0, "m"))
    finally:
        unsubscribe()
    emit(record, Event("stream_finished", 2.0))
    assert seen == [(record, "succeeded")]
    assert record.served_by == "m" and record.elapsed == 2.0  # folded either way


def test_without_any_listener_every_kind_is_quiet_and_only_folded() -> None:
    record = _record()
    start(record)
    assert record.quiet == ALL_KINDS
    assert not needed(record, "call_started")
    emit(record, Event("waited", 0.3, seconds=0.3, detail="admission"))
    assert record.queue_wait == pytest.approx(0.3)


def test_the_builtin_listener_gets_only_the_kinds_it_asked_for() -> None:
    seen: list[str] = []
    set_builtin(lambda record, event: seen.append(event.kind),
                quiet_for=lambda record: frozenset({"attempt_started"}))
    record = _record()
    start(record)
    assert not needed(record, "attempt_started") and needed(record, "gave_up")
    emit(record, Event("attempt_started", 0.0, 1, "m"))
    emit(record, Event("gave_up", 1.0, detail="deadline"))
    assert seen == ["gave_up"]
    assert record.finished and record.reason == "deadline"


def test_a_listener_that_raises_is_logged_and_never_breaks_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(record: CallRecord, event: Event) -> None:
        raise RuntimeError("listener bug")

    after: list[str] = []
    remove_broken = subscribe(broken)
    remove_after = subscribe(lambda record, event: after.append(event.kind))
    record = _record()
    try:
        with caplog.at_level(logging.ERROR, logger="resilient_llm"):
            emit(record, Event("succeeded", 0.5, 0, "m"))
    finally:
        remove_broken()
        remove_after()
    assert after == ["succeeded"]  # the next listener still ran
    assert "listener" in caplog.text and record.served_by == "m"


def test_a_builtin_whose_quiet_rule_fails_still_lets_the_call_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def quiet_for(record: CallRecord) -> frozenset[str]:
        raise ValueError("bad rule")

    set_builtin(lambda record, event: None, quiet_for=quiet_for)
    record = _record()
    with caplog.at_level(logging.ERROR, logger="resilient_llm"):
        start(record)
    assert record.quiet == frozenset()
    assert "failed to open a call" in caplog.text
