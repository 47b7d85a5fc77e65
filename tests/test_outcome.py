"""Call records and ``outcome()``: how events fold into what a caller reads."""

from __future__ import annotations

import gc

import pytest

from resilient_llm import outcome
from resilient_llm.engine.classify import Failure, FailureClass
from resilient_llm.events.bus import Event
from resilient_llm.events.outcome import CallRecord, lookup, register


class _Response:
    """Stands in for an SDK response object (weak-referenceable, like theirs)."""


def _attempt(record: CallRecord, number: int, target: str, at: float, end: float,
             failure: Failure | None, status: int) -> None:
    record.apply(Event("attempt_started", at, number, target))
    record.apply(Event("attempt_finished", end, number, target, failure, status))


def test_a_retried_call_that_fell_back_reads_as_degraded_with_each_attempt() -> None:
    record = CallRecord(requested="big", deadline_budget=30.0)
    overloaded = Failure(FailureClass.OVERLOADED, True, status=529)
    _attempt(record, 1, "big", 0.0, 0.4, overloaded, 529)
    record.apply(Event("fell_back", 0.4, target="small", detail="overloaded"))
    record.apply(Event("waited", 0.4, seconds=0.25))
    _attempt(record, 2, "small", 0.65, 1.0, None, 200)
    record.apply(Event("succeeded", 1.0, 0, "small"))
    result = record.outcome()
    assert (result.requested, result.served_by, result.degraded) == ("big", "small", True)
    assert result.reason == "overloaded" and result.finished and result.retries == 1
    first, second = result.attempts
    assert (first.failure, first.status, first.ok) == ("overloaded", 529, False)
    assert (second.target, second.ok, second.waited_before) == ("small", True, 0.25)
    assert second.duration == pytest.approx(0.35)


def test_timings_split_the_call_into_queueing_backoff_and_attempts() -> None:
    record = CallRecord(requested="m", deadline_budget=30.0)
    record.apply(Event("waited", 0.1, seconds=0.1, detail="admission"))
    _attempt(record, 1, "m", 0.1, 0.4, Failure(FailureClass.SERVER_ERROR, True, status=503),
             503)
    record.apply(Event("waited", 0.9, seconds=0.5, detail="backoff"))
    record.apply(Event("waited", 1.1, seconds=0.2, detail="admission"))
    _attempt(record, 2, "m", 1.1, 1.6, None, 200)
    record.apply(Event("stream_committed", 1.3))
    record.apply(Event("succeeded", 1.3, 0, "m", detail="stream"))
    record.apply(Event("stream_finished", 2.0))
    timings = record.outcome().timings
    assert timings.elapsed == 2.0 and timings.time_to_first_token == 1.3
    assert timings.queue_wait == pytest.approx(0.3)
    assert timings.backoff == pytest.approx(0.5)
    assert timings.attempts == pytest.approx((0.3, 0.5))
    nothing = CallRecord(requested="m", deadline_budget=1.0)
    nothing.apply(Event("waited", 1.0, seconds=1.0, detail="admission"))
    nothing.apply(Event("gave_up", 1.0, detail="deadline"))
    timings = nothing.outcome().timings  # queued, then gave up before any attempt
    assert (timings.queue_wait, timings.backoff, timings.attempts) == (1.0, 0.0, ())


def test_a_stream_is_unfinished_until_it_ends_and_keeps_its_first_token_time() -> None:
    record = CallRecord(requested="m", deadline_budget=None)
    _attempt(record, 1, "m", 0.0, 0.2, None, 200)
    record.apply(Event("stream_committed", 0.2))
    record.apply(Event("succeeded", 0.2, 0, "m", detail="stream"))
    assert not record.outcome().finished
    record.apply(Event("stream_finished", 3.0))
    result = record.outcome()
    assert result.finished and result.time_to_first_token == 0.2 and result.elapsed == 3.0


def test_giving_up_records_the_reason_and_the_error() -> None:
    record = CallRecord(requested="m", deadline_budget=2.0)
    failure = Failure(FailureClass.TIMEOUT, True)
    record.apply(Event("gave_up", 2.0, failure=failure, detail="deadline"))
    result = record.outcome()
    assert result.finished and result.error == "deadline" and result.reason == "deadline"
    assert result.served_by is None and not result.degraded


def test_outcome_finds_the_record_of_a_registered_result_only_while_it_lives() -> None:
    record = CallRecord(requested="m", deadline_budget=None)
    response = _Response()
    register(response, record)
    assert lookup(response) is record
    assert outcome(response).requested == "m"
    register("not weak-referenceable", record)  # ignored, no error
    del response
    gc.collect()
    with pytest.raises(LookupError, match="no resilient-llm call produced this str"):
        outcome("anything")


def test_a_stream_helper_is_found_through_its_raw_stream() -> None:
    record = CallRecord(requested="m", deadline_budget=None)
    raw = _Response()
    register(raw, record)
    helper = _Response()
    helper._raw_stream = raw  # type: ignore[attr-defined]
    assert lookup(helper) is record
